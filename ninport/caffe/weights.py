"""Match caffemodel blobs to the net's layers by name and reconcile their recorded shapes.

Caffe itself copies weights by layer name and, for legacy 4-D blobs (num, channels, height,
width), compares the expected shape padded with leading 1s: a bias of N is stored as 1x1x1xN,
an InnerProduct weight as 1x1xNxK. This module reproduces that and refuses anything else
before a single tensor is built.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Collection

import numpy as np

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.io import RawBlob, RawLayerWeights
from ninport.caffe.spec import LayerSpec, NetSpec
from ninport.caffe.upgrade import v1_type_name
from ninport.errors import NinportWarning, WeightsError, counted, safe_text
from ninport.registry import ShapeTable


def _legacy_4d(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + tuple(shape)


def reconcile_blob(blob: RawBlob, expected: tuple[int, ...], what: str, keep_half: bool = False) -> np.ndarray:
    """The blob as a float32 array (float16 if `keep_half` and stored so) of `expected` shape, or
    WeightsError naming both shapes."""
    recorded = blob.recorded_shape
    fits = tuple(recorded) == tuple(expected)
    if not fits and blob.shape is None and blob.legacy_shape is not None:
        fits = _legacy_4d(expected) == tuple(blob.legacy_shape)
    if not fits:
        raise WeightsError(f"{what}: the caffemodel has shape {list(recorded)}, the prototxt implies "
                           f"{list(expected)}")
    if blob.data.size != math.prod(expected):
        raise WeightsError(f"{what}: shape {list(expected)} needs {math.prod(expected):,} values, "
                           f"the caffemodel holds {blob.data.size:,}")
    dtype = np.float16 if keep_half and blob.data.dtype == np.float16 else np.float32
    return np.asarray(blob.data, dtype=dtype).reshape(expected)


def unreachable_layers(spec: NetSpec, table: ShapeTable) -> list[LayerSpec]:
    """Layers with weights that no caffemodel can fill: the second, third, ... layer of a repeated name.

    Caffe's Net::CopyTrainedLayersFrom copies each caffemodel layer to the first layer of the net with
    its name (it scans layer_names_ from the start), so a later layer of the same name keeps its fillers."""
    return [layer for layer in spec.layers if layer.repeats_a_name and table.layers[layer.key].params]


def attach_weights(spec: NetSpec, table: ShapeTable, raw_layers: list[RawLayerWeights],
                   weights_source: str) -> dict[str, list[np.ndarray]]:
    """Weights per layer key (`LayerSpec.key`), checked against the shapes `table` expects.

    As Caffe's Net::CopyTrainedLayersFrom: every caffemodel layer, in file order, is copied to the first
    layer of the net with its name, each copy checked, so when a caffemodel repeats a name the last one
    wins. A later layer repeating a name gets nothing (`unreachable_layers`): where it has weights a
    NinportWarning names it, and it is left out of the result (`ninport.load` gives it seeded random
    weights, where Caffe keeps its fillers).
    """
    all_of_name: dict[str, list[RawLayerWeights]] = {}
    for raw in raw_layers:
        all_of_name.setdefault(raw.name, []).append(raw)
    by_name = {name: raws[-1] for name, raws in all_of_name.items()}
    for layer in unreachable_layers(spec, table):
        warnings.warn(f'{weights_source}: layer "{safe_text(layer.name)}" ({safe_text(layer.type)}) cannot get '
                      "weights from the caffemodel: an earlier layer of the net has the same name, and Caffe copies "
                      "a caffemodel layer only to the first layer of its name (Net::CopyTrainedLayersFrom); it "
                      "gets seeded random weights (Caffe would keep its fillers)", NinportWarning, stacklevel=2)
    # params None: a plugin takes whatever blobs the caffemodel holds for its layer, as recorded
    first_of_name = [layer for layer in spec.layers if not layer.repeats_a_name]
    wanted = [layer for layer in first_of_name if table.layers[layer.key].params or
              (table.layers[layer.key].params is None and layer.key in by_name)]
    if wanted and not any(layer.key in by_name for layer in wanted):
        sample = ", ".join(sorted(by_name)[:5])
        raise WeightsError(f"{weights_source}: none of its layers ({sample}, ...) matches a layer of "
                           f"{spec.source}; are these the weights of another net?")
    result: dict[str, list[np.ndarray]] = {}
    for layer in wanted:
        expected = table.layers[layer.key].params
        raw = by_name.get(layer.key)
        if expected is None:
            expected = [tuple(b.recorded_shape) for b in raw.blobs]
        where = f'{weights_source}: layer "{layer.name}" ({layer.type})'
        if raw is None:
            raise WeightsError(f"{where}: no weights for this layer in the caffemodel")
        copies = all_of_name[layer.key]
        for n, raw in enumerate(copies):
            blobs = raw.blobs
            which = where if len(copies) == 1 else f"{where} (copy {n + 1} of {len(copies)} with this name)"
            # BatchNorm blobs of some forks carry no scale factor; Caffe always writes three.
            if len(blobs) != len(expected):
                raise WeightsError(f"{which}: the caffemodel has {counted(len(blobs), 'blob')}, the prototxt implies "
                                   f"{len(expected)} ({', '.join(str(list(s)) for s in expected)})")
            result[layer.key] = [reconcile_blob(b, s, f"{which} blob {i}")
                                 for i, (b, s) in enumerate(zip(blobs, expected))]
    for layer in first_of_name:
        raw = next((r for r in all_of_name.get(layer.key, []) if r.blobs), None)
        if raw is not None and table.layers[layer.key].params == []:
            raw_type = v1_type_name(int(raw.type)) if raw.type.isdigit() else raw.type
            raise WeightsError(f'{weights_source}: layer "{layer.name}": the caffemodel has {len(raw.blobs)} '
                               f"blobs for a {raw_type or 'layer'}, but the prototxt's {layer.type} "
                               "has no weights")
    return result


# Where a layer type declares the filler of each of its blobs, as Caffe's LayerSetUp reads them:
# (the layer's parameter message, the filler field of blob 0, blob 1, ...).
FILLER_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Convolution": ("convolution_param", ("weight_filler", "bias_filler")),
    "Deconvolution": ("convolution_param", ("weight_filler", "bias_filler")),
    "DepthwiseConvolution": ("convolution_param", ("weight_filler", "bias_filler")),
    "ConvolutionDepthwise": ("convolution_param", ("weight_filler", "bias_filler")),
    "InnerProduct": ("inner_product_param", ("weight_filler", "bias_filler")),
    "Embed": ("embed_param", ("weight_filler", "bias_filler")),
    "Scale": ("scale_param", ("filler", "bias_filler")),
    "Bias": ("bias_param", ("filler",)),
    "PReLU": ("prelu_param", ("filler",)),
    "Normalize": ("norm_param", ("scale_filler",)),
}
FILLER_TYPES = ("constant", "gaussian", "positive_unitball", "uniform", "xavier", "msra", "bilinear")


def declared_filler(layer, index: int):
    """The FillerParameter the prototxt gives for blob `index` of `layer`, or None when it gives none."""
    where = FILLER_FIELDS.get(layer.type)
    if where is None or index >= len(where[1]):
        return None
    param_name, fields = where
    if not layer.proto.HasField(param_name):
        return None
    param = getattr(layer.proto, param_name)
    return getattr(param, fields[index]) if param.HasField(fields[index]) else None


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fan_in = count / num and fan_out = count / channels (a missing axis counts as 1)."""
    count = math.prod(shape)
    num = shape[0] if len(shape) > 0 else 1
    channels = shape[1] if len(shape) > 1 else 1
    return count // max(num, 1), count // max(channels, 1)


def caffe_filler_values(filler, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values drawn as Caffe's filler (include/caffe/filler.hpp) fills a blob of `shape`: constant, uniform,
    gaussian (with `sparse`), positive_unitball, xavier and msra (fan_in / fan_out / average by
    variance_norm), bilinear. ValueError for what Caffe itself refuses (an unknown type, `sparse` on a
    filler other than gaussian, bilinear on a blob that is not 4-D and square)."""
    kind = filler.type
    if kind not in FILLER_TYPES:
        raise ValueError(f"unknown filler type {kind!r} (Caffe knows {', '.join(FILLER_TYPES)})")
    if filler.sparse != -1 and kind != "gaussian":
        raise ValueError(f"sparse is supported by the gaussian filler only, not {kind!r}")
    count = math.prod(shape)
    if kind == "constant":
        return np.full(shape, filler.value, dtype=np.float64)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, shape)
    if kind == "gaussian":
        values = rng.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0:  # each value kept with probability sparse / num_outputs
            if not shape:
                raise ValueError("a sparse gaussian filler needs a blob with at least one axis")
            keep = min(1.0, filler.sparse / shape[0])
            values = values * rng.binomial(1, keep, shape)
        return values
    if kind == "positive_unitball":  # uniform in [0, 1), each of the `num` rows scaled to sum 1
        values = rng.uniform(0.0, 1.0, shape).reshape(shape[0] if shape else 1, -1)
        return (values / values.sum(axis=1, keepdims=True)).reshape(shape)
    if kind in ("xavier", "msra"):
        fan_in, fan_out = _fans(shape)
        norm = pb2.FillerParameter
        n = {norm.FAN_IN: fan_in, norm.FAN_OUT: fan_out, norm.AVERAGE: (fan_in + fan_out) / 2}[filler.variance_norm]
        if kind == "xavier":
            scale = math.sqrt(3.0 / n)
            return rng.uniform(-scale, scale, shape)
        return rng.normal(0.0, math.sqrt(2.0 / n), shape)
    # bilinear: the same upsampling kernel in every (K, K) slice
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"the bilinear filler needs a 4-D blob with a square kernel, got {list(shape)}")
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    line = 1 - np.abs(np.arange(k) / f - c)
    return np.broadcast_to(np.outer(line, line), shape).copy() if count else np.zeros(shape)


def random_weights(table: ShapeTable, spec: NetSpec, seed: int = 0,
                   only: Collection[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Seeded random weights of the right shapes, per layer key, for converting a net without its
    caffemodel (or, `only` naming layer keys, for the layers a caffemodel cannot fill).

    A blob whose filler the prototxt declares (`weight_filler`, `bias_filler`, `filler`, `scale_filler`) is
    drawn as Caffe initialises it (`caffe_filler_values`), so a net designed for its fillers gets sensible
    activations. Without a declared filler: scaled like Caffe's 'xavier' filler so activations stay finite
    through deep nets; BatchNorm gets a positive variance and a scale factor of 1. A filler Caffe would
    refuse falls back to that default, with a NinportWarning naming the layer.
    """
    result: dict[str, list[np.ndarray]] = {}
    if only is not None and not only:  # nothing to fill (the usual caffemodel): no numpy.random import, 0.1 s
        return result
    rng = np.random.default_rng(seed)
    for layer in spec.layers:
        shapes = table.layers[layer.key].params
        if not shapes or (only is not None and layer.key not in only):
            continue
        arrays = []
        for i, shape in enumerate(shapes):
            value = None
            filler = declared_filler(layer, i)
            if filler is not None:
                try:
                    value = caffe_filler_values(filler, tuple(shape), rng)
                except ValueError as exc:
                    warnings.warn(f'{layer.where(spec.source)}: blob {i}: {exc}; it gets ninport\'s default random '
                                  "values instead", NinportWarning, stacklevel=2)
            if value is None:
                value = _default_random(layer, i, shape, rng)
            arrays.append(value.astype(np.float32))
        result[layer.key] = arrays
    return result


def _default_random(layer, i: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """ninport's values for blob `i` of a layer without a declared filler (see `random_weights`)."""
    if layer.type == "BN":  # slope, bias, mean, variance (a positive variance), or SegNet's scale, shift
        return rng.uniform(0.5, 1.5, shape) if i in (0, 3) else rng.normal(0, 0.1, shape)
    if layer.type == "BatchNorm":
        return {0: rng.normal(0, 0.1, shape), 1: rng.uniform(0.5, 1.5, shape), 2: np.ones(shape)}[i]
    if layer.type == "Scale" and i == 0:
        return rng.uniform(0.5, 1.5, shape)
    if len(shape) == 1 or i > 0:
        return rng.normal(0, 0.01, shape)
    fan_in = math.prod(shape[1:]) if layer.type != "InnerProduct" or not \
        layer.proto.inner_product_param.transpose else shape[0]
    return rng.uniform(-1, 1, shape) * math.sqrt(3.0 / max(1, fan_in))
