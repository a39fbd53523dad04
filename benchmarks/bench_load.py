"""Load-time benchmark: ninport's caffemodel reader vs plain protobuf vs OpenCV, on NIN (~30 MB).

Every measurement runs in a fresh Python subprocess: imports happen first (not timed), then the
peak-RSS counter is reset, the operation is timed, and the RSS high-water mark above the
pre-operation RSS is reported. Runs of the methods are interleaved (A B C A B C ...) so machine
drift hits all of them alike. Quote the ratios, not the absolute times: the machines are shared.

    python benchmarks/bench_load.py [--weights PATH] [--prototxt PATH] [--runs 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASE = REPO.parent / "shared" / "caffe-golden" / "nin_v1_224"

# Each child prints one JSON line: {"seconds": ..., "rss_delta_mb": ...}.
CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, REPO_PATH)
method, prototxt, weights = sys.argv[1:4]

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

if method in ("read_caffemodel", "ninport_attach", "ninport_load"):
    import torch, ninport
    from ninport.caffe import io
    from ninport.caffe.shapes import infer_shapes
    from ninport.caffe.weights import attach_weights
elif method == "protobuf_numpy":
    import numpy as np
    from ninport.caffe import caffe_pb2
elif method == "opencv":
    import cv2
warnings.simplefilter("ignore")
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM so import peaks do not count
except OSError:
    pass
base = rss_kb("VmRSS")
t0 = time.perf_counter()
if method == "read_caffemodel":
    layers = io.read_caffemodel(weights)
    # blobs may be zero-copy views of the mapped file: ninport_load below is the full cost
    count = sum(b.data.size for layer in layers for b in layer.blobs)
elif method == "ninport_attach":
    spec = ninport.load_spec(prototxt)
    weights_by_layer = attach_weights(spec, infer_shapes(spec), io.read_caffemodel(weights), weights)
elif method == "ninport_load":
    module = ninport.load(prototxt, weights)
elif method == "protobuf_numpy":
    with open(weights, "rb") as fh:
        net = caffe_pb2.NetParameter.FromString(fh.read())
    arrays = [np.array(blob.data, dtype=np.float32) for layer in list(net.layer) + list(net.layers)
              for blob in layer.blobs]
elif method == "opencv":
    net = cv2.dnn.readNetFromCaffe(prototxt, weights)
seconds = time.perf_counter() - t0
peak = rss_kb("VmHWM")
print(json.dumps({"seconds": seconds, "rss_delta_mb": (peak - base) / 1024}))
"""

METHODS = {
    "read_caffemodel": "(a1) ninport.caffe.io.read_caffemodel",
    "ninport_attach": "(a2) ninport: prototxt + read_caffemodel + attach_weights",
    "ninport_load": "(a3) ninport.load (read + attach + build fx module)",
    "protobuf_numpy": "(b) protobuf NetParameter.FromString + np.array(blob.data)",
    "opencv": "(c) cv2.dnn.readNetFromCaffe",
}


def measure(method: str, prototxt: Path, weights: Path) -> dict:
    code = f"REPO_PATH = {str(REPO)!r}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code, method, str(prototxt), str(weights)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prototxt", type=Path, default=DEFAULT_CASE / "net.prototxt")
    ap.add_argument("--weights", type=Path, default=DEFAULT_CASE / "weights.caffemodel")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if not args.weights.is_file():
        print(f"no caffemodel at {args.weights} (the NIN golden case lives in ../shared/caffe-golden)")
        return 2
    try:
        import cv2  # noqa: F401
    except ImportError:
        methods = [m for m in methods if m != "opencv"]
    results = {m: [] for m in methods}
    measure(methods[0], args.prototxt, args.weights)  # warm the page cache
    for _ in range(args.runs):
        for m in methods:
            results[m].append(measure(m, args.prototxt, args.weights))
    size_mb = args.weights.stat().st_size / 2**20
    print(f"weights: {args.weights} ({size_mb:.1f} MiB), {args.runs} runs each, fresh subprocess per run")
    print(f"{'method':62s} {'min s':>8s} {'median s':>9s} {'peak RSS delta MiB (median)':>28s}")
    med = {}
    for m in methods:
        secs = [r["seconds"] for r in results[m]]
        rss = statistics.median(r["rss_delta_mb"] for r in results[m])
        med[m] = statistics.median(secs)
        print(f"{METHODS[m]:62s} {min(secs):8.3f} {med[m]:9.3f} {rss:28.1f}")
    print("\nratios of medians (time):")
    for a in ("read_caffemodel", "ninport_attach", "ninport_load"):
        for b in ("protobuf_numpy", "opencv"):
            if a in med and b in med:
                print(f"  {a} / {b}: {med[a] / med[b]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
