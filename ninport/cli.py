"""The `ninport` command: convert, inspect, verify, predict, upgrade.

A thin layer over the library (`ninport.convert_files`, `summary`, `verify`, `classify`,
`caffe.upgrade_file`): it parses arguments, logs progress on stderr and prints results.

Exit codes: 0 success, 1 bad input (one line on stderr, no traceback; `--debug` shows it), 2 an
internal error (a bug: please report it), 3 a parity mismatch, 4 `predict` ran but some images could
not be read (each has an error in the results), 130 interrupted, 141 output pipe closed (e.g. `| head`).
Text from model files is printed escaped (`safe_text`) and never as rich markup.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

from ninport.errors import NinportError, counted, escape_unsafe, safe_text

EXAMPLES = {
    "convert": "ninport convert reference_models/nin_imagenet/deploy.prototxt --weights nin_imagenet.caffemodel "
               "-o out/",
    "inspect": "ninport inspect reference_models/nin_imagenet/deploy.prototxt --input-shape 1,3,227,227",
    "verify": "ninport verify tests/fixtures/caffe-golden/mini_resnet",
    "upgrade": "ninport upgrade reference_models/nin_imagenet/train_val.prototxt -o train_val_new.prototxt",
    "predict": "ninport predict reference_models/nin_imagenet/deploy.prototxt --weights nin_imagenet.caffemodel "
               "cat.jpg --mean-values 104,117,123 --resize 256,256 --crop 224 --labels synset_words.txt",
}

EXIT_OK, EXIT_ERROR, EXIT_INTERNAL, EXIT_FAILED_PARITY = 0, 1, 2, 3
EXIT_SOME_IMAGES_FAILED = 4  # predict on many images: some could not be read; the others' results are out
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


# --- output ----------------------------------------------------------------------------------


def _console(stderr: bool = False):
    """A rich console that never interprets markup or emoji codes: file text is shown as it is."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich exits 1 here; ninport's main handles it (exit 141)
            raise BrokenPipeError

    file = sys.stderr if stderr else sys.stdout
    return _Console(file=file, width=None if file.isatty() else 160, highlight=False, markup=False, emoji=False)


def _text(value: object, limit: int = 200):
    """A rich Text of `value` with control characters escaped: a table cell that is never markup."""
    from rich.text import Text

    return Text(safe_text(value, limit))


def _err(message: str) -> None:
    print(f"ninport: {escape_unsafe(message)}", file=sys.stderr, flush=True)


class _Progress:
    """Stage messages on stderr: a spinner on a terminal, one `ninport: <stage>...` line otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = _console(stderr=True)
        self.status = None

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        text = safe_text(message, 300) + "..."
        if self.console.is_terminal:
            if self.status is None:
                self.status = self.console.status(text)
                self.status.start()
            else:
                self.status.update(text)
        else:
            _err(text)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


@contextlib.contextmanager
def _working(args) -> Iterator[Callable[[str], None]]:
    """Progress reporting plus ninport's warnings as one line each, for the duration of a command."""
    from ninport.errors import NinportWarning

    progress = _Progress(getattr(args, "quiet", False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield progress
        finally:
            progress.stop()
        # only when the command got through: an error stays the one line it is
        seen = set()
        for w in caught:
            line = safe_text(w.message, 1000)
            if issubclass(w.category, NinportWarning) and line not in seen:
                seen.add(line)
                _err(f"warning: {line}")


def _shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _inputs_line(inputs: dict) -> str:
    from ninport.errors import shape_text

    return ", ".join(f"{safe_text(name, 80)} {shape_text(shape)}" for name, shape in inputs.items())


# --- argument types: a bad value is exit 1 with a message naming the flag ----------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def tolerance_value(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def mean_values(text: str) -> list[float]:
    """'104,117,123' -> [104.0, 117.0, 123.0] (BGR)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 104,117,123, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'[NAME=]1,3,227,227' -> (NAME or "", (1, 3, 227, 227)); see `input_shapes`."""
    from ninport.api import parse_input_shape

    name, _, dims = text.rpartition("=")
    try:
        return name.strip(), parse_input_shape(dims)
    except NinportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def input_shapes(given: list[tuple[str, tuple[int, ...]]] | None, net: str | None, dialect: str | None):
    """The repeated --input-shape flags as the library's `input_shape`: None, one shape (for the first input),
    or {input name: shape}. A shape without NAME= among others is the first input's, read from the net
    (`net`: a prototxt, or a golden folder holding one)."""
    if not given:
        return None
    if len(given) == 1 and not given[0][0]:
        return given[0][1]
    first = ""
    if any(not name for name, _ in given):
        from ninport.api import load_spec

        prototxt = Path(net or "")
        if prototxt.is_dir():
            from ninport.check.parity import GoldenFolder

            prototxt = GoldenFolder.open(prototxt).prototxt
        first = next(iter(load_spec(prototxt, dialect=dialect).inputs))
    return {name or first: dims for name, dims in given}


def image_size(text: str) -> tuple[int, int]:
    """'256' or '256,256' (H,W)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}")
    sizes = [positive_int(p) for p in parts]
    return sizes[0], sizes[-1]


def format_list(text: str) -> list[str]:
    from ninport.export.formats import FORMATS

    formats = [f.strip() for f in text.split(",") if f.strip()]
    if not formats:
        raise argparse.ArgumentTypeError("no output format given")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return formats


class _Parser(argparse.ArgumentParser):
    """argparse with ninport's error contract: a bad value is one line on stderr and exit 1."""

    def error(self, message: str):  # noqa: D401 - argparse's API
        self.exit(EXIT_ERROR, f"ninport: error: {self.prog}: {message} (see {self.prog} --help)\n")


# --- convert ---------------------------------------------------------------------------------


def cmd_convert(args) -> int:
    import ninport

    with _working(args) as progress:
        result = ninport.convert_files(args.prototxt, args.weights, args.output,
                                       input_shape=input_shapes(args.input_shape, args.prototxt, args.dialect),
                                       formats=args.format, check=not args.no_check, progress=progress,
                                       dynamic_size=True if args.dynamic else False if args.static else None,
                                       dialect=args.dialect)
    meta = result.description
    weights = safe_text(result.weights) if result.weights else "RANDOM (none given)"
    size = f" ({safe_text(result.input_size.describe(), 600)})" if result.input_size is not None else ""
    print(f"net {safe_text(meta.title or result.prototxt.stem)!r}: inputs {_inputs_line(meta.inputs)}{size}, "
          f"outputs {', '.join(safe_text(o, 80) for o in meta.outputs)}; weights: {weights}")
    for kind, path in result.written.items():
        print(f"wrote {safe_text(path)}  ({kind})")
    if args.no_check:
        print(f"not checked (--no-check): {', '.join(safe_text(p.name) for p in result.written.values())}")
        return EXIT_OK
    return _report_checks(list(result.checks.values()))


# How each format's check ran, for the `checked:` lines.
CHECK_RUNNERS = {"onnx": "onnxruntime", "pt2": "torch.export.load", "py": "a Python without ninport"}


def _report_checks(checks: list) -> int:
    """One line per written file: `checked: ...`, `not checked: ...`, or an error (exit 3)."""
    code = EXIT_OK
    for check in checks:
        name = safe_text(Path(check.path).name)
        runner = CHECK_RUNNERS.get(check.format, check.format)
        if check.status == "skipped":
            print(f"not checked: {name}: {safe_text(check.message, 1000)}")
        elif check.status == "inconclusive":
            _err(f"warning: not checked: {name}: {safe_text(check.message, 1000)}")
        elif check.status == "failed":
            bad = [b for b in check.blobs if not b.passed]
            worst = ", ".join(f"{safe_text(b.name, 60)} ({safe_text(b.role, 100)}, relative error {b.relative:.3g}"
                              + (f", {safe_text(b.note)}" if b.note else "") + ")" for b in bad)
            what = (f"{runner}'s output differs from the torch model's on {worst}" if bad
                    else safe_text(check.message, 1000))
            _err(f"error: {safe_text(check.path)}: {what}; please report this")
            code = EXIT_FAILED_PARITY
        elif check.format == "safetensors":
            print(f"checked: {name} holds {safe_text(check.message, 1000)}")
        else:
            print(f"checked: {runner} runs {name} with the torch model's numbers on {check.compared} "
                  f"(max relative error {check.worst:.2g})")
            if check.message:
                print(f"note: {safe_text(check.message, 1000)}")
    if any(c.status == "passed" for c in checks):
        print("(`ninport verify` compares with Caffe's own outputs)")
    return code


# --- inspect ---------------------------------------------------------------------------------


def _fmt_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n) if n else ""


def cmd_inspect(args) -> int:
    import json

    import ninport

    with _working(args) as progress:
        if args.weights:  # reading a prototxt takes milliseconds; a caffemodel can take seconds
            progress(f"checking {args.weights} against the net")
        net = ninport.summary(args.prototxt, input_shape=input_shapes(args.input_shape, args.prototxt, args.dialect),
                              weights=args.weights,
                              dialect=args.dialect)
    if args.json:
        print(json.dumps(net.to_json(), indent=2))  # JSON escapes control characters itself
        return EXIT_OK
    from rich.table import Table

    out = Table(title=_text(f"{net.name}  ({net.source_format} format, {net.source})", 400))
    for column in ("layer", "type", "bottom → top", "output shape", "settings", "parameters", "MACs"):
        out.add_column(column, justify="right" if column in ("parameters", "MACs") else "left")
    for name, shape in net.inputs.items():
        out.add_row(_text(name), _text("Input"), _text(f"→ {name}"), _text(_shape(shape)), "", "", "")
    for row in net.layers:
        arrow = f"{', '.join(row.bottoms)} → {', '.join(row.tops)}" + (" (in place)" if row.in_place else "")
        count = f"{row.parameters:,}" if row.parameters else ""
        if row.statistics:
            count = f"{row.statistics:,} statistics"
        out.add_row(_text(row.layer), _text(row.type), _text(arrow, 400),
                    _text("; ".join(_shape(s) for s in row.output_shapes)), _text(row.settings), count,
                    _fmt_count(row.macs))
    console = _console()
    console.print(out)
    console.print(f"inputs: {_inputs_line(net.inputs)}   outputs (Caffe order): "
                  f"{', '.join(safe_text(o, 80) for o in net.outputs)}")
    statistics = (f", plus {net.statistics:,} stored statistics (running means and variances such as BatchNorm's: "
                  "in the caffemodel, not parameters)") if net.statistics else ""
    console.print(f"total: {counted(len(net.layers), 'layer')}, {counted(net.parameters, 'parameter')} "
                  f"(learnable){statistics}; "
                  f"{net.macs_per_image / 1e9:.3f} GMAC per image, {net.macs / 1e9:.3f} GMAC per forward at "
                  f"batch {net.batch}")
    if net.size_fixed_by:
        console.print("input size: fixed by " + "; ".join(f"{safe_text(layer, 80)} ({safe_text(reason, 200)})"
                                                         for layer, reason in net.size_fixed_by))
    else:
        console.print("input size: any size the layers allow (every size-dependent quantity is computed at run time)")
    if net.weights:
        console.print(f"weights: {safe_text(net.weights.path)} fits the net: {counted(net.weights.layers, 'layer')}, "
                      f"{counted(net.weights.values, 'value')}")
    return EXIT_OK


# --- verify ----------------------------------------------------------------------------------


def cmd_verify(args) -> int:
    import ninport

    with _working(args) as progress:
        report = ninport.verify(args.target, weights=args.weights, golden=args.golden,
                                input_shape=input_shapes(args.input_shape, args.target, args.dialect),
                                tolerance=args.tolerance, seed=args.seed,
                                opencv=not args.no_opencv, onnx=not args.no_onnx, progress=progress,
                                dialect=args.dialect)
    from rich.table import Table

    console = _console()
    console.print(f"inputs: {safe_text(report.inputs_source)}")
    for comparison in report.comparisons:
        table = Table(title=_text(f"vs {comparison.reference}  (tolerance {comparison.tolerance:g} relative)"))
        for column in ("blob", "shape", "max abs error", "relative error", "result"):
            table.add_column(column)
        for row in comparison.rows:
            table.add_row(_text(row.name), _text(_shape(row.shape)), f"{row.max_abs:.3g}", f"{row.relative:.3g}",
                          _text(row.result))
        for name in comparison.missing_in_reference:
            table.add_row(_text(name), "", "", "", _text("FAIL not in the reference"))
        for name in comparison.missing_in_ninport:
            table.add_row(_text(name), "", "", "", _text("FAIL not computed by ninport"))
        console.print(table)
        console.print(f"{safe_text(comparison.reference)}: {comparison.verdict()}")
    for skipped in report.skipped:
        console.print(f"skipped {skipped.reference}: {safe_text(skipped.reason, 400)}")
    if not report.comparisons:
        _err("error: no reference to verify against (give a golden folder, or install OpenCV 4.x or onnxruntime)")
        return EXIT_ERROR
    return EXIT_OK if report.passed else EXIT_FAILED_PARITY


# --- predict on many images (ninport.apps.batch) ---------------------------------------------------


@contextlib.contextmanager
def _results_stream(output: str | None):
    """stdout, or a file written under a temporary name and renamed into place when the run ends."""
    if output is None:
        yield sys.stdout
        return
    from ninport.fileio import atomic_path

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="", errors="surrogateescape") as fh:
        yield fh


def _results_format(args) -> str:
    if args.jsonl or args.csv:
        return "jsonl" if args.jsonl else "csv"
    if args.output is None:
        return "text"
    kind = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(Path(args.output).suffix.lower())
    if kind is None:
        raise NinportError(f"{safe_text(args.output)}: give --jsonl or --csv (or name the file .jsonl or .csv)")
    return kind


def cmd_predict_many(args) -> int:
    """Folders, patterns, --jsonl/--csv/-o/--batch: each image's result streamed as it is ready, a progress
    bar on stderr, a summary at the end; exit 4 when some images could not be read."""
    import time

    from ninport.apps import batch

    kind = _results_format(args)
    failed, first_failure = 0, None
    with _working(args) as progress, _results_stream(args.output) as stream:
        run = batch.predict_many(args.prototxt, args.images, args.weights, recursive=args.recursive,
                                 batch=args.batch or batch.DEFAULT_BATCH, mean_file=args.mean_file,
                                 mean_values=args.mean_values, scale=args.scale, crop=args.crop, resize=args.resize,
                                 channel_order=args.channel_order, top=args.top, threshold=args.threshold,
                                 labels=args.labels, draw=args.draw, progress=progress, dialect=args.dialect)
        progress.stop()
        found = run.found
        preprocessing = f"preprocessing: {safe_text(run.preprocessing.describe(), 1000)}"
        if kind == "text":
            print(preprocessing)
        elif not args.quiet:
            _err(preprocessing)
        if not args.quiet and (found.skipped or found.unsearched):
            _err(f"{len(run):,} images; left out: {found.skipped:,} other files" + (
                f", {found.unsearched:,} subfolders (--recursive searches them)" if found.unsearched else ""))
        bar = None if args.quiet else batch.ProgressBar(len(run))
        shares_terminal = bar is not None and bar.live and stream is sys.stdout and sys.stdout.isatty()
        writer = batch.OutcomeWriter(stream, kind, run.detector)
        start = time.monotonic()
        for done, outcome in enumerate(run, 1):
            if not outcome.ok:
                failed += 1
                first_failure = first_failure or outcome.error
            if shares_terminal:
                bar.clear()
            writer.write(outcome)
            if shares_terminal:
                stream.flush()
            if bar is not None:
                bar.update(done, failed)
        if bar is not None:
            bar.close()
        summary = batch.RunSummary(len(run), failed, time.monotonic() - start, first_failure)
    if failed or not args.quiet:
        _err(summary.line())
    return EXIT_SOME_IMAGES_FAILED if failed else EXIT_OK


# --- predict ---------------------------------------------------------------------------------


def cmd_predict(args) -> int:
    import json

    import ninport
    from ninport.apps import batch

    if args.json + args.jsonl + args.csv > 1:
        raise ninport.NinportError("give one of --json, --jsonl and --csv")
    many = batch.needs_many(args.images) or args.recursive
    if not args.json and (many or args.jsonl or args.csv or args.output or args.batch):
        return cmd_predict_many(args)
    if args.output or args.batch:
        raise ninport.NinportError("--json prints one document at the end; -o and --batch stream results: use "
                                   "--jsonl (or redirect --json's output)")
    images = [str(p) for p in batch.find_images(args.images, recursive=args.recursive).paths] if many else args.images
    with _working(args) as progress:
        result = ninport.classify(args.prototxt, images, args.weights, mean_file=args.mean_file,
                                  mean_values=args.mean_values, scale=args.scale, crop=args.crop,
                                  resize=args.resize, channel_order=args.channel_order, top=args.top,
                                  threshold=args.threshold, labels=args.labels, draw=args.draw, progress=progress,
                                  dialect=args.dialect)
    pre = result.preprocessing
    if args.json:
        print(json.dumps({
            "weights": result.weights,
            "preprocessing": {"resize": list(pre.resize), "crop": pre.crop, "mean_values": list(pre.mean_values),
                              "mean_file": pre.mean_file, "scale": pre.scale, "channel_order": pre.channel_order,
                              "declared": pre.declared, "origin": list(pre.origin)},
            **({"detection": {"threshold": result.threshold, "confidence_threshold": result.net_threshold,
                              "top": args.top, "labels": result.labels}} if result.threshold is not None else {}),
            "predictions": [{"image": p.image, **({"detections": [d.as_dict() for d in p.detections],
                                                   "left_out": {"below_threshold": p.selection.below_threshold,
                                                                "empty": p.selection.empty,
                                                                "beyond_top": p.selection.beyond_top}}
                                                  if p.detections is not None else
                                                  {"top": [{"class": c.index, "score": c.score,
                                                            **({"label": c.label} if c.label is not None else {})}
                                                           for c in p.top]}),
                             **({"drawing": p.drawing} if p.drawing else {})} for p in result.predictions],
        }, indent=2))
        return EXIT_OK
    print(f"preprocessing: {safe_text(pre.describe(), 1000)}")
    if result.threshold is not None:
        below = (f" (the prototxt's confidence_threshold is {result.net_threshold:g})"
                 if result.net_threshold is not None and result.net_threshold != result.threshold else "")
        labels = f"; labels from {safe_text(result.labels)}" if result.labels else ""
        print(f"detections: score >= {result.threshold:g}{below}, boxes clipped to the image, best first"
              + (f", at most {args.top}" if args.top else "") + labels)
    from ninport.apps.detect import format_detections

    for prediction in result.predictions:
        if prediction.detections is not None:
            print(format_detections(prediction.image, prediction.detections, prediction.selection))
            if prediction.drawing:
                print(f"  boxes drawn on {safe_text(prediction.drawing)}")
            continue
        print(safe_text(prediction.image))
        for rank, c in enumerate(prediction.top, 1):
            label = f"  {safe_text(c.label)}" if c.label is not None else ""
            print(f"  {rank}. class {c.index:<5d} score {c.score:.6g}{label}")
    return EXIT_OK


# --- upgrade ---------------------------------------------------------------------------------


def cmd_upgrade(args) -> int:
    from ninport.caffe.upgrade_file import upgrade_file

    target, fmt = upgrade_file(Path(args.input), Path(args.output) if args.output else None)
    print(f"wrote {safe_text(target)}  (upgraded from the {fmt} format)")
    return EXIT_OK


# --- the parser: one function per command, so a flag is added in one place --------------------

SHAPE_HELP = ("override an input's shape: 1,3,227,227 for the first input, or NAME=1,3,227,227; repeat for "
              "several inputs (the batch stays dynamic in ONNX)")


def add_convert(sub) -> argparse.ArgumentParser:
    p = _command(sub, "convert", "convert a Caffe net to ONNX (and optionally .pt2 / .py / .safetensors)",
                 "Write DIR/<stem>.onnx (and the other --format files) from PROTOTXT and its weights. Without\n"
                 "--weights, <stem>.caffemodel beside the prototxt is used; with none found, the net gets seeded\n"
                 "RANDOM weights and a warning. Every file written is then checked against the torch model on a\n"
                 "seeded input: the ONNX file in onnxruntime (every output, and the logits before a final\n"
                 "Softmax), the .pt2 program loaded and run, the .py file run in a Python without ninport, the\n"
                 ".safetensors tensors bit for bit. Exit code 3 if one differs. Height and width are symbolic in\n"
                 "ONNX/.pt2 when the net runs at other sizes; otherwise the summary line says which layer fixes them.")
    p.add_argument("prototxt")
    p.add_argument("--weights", help="the .caffemodel (default: <stem>.caffemodel beside the prototxt)")
    p.add_argument("-o", "--output", default=".", help="output folder (default: current folder)")
    p.add_argument("--input-shape", action="append", type=input_shape, metavar="[NAME=]N,C,H,W", help=SHAPE_HELP)
    p.add_argument("--format", default=["onnx"], type=format_list, metavar="FORMATS",
                   help="comma-separated: onnx, pt2, safetensors, py (default: onnx)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--static", action="store_true", help="fix height and width at the input shape in ONNX/.pt2 "
                      "(default: symbolic when the net runs at other sizes, fixed otherwise, saying why)")
    size.add_argument("--dynamic", action="store_true", help="symbolic height and width in ONNX/.pt2, or an error "
                      "naming the layer that fixes the net's input size")
    p.add_argument("--no-check", action="store_true",
                   help="skip checking the written files against the torch model")
    p.set_defaults(func=cmd_convert)
    return p


def add_inspect(sub) -> argparse.ArgumentParser:
    p = _command(sub, "inspect", "show the layer table: shapes, parameters, MACs",
                 "Print every layer with bottom → top, output shape, settings, learnable parameters and MACs, with\n"
                 "totals (stored statistics, such as BatchNorm's mean and variance, are counted apart: they are not\n"
                 "parameters); with --weights, also check that the caffemodel fits the net (names, blob counts,\n"
                 "shapes).")
    p.add_argument("prototxt")
    p.add_argument("--weights", help="a .caffemodel to check against the net")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--input-shape", action="append", type=input_shape, metavar="[NAME=]N,C,H,W", help=SHAPE_HELP)
    p.set_defaults(func=cmd_inspect)
    return p


def add_verify(sub) -> argparse.ArgumentParser:
    p = _command(sub, "verify", "per-blob parity report against Caffe's outputs, OpenCV and onnxruntime",
                 "TARGET is a golden folder (case.json, net.prototxt, weights, inputs.npz, blobs.npz written from\n"
                 "real Caffe) or a prototxt. Every blob is compared with the golden outputs (a blob on one side only\n"
                 "fails); the net's outputs with OpenCV 4.x's Caffe importer and with onnxruntime on the exported\n"
                 "ONNX. Exit code 3 on a mismatch.")
    p.add_argument("target", help="golden folder or prototxt")
    p.add_argument("--weights", help="the .caffemodel")
    p.add_argument("--golden", help="golden folder with inputs.npz and blobs.npz to compare against")
    p.add_argument("--input-shape", action="append", type=input_shape, metavar="[NAME=]N,C,H,W", help=SHAPE_HELP)
    p.add_argument("--tolerance", type=tolerance_value, default=1e-5, help="max relative error (default 1e-5)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random inputs when no golden folder")
    p.add_argument("--no-opencv", action="store_true", help="skip the OpenCV cross-check")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime check")
    p.set_defaults(func=cmd_verify)
    return p


def add_predict(sub) -> argparse.ArgumentParser:
    p = _command(sub, "predict", "classify images or detect objects (SSD), preprocessed as Caffe did",
                 "Read each image as BGR 0-255 (OpenCV or Pillow; or an HxWxC .npy array), resize it (default: the\n"
                 "mean file's size, else the net's input size), then crop, subtract the mean and scale as Caffe's\n"
                 "DataTransformer. Unless given here, settings come from <stem>.preprocess.json beside the prototxt,\n"
                 "then the net's data layer. Says what was used, and warns when no mean is subtracted. Prints the\n"
                 "top classes of the first output; for a detector (SSD DetectionOutput), the boxes scoring at least\n"
                 "--threshold, clipped to the image.")
    p.add_argument("prototxt")
    p.add_argument("images", nargs="+", help="image files (.jpg, .png, ...) or HxWxC BGR .npy arrays, folders of "
                   "them, or quoted glob patterns ('photos/**/*.jpg')")
    p.add_argument("--weights", help="the .caffemodel (default: <stem>.caffemodel beside the prototxt)")
    mean = p.add_mutually_exclusive_group()
    mean.add_argument("--mean-file", help="a .binaryproto mean image")
    mean.add_argument("--mean-values", type=mean_values, metavar="B,G,R",
                      help="per-channel means in the net's channel order (BGR for Caffe), e.g. 104,117,123")
    p.add_argument("--scale", type=finite_float, help="multiply after mean subtraction (transform_param.scale)")
    p.add_argument("--crop", type=positive_int,
                   help="center crop size (default: the preprocess file's, else the data layer's crop_size)")
    p.add_argument("--resize", type=image_size, metavar="H,W",
                   help="resize to H,W before cropping, e.g. 256,256 (one number: a square)")
    p.add_argument("--channel-order", choices=("BGR", "RGB"),
                   help="the channel order the net takes (default: the preprocess file's, else BGR as Caffe)")
    p.add_argument("--labels", help="class names, one per line (e.g. synset_words.txt; detectors: line N names "
                   "label N); default for detectors: the prototxt's label_map_file")
    p.add_argument("--top", type=positive_int, help="how many classes to show (default 5), or detections (default all)")
    p.add_argument("--threshold", type=finite_float, metavar="SCORE",
                   help="detectors: show boxes scoring at least SCORE (default 0.5; never below the prototxt's "
                   "confidence_threshold)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--draw", metavar="OUT.jpg", help="detectors: draw the shown boxes on the image(s), write OUT.jpg")
    add_predict_many_options(p)
    p.set_defaults(func=cmd_predict)
    return p


def add_predict_many_options(p: argparse.ArgumentParser) -> None:
    many = p.add_argument_group(
        "many images", "Folders, patterns, or any option below: each image's result is written as soon as it\n"
        "is ready, with a progress bar on stderr and a summary at the end. An image that cannot be read\n"
        "gets an error in the results and the run goes on; the exit code is then 4.")
    many.add_argument("-r", "--recursive", action="store_true", help="also read the image files in subfolders")
    many.add_argument("--batch", type=positive_int, metavar="N",
                      help="images per forward pass (default 8); the results are those of one image at a time")
    many.add_argument("--jsonl", action="store_true", help="one JSON object per image: image, then top, "
                      "detections or error")
    many.add_argument("--csv", action="store_true", help="CSV with a header: a row per top class (or "
                      "detection) of each image")
    many.add_argument("-o", "--output", metavar="FILE", help="write the results to FILE (renamed into place when "
                      "the run ends) instead of stdout")


def add_upgrade(sub) -> argparse.ArgumentParser:
    p = _command(sub, "upgrade", "rewrite a V0/V1 prototxt or caffemodel in the current format",
                 "Like Caffe's upgrade_net_proto_text / upgrade_net_proto_binary: a .prototxt is written as text,\n"
                 "a .caffemodel as binary. Default output: <stem>_upgraded<suffix> beside the input.")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="where to write the upgraded file")
    p.set_defaults(func=cmd_upgrade)
    return p


COMMANDS = (add_convert, add_inspect, add_verify, add_predict, add_upgrade)
PLUGIN_COMMANDS = ("convert", "inspect", "verify", "predict")


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    """`--plugin FILE` (repeatable): import the user's own layer types (ninport.register_layer) before the
    command runs. The file is the user's own code; model files never are."""
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a Python file of your own that registers layer types with ninport.register_layer "
                        "(imported as code; repeat for several)")
    p.add_argument("--dialect", metavar="NAME",
                   help="read the net as a Caffe fork that gave standard layer types other semantics: hed "
                        "(HED's Crop); default: BVLC Caffe's")
    command = p.get_default("func")

    def run_with_plugins(args) -> int:
        from ninport.plugins import load_plugins

        load_plugins(args.plugin)
        return command(args)

    p.set_defaults(func=run_with_plugins)


def _command(sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=description + f"\n\nExample:\n  {EXAMPLES[name]}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def build_parser() -> argparse.ArgumentParser:
    from ninport import __version__

    parser = _Parser(
        prog="ninport",
        description="Bring Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe: ONNX, a\n"
                    "torch.export .pt2, a standalone PyTorch .py file or a .safetensors state dict, each checked\n"
                    "against the converted model; classify images or detect objects (SSD) with the converted net.",
        epilog="Examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ninport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        p = add(sub)
        if p.prog.split()[-1] in PLUGIN_COMMANDS:
            add_plugin_option(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below
        return code
    except NinportError as exc:
        if args.debug:
            raise
        _err(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:
        # the reader went away (`ninport inspect ... | head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # anything else is a bug in ninport: say so, briefly
        if args.debug:
            raise
        _err(f"internal error: {type(exc).__name__}: {safe_text(' '.join(str(exc).split()), 300)} "
             "(rerun with --debug for the traceback, and please report it)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
