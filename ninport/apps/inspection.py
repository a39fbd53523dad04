"""What `ninport inspect` shows, as data: one row per layer, the net's inputs and outputs, and totals.

Totals follow the published counts: learnable parameters (convolution/InnerProduct weights and biases,
Scale's and PReLU's factors, ...) are counted apart from stored statistics (BatchNorm's and PSPNet BN's
running mean and variance, BatchNorm's moving-average scale factor: the blobs each type's record names,
`LayerType.statistics`), which the frameworks that publish parameter counts do not call parameters. MACs
are given for the batch of the reference input and per image.

Nothing here imports torch: inspecting a net stays fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ninport.api import InputShape, PathLike, check_path, load_spec
from ninport.build.shapes import infer_shapes, size_fixing_layers
from ninport.caffe.spec import LayerSpec
from ninport.errors import NinportError, one_line, safe_text
from ninport.registry import LayerType, layer_type

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
    statistics: int     # stored statistics (BatchNorm's mean/variance/scale factor, BN's mean/variance)
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
    statistics: int          # stored statistics such as BatchNorm's (not parameters)
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

        matched = attach_weights(spec, table, read_caffemodel(weights, mapped=True), str(weights))  # shapes only
        fit = WeightsFit(str(weights), len(matched), sum(a.size for arrays in matched.values() for a in arrays))
    rows = []
    for layer in spec.layers:
        shapes = table.layers[layer.key]
        if shapes.params is not None:
            sizes = [math.prod(s) for s in shapes.params]
        else:  # a plugin that takes whatever the caffemodel holds
            sizes = [a.size for a in matched.get(layer.key, [])]
        record = layer_type(layer.type, spec.dialect)
        settings, statistics_blobs = _record_facts(record, layer) if record is not None else ("", ())
        statistics = sum(size for i, size in enumerate(sizes) if i in statistics_blobs)
        rows.append(LayerRow(
            layer=layer.name, type=layer.type, bottoms=tuple(layer.bottoms), tops=tuple(layer.tops),
            in_place=bool(layer.bottoms) and list(layer.bottoms) == list(layer.tops),
            output_shapes=tuple(tuple(table.blobs[t]) for t in layer.tops),
            settings=settings, parameters=sum(sizes) - statistics, statistics=statistics,
            macs=int(shapes.macs)))
    first = next(iter(spec.inputs.values()))
    return NetSummary(
        name=spec.name or Path(prototxt).stem, source=spec.source, source_format=spec.source_format,
        inputs={k: tuple(v) for k, v in spec.inputs.items()}, outputs=tuple(spec.outputs), layers=tuple(rows),
        parameters=sum(r.parameters for r in rows), statistics=sum(r.statistics for r in rows),
        macs=sum(r.macs for r in rows), batch=int(first[0]) if first else 1, weights=fit,
        size_fixed_by=tuple(size_fixing_layers(spec, table)))


def _record_facts(record: LayerType, layer: LayerSpec) -> tuple[str, tuple[int, ...]]:
    """The settings text and statistics blobs its type's record gives for `layer`; a plugin's function that
    fails is one NinportError naming the layer and the plugin."""
    try:
        return record.settings_text(layer), record.statistics_blobs(layer)
    except NinportError:
        raise
    except Exception as exc:
        raise NinportError(f"layer {safe_text(layer.name, 80)!r} ({safe_text(layer.type, 40)}): the settings or "
                           f"statistics function of {safe_text(record.origin, 80)} failed: {one_line(exc)}") from None

