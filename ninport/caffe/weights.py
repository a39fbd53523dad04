"""Match caffemodel blobs to the net's layers by name and reconcile their recorded shapes.

Caffe itself copies weights by layer name and, for legacy 4-D blobs (num, channels, height,
width), compares the expected shape padded with leading 1s: a bias of N is stored as 1x1x1xN,
an InnerProduct weight as 1x1xNxK. This module reproduces that and refuses anything else
before a single tensor is built.
"""
from __future__ import annotations

import math

import numpy as np

from ninport.caffe.io import RawBlob, RawLayerWeights
from ninport.caffe.shapes import ShapeTable
from ninport.caffe.spec import NetSpec
from ninport.caffe.upgrade import v1_type_name
from ninport.errors import WeightsError


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


def attach_weights(spec: NetSpec, table: ShapeTable, raw_layers: list[RawLayerWeights],
                   weights_source: str) -> dict[str, list[np.ndarray]]:
    """Weights per layer name, checked against the shapes `table` expects.

    Like Caffe's Net::CopyTrainedLayersFrom, every source layer of a name is copied in file order,
    each one checked, so when a caffemodel repeats a name the last one wins.
    """
    all_of_name: dict[str, list[RawLayerWeights]] = {}
    for raw in raw_layers:
        all_of_name.setdefault(raw.name, []).append(raw)
    by_name = {name: raws[-1] for name, raws in all_of_name.items()}
    # params None: a plugin takes whatever blobs the caffemodel holds for its layer, as recorded
    wanted = [layer for layer in spec.layers if table.layers[layer.name].params or
              (table.layers[layer.name].params is None and layer.name in by_name)]
    if wanted and not any(layer.name in by_name for layer in wanted):
        sample = ", ".join(sorted(by_name)[:5])
        raise WeightsError(f"{weights_source}: none of its layers ({sample}, ...) matches a layer of "
                           f"{spec.source}; are these the weights of another net?")
    result: dict[str, list[np.ndarray]] = {}
    for layer in wanted:
        expected = table.layers[layer.name].params
        raw = by_name.get(layer.name)
        if expected is None:
            expected = [tuple(b.recorded_shape) for b in raw.blobs]
        where = f'{weights_source}: layer "{layer.name}" ({layer.type})'
        if raw is None:
            raise WeightsError(f"{where}: no weights for this layer in the caffemodel")
        copies = all_of_name[layer.name]
        for n, raw in enumerate(copies):
            blobs = raw.blobs
            which = where if len(copies) == 1 else f"{where} (copy {n + 1} of {len(copies)} with this name)"
            # BatchNorm blobs of some forks carry no scale factor; Caffe always writes three.
            if len(blobs) != len(expected):
                raise WeightsError(f"{which}: the caffemodel has {len(blobs)} blobs, the prototxt implies "
                                   f"{len(expected)} ({', '.join(str(list(s)) for s in expected)})")
            result[layer.name] = [reconcile_blob(b, s, f"{which} blob {i}")
                                  for i, (b, s) in enumerate(zip(blobs, expected))]
    for layer in spec.layers:
        raw = next((r for r in all_of_name.get(layer.name, []) if r.blobs), None)
        if raw is not None and table.layers[layer.name].params == []:
            raw_type = v1_type_name(int(raw.type)) if raw.type.isdigit() else raw.type
            raise WeightsError(f'{weights_source}: layer "{layer.name}": the caffemodel has {len(raw.blobs)} '
                               f"blobs for a {raw_type or 'layer'}, but the prototxt's {layer.type} "
                               "has no weights")
    return result


def random_weights(table: ShapeTable, spec: NetSpec, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Seeded random weights of the right shapes, for converting a net without its caffemodel.

    Scaled like Caffe's 'xavier' filler so activations stay finite through deep nets; BatchNorm
    gets a positive variance and a scale factor of 1.
    """
    rng = np.random.default_rng(seed)
    result: dict[str, list[np.ndarray]] = {}
    for layer in spec.layers:
        shapes = table.layers[layer.name].params
        if not shapes:
            continue
        arrays = []
        for i, shape in enumerate(shapes):
            if layer.type == "BN":  # slope, bias, mean, variance (a positive variance), or SegNet's scale, shift
                value = rng.uniform(0.5, 1.5, shape) if i in (0, 3) else rng.normal(0, 0.1, shape)
            elif layer.type == "BatchNorm":
                value = {0: rng.normal(0, 0.1, shape), 1: rng.uniform(0.5, 1.5, shape), 2: np.ones(shape)}[i]
            elif layer.type in ("Scale",) and i == 0:
                value = rng.uniform(0.5, 1.5, shape)
            elif len(shape) == 1 or i > 0:
                value = rng.normal(0, 0.01, shape)
            else:
                fan_in = math.prod(shape[1:]) if layer.type != "InnerProduct" or not \
                    layer.proto.inner_product_param.transpose else shape[0]
                value = rng.uniform(-1, 1, shape) * math.sqrt(3.0 / max(1, fan_in))
            arrays.append(value.astype(np.float32))
        result[layer.name] = arrays
    return result
