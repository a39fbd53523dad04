"""Where the seconds and the memory of `ninport convert` go: imports, load, each exporter stage, each check.

    python -m benchmarks.profile_convert [--model NIN|VGG16] [--formats onnx,pt2,py,safetensors] [--repeat 2]
                                         [--json PATH]

Runs the real CLI (`ninport.cli.main(["convert", ...])`) in this process after importing what it
will need, with timers wrapped around the library functions it calls (nothing is changed, only
timed). Times are inclusive (a stage contains the stages indented under it). `--repeat 2` runs the
convert a second time in the same process: what drops out is one-time set-up (e.g. the exporter's
op registry), what stays is per-model work. Wall and CPU (user+sys, all threads) are both shown:
on a shared machine, CPU seconds are the steadier figure.

Memory (Linux): for each stage, the process's RSS when it starts and its peak RSS while it runs (the
kernel's high-water mark, reset at each stage's start through /proc/self/clear_refs, and carried up to
the stages around it), both in MiB, and the peak as a multiple of the caffemodel's bytes. The `.py`
check runs the file in a child process, whose memory is its own and not counted here.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.models import DEFAULT_CACHE, MODELS, generated_caffemodel

IMPORTS = [  # what `ninport convert` imports, in the order it first needs it
    ("torch", "torch"),
    ("ninport (api, graph builder, layers, cli)", "ninport.api ninport.build.graph ninport.cli"),
    ("torch.export / dynamo", "torch.export torch.export._trace torch._dynamo"),
    ("torch.onnx exporter + onnxscript torchlib", ("torch.onnx torch.onnx._internal.exporter._core "
                                                  "onnxscript onnxscript.function_libs.torch_lib.ops onnx")),
    ("onnxruntime", "onnxruntime"),
    ("ninport.export, ninport.check", "ninport.export.onnx ninport.export.artifacts ninport.check.selfcheck"),
]
# (label, depth, module, attribute path): timers wrapped around these; depth indents the table. A stage
# that does not exist in this version of ninport (or torch) is left out of the table.
STAGES = [
    ("ninport.load", 1, "ninport.api", "load"),
    ("read caffemodel (io.read_caffemodel)", 2, "ninport.caffe.io", "read_caffemodel"),
    ("match weights to layers (attach_weights)", 2, "ninport.caffe.weights", "attach_weights"),
    ("build fx module (build_graph_module)", 2, "ninport.build.graph", "build_graph_module"),
    ("write the files (write_outputs)", 1, "ninport.export.artifacts", "write_outputs"),
    ("ONNX: export (to_onnx_model)", 2, "ninport.export.onnx", "to_onnx_model"),
    ("torch.onnx.export(dynamo=True)", 3, "torch.onnx", "export"),
    ("torchlib registry (ONNXRegistry.from_torchlib)", 4,
     "torch.onnx._internal.exporter._registration", "ONNXRegistry.from_torchlib"),
    ("torch.export.export (dynamo trace)", 4, "torch.export", "export"),
    ("run_decompositions", 4, "torch.export.exported_program", "ExportedProgram.run_decompositions"),
    ("translate to ONNX IR", 4, "torch.onnx._internal.exporter._core", "_exported_program_to_onnx_program"),
    ("ninport _optimize (onnxscript passes)", 3, "ninport.export.onnx", "_optimize"),
    ("onnx_ir serialize (model_proto)", 3, "onnx_ir.serde", "serialize_model"),
    ("onnx.checker.check_model(full_check)", 3, "onnx.checker", "check_model"),
    ("ONNX: write (save_onnx_model)", 2, "ninport.export.onnx", "save_onnx_model"),
    ("pt2: torch.export (export_program)", 2, "ninport.export.artifacts", "export_program"),
    ("pt2: write (save_pt2)", 2, "ninport.export.artifacts", "save_pt2"),
    ("py: write (write_python)", 2, "ninport.export.codegen", "write_python"),
    ("safetensors: write (safetensors_writer)", 2, "ninport.export.safetensors", "safetensors_writer"),
    ("safetensors: save_file", 3, "safetensors.torch", "save_file"),
    ("self-check (check_file)", 1, "ninport.check.selfcheck", "check_file"),
    ("ONNX: check_onnx", 2, "ninport.check.selfcheck", "check_onnx"),
    ("torch forward (forward_values)", 3, "ninport.check.selfcheck", "forward_values"),
    ("onnxruntime InferenceSession()", 3, "onnxruntime", "InferenceSession.__init__"),
    ("pt2: check_pt2", 2, "ninport.check.selfcheck", "check_pt2"),
    ("torch.export.load", 3, "torch.export", "load"),
    ("py: check_python (child process)", 2, "ninport.check.selfcheck", "check_python"),
    ("safetensors: check_safetensors", 2, "ninport.check.selfcheck", "check_safetensors"),
]
MIB = 2 ** 20


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """VmHWM := VmRSS (Linux); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Timers:
    """Installed once; `reset()` starts a new run's totals. Each stage also records the RSS at its start and
    its peak RSS: the high-water mark is reset at every stage start, after its value has been carried to
    every stage still running, so an outer stage's peak includes its inner stages'."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.rss_start: dict[str, int] = {}
        self.rss_peak: dict[str, int] = {}
        self.active: list[str] = []
        self.running_peak: dict[str, int] = {}

    def _carry_peak(self) -> None:
        peak = _status("VmHWM")
        for label in self.active:
            self.running_peak[label] = max(self.running_peak[label], peak)

    def wrap(self, label: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if label in self.active:  # recursion: count the outermost call only
                return fn(*args, **kwargs)
            self._carry_peak()
            _reset_peak()
            start_rss = _status("VmRSS")
            self.active.append(label)
            self.running_peak[label] = start_rss
            w, c = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - w
                self.cpu[label] = self.cpu.get(label, 0.0) + _cpu() - c
                self._carry_peak()
                self.active.remove(label)
                peak = self.running_peak.pop(label)
                if label not in self.rss_start:  # the first call's start; the peak over all calls
                    self.rss_start[label] = start_rss
                self.rss_peak[label] = max(self.rss_peak.get(label, 0), peak)
        return timed

    def install(self) -> list[str]:
        missing = []
        for label, _, module_name, attr in STAGES:
            try:
                owner = importlib.import_module(module_name)
                *path, name = attr.split(".")
                for part in path:
                    owner = getattr(owner, part)
                fn = getattr(owner, name)
            except (ImportError, AttributeError):
                missing.append(label)
                continue
            if isinstance(owner, type) and isinstance(owner.__dict__.get(name), classmethod):
                setattr(owner, name, classmethod(self.wrap(label, owner.__dict__[name].__func__)))
            elif isinstance(owner, type):
                setattr(owner, name, self.wrap(label, fn))
            else:  # also rebind `from x import fn` copies held by other modules
                timed = self.wrap(label, fn)
                for module in list(sys.modules.values()):
                    for key, value in list(getattr(module, "__dict__", {}).items()):
                        if value is fn:
                            setattr(module, key, timed)
        return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="NIN", choices=sorted(MODELS))
    ap.add_argument("--formats", default="onnx", help="what `convert --format` gets (default onnx)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    weights = generated_caffemodel(args.model, args.cache)
    weight_bytes = weights.stat().st_size
    start_wall, start_cpu = time.perf_counter(), _cpu()
    imports = []
    for label, names in IMPORTS:
        w, c = time.perf_counter(), _cpu()
        for name in names.split():
            importlib.import_module(name)
        imports.append((label, time.perf_counter() - w, _cpu() - c))
    import_wall, import_cpu = time.perf_counter() - start_wall, _cpu() - start_cpu
    import_rss = _status("VmRSS")
    from ninport import cli

    runs = []
    timers = Timers()
    missing = timers.install()
    for _ in range(args.repeat):
        timers.reset()
        with tempfile.TemporaryDirectory() as out:
            _reset_peak()
            before = _status("VmRSS")
            w, c = time.perf_counter(), _cpu()
            code = cli.main(["convert", str(MODELS[args.model]), "--weights", str(weights), "-o", out,
                             "--format", args.formats])
            runs.append({"wall": time.perf_counter() - w, "cpu": _cpu() - c, "stages_wall": dict(timers.wall),
                         "stages_cpu": dict(timers.cpu), "rss_start": dict(timers.rss_start),
                         "rss_peak": dict(timers.rss_peak), "convert_rss_start": before,
                         "convert_rss_peak": max([_status("VmHWM"), *timers.rss_peak.values()]),
                         "exit": code, "not_found": missing})
    first = runs[0]
    total_wall = import_wall + first["wall"]
    total_cpu = import_cpu + first["cpu"]
    lines = [(f"ninport convert {args.model} --format {args.formats} ({weight_bytes / MIB:.0f} MiB weights), "
              f"in-process, timers around library calls; share = of imports + first convert; "
              "RSS in MiB (start of the stage, peak during it, peak / weight bytes)"),
             f"{'stage':52s} {'wall s':>7s} {'share':>6s} {'CPU s':>7s} {'RSS@start':>9s} {'peak':>6s} "
             f"{'xW':>5s}" + "".join(f" {'run ' + str(i + 1) + ' wall':>11s}" for i in range(1, len(runs)))]
    lines.append(f"{'imports (before any work)':52s} {import_wall:7.2f} {import_wall / total_wall:6.0%} "
                 f"{import_cpu:7.2f} {'':>9s} {import_rss / MIB:6.0f} {import_rss / weight_bytes:5.2f}")
    for label, w, c in imports:
        lines.append(f"{'  ' + label:52s} {w:7.2f} {w / total_wall:6.0%} {c:7.2f}")
    peak = first["convert_rss_peak"]
    lines.append(f"{'convert (cli.main, imports done)':52s} {first['wall']:7.2f} {first['wall'] / total_wall:6.0%} "
                 f"{first['cpu']:7.2f} {first['convert_rss_start'] / MIB:9.0f} {peak / MIB:6.0f} "
                 f"{peak / weight_bytes:5.2f}" + "".join(f" {r['wall']:11.2f}" for r in runs[1:]))
    for label, depth, _, _ in STAGES:
        if label not in first["stages_wall"]:
            continue
        w, c = first["stages_wall"][label], first["stages_cpu"][label]
        start, top = first["rss_start"][label], first["rss_peak"][label]
        again = "".join(f" {r['stages_wall'].get(label, 0.0):11.2f}" for r in runs[1:])
        lines.append(f"{'  ' * depth + label:52s} {w:7.2f} {w / total_wall:6.0%} {c:7.2f} {start / MIB:9.0f} "
                     f"{top / MIB:6.0f} {top / weight_bytes:5.2f}{again}")
    lines.append(f"{'total (imports + first convert)':52s} {total_wall:7.2f} {1:6.0%} {total_cpu:7.2f}")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "formats": args.formats, "weight_bytes": weight_bytes,
                                         "imports": imports, "import_wall": import_wall, "import_rss": import_rss,
                                         "runs": runs, "table": "\n".join(lines)}, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
