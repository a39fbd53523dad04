"""The convert section of `python -m benchmarks` (issue 22): what `ninport convert` costs per net, as ratios.

For each net, rounds interleave three fresh processes:

- `python -c "import torch, onnx, onnxruntime"`: the bare imports, the floor of any conversion's time;
- `ninport convert` to ONNX alone (the default), and to every format (onnx, pt2, py, safetensors), each with its
  self-check. The child (`python -m benchmarks.convert child ...`) imports what convert uses (torch, onnx,
  onnxruntime, ninport, and the exporter's modules torch.onnx.export would import on first use), notes its RSS,
  resets the RSS high-water mark (/proc/self/clear_refs) and runs the CLI's `main`, so it reports both the
  conversion's own peak (above the imports) and, through the parent's wait4, the whole process's.

Each row: median wall seconds and their ratio to the bare imports' median (same rounds), the whole process's
peak RSS and the peak above the imports, both as multiples of the caffemodel's bytes. The .py file's check runs
in a process of its own, whose memory is not in these figures. `stage_profile` runs `benchmarks.profile_convert`
for the time and memory of each stage.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.models import MODELS

ALL_FORMATS = "onnx,pt2,py,safetensors"
# The dynamo exporter's modules, imported by torch.onnx.export on first use: the child imports them before it
# measures, so that "above the imports" is the conversion's own memory, not the exporter's code (~135 MiB).
EXPORTER_MODULES = ("torch._dynamo", "torch.export._trace", "onnxscript", "onnxscript.function_libs.torch_lib.ops",
                    "torch.onnx._internal.exporter._core")
BARE_IMPORTS = "import torch, onnx, onnxruntime"
MIB = 2 ** 20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(prototxt: str, weights: str, formats: str) -> dict:
    """In the child process: import what `convert` uses, then run `ninport convert` into a temporary folder."""
    import importlib

    start = time.perf_counter()
    import onnxruntime  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch.export  # noqa: F401
    import torch.onnx  # noqa: F401

    from ninport import cli
    from ninport.check import onnx_session, selfcheck  # noqa: F401
    from ninport.export import artifacts, conversion  # noqa: F401

    for name in EXPORTER_MODULES:  # what torch.onnx.export imports on first use (private paths: best effort)
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    imported = time.perf_counter()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS: the imports' peak does not count in `growth`
    except OSError:
        pass
    base = _status("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        code = cli.main(["convert", prototxt, "--weights", weights, "-o", out, "--format", formats, "--quiet"])
    if code != 0:
        raise SystemExit(f"ninport convert exited {code}")
    return {"import_s": imported - start, "convert_s": time.perf_counter() - imported,
            "rss_after_imports": base, "growth": _status("VmHWM") - base}


def bench_convert(models: dict[str, Path], rounds: dict[str, int], run_child: Callable, say,
                  formats: tuple[str, ...] = ("onnx", ALL_FORMATS)) -> list[dict]:
    """Rows of the convert section (see the module docstring); `rounds` per model."""
    bare: list[tuple[float, float]] = []
    samples: dict[tuple[str, str], list[dict]] = {}
    for round_no in range(max(rounds.values())):
        say(f"convert: round {round_no + 1}/{max(rounds.values())}")
        wall, peak, _ = run_child([sys.executable, "-c", BARE_IMPORTS])
        bare.append((wall, peak))
        for model, weights in models.items():
            if round_no >= rounds[model]:
                continue
            for fmt in formats:
                wall, peak, stdout = run_child([sys.executable, "-m", "benchmarks.convert", "child",
                                                str(MODELS[model]), str(weights), fmt])
                measured = json.loads(stdout.strip().splitlines()[-1])
                samples.setdefault((model, fmt), []).append({**measured, "wall": wall, "peak": peak * MIB})
    bare_s = statistics.median(w for w, _ in bare)
    rows = [{"section": "convert", "model": "-", "method": BARE_IMPORTS, "formats": "", "median_s": bare_s,
             "rounds": len(bare), "over_bare_imports": 1.0, "process_peak_rss_mib": statistics.median(
                 p for _, p in bare), "weights_mib": None, "peak_over_weights": None, "growth_over_weights": None}]
    for (model, fmt), runs in samples.items():
        weight_bytes = models[model].stat().st_size
        wall = statistics.median(r["wall"] for r in runs)
        peak = statistics.median(r["peak"] for r in runs)
        growth = statistics.median(r["growth"] for r in runs)
        rows.append({"section": "convert", "model": model, "method": "ninport convert", "formats": fmt,
                     "median_s": wall, "rounds": len(runs), "over_bare_imports": wall / bare_s,
                     "import_s": statistics.median(r["import_s"] for r in runs),
                     "convert_s": statistics.median(r["convert_s"] for r in runs),
                     "process_peak_rss_mib": peak / MIB, "rss_after_imports_mib": statistics.median(
                         r["rss_after_imports"] for r in runs) / MIB, "peak_above_imports_mib": growth / MIB,
                     "weights_mib": weight_bytes / MIB, "peak_over_weights": peak / weight_bytes,
                     "growth_over_weights": growth / weight_bytes})
    return rows


def stage_profile(model: str, weights: Path, formats: str, run_child: Callable) -> dict:
    """`python -m benchmarks.profile_convert` for one net (one convert, in its own process): the time and RSS of
    each stage."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        run_child([sys.executable, "-m", "benchmarks.profile_convert", "--model", model, "--formats", formats,
                   "--repeat", "1", "--cache", str(weights.parent), "--json", str(out)])
        return json.loads(out.read_text())


def slowest_stages(profile: dict, count: int = 3) -> str:
    """The imports' CPU time and the `count` innermost stages of a profile that take the most CPU time:
    `imports 2.4, torch.export.export (dynamo trace) 1.5, ... CPU-s`."""
    from benchmarks.profile_convert import STAGES

    run = profile["runs"][0]
    leaves = [label for i, (label, depth, _, _) in enumerate(STAGES)
              if label in run["stages_cpu"] and (i + 1 == len(STAGES) or STAGES[i + 1][1] <= depth)]
    top = sorted(leaves, key=lambda label: -run["stages_cpu"][label])[:count]
    imports = sum(cpu for _, _, cpu in profile["imports"])
    return ", ".join([f"imports {imports:.1f}"] + [f"{label} {run['stages_cpu'][label]:.1f}" for label in top]) \
        + " CPU-s"


def targets(rows: list[dict], profiles: dict[str, dict]) -> list[dict]:
    """Issue 22's convert targets, each with the measured ratio and whether it holds."""
    found = []

    def row(**match):
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    r = row(section="convert", model="VGG16", formats="onnx")
    if r:
        found.append({"target": "VGG16 convert (ONNX, checked) whole-process peak RSS <= 2x the weight bytes",
                      "measured": r["peak_over_weights"], "limit": 2.0, "holds": r["peak_over_weights"] <= 2.0})
    r = row(section="convert", model="VGG16", formats=ALL_FORMATS)
    if r:
        found.append({"target": "VGG16 convert (all formats) peak RSS above the imports <= 2x the weight bytes "
                                "(.pt2: torch.export.save copies each weight twice)",
                      "measured": r["growth_over_weights"], "limit": 2.0, "holds": r["growth_over_weights"] <= 2.0})
    r = row(section="convert", model="NIN", formats="onnx")
    if r:
        why = f"; slowest stages: {slowest_stages(profiles['NIN'])}" if "NIN" in profiles else ""
        found.append({"target": f"NIN convert (ONNX, checked) wall within 1.5x of `{BARE_IMPORTS}`{why}",
                      "measured": r["over_bare_imports"], "limit": 1.5, "holds": r["over_bare_imports"] <= 1.5})
    return found


def format_rows(rows: list[dict], profiles: dict[str, dict]) -> list[str]:
    """The convert section's lines of the benchmark table."""
    conv = [r for r in rows if r["section"] == "convert"]
    if not conv:
        return []
    lines = ["", "CONVERT (fresh process each, self-check on; ratios: wall / the bare imports' wall, peak RSS / the "
                 "caffemodel's bytes)",
             f"{'model':6s} {'formats':31s} {'median s':>9s} {'/imports':>9s} {'peak MiB':>9s} {'peak/W':>7s} "
             f"{'above imports MiB':>17s} {'above/W':>8s}"]
    for r in conv:
        if r["model"] == "-":
            lines.append(f"{'-':6s} {r['method']:31s} {r['median_s']:9.2f} {1.0:9.2f} "
                         f"{r['process_peak_rss_mib']:9.0f}")
            continue
        lines.append(f"{r['model']:6s} {r['formats']:31s} {r['median_s']:9.2f} {r['over_bare_imports']:9.2f} "
                     f"{r['process_peak_rss_mib']:9.0f} {r['peak_over_weights']:7.2f} "
                     f"{r['peak_above_imports_mib']:17.0f} {r['growth_over_weights']:8.2f}")
    for model, profile in profiles.items():
        lines += ["", f"CONVERT STAGES {model} (benchmarks.profile_convert)", profile["table"]]
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        print(json.dumps(child(*sys.argv[2:5])))
    else:
        raise SystemExit("usage: python -m benchmarks.convert child PROTOTXT WEIGHTS FORMATS")
