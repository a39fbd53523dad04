"""ninport's benchmark: load, runtime, convert and predict, side by side with peers, in ONE run.

    python -m benchmarks [--quick] [--json benchmarks/results/latest.json] [--cache benchmarks/.cache]

Every ratio is ninport's time / the peer's time (< 1: ninport is faster), from medians of
interleaved rounds (the engines take turns, so machine drift hits them alike). Load and convert
run each measurement in a fresh process and record its peak RSS (wait4's ru_maxrss); runtime runs
one process per thread count. Models: seeded random weights in the published V1 layout, generated
once into the cache folder (NIN 29 MiB; VGG16 528 MiB, skipped by --quick). The predict section
(benchmarks/predict_folder.py) times `ninport predict` on a folder against a plain Python loop. The
nets section (benchmarks/nets.py) times the module against onnxruntime and OpenCV dnn on NIN, GoogLeNet,
SqueezeNet 1.1 and the res10 SSD face detector at batch 1 and 8, and profiles the module's forward.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import convert as convert_bench
from benchmarks.models import (
    DEFAULT_CACHE,
    MODELS,
    MORE_NETS,
    NETS,
    REPO,
    exported_onnx,
    generated_caffemodel,
    net_weights,
)
from benchmarks.nets import bench_nets, format_nets, nets_targets
from benchmarks.predict_folder import bench_predict, format_rows

LOAD_PEERS = {"ninport_load": "ninport.load", "protobuf_naive": "protobuf ParseFromString + np.array",
              "opencv": "cv2.dnn.readNetFromCaffe", "read_file": "read file from page cache"}


def _child_env(threads: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # Children use compiled bytecode as an installed package does, kept in the cache folder: where
    # PYTHONDONTWRITEBYTECODE is set, every run would compile ninport's modules again (~0.3 s of ninport.load).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(DEFAULT_CACHE / "pycache"))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def run_child(argv: list[str], *, threads: int | None = None, timeout: float = 1800,
              env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run argv (with `env` added to the environment); return (wall seconds, the child's peak RSS in MiB,
    stdout). Raises on failure."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=_child_env(threads, env), cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr.strip()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def bench_load(models: dict[str, Path], rounds: int, say) -> list[dict]:
    samples: dict[tuple[str, str], list[dict]] = {}
    for model, weights in models.items():
        run_child([sys.executable, "-m", "benchmarks.children", "load", "read_file", str(MODELS[model]), str(weights)])
    for round_no in range(rounds):
        say(f"load: round {round_no + 1}/{rounds}")
        for model, weights in models.items():
            for method in LOAD_PEERS:
                _, peak, stdout = run_child([sys.executable, "-m", "benchmarks.children", "load", method,
                                             str(MODELS[model]), str(weights)])
                result = json.loads(stdout.strip().splitlines()[-1])
                result["process_peak_mib"] = peak
                samples.setdefault((model, method), []).append(result)
    rows = []
    for model, weights in models.items():
        med = {m: statistics.median(r["seconds"] for r in samples[(model, m)]) for m in LOAD_PEERS}
        for method, label in LOAD_PEERS.items():
            runs = samples[(model, method)]
            rows.append({
                "section": "load", "model": model, "method": label, "median_s": med[method],
                "rounds": len(runs), "weights_mib": weights.stat().st_size / 2**20,
                "op_peak_rss_mib": statistics.median(r["rss_delta_mib"] for r in runs),
                "process_peak_rss_mib": statistics.median(r["process_peak_mib"] for r in runs),
                "ninport_over_this": med["ninport_load"] / med[method] if method != "ninport_load" else None,
            })
    return rows


def bench_runtime(weights: Path, onnx: Path, thread_counts: list[int], batches: str, rounds: int,
                  matmul_n: int, options: bool, compile_: bool, say, spin: bool = False) -> tuple[list[dict], dict]:
    rows, machine = [], {}
    for threads in thread_counts:
        say(f"runtime: {threads} thread(s), {rounds} rounds")
        argv = [sys.executable, "-m", "benchmarks.children", "runtime", "--threads", str(threads),
                "--prototxt", str(MODELS["NIN"]), "--weights", str(weights), "--onnx", str(onnx),
                "--batches", batches, "--rounds", str(rounds), "--matmul-n", str(matmul_n)]
        if options and threads == max(thread_counts):
            argv.append("--options")
        if compile_ and threads == max(thread_counts):
            argv.append("--compile")
        argv += ["--spin"] * spin
        _, _, stdout = run_child(argv, threads=threads, env={} if spin else {"OMP_WAIT_POLICY": "PASSIVE"})
        result = json.loads(stdout.strip().splitlines()[-1])
        machine[f"matmul_peak_gflops_{threads}t"] = result["matmul_peak_gflops"]
        if result["compile_seconds"] is not None:
            machine["torch_compile_seconds"] = result["compile_seconds"]
        flops = result["flops_per_image"]
        machine["nin_gflop_per_image"] = flops / 1e9
        by_key = {(r["engine"], r["batch"]): r for r in result["rows"]}
        for r in result["rows"]:
            ort = by_key[("onnxruntime", r["batch"])]["median_s"]
            cv = by_key[("OpenCV dnn", r["batch"])]["median_s"]
            gflops = flops * r["batch"] / r["median_s"] / 1e9
            rows.append({
                "section": "runtime", "model": "NIN", "engine": r["engine"], "threads": threads, "batch": r["batch"],
                "median_s": r["median_s"], "rounds": r["samples"], "images_per_s": r["batch"] / r["median_s"],
                "gflops": gflops, "pct_of_matmul_peak": 100 * gflops / result["matmul_peak_gflops"],
                "over_onnxruntime": r["median_s"] / ort, "over_opencv": r["median_s"] / cv,
                "max_rel_diff_vs_torch": r["max_rel_diff_vs_torch"],
            })
    return rows, machine


def targets(rows: list[dict]) -> list[dict]:
    """The targets of issue 14, each with the measured ratio and whether it holds."""
    found = []

    def row(**match):
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    for engine in ("ninport torch + optimize()", "ninport torch"):
        r = row(section="runtime", engine=engine, batch=8, threads=2)
        if r:
            found.append({"target": f"{engine} at batch 8, 2 threads, at least as fast as onnxruntime",
                          "measured": r["over_onnxruntime"], "limit": 1.0, "holds": r["over_onnxruntime"] <= 1.0})
    r = row(section="load", model="VGG16", method=LOAD_PEERS["read_file"])
    if r:
        found.append({"target": "VGG16-size ninport.load within 2x of reading the file from page cache",
                      "measured": r["ninport_over_this"], "limit": 2.0, "holds": r["ninport_over_this"] <= 2.0})
    r = row(section="load", model="NIN", method=LOAD_PEERS["opencv"])
    if r:
        found.append({"target": "NIN ninport.load no slower than OpenCV's importer (issue: keep it at ~0.55x)",
                      "measured": r["ninport_over_this"], "limit": 1.0, "holds": r["ninport_over_this"] <= 1.0})
    return found


def format_table(result: dict) -> str:
    """The human-readable table: ratios are ninport time / peer time (< 1: ninport faster)."""
    rows, lines = result["rows"], []
    m = result["machine"]
    peaks = ", ".join(f"{v:.0f} GFLOP/s @ {k.split('_')[-1]}" for k, v in m.items() if k.startswith("matmul_peak"))
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_at_start']:.1f} at the "
                 f"start; torch {m['torch']}, onnxruntime {m['onnxruntime']}, OpenCV {m['opencv']}"
                 + (f"; fp32 matmul peak {peaks}" if peaks else "")
                 + (f" (nominal {m['nominal_fp32_gflops_per_core']:.0f} GFLOP/s per core at the reported clock)"
                    if m.get("nominal_fp32_gflops_per_core") else ""))
    lines.append("ratios are ninport time / peer time (< 1 means ninport is faster); medians of interleaved rounds")
    load = [r for r in rows if r["section"] == "load"]
    if load:
        lines += ["", "LOAD (fresh process each; peak RSS: operation's own / whole process)",
                  (f"{'model':6s} {'method':38s} {'median s':>9s} {'ninport/this':>12s} {'op peak MiB':>11s} "
                  f"{'proc peak MiB':>13s}")]
        for r in load:
            ratio = "" if r["ninport_over_this"] is None else f"{r['ninport_over_this']:.2f}"
            lines.append(f"{r['model']:6s} {r['method']:38s} {r['median_s']:9.3f} {ratio:>12s} "
                         f"{r['op_peak_rss_mib']:11.0f} {r['process_peak_rss_mib']:13.0f}")
    run = [r for r in rows if r["section"] == "runtime"]
    if run:
        lines += ["", (f"RUNTIME NIN 224x224 ({m.get('nin_gflop_per_image', 0):.2f} GFLOP/image; "
                  "% of the measured matmul peak at the same thread count)"),
                  (f"{'thr':>3s} {'batch':>5s} {'engine':34s} {'ms/batch':>9s} {'img/s':>7s} {'GFLOP/s':>8s} "
                  f"{'%peak':>6s} {'/onnxrt':>8s} {'/OpenCV':>8s} {'max rel diff':>12s}")]
        for r in sorted(run, key=lambda r: (r["threads"], r["batch"])):
            lines.append(f"{r['threads']:3d} {r['batch']:5d} {r['engine']:34s} {r['median_s'] * 1e3:9.1f} "
                         f"{r['images_per_s']:7.1f} {r['gflops']:8.1f} {r['pct_of_matmul_peak']:6.1f} "
                         f"{r['over_onnxruntime']:8.2f} {r['over_opencv']:8.2f} {r['max_rel_diff_vs_torch']:12.1e}")
        if "torch_compile_seconds" in m:
            lines.append(f"torch.compile: first call took {m['torch_compile_seconds']:.1f} s")
    lines += convert_bench.format_rows(rows, result.get("convert_profiles", {}))
    lines += format_rows([r for r in rows if r["section"] == "predict"])
    lines += format_nets(rows, result.get("nets", {}))
    if result["targets"]:
        lines += ["", "TARGETS (issues 14 and 22)"]
        for t in result["targets"]:
            lines.append(f"  [{'ok' if t['holds'] else 'MISSED'}] {t['target']}: {t['measured']:.2f} "
                         f"(limit {t['limit']:g})" + (f"; held back by {t['held_back_by']}" if t.get("held_back_by")
                                                      else ""))
    return "\n".join(lines)


def _nominal_peak_per_core() -> float | None:
    """32 FLOP/cycle (two 8-wide fp32 FMA pipes, AVX2+FMA as on Zen 3 / Skylake client) x the
    clock /proc/cpuinfo reports; None when the CPU lacks AVX2/FMA or the clock is unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        mhz = float(next(line.split(":")[1] for line in text.splitlines() if line.startswith("cpu MHz")))
        flags = next(line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration, ValueError):
        return None
    return 32 * mhz / 1000 if "avx2" in flags and "fma" in flags else None


def machine_info() -> dict:
    import cv2
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "nominal_fp32_gflops_per_core": _nominal_peak_per_core(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
            "load_average_at_start": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few rounds, NIN only (no VGG16)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "latest.json")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated models are kept")
    ap.add_argument("--sections", default="load,runtime,convert,predict,nets")
    ap.add_argument("--load-rounds", type=int)
    ap.add_argument("--runtime-rounds", type=int)
    ap.add_argument("--convert-rounds", type=int)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--matmul-n", type=int)
    ap.add_argument("--no-options", action="store_true", help="skip the optimize() alternatives")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--nets", help=f"nets of the runtime comparison (default {','.join(NETS)}; "
                    f"--quick: NIN,SqueezeNet; also {','.join(MORE_NETS)})")
    ap.add_argument("--nets-threads", default="2", help="thread counts of the runtime comparison")
    ap.add_argument("--nets-rounds", type=int)
    ap.add_argument("--profile-top", type=int, default=5, help="ops and layers in each net's profile (0: none)")
    ap.add_argument("--no-spin", action="store_true",
                    help="turn torch's and onnxruntime's spinning worker threads off (OMP_WAIT_POLICY=PASSIVE, "
                         "ORT allow_spinning=0): fairer on a machine whose cores other work keeps busy; by default "
                         "both libraries run as a user gets them")
    ap.add_argument("--predict-images", type=int, help="images in the predict folder (default 64, --quick 16)")
    ap.add_argument("--predict-rounds", type=int)
    ap.add_argument("--predict-batch", type=int, default=8)
    ap.add_argument("--predict-threads", type=int, default=1, help="torch threads in the predict section (the "
                    "read-ahead thread comes on top)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    quick = args.quick
    start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    names = ["NIN"] if quick else ["NIN", "VGG16"]
    say("generating / finding the cached models")
    models = {name: generated_caffemodel(name, args.cache) for name in names}
    result = {"machine": machine_info(), "quick": quick, "rows": [], "targets": []}
    if "load" in sections:
        result["rows"] += bench_load(models, args.load_rounds or (1 if quick else 5), say)
    if "runtime" in sections:
        onnx = exported_onnx("NIN", models["NIN"], args.cache)
        rows, machine = bench_runtime(models["NIN"], onnx, [int(t) for t in args.threads.split(",")],
                                      args.batches, args.runtime_rounds or (2 if quick else 9),
                                      args.matmul_n or (1024 if quick else 2048), options=not args.no_options,
                                      compile_=args.compile, say=say, spin=not args.no_spin)
        result["rows"] += rows
        result["machine"].update(machine)
    if "convert" in sections:
        rounds = {"NIN": args.convert_rounds or (1 if quick else 3), "VGG16": args.convert_rounds or 1}
        formats = ("onnx",) if quick else ("onnx", convert_bench.ALL_FORMATS)
        result["rows"] += convert_bench.bench_convert(models, rounds, run_child, say, formats)
        if not quick:
            say("convert: the time and memory of each stage (benchmarks.profile_convert)")
            result["convert_profiles"] = {name: convert_bench.stage_profile(name, models[name], "onnx", run_child)
                                          for name in models}
    if "predict" in sections:
        result["rows"] += bench_predict(run_child, models["NIN"], MODELS["NIN"], args.cache,
                                        images=args.predict_images or (16 if quick else 64),
                                        rounds=args.predict_rounds or (1 if quick else 3), batch=args.predict_batch,
                                        threads=args.predict_threads, say=say)
    if "nets" in sections:
        names = (args.nets or ("NIN,SqueezeNet" if quick else ",".join(NETS))).split(",")
        nets = {}
        for name in names:
            weights, source = (models[name], "seeded") if name in models else net_weights(name, args.cache)
            nets[name] = {"prototxt": str(MODELS[name]), "weights": str(weights), "source": source,
                          "onnx": str(exported_onnx(name, weights, args.cache)), "size": {**NETS, **MORE_NETS}[name]}
        rows, extra = bench_nets(run_child, nets, [int(t) for t in args.nets_threads.split(",")], args.batches,
                                 args.nets_rounds or (1 if quick else 9), args.profile_top,
                                 options=not args.no_options, compile_=args.compile, spin=not args.no_spin, say=say)
        result["rows"] += rows
        result["nets"] = extra
    result["targets"] = (targets(result["rows"]) + nets_targets(result["rows"], result.get("nets", {}))
                         + convert_bench.targets(result["rows"], result.get("convert_profiles", {})))
    result["machine"]["benchmark_seconds"] = time.perf_counter() - start
    table = format_table(result)
    result["table"] = table
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.json)
    say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
