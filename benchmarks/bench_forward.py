"""Forward-pass benchmark: NIN (224x224) in ninport's torch.fx module vs OpenCV dnn, batch 1 and 8.

Both run in this one process on the same input and the same real-Caffe-format weights, with the
same thread count for torch and OpenCV (--threads, default 1: on shared machines more threads mostly measure contention). Timed runs alternate
between the two engines so drift hits both alike; medians and the ratio ninport/OpenCV are printed
(< 1 means ninport is faster). Quote ratios, not absolute times: the machines are shared.

    python benchmarks/bench_forward.py [--runs 15] [--threads N] [--batches 1,8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CASE = REPO.parent / "shared" / "caffe-golden" / "nin_v1_224"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prototxt", type=Path, default=DEFAULT_CASE / "net.prototxt")
    ap.add_argument("--weights", type=Path, default=DEFAULT_CASE / "weights.caffemodel")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    if not args.weights.is_file():
        print(f"no caffemodel at {args.weights} (the NIN golden case lives in ../shared/caffe-golden)")
        return 2

    import cv2
    import torch

    import ninport

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), {os.cpu_count()} cores")
    print(f"{'batch':>5s} {'ninport median ms':>18s} {'OpenCV median ms':>17s} {'ratio ninport/OpenCV':>21s} "
          f"{'(min-max of pairwise ratios)':>29s}  max rel diff")
    for batch in [int(b) for b in args.batches.split(",")]:
        shape = (batch, 3, 224, 224)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ninport.load(args.prototxt, args.weights, input_shape=shape)
        net = cv2.dnn.readNetFromCaffe(str(args.prototxt), str(args.weights))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        x = np.random.default_rng(batch).uniform(-120, 140, shape).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                return module(xt)

        def run_cv():
            net.setInput(x)
            return net.forward()

        a, b = run_torch(), run_cv()
        diff = float(np.abs(a.numpy().reshape(b.shape) - b).max() / np.abs(b).max())
        for _ in range(args.warmup):
            run_torch()
            run_cv()
        t_torch, t_cv = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run_torch()
            t1 = time.perf_counter()
            run_cv()
            t2 = time.perf_counter()
            t_torch.append(t1 - t0)
            t_cv.append(t2 - t1)
        ratios = [p / q for p, q in zip(t_torch, t_cv)]
        mt, mc = statistics.median(t_torch), statistics.median(t_cv)
        print(f"{batch:5d} {mt * 1e3:18.1f} {mc * 1e3:17.1f} {statistics.median(ratios):21.2f} "
              f"{f'({min(ratios):.2f}-{max(ratios):.2f})':>29s}  {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
