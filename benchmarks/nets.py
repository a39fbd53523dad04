"""Benchmark section "nets": the module `ninport.load` gives against onnxruntime on ninport's ONNX and OpenCV 4.x dnn
on the Caffe files, per net, at batch 1 and 8, in one run (issue 22).

    python -m benchmarks.nets --threads T --nets NIN,GoogLeNet --cache DIR [--rounds R] [--batches 1,8]

One child process (the parent sets its thread count) loads every net in every engine, checks that the engines
compute the same net, and times them in interleaved rounds: per round, per net and batch, each engine once,
the engine going first rotating; a short pause before each engine lets the previous one's worker threads go
idle. With --spin (what `python -m benchmarks` passes) the libraries run as a user gets them: torch's OpenMP
and onnxruntime's pool spin a while after each op. Without it (`python -m benchmarks --no-spin`) both spin
no more: torch's OMP_WAIT_POLICY=PASSIVE, set by the parent before torch starts, and onnxruntime's
session.intra_op.allow_spinning=0. On a machine shared with other
work a pool spinning after its op keeps the core the other engine (or process) needs, and the benchmark then
measures contention; on an idle machine the passive pools measure thread wake-ups instead (torch's more than
onnxruntime's: SqueezeNet at batch 1, 2 threads, 6.1 ms passive against 2.9 ms spinning).

After the timing it profiles the module's forward per net and batch: torch.profiler's top ops by self CPU time,
and the layers that take the most time (each node of the fx graph timed by an fx Interpreter). It prints one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

ENGINES = ("ninport module", "onnxruntime", "OpenCV dnn")
PAUSE_S = 0.02


def _relative(got, expected) -> float | None:
    """max |a - b| / max |b| over the finite values; None when the shapes differ (e.g. detection rows)."""
    import numpy as np

    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.size != expected.size:
        return None
    got = got.reshape(expected.shape)
    finite = np.isfinite(expected) & np.isfinite(got)
    if not finite.any():
        return 0.0
    scale = float(np.abs(expected[finite]).max()) or 1.0
    return float(np.abs(got[finite] - expected[finite]).max()) / scale


def _profile(module, x, top: int) -> dict:
    """The module's forward at `x`: top ops by self CPU time and top layers by time (fx Interpreter)."""
    import torch
    from torch import fx
    from torch.profiler import ProfilerActivity, profile

    runs = 2
    with torch.inference_mode():
        module(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                module(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / runs, "share": e.self_cpu_time_total / total,
            "calls": e.count // runs} for e in events[:top]]
    layer_times: dict[str, list[float]] = {}

    class Timer(fx.Interpreter):
        def run_node(self, node):
            start = time.perf_counter()
            result = super().run_node(node)
            if node.op == "call_module":
                layer_times.setdefault(node.target, []).append(time.perf_counter() - start)
            return result

    with torch.inference_mode():
        for _ in range(3):
            Timer(module).run(x)
    medians = {name: statistics.median(times) for name, times in layer_times.items()}
    whole = sum(medians.values()) or 1.0
    names = {record.module: record.name for record in _layers(module)}
    layers = [{"layer": names.get(target, target), "type": type(module.get_submodule(target)).__name__,
               "ms": seconds * 1e3, "share": seconds / whole}
              for target, seconds in sorted(medians.items(), key=lambda kv: kv[1], reverse=True)[:top]]
    return {"ops": ops, "layers": layers}


def _layers(module):
    import ninport

    return ninport.describe(module).layers


def child(args) -> dict:
    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch

    import ninport

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    nets = json.loads(args.nets)  # name -> {prototxt, weights, onnx, size}
    runs: dict[tuple[str, str, int], object] = {}
    inputs: dict[tuple[str, int], np.ndarray] = {}
    agreement: dict[tuple[str, str], float | None] = {}
    modules = {}
    for name, net in nets.items():
        module = ninport.load(net["prototxt"], net["weights"])
        modules[name] = module
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not args.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(net["onnx"], options, providers=["CPUExecutionProvider"])
        opencv = cv2.dnn.readNetFromCaffe(net["prototxt"], net["weights"])
        opencv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        opencv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        engines = {
            "ninport module": _torch_run(module),
            "onnxruntime": _ort_run(session),
            "OpenCV dnn": _opencv_run(opencv),
        }
        if args.options:
            engines["ninport module + optimize()"] = _torch_run(ninport.optimize(module))
        if args.compile:
            torch._dynamo.reset()
            compiled = torch.compile(module)
            engines["ninport module + torch.compile"] = _torch_run(compiled)
        rng = np.random.default_rng(0)
        for batch in batches:
            x = rng.uniform(-120, 140, (batch, 3, net["size"], net["size"])).astype(np.float32)
            inputs[(name, batch)] = x
            reference = engines["ninport module"](x)
            for engine, run in engines.items():
                start = time.perf_counter()
                out = run(x)  # the first call: warm-up (and torch.compile's compilation)
                if engine.endswith("torch.compile") and batch == batches[0]:
                    agreement[(name, "compile_seconds")] = time.perf_counter() - start
                run(x)
                err = _relative(out, reference)
                key = (name, engine)
                agreement[key] = err if agreement.get(key) is None else max(agreement[key], err or 0.0)
            for engine, run in engines.items():
                runs[(name, engine, batch)] = run
    samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in runs}
    engine_names = list(dict.fromkeys(engine for _, engine, _ in runs))
    for round_no in range(args.rounds):
        shift = round_no % len(engine_names)
        order = engine_names[shift:] + engine_names[:shift]
        for name in nets:
            for batch in batches:
                x = inputs[(name, batch)]
                reps = 3 if batch == 1 else 1
                for engine in order:
                    run = runs[(name, engine, batch)]
                    time.sleep(PAUSE_S)
                    start = time.perf_counter()
                    for _ in range(reps):
                        run(x)
                    samples[(name, engine, batch)].append((time.perf_counter() - start) / reps)
        print(f"nets: round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = [{"model": name, "engine": engine, "batch": batch, "threads": args.threads,
             "median_s": statistics.median(times), "min_s": min(times), "samples": len(times),
             "max_rel_diff_vs_module": agreement.get((name, engine))}
            for (name, engine, batch), times in samples.items()]
    profiles = {}
    if args.profile_top:
        for name, module in modules.items():
            for batch in batches:
                profiles[f"{name} b{batch}"] = _profile(module, torch.from_numpy(inputs[(name, batch)]),
                                                        args.profile_top)
    compile_seconds = {name: agreement[(name, "compile_seconds")] for name in nets
                       if (name, "compile_seconds") in agreement}
    return {"threads": args.threads, "rows": rows, "profiles": profiles, "compile_seconds": compile_seconds,
            "spinning": bool(args.spin)}


def _torch_run(module):
    import torch

    def run(x):
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        return (out[0] if isinstance(out, tuple) else out).numpy()
    return run


def _ort_run(session):
    name = session.get_inputs()[0].name

    def run(x):
        return session.run(None, {name: x})[0]
    return run


def _opencv_run(net):
    def run(x):
        net.setInput(x)
        return net.forward()
    return run


# --- the parent's side: rows, the table, the targets --------------------------------------------------------


def bench_nets(run_child, nets: dict[str, dict], thread_counts: list[int], batches: str, rounds: int,
               profile_top: int, options: bool, compile_: bool, spin: bool, say) -> tuple[list[dict], dict]:
    """Run the child once per thread count; rows with ratios to onnxruntime and OpenCV, and the profiles."""
    rows, extra = [], {"profiles": {}, "compile_seconds": {}, "weights": {n: v["source"] for n, v in nets.items()}}
    for threads in thread_counts:
        say(f"nets: {', '.join(nets)} at {threads} thread(s), {rounds} rounds")
        argv = [sys.executable, "-m", "benchmarks.nets", "--threads", str(threads), "--batches", batches,
                "--rounds", str(rounds), "--profile-top", str(profile_top),
                "--nets", json.dumps({n: {k: v for k, v in net.items() if k != "source"} for n, net in nets.items()})]
        argv += ["--options"] * options + ["--compile"] * compile_ + ["--spin"] * spin
        env = {} if spin else {"OMP_WAIT_POLICY": "PASSIVE"}
        _, _, stdout = run_child(argv, threads=threads, env=env)
        result = json.loads(stdout.strip().splitlines()[-1])
        by_key = {(r["model"], r["engine"], r["batch"]): r for r in result["rows"]}
        for r in result["rows"]:
            ort = by_key[(r["model"], "onnxruntime", r["batch"])]["median_s"]
            cv = by_key[(r["model"], "OpenCV dnn", r["batch"])]["median_s"]
            rows.append({"section": "nets", **r, "images_per_s": r["batch"] / r["median_s"],
                         "over_onnxruntime": r["median_s"] / ort, "over_opencv": r["median_s"] / cv,
                         "spinning": result["spinning"], "weights": nets[r["model"]]["source"]})
        extra["profiles"].update({f"{key} t{threads}": value for key, value in result["profiles"].items()})
        extra["compile_seconds"].update(result["compile_seconds"])
    return rows, extra


def format_nets(rows: list[dict], extra: dict) -> list[str]:
    rows = [r for r in rows if r["section"] == "nets"]
    if not rows:
        return []
    spinning = "library defaults" if rows[0]["spinning"] else "off (OMP_WAIT_POLICY=PASSIVE, ORT allow_spinning=0)"
    weights = ", ".join(f"{net} {source}" for net, source in extra.get("weights", {}).items())
    lines = ["", f"NETS: ninport.load module vs onnxruntime (ninport's ONNX) vs OpenCV dnn (the Caffe files); "
                 f"interleaved medians of {rows[0]['samples']} rounds; spinning threads {spinning}; weights: {weights}",
             f"{'net':10s} {'thr':>3s} {'batch':>5s} {'engine':32s} {'ms/batch':>9s} {'img/s':>7s} {'/onnxrt':>8s} "
             f"{'/OpenCV':>8s} {'max rel diff':>12s}"]
    for r in sorted(rows, key=lambda r: (list(dict.fromkeys(x["model"] for x in rows)).index(r["model"]),
                                         r["threads"], r["batch"])):
        diff = r["max_rel_diff_vs_module"]
        diff_text = "rows differ" if diff is None else f"{diff:.1e}"
        lines.append(f"{r['model']:10s} {r['threads']:3d} {r['batch']:5d} {r['engine']:32s} "
                     f"{r['median_s'] * 1e3:9.1f} {r['images_per_s']:7.1f} {r['over_onnxruntime']:8.2f} "
                     f"{r['over_opencv']:8.2f} {diff_text:>12s}")
    for net, seconds in extra.get("compile_seconds", {}).items():
        lines.append(f"torch.compile: {net}'s first call (compilation) took {seconds:.1f} s")
    if extra.get("profiles"):
        lines += ["", "PROFILE of the module's forward (top ops by self CPU time; top layers, each node timed)"]
        for key, prof in extra["profiles"].items():
            ops = ", ".join(f"{o['op']} {o['share']:.0%} ({o['calls']}x)" for o in prof["ops"])
            layers = ", ".join(f"{la['layer']} {la['ms']:.1f} ms ({la['share']:.0%})" for la in prof["layers"])
            lines += [f"  {key}: ops: {ops}", f"  {' ' * len(key)}  layers: {layers}"]
    return lines


def nets_targets(rows: list[dict], extra: dict) -> list[dict]:
    """Issue 22's targets: the module at or under onnxruntime's time on every net at batch 1 and on NIN at
    batch 8; ninport's ONNX at or under OpenCV's time. A missed module target names the layer taking the most
    of the module's time there (from the profile), with its top op."""
    from benchmarks.models import NETS  # the nets; the others (`--nets MobileNet,...`) are measured only

    found = []
    rows = [r for r in rows if r["section"] == "nets" and r["model"] in NETS]
    for r in rows:
        engine, threads = r["engine"], r["threads"]
        where = f"{r['model']} batch {r['batch']}, {threads} thread(s)"
        if engine == "ninport module" and (r["batch"] == 1 or (r["model"] == "NIN" and r["batch"] == 8)):
            target = {"target": f"module at or under onnxruntime's time, {where}", "measured": r["over_onnxruntime"],
                      "limit": 1.0, "holds": r["over_onnxruntime"] <= 1.0}
            prof = extra.get("profiles", {}).get(f"{r['model']} b{r['batch']} t{threads}")
            if not target["holds"] and prof:
                top_layer, top_op = prof["layers"][0], prof["ops"][0]
                target["held_back_by"] = (f"layer {top_layer['layer']} ({top_layer['type']}, {top_layer['share']:.0%} "
                                          f"of the forward); top op {top_op['op']} ({top_op['share']:.0%})")
            found.append(target)
        if engine == "onnxruntime":
            found.append({"target": f"ninport's ONNX at or under OpenCV dnn's time, {where}",
                          "measured": r["over_opencv"], "limit": 1.0, "holds": r["over_opencv"] <= 1.0})
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--nets", required=True, help="JSON: name -> {prototxt, weights, onnx, size}")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--profile-top", type=int, default=5, help="ops and layers per profile; 0: no profile")
    ap.add_argument("--options", action="store_true", help="also time ninport.optimize()")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (inductor)")
    ap.add_argument("--spin", action="store_true", help="leave onnxruntime's spinning threads on")
    print(json.dumps(child(ap.parse_args())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
