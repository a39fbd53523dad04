"""Where the seconds of `ninport convert` go: imports, load, each exporter stage, the onnxruntime check.

    python -m benchmarks.profile_convert [--model NIN|VGG16] [--repeat 2] [--json PATH]

Runs the real CLI (`ninport.cli.main(["convert", ...])`) in this process after importing what it
will need, with timers wrapped around the library functions it calls (nothing is changed, only
timed). Times are inclusive (a stage contains the stages indented under it). `--repeat 2` runs the
convert a second time in the same process: what drops out is one-time set-up (e.g. the exporter's
op registry), what stays is per-model work. Wall and CPU (user+sys, all threads) are both shown:
on a shared machine, CPU seconds are the steadier figure.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
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
    ("ninport.export.onnx, ninport.export.artifacts", "ninport.export.onnx ninport.export.artifacts"),
]
# (label, depth, module, attribute path): timers wrapped around these; depth indents the table.
STAGES = [
    ("ninport.load (read caffemodel, build fx module)", 1, "ninport.api", "load"),
    ("export_onnx (write_outputs: export + save)", 1, "ninport.export.onnx", "export_onnx"),
    ("torch.onnx.export(dynamo=True)", 2, "torch.onnx", "export"),
    ("torchlib registry (ONNXRegistry.from_torchlib)", 3,
     "torch.onnx._internal.exporter._registration", "ONNXRegistry.from_torchlib"),
    ("torch.export.export (dynamo trace)", 3, "torch.export", "export"),
    ("run_decompositions", 3, "torch.export.exported_program", "ExportedProgram.run_decompositions"),
    ("translate to ONNX IR", 3, "torch.onnx._internal.exporter._core", "_exported_program_to_onnx_program"),
    ("ninport _optimize (onnxscript passes)", 2, "ninport.export.onnx", "_optimize"),
    ("onnx.checker.check_model(full_check)", 2, "onnx.checker", "check_model"),
    ("onnx.save_model", 2, "onnx", "save_model"),
    ("onnxruntime check (verify_onnx)", 1, "ninport.export.artifacts", "verify_onnx"),
    ("  of which InferenceSession()", 2, "onnxruntime", "InferenceSession.__init__"),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timers:
    """Installed once; `reset()` starts a new run's totals."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.active: set[str] = set()

    def wrap(self, label: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if label in self.active:  # recursion: count the outermost call only
                return fn(*args, **kwargs)
            self.active.add(label)
            w, c = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - w
                self.cpu[label] = self.cpu.get(label, 0.0) + _cpu() - c
                self.active.discard(label)
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
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    weights = generated_caffemodel(args.model, args.cache)
    start_wall, start_cpu = time.perf_counter(), _cpu()
    imports = []
    for label, names in IMPORTS:
        w, c = time.perf_counter(), _cpu()
        for name in names.split():
            importlib.import_module(name)
        imports.append((label, time.perf_counter() - w, _cpu() - c))
    import_wall, import_cpu = time.perf_counter() - start_wall, _cpu() - start_cpu
    from ninport import cli

    runs = []
    timers = Timers()
    missing = timers.install()
    for _ in range(args.repeat):
        timers.reset()
        with tempfile.TemporaryDirectory() as out:
            w, c = time.perf_counter(), _cpu()
            code = cli.main(["convert", str(MODELS[args.model]), "--weights", str(weights), "-o", out])
            runs.append({"wall": time.perf_counter() - w, "cpu": _cpu() - c, "stages_wall": dict(timers.wall),
                         "stages_cpu": dict(timers.cpu), "exit": code, "not_found": missing})
    first = runs[0]
    total_wall = import_wall + first["wall"]
    total_cpu = import_cpu + first["cpu"]
    lines = [(f"ninport convert {args.model} ({weights.stat().st_size / 2**20:.0f} MiB weights), in-process, "
             f"timers around library calls; share = of imports + first convert"),
             f"{'stage':52s} {'wall s':>7s} {'share':>6s} {'CPU s':>7s}" +
             "".join(f" {'run ' + str(i + 1) + ' wall':>11s}" for i in range(1, len(runs)))]
    lines.append(f"{'imports (before any work)':52s} {import_wall:7.2f} {import_wall / total_wall:6.0%} "
                 f"{import_cpu:7.2f}")
    for label, w, c in imports:
        lines.append(f"{'  ' + label:52s} {w:7.2f} {w / total_wall:6.0%} {c:7.2f}")
    lines.append(f"{'convert (cli.main, imports done)':52s} {first['wall']:7.2f} {first['wall'] / total_wall:6.0%} "
                 f"{first['cpu']:7.2f}" + "".join(f" {r['wall']:11.2f}" for r in runs[1:]))
    for label, depth, _, _ in STAGES:
        if label not in first["stages_wall"]:
            continue
        w, c = first["stages_wall"][label], first["stages_cpu"][label]
        again = "".join(f" {r['stages_wall'].get(label, 0.0):11.2f}" for r in runs[1:])
        lines.append(f"{'  ' * depth + label:52s} {w:7.2f} {w / total_wall:6.0%} {c:7.2f}{again}")
    lines.append(f"{'total (imports + first convert)':52s} {total_wall:7.2f} {1:6.0%} {total_cpu:7.2f}")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "imports": imports, "import_wall": import_wall,
                                         "runs": runs, "table": "\n".join(lines)}, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
