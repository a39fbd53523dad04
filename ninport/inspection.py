"""What `ninport inspect` shows, as data: one row per layer, the net's inputs and outputs, and totals.

Totals follow the published counts: learnable parameters (convolution/InnerProduct weights and biases,
Scale's and PReLU's factors, ...) are counted apart from BatchNorm's stored statistics (running mean,
variance and the moving-average scale factor), which the frameworks that publish parameter counts do
not call parameters. MACs are given for the batch of the reference input and per image.

Nothing here imports torch: inspecting a net stays fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ninport.api import InputShape, PathLike, check_path, load_spec
from ninport.caffe.shapes import infer_shapes, size_fixing_layers
from ninport.caffe.spec import LayerSpec

# Layer types whose caffemodel blobs are statistics gathered in training, not learned by gradient.
STATISTICS_LAYERS = frozenset({"BatchNorm"})

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerRow:
    """One layer as `inspect` shows it; names are the model file's text (data: escape before display)."""

    layer: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    in_place: bool
    output_shapes: tuple[Shape, ...]
    settings: str       # a short summary of the layer's parameters, e.g. "96, k11 s4" for a convolution
    parameters: int     # learnable values
    statistics: int     # stored statistics (BatchNorm mean/variance/scale factor)
    macs: int           # multiply-accumulates at the reference input size (whole batch)


@dataclass(frozen=True)
class WeightsFit:
    """A caffemodel checked against the net: every weighted layer found with the right shapes."""

    path: str
    layers: int
    values: int


@dataclass(frozen=True)
class NetSummary:
    name: str
    source: str
    source_format: str
    inputs: dict[str, Shape]
    outputs: tuple[str, ...]
    layers: tuple[LayerRow, ...]
    parameters: int          # learnable parameters, as published counts give them
    statistics: int          # BatchNorm statistics (not parameters)
    macs: int                # per forward pass at the reference batch
    batch: int               # the first input's batch size at the reference shape
    weights: WeightsFit | None = None
    size_fixed_by: tuple[tuple[str, str], ...] = ()  # (layer, reason) for layers that fix the input size

    @property
    def stored_values(self) -> int:
        """Every value a caffemodel holds for this net: parameters plus statistics."""
        return self.parameters + self.statistics

    @property
    def macs_per_image(self) -> float:
        return self.macs / self.batch if self.batch else float(self.macs)

    def to_json(self) -> dict:
        """A JSON-ready dict (what `ninport inspect --json` prints)."""
        return {
            "name": self.name, "source": self.source, "format": self.source_format,
            "inputs": {k: list(v) for k, v in self.inputs.items()}, "outputs": list(self.outputs),
            "layers": [{"layer": r.layer, "type": r.type, "bottoms": list(r.bottoms), "tops": list(r.tops),
                        "in_place": r.in_place, "output_shapes": [list(s) for s in r.output_shapes],
                        "settings": r.settings, "parameters": r.parameters, "statistics": r.statistics,
                        "macs": r.macs} for r in self.layers],
            "total_parameters": self.parameters, "total_statistics": self.statistics,
            "total_macs": self.macs, "batch": self.batch, "macs_per_image": self.macs_per_image,
            "input_size": "fixed" if self.size_fixed_by else "any",
            "size_fixed_by": [{"layer": layer, "reason": reason} for layer, reason in self.size_fixed_by],
            "weights": None if self.weights is None else {
                "file": self.weights.path, "layers": self.weights.layers, "values": self.weights.values},
        }


def summary(prototxt: PathLike, input_shape: InputShape = None, weights: PathLike | None = None,
            dialect: str | None = None) -> NetSummary:
    """Shapes, parameter counts and MACs of every layer; with `weights`, check that the caffemodel fits.
    `dialect`: see `ninport.load`.

    Raises NinportError (ShapeError, WeightsError, ...) for a net or caffemodel Caffe would refuse.
    """
    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    spec = load_spec(prototxt, input_shape, dialect)
    table = infer_shapes(spec)
    matched: dict[str, list] = {}
    fit = None
    if weights is not None:
        from ninport.caffe.io import read_caffemodel
        from ninport.caffe.weights import attach_weights

        matched = attach_weights(spec, table, read_caffemodel(weights), str(weights))
        fit = WeightsFit(str(weights), len(matched), sum(a.size for arrays in matched.values() for a in arrays))
    rows = []
    for layer in spec.layers:
        shapes = table.layers[layer.key]
        if shapes.params is not None:
            count = sum(math.prod(s) for s in shapes.params)
        else:  # a plugin that takes whatever the caffemodel holds
            count = sum(a.size for a in matched.get(layer.key, []))
        statistics = count if layer.type in STATISTICS_LAYERS else 0
        rows.append(LayerRow(
            layer=layer.name, type=layer.type, bottoms=tuple(layer.bottoms), tops=tuple(layer.tops),
            in_place=bool(layer.bottoms) and list(layer.bottoms) == list(layer.tops),
            output_shapes=tuple(tuple(table.blobs[t]) for t in layer.tops),
            settings=layer_settings(layer), parameters=count - statistics, statistics=statistics,
            macs=int(shapes.macs)))
    first = next(iter(spec.inputs.values()))
    return NetSummary(
        name=spec.name or Path(prototxt).stem, source=spec.source, source_format=spec.source_format,
        inputs={k: tuple(v) for k, v in spec.inputs.items()}, outputs=tuple(spec.outputs), layers=tuple(rows),
        parameters=sum(r.parameters for r in rows), statistics=sum(r.statistics for r in rows),
        macs=sum(r.macs for r in rows), batch=int(first[0]) if first else 1, weights=fit,
        size_fixed_by=tuple(size_fixing_layers(spec, table)))


def layer_settings(layer: LayerSpec) -> str:
    """A short description of a layer's parameters, like the table in NIN_FACTS.md."""
    from ninport.caffe import caffe_pb2 as pb2
    from ninport.caffe.shapes import conv_geometry

    p = layer.proto
    if layer.type in ("Convolution", "Deconvolution"):
        c = p.convolution_param
        g = conv_geometry(c)

        def fmt(prefix: str, pair: tuple[int, int], default: int) -> str:
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
    if layer.type == "BatchNorm":
        return "statistics: mean, variance, scale factor"
    if layer.type == "Crop":  # in dialect hed, the offsets HED's Caffe derives from the net
        q = p.crop_param
        return f"axis {q.axis} offset {','.join(str(o) for o in q.offset) or 0}"
    return ""
