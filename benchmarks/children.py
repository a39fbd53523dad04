"""What the benchmark runs in its child processes; each prints one JSON line on stdout.

    python -m benchmarks.children load METHOD PROTOTXT WEIGHTS
    python -m benchmarks.children runtime --threads T --prototxt P --weights W --onnx O [...]

Imports happen before the clock starts; the load child resets the RSS high-water mark after its
imports (/proc/self/clear_refs) so `rss_delta_mib` is the operation's own peak above the
post-import RSS. The parent also records the whole child's peak (wait4's ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

LOAD_METHODS = ("ninport_load", "protobuf_naive", "opencv", "read_file")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def load_child(method: str, prototxt: str, weights: str) -> dict:
    if method == "ninport_load":
        import importlib

        import torch  # noqa: F401  (imported before timing: load() needs it, import cost is not load)

        import ninport
        from ninport import api  # noqa: F401
        from ninport.build import graph  # noqa: F401
        from ninport.registry import BUILTIN_RULE_MODULES

        for name in BUILTIN_RULE_MODULES:  # the layer families load() would import on its first call
            importlib.import_module(name)
    elif method == "protobuf_naive":
        import numpy as np

        from ninport.caffe import caffe_pb2
    elif method == "opencv":
        import cv2
    elif method != "read_file":
        raise SystemExit(f"unknown load method {method}")
    warnings.simplefilter("ignore")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: import peaks do not count
    except OSError:
        pass
    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    if method == "ninport_load":
        module = ninport.load(prototxt, weights)
        count = sum(p.numel() for p in module.parameters())
    elif method == "protobuf_naive":
        with open(weights, "rb") as f:
            net = caffe_pb2.NetParameter.FromString(f.read())
        arrays = [np.array(blob.data, dtype=np.float32) for layer in list(net.layer) + list(net.layers)
                  for blob in layer.blobs]
        count = sum(a.size for a in arrays)
    elif method == "opencv":
        net = cv2.dnn.readNetFromCaffe(prototxt, weights)
        count = len(net.getLayerNames())
    else:  # the floor: the file's bytes from the page cache into memory
        with open(weights, "rb") as f:
            data = f.read()
        count = len(data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_delta_mib": (_rss_kib("VmHWM") - base) / 1024, "count": count}


def conv_flops_per_image(module, shape) -> float:
    """FLOPs (2 x MACs) of the convolutions and inner products for one image of `shape`."""
    import torch
    from torch import nn
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(module).propagate(torch.zeros(shape))
    flops = 0
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        sub = module.get_submodule(node.target)
        out = node.meta.get("tensor_meta")
        if out is None:
            continue
        numel = 1
        for d in out.shape:
            numel *= d
        if isinstance(sub, nn.Conv2d):
            flops += 2 * numel * (sub.in_channels // sub.groups) * sub.kernel_size[0] * sub.kernel_size[1]
        elif isinstance(sub, nn.Linear):
            flops += 2 * numel * sub.in_features
    return flops / shape[0]


def matmul_peak_gflops(threads: int, n: int, repeats: int) -> float:
    """The best fp32 GFLOP/s of an n x n matmul at the current thread count (torch.set_num_threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def runtime_child(args) -> dict:
    """Interleaved forward timings of every engine at every batch, in one process at one thread count."""
    import copy

    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch

    import ninport
    from ninport.speedup import optimize

    warnings.simplefilter("ignore")
    threads = args.threads
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    batches = [int(b) for b in args.batches.split(",")]
    base = ninport.load(args.prototxt, args.weights)
    chw = tuple(next(iter(ninport.describe(base).inputs.values()))[1:])
    flops = conv_flops_per_image(base, (1, *chw))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not args.spin:  # see benchmarks/nets.py: spinning threads on a shared machine measure contention
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    net = cv2.dnn.readNetFromCaffe(args.prototxt, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    fast = optimize(base)

    def torch_engine(module, channels_last_input=False):
        def run(x):
            with torch.inference_mode():
                xt = torch.from_numpy(x)
                if channels_last_input:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                return module(xt).numpy()
        return run

    def onnxruntime_run(x):
        return session.run(None, {input_name: x})[0]

    def opencv_run(x):
        net.setInput(x)
        return net.forward()

    engines = {"ninport torch": torch_engine(base), "ninport torch + optimize()": torch_engine(fast),
               "onnxruntime": onnxruntime_run, "OpenCV dnn": opencv_run}
    if args.options:  # the alternatives optimize() was chosen against
        from torch.fx.experimental import optimization as fx_opt
        channels_last = copy.deepcopy(base).to(memory_format=torch.channels_last)
        engines["option: channels_last only"] = torch_engine(channels_last, channels_last_input=True)
        engines["option: fx optimize_for_inference"] = torch_engine(fx_opt.optimize_for_inference(copy.deepcopy(base)))
    compile_seconds = None
    if args.compile:
        compiled = torch.compile(base)
        x = np.zeros((batches[-1], *chw), np.float32)
        start = time.perf_counter()
        torch_engine(compiled)(x)
        compile_seconds = time.perf_counter() - start
        engines["option: torch.compile"] = torch_engine(compiled)
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-120, 140, (b, *chw)).astype(np.float32) for b in batches}
    reference = {b: engines["ninport torch"](inputs[b]) for b in batches}
    max_rel = {}
    for name, run in engines.items():
        for b in batches:
            out = run(inputs[b]).reshape(reference[b].shape)
            err = float(np.abs(out - reference[b]).max() / np.abs(reference[b]).max())
            max_rel[name] = max(max_rel.get(name, 0.0), err)
            run(inputs[b])  # warm-up
    times = {(name, b): [] for name in engines for b in batches}
    names = list(engines)
    peak = 0.0  # measured once per round, best kept: a busy moment only lowers one sample
    for round_no in range(args.rounds):
        peak = max(peak, matmul_peak_gflops(threads, args.matmul_n, repeats=1))
        order = names[round_no % len(names):] + names[:round_no % len(names)]  # rotate who goes first
        for b in batches:
            reps = max(1, 2 // b)
            for name in order:
                start = time.perf_counter()
                for _ in range(reps):
                    engines[name](inputs[b])
                times[(name, b)].append((time.perf_counter() - start) / reps)
    rows = []
    for (name, b), samples in times.items():
        rows.append({"engine": name, "batch": b, "threads": threads, "median_s": statistics.median(samples),
                     "min_s": min(samples), "samples": len(samples), "max_rel_diff_vs_torch": max_rel[name]})
    return {"threads": threads, "flops_per_image": flops, "matmul_peak_gflops": peak, "matmul_n": args.matmul_n,
            "compile_seconds": compile_seconds, "rows": rows}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        print(json.dumps(load_child(*sys.argv[2:5])))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["runtime"])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prototxt", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--options", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--spin", action="store_true")
    args = ap.parse_args()
    print(json.dumps(runtime_child(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
