"""Benchmark section "predict": `ninport predict` on a folder of images against a plain Python loop.

    python -m benchmarks.predict_folder --prototxt P --weights W --images DIR [--rounds R] [--batch B]

One child process (the parent sets its thread count) times, in interleaved rounds (who goes first
rotates), each way of classifying every image of DIR with NIN's usual preprocessing (resize 256, crop
224, mean 104,117,123); every method includes one load of the net, as a user's run would:

- `predict_many`: what `ninport predict DIR` runs: `--batch B` images per forward, read ahead in a thread;
- the same at batch 1 (read-ahead alone);
- `classify(all images)`: ninport.classify with the list: one load, then one image at a time, no read-ahead;
- a plain loop `for p in images: classify(prototxt, [p], weights)`: the single-image call, net loaded each time.

It prints one JSON line: per method the median seconds, and whether its top-5 classes are those of
`classify` for every image (batches must not change results).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

PREPROCESSING = {"mean_values": [104, 117, 123], "resize": (256, 256), "crop": 224}
METHODS = {
    "batched": "ninport predict folder (batch B, read-ahead)",
    "batch1": "ninport predict folder (batch 1, read-ahead)",
    "classify_list": "classify(all images): one at a time",
    "classify_loop": "loop: classify([image]) per image",
}


def synthetic_images(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` seeded 320x240 JPEGs (smooth noise, so they decode like photos), made once into `folder`."""
    import cv2
    import numpy as np

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        image = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), image)
    return folder


def child(args) -> dict:
    import torch  # noqa: F401  (imported before the clock starts)

    import ninport
    from ninport.apps import batch

    warnings.simplefilter("ignore")
    folder = Path(args.images)
    paths = [str(p) for p in batch.find_images([folder]).paths]

    def batched(size: int):
        def run():
            return [o.prediction for o in batch.predict_many(args.prototxt, [folder], args.weights, batch=size,
                                                             top=5, **PREPROCESSING)]
        return run

    def classify_list():
        return list(ninport.classify(args.prototxt, paths, args.weights, top=5, **PREPROCESSING).predictions)

    def classify_loop():
        return [ninport.classify(args.prototxt, [p], args.weights, top=5, **PREPROCESSING).predictions[0]
                for p in paths]

    methods = {"batched": batched(args.batch), "batch1": batched(1), "classify_list": classify_list,
               "classify_loop": classify_loop}
    reference = [[c.index for c in p.top] for p in classify_list()]
    same = {name: [[c.index for c in p.top] for p in run()] == reference for name, run in methods.items()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for round_no in range(args.rounds):
        for name in names[round_no % len(names):] + names[:round_no % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return {"images": len(paths), "batch": args.batch, "threads": torch.get_num_threads(),
            "rows": [{"method": name, "median_s": statistics.median(samples), "samples": len(samples),
                      "same_top5_as_classify": same[name]} for name, samples in times.items()]}


def bench_predict(run_child, weights: Path, prototxt: Path, cache: Path, *, images: int, rounds: int, batch: int,
                  threads: int, say) -> list[dict]:
    """The parent's side: make the images, run the child once at `threads`, turn its timings into rows."""
    folder = synthetic_images(cache / f"predict_images_{images}", images)
    say(f"predict: {images} images, batch {batch}, {threads} thread(s), {rounds} round(s)")
    _, _, stdout = run_child([sys.executable, "-m", "benchmarks.predict_folder", "--prototxt", str(prototxt),
                              "--weights", str(weights), "--images", str(folder), "--rounds", str(rounds),
                              "--batch", str(batch)], threads=threads)
    result = json.loads(stdout.strip().splitlines()[-1])
    by_method = {r["method"]: r for r in result["rows"]}
    rows = []
    for method, label in METHODS.items():
        r = by_method[method]
        rows.append({
            "section": "predict", "model": "NIN", "method": label.replace("batch B", f"batch {batch}"),
            "images": result["images"], "batch": batch, "threads": result["threads"], "median_s": r["median_s"],
            "rounds": r["samples"], "images_per_s": result["images"] / r["median_s"],
            "same_top5_as_classify": r["same_top5_as_classify"],
            "batched_over_this": by_method["batched"]["median_s"] / r["median_s"] if method != "batched" else None,
        })
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    """The PREDICT part of the benchmark table."""
    if not rows:
        return []
    first = rows[0]
    lines = ["", (f"PREDICT NIN on a folder of {first['images']} JPEGs 320x240 (resize 256, crop 224; each method "
                  f"loads the net once per run; {first['threads']} thread(s))"),
             f"{'method':46s} {'median s':>9s} {'img/s':>7s} {'batched/this':>12s} {'same top-5':>10s}"]
    for r in rows:
        ratio = "" if r["batched_over_this"] is None else f"{r['batched_over_this']:.2f}"
        lines.append(f"{r['method']:46s} {r['median_s']:9.2f} {r['images_per_s']:7.1f} {ratio:>12s} "
                     f"{'yes' if r['same_top5_as_classify'] else 'NO':>10s}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prototxt", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    print(json.dumps(child(ap.parse_args())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
