"""The `ninport` command: convert, inspect, verify, predict, upgrade.

Errors are one line on stderr with a non-zero exit code; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

from ninport.errors import NinportError

EXAMPLES = {
    "convert": "ninport convert reference_models/nin_imagenet/deploy.prototxt --weights nin_imagenet.caffemodel -o out/",
    "inspect": "ninport inspect reference_models/nin_imagenet/deploy.prototxt --input-shape 1,3,227,227",
    "verify": "ninport verify tests/fixtures/caffe-golden/mini_resnet",
    "upgrade": "ninport upgrade reference_models/nin_imagenet/train_val.prototxt -o train_val_new.prototxt",
    "predict": "ninport predict reference_models/nin_imagenet/deploy.prototxt --weights nin_imagenet.caffemodel "
               "cat.jpg --mean-values 104,117,123 --resize 256 --crop 224 --labels synset_words.txt",
}

EXIT_OK, EXIT_ERROR, EXIT_INTERNAL, EXIT_FAILED_PARITY = 0, 1, 2, 3


def _console(stderr: bool = False):
    from rich.console import Console

    file = sys.stderr if stderr else sys.stdout
    return Console(file=file, width=None if file.isatty() else 160, highlight=False)


@contextlib.contextmanager
def _progress(message: str):
    """A spinner on stderr for steps that may take more than a second (only on a terminal)."""
    console = _console(stderr=True)
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        yield


@contextlib.contextmanager
def _warnings_as_lines():
    """Show ninport's warnings (e.g. random weights) as one clear line each; hide library noise."""
    from ninport.errors import NinportWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, NinportWarning):
                    print(f"ninport: warning: {w.message}", file=sys.stderr)


# --- convert ---------------------------------------------------------------------------------


def cmd_convert(args) -> int:
    import ninport
    from ninport.api import default_weights_path
    from ninport.artifacts import check_formats, write_outputs

    formats = check_formats(f.strip() for f in args.format.split(",") if f.strip())
    prototxt = Path(args.prototxt)
    weights = args.weights or default_weights_path(prototxt)
    with _warnings_as_lines(), _progress("reading the net..."):
        module = ninport.load(prototxt, weights, input_shape=args.input_shape)
    meta = ninport.describe(module)
    print(f"net {meta.name or prototxt.stem!r}: inputs {', '.join(f'{k} {list(v)}' for k, v in meta.inputs.items())}"
          f" (batch dynamic), outputs {', '.join(meta.outputs)}; weights: {weights or 'RANDOM (none given)'}")
    with _progress("writing..."):
        written = write_outputs(module, args.output, prototxt.stem, formats,
                                dynamic_size=False if args.static else None)
    for kind, path in written.items():
        print(f"wrote {path}  ({kind})")
    if "onnx" in written and not args.no_check:
        return _check_onnx_against_torch(module, written["onnx"])
    return EXIT_OK


def _check_onnx_against_torch(module, path: Path, tolerance: float = 1e-4) -> int:
    """Run the written ONNX file in onnxruntime and the torch module on one seeded input; compare."""
    import torch

    from ninport.artifacts import verify_onnx
    from ninport.parity import relative_error

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
        return EXIT_OK
    import ninport

    meta = ninport.describe(module)
    inputs = _reference_inputs(meta.inputs)
    with _progress("checking the ONNX file in onnxruntime..."), torch.no_grad():
        expected = module(*[torch.from_numpy(inputs[name]) for name in meta.inputs])
        got = verify_onnx(path, inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    worst = max(relative_error(g, e.numpy())[1] for g, e in zip(got, expected))
    if not worst <= tolerance:
        print(f"ninport: error: {path}: onnxruntime's output differs from the torch model's "
              f"(relative error {worst:.3g}); please report this", file=sys.stderr)
        return EXIT_FAILED_PARITY
    print(f"checked: onnxruntime runs {path.name} with the torch model's numbers (max relative error {worst:.2g}); "
          f"`ninport verify` compares with Caffe's own outputs")
    return EXIT_OK


# --- inspect ---------------------------------------------------------------------------------


def layer_summary(layer) -> str:
    """A short description of a layer's parameters, like the table in NIN_FACTS.md."""
    from ninport.caffe import caffe_pb2 as pb2
    from ninport.caffe.shapes import conv_geometry

    p = layer.proto
    if layer.type in ("Convolution", "Deconvolution"):
        c = p.convolution_param
        g = conv_geometry(c)

        def fmt(prefix, pair, default):
            if pair == (default, default):
                return ""
            return f" {prefix}{pair[0]}" if pair[0] == pair[1] else f" {prefix}{pair[0]}x{pair[1]}"
        text = f"{c.num_output},{fmt('k', g.kernel, -1)}{fmt('s', g.stride, 1)}{fmt('pad ', g.pad, 0)}"
        text += fmt("d", g.dilation, 1)
        return text + (f" group {c.group}" if c.group != 1 else "") + ("" if c.bias_term else " no bias")
    if layer.type == "Pooling":
        q = p.pooling_param
        kind = pb2.PoolingParameter.PoolMethod.Name(q.pool)
        if q.global_pooling:
            return f"{kind} global"
        k = q.kernel_size or f"{q.kernel_h}x{q.kernel_w}"
        s = q.stride if not (q.HasField("stride_h") or q.HasField("stride_w")) else f"{q.stride_h}x{q.stride_w}"
        pad = q.pad if not (q.HasField("pad_h") or q.HasField("pad_w")) else f"{q.pad_h}x{q.pad_w}"
        return f"{kind} k{k} s{s}" + (f" pad {pad}" if pad else "")
    if layer.type == "InnerProduct":
        return f"{p.inner_product_param.num_output}"
    if layer.type == "Dropout":
        return f"{p.dropout_param.dropout_ratio:g}"
    if layer.type == "LRN":
        q = p.lrn_param
        return f"n{q.local_size} alpha {q.alpha:g} beta {q.beta:g}"
    if layer.type == "ReLU" and p.relu_param.negative_slope:
        return f"slope {p.relu_param.negative_slope:g}"
    if layer.type == "Eltwise":
        return pb2.EltwiseParameter.EltwiseOp.Name(p.eltwise_param.operation)
    return ""


def _fmt_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n) if n else ""


def layer_rows(spec, table) -> list[dict]:
    """One dict per layer: what `inspect` shows, for the table and for --json."""
    import math

    rows = []
    for layer in spec.layers:
        shapes = table.layers[layer.name]
        rows.append({
            "layer": layer.name, "type": layer.type, "bottoms": list(layer.bottoms), "tops": list(layer.tops),
            "in_place": bool(layer.bottoms) and layer.bottoms == layer.tops,
            "output_shapes": [list(table.blobs[t]) for t in layer.tops],
            "parameters": layer_summary(layer),
            "weights": sum(math.prod(s) for s in shapes.params), "macs": shapes.macs,
        })
    return rows


def cmd_inspect(args) -> int:
    import json

    from rich.table import Table

    from ninport.api import load_spec
    from ninport.caffe.shapes import infer_shapes

    spec = load_spec(args.prototxt, args.input_shape)
    table = infer_shapes(spec)
    rows = layer_rows(spec, table)
    fits = None
    if args.weights:
        from ninport.caffe.io import read_caffemodel
        from ninport.caffe.weights import attach_weights

        with _progress("reading the caffemodel..."):
            matched = attach_weights(spec, table, read_caffemodel(args.weights), args.weights)
        fits = (len(matched), sum(array.size for arrays in matched.values() for array in arrays))
    if args.json:
        print(json.dumps({
            "name": spec.name, "source": spec.source, "format": spec.source_format,
            "inputs": {k: list(v) for k, v in spec.inputs.items()}, "outputs": spec.outputs, "layers": rows,
            "total_weights": table.total_params, "total_macs": table.total_macs,
            **({"weights_file": str(args.weights), "weights_fit": True} if fits else {}),
        }, indent=2))
        return EXIT_OK
    out = Table(title=f"{spec.name or Path(args.prototxt).stem}  ({spec.source_format} format, {spec.source})")
    for column in ("layer", "type", "bottom → top", "output shape", "parameters", "weights", "MACs"):
        out.add_column(column, justify="right" if column in ("weights", "MACs") else "left")
    for name, shape in spec.inputs.items():
        out.add_row(name, "Input", f"→ {name}", "x".join(map(str, shape)), "", "", "")
    for row in rows:
        arrow = f"{', '.join(row['bottoms'])} → {', '.join(row['tops'])}" + (" (in place)" if row["in_place"] else "")
        out_shape = "; ".join("x".join(map(str, s)) for s in row["output_shapes"])
        out.add_row(row["layer"], row["type"], arrow, out_shape, row["parameters"],
                    f"{row['weights']:,}" if row["weights"] else "", _fmt_count(row["macs"]))
    console = _console()
    console.print(out)
    console.print(f"inputs: {', '.join(f'{k} {list(v)}' for k, v in spec.inputs.items())}   "
                  f"outputs (Caffe order): {', '.join(spec.outputs)}")
    console.print(f"total: {len(spec.layers)} layers, {table.total_params:,} parameters, "
                  f"{table.total_macs / 1e9:.3f} GMAC per forward at batch {next(iter(spec.inputs.values()))[0]}")
    if fits:
        console.print(f"weights: {args.weights} fits the net: {fits[0]} layers, {fits[1]:,} values")
    return EXIT_OK


# --- verify ----------------------------------------------------------------------------------


def _reference_inputs(input_shapes: dict, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    # Caffe nets expect 0-255 pixels minus a mean: uniform in [-128, 128) is a fair stand-in.
    return {name: (rng.random(shape, dtype=np.float32) * 256 - 128).astype(np.float32)
            for name, shape in input_shapes.items()}


def opencv_known_deviation(layers) -> str | None:
    """Why OpenCV 4.x's Caffe importer is known to compute something else for this net, if it is."""
    for layer in layers:
        p = layer.proto
        if layer.type == "LRN" and p.lrn_param.k != 1:
            return f'OpenCV ignores LRN k != 1 (layer "{layer.name}")'
        if layer.type == "Log":
            return f'OpenCV computes Log differently (layer "{layer.name}")'
        if layer.type == "InnerProduct" and (p.inner_product_param.axis != 1 or p.inner_product_param.transpose):
            return f'OpenCV mishandles InnerProduct axis != 1 or transpose (layer "{layer.name}")'
    return None


def _opencv_outputs(prototxt, weights, inputs: dict, outputs: list[str], blob_layers: dict[str, str]):
    try:
        import cv2
    except ImportError:
        return None, "OpenCV not installed (pip install 'opencv-python-headless<5')"
    if int(cv2.__version__.split(".")[0]) >= 5:
        return None, f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.x)"
    values = {}
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights)) if weights else cv2.dnn.readNetFromCaffe(str(prototxt))
        for name, value in inputs.items():
            net.setInput(value, name)
        known = set(net.getLayerNames())
        for blob in outputs:
            # OpenCV names outputs by layer, sometimes by the layer's top: try the last writer first.
            candidates = [n for n in (blob_layers.get(blob), blob) if n in known]
            if not candidates:
                return None, f"OpenCV has no layer for output blob {blob!r}"
            values[blob] = net.forward(candidates[0])
    except cv2.error as exc:
        return None, f"OpenCV could not run this net ({str(exc).strip().splitlines()[-1][:120]})"
    return values, ""


def cmd_verify(args) -> int:
    import tempfile

    import numpy as np
    import torch

    import ninport
    from ninport.parity import GoldenFolder, compare_blobs

    golden = None
    target = Path(args.target)
    if target.is_dir():
        golden = GoldenFolder.open(target)
        prototxt, weights = golden.prototxt, args.weights or golden.weights
    else:
        prototxt, weights = target, args.weights
        if args.golden:
            golden = GoldenFolder.open(args.golden)
    with _warnings_as_lines(), _progress("loading the net..."):
        module = ninport.load(prototxt, weights, input_shape=args.input_shape)
    meta = ninport.describe(module)
    spec_inputs = meta.inputs
    if golden is not None:
        inputs = golden.inputs()
        source_of_inputs = f"the golden folder {golden.folder}"
    else:
        inputs = _reference_inputs(spec_inputs, args.seed)
        source_of_inputs = f"seeded random inputs (seed {args.seed})"
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in spec_inputs]
    with _progress("running the converted model..."):
        blobs = {k: v.detach().numpy() for k, v in ninport.forward_blobs(module, *tensors).items()}
    order = list(meta.blobs)
    outputs = list(meta.outputs)
    reports, skipped = [], []
    if golden is not None:
        reports.append(compare_blobs(blobs, golden.blobs(), order, f"Caffe (golden {golden.folder.name})", args.tolerance))
    deviation = opencv_known_deviation(ninport.load_spec(prototxt).layers)
    if not args.no_opencv and weights is None and module.state_dict():
        skipped.append("OpenCV: no caffemodel given, so OpenCV and ninport would not share weights")
    elif not args.no_opencv and deviation:
        skipped.append(f"OpenCV: {deviation}; Caffe's golden outputs are the reference here")
    elif not args.no_opencv:
        with _progress("running OpenCV's Caffe importer..."):
            values, why = _opencv_outputs(prototxt, weights, inputs, outputs, {b: r.layer or b for b, r in meta.blobs.items()})
        if values is None:
            skipped.append(f"OpenCV: {why}")
        else:
            reports.append(compare_blobs(blobs, values, outputs, "OpenCV 4.x dnn", args.tolerance))
    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            skipped.append("onnxruntime: not installed (pip install onnxruntime)")
        else:
            from ninport.artifacts import verify_onnx
            from ninport.onnx import export_onnx

            with tempfile.TemporaryDirectory() as tmp, _progress("exporting and running ONNX..."):
                path = export_onnx(module, Path(tmp) / "model.onnx")
                values = verify_onnx(path, inputs)
            reports.append(compare_blobs(blobs, dict(zip(outputs, values)), outputs, "onnxruntime (exported ONNX)",
                                         args.tolerance))
    _print_reports(reports, skipped, source_of_inputs)
    if not reports:
        print("ninport: error: no reference to verify against (give a golden folder, or install OpenCV 4.x "
              "or onnxruntime)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if all(r.passed for r in reports) else EXIT_FAILED_PARITY


def _print_reports(reports, skipped, source_of_inputs: str) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"inputs: {source_of_inputs}")
    for report in reports:
        table = Table(title=f"vs {report.reference}  (tolerance {report.tolerance:g} relative)")
        for column in ("blob", "shape", "max abs error", "relative error", "result"):
            table.add_column(column)
        for row in report.rows:
            table.add_row(row.name, "x".join(map(str, row.shape)), f"{row.max_abs:.3g}", f"{row.relative:.3g}",
                          "PASS" if row.passed else f"FAIL {row.note}".strip())
        console.print(table)
        first = report.first_divergence
        verdict = "PASS" if report.passed else f"FAIL: first divergence at blob {first.name!r}" if first else "FAIL"
        console.print(f"{report.reference}: {len(report.rows)} blobs compared: {verdict}")
    for line in skipped:
        console.print(f"skipped {line}")


# --- predict ---------------------------------------------------------------------------------


def cmd_predict(args) -> int:
    import json

    import torch

    import ninport
    from ninport.api import default_weights_path
    from ninport.caffe.io import read_mean_binaryproto
    from ninport.errors import PreprocessError
    from ninport.predict import read_image, read_labels, resize_image, top_classes
    from ninport.preprocess import caffe_transform

    prototxt = Path(args.prototxt)
    weights = args.weights or default_weights_path(prototxt)
    with _warnings_as_lines(), _progress("reading the net..."):
        module = ninport.load(prototxt, weights)
    meta = ninport.describe(module)
    (input_name, input_shape), *others = meta.inputs.items()
    if others or len(input_shape) != 4:
        raise PreprocessError(f"{prototxt}: predict needs a net with one N,C,H,W image input")
    pre = meta.preprocess
    mean = read_mean_binaryproto(args.mean_file) if args.mean_file else None
    mean_values = [float(v) for v in args.mean_values.split(",")] if args.mean_values else []
    if mean is None and not mean_values and pre is not None:
        mean_values = list(pre.mean_values)
        if pre.mean_file and Path(prototxt.parent, pre.mean_file).is_file():
            mean = read_mean_binaryproto(Path(prototxt.parent, pre.mean_file))
    crop = args.crop if args.crop is not None else (pre.crop_size if pre is not None and pre.crop_size else 0)
    scale = args.scale if args.scale is not None else (pre.scale if pre is not None else 1.0)
    height, width = input_shape[2:]
    if args.resize:
        size = ninport.parse_input_shape(args.resize)
        resize_to = (size[0], size[-1])
    elif mean is not None:
        resize_to = tuple(mean.shape[1:])
    else:
        resize_to = (height, width) if not crop else (max(height, crop), max(width, crop))
    labels = read_labels(args.labels) if args.labels else None
    results = []
    for image_path in args.images:
        image = resize_image(read_image(image_path), *resize_to)
        blob = caffe_transform(image, crop_size=crop, mean=mean, mean_values=mean_values, scale=scale)
        if blob.shape[1:] != tuple(input_shape[1:]):
            raise PreprocessError(f"{image_path}: preprocessing gives {list(blob.shape[1:])}, the net takes "
                                  f"{list(input_shape[1:])}; adjust --resize/--crop")
        with torch.no_grad():
            out = module(torch.from_numpy(blob))
        scores = (out[0] if isinstance(out, tuple) else out).numpy()
        results.append((str(image_path), top_classes(scores, args.top)))
    if args.json:
        print(json.dumps([{"image": img, "top": [{"class": c, "score": sc, **({"label": labels[c]} if labels and
                                                                              c < len(labels) else {})}
                                                  for c, sc in top]} for img, top in results], indent=2))
        return EXIT_OK
    for img, top in results:
        print(img)
        for rank, (c, sc) in enumerate(top, 1):
            label = f"  {labels[c]}" if labels and c < len(labels) else ""
            print(f"  {rank}. class {c:<5d} score {sc:.6g}{label}")
    return EXIT_OK


# --- upgrade ---------------------------------------------------------------------------------


def cmd_upgrade(args) -> int:
    from ninport.caffe.upgrade_file import upgrade_file

    source = Path(args.input)
    output = Path(args.output) if args.output else None
    target, fmt = upgrade_file(source, output)
    print(f"wrote {target}  (upgraded from the {fmt} format)")
    return EXIT_OK


# --- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from ninport import __version__

    parser = argparse.ArgumentParser(
        prog="ninport",
        description="Bring Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe.",
        epilog="Examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ninport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_text, description):
        p = sub.add_parser(name, help=help_text, description=description + f"\n\nExample:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        return p

    shape_help = ("override an input's shape: 1,3,227,227 for the first input, or NAME=1,3,227,227; repeat "
                  "for several inputs (the batch stays dynamic in ONNX)")
    p = add("convert", "convert a Caffe net to ONNX (and optionally .pt2 / .safetensors)",
            "Write DIR/<stem>.onnx from PROTOTXT and its weights. Without --weights, <stem>.caffemodel beside\n"
            "the prototxt is used; with none found, the net gets seeded RANDOM weights and a warning.")
    p.add_argument("prototxt")
    p.add_argument("--weights", help="the .caffemodel (default: <stem>.caffemodel beside the prototxt)")
    p.add_argument("-o", "--output", default=".", help="output folder (default: current folder)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]N,C,H,W", help=shape_help)
    p.add_argument("--format", default="onnx", help="comma-separated: onnx, pt2, safetensors (default: onnx)")
    p.add_argument("--static", action="store_true", help="fix height and width at the input shape in ONNX/.pt2 "
                   "(default: symbolic when the net runs at other sizes)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the ONNX file in onnxruntime against the torch model")
    p.set_defaults(func=cmd_convert)

    p = add("inspect", "show the layer table: shapes, parameters, MACs",
            "Print every layer with bottom → top, output shape, parameters and MACs, with totals;\n"
            "with --weights, also check that the caffemodel fits the net (names, blob counts, shapes).")
    p.add_argument("prototxt")
    p.add_argument("--weights", help="a .caffemodel to check against the net")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]N,C,H,W", help=shape_help)
    p.set_defaults(func=cmd_inspect)

    p = add("verify", "per-blob parity report against Caffe's outputs, OpenCV and onnxruntime",
            "TARGET is a golden folder (case.json, net.prototxt, weights, inputs.npz, blobs.npz written from\n"
            "real Caffe) or a prototxt. Every blob is compared with the golden outputs; the net's outputs with\n"
            "OpenCV 4.x's Caffe importer and with onnxruntime on the exported ONNX. Exit code 3 on a mismatch.")
    p.add_argument("target", help="golden folder or prototxt")
    p.add_argument("--weights", help="the .caffemodel")
    p.add_argument("--golden", help="golden folder with inputs.npz and blobs.npz to compare against")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]N,C,H,W", help=shape_help)
    p.add_argument("--tolerance", type=float, default=1e-5, help="max relative error (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs when no golden folder")
    p.add_argument("--no-opencv", action="store_true", help="skip the OpenCV cross-check")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime check")
    p.set_defaults(func=cmd_verify)

    p = add("predict", "classify images with a converted net, preprocessed as Caffe did",
            "Read each image as BGR 0-255 (OpenCV or Pillow; or an HxWxC .npy array), resize it (default: the\n"
            "mean file's size, else the net's input size), then crop, subtract the mean and scale as Caffe's\n"
            "DataTransformer; the net's data layer supplies crop/mean/scale unless given here. Prints the top\n"
            "classes of the first output.")
    p.add_argument("prototxt")
    p.add_argument("images", nargs="+", help="image files (.jpg, .png, ...) or HxWxC BGR .npy arrays")
    p.add_argument("--weights", help="the .caffemodel (default: <stem>.caffemodel beside the prototxt)")
    p.add_argument("--mean-file", help="a .binaryproto mean image")
    p.add_argument("--mean-values", help="per-channel means in BGR order, e.g. 104,117,123")
    p.add_argument("--scale", type=float, help="multiply after mean subtraction (Caffe's transform_param.scale)")
    p.add_argument("--crop", type=int, help="center crop size (default: the data layer's crop_size)")
    p.add_argument("--resize", help="resize to H,W before cropping, e.g. 256,256")
    p.add_argument("--labels", help="class names, one per line (e.g. synset_words.txt)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_predict)

    p = add("upgrade", "rewrite a V0/V1 prototxt or caffemodel in the current format",
            "Like Caffe's upgrade_net_proto_text / upgrade_net_proto_binary: a .prototxt is written as text,\n"
            "a .caffemodel as binary. Default output: <stem>_upgraded<suffix> beside the input.")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="where to write the upgraded file")
    p.set_defaults(func=cmd_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.func(args)
    except NinportError as exc:
        if args.debug:
            raise
        print(f"ninport: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ninport: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug in ninport: say so, briefly
        if args.debug:
            raise
        print(f"ninport: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
