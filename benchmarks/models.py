"""Benchmark inputs: NIN- and VGG16-sized caffemodels with seeded random weights, written in the
V1 layout the published files use (NetParameter.layers, legacy num/channels/height/width blob
dims), cached outside git in benchmarks/.cache."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
MODELS = {
    "NIN": REPO / "reference_models" / "nin_imagenet" / "deploy.prototxt",
    "VGG16": REPO / "reference_models" / "vgg16" / "deploy.prototxt",
}
# V1LayerParameter.LayerType values of the layers that carry weights
_V1_TYPES = {"Convolution": 4, "InnerProduct": 14}


def varint(n: int) -> bytes:
    """A protobuf base-128 varint (tests/caffe_files.py writes its caffemodels with it too)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def delimited_head(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field (wire type 2)."""
    return _tag(number, 2) + varint(length)


def _legacy_dims(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """num, channels, height, width as old Caffe wrote them (bias 1x1x1xN, IP weight 1x1xNxK)."""
    dims = (1,) * (4 - len(shape)) + tuple(shape)
    if len(dims) != 4:
        raise ValueError(f"blob of shape {shape} has no legacy 4-D form")
    return dims  # type: ignore[return-value]


def write_v1_caffemodel(path: Path, net_name: str, layers: list[tuple[str, str, list[np.ndarray]]]) -> Path:
    """A V1-layout caffemodel: `layers` is (name, Caffe type, blobs). Written to a temporary name, then renamed."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        name = net_name.encode()
        f.write(delimited_head(1, len(name)) + name)
        for layer_name, layer_type, arrays in layers:
            raw_name = layer_name.encode()
            head = delimited_head(4, len(raw_name)) + raw_name + _tag(5, 0) + varint(_V1_TYPES[layer_type])
            blobs: list[tuple[bytes, np.ndarray]] = []
            for array in arrays:
                array = np.ascontiguousarray(array, dtype="<f4")
                blob_head = b"".join(_tag(field, 0) + varint(d)
                                     for field, d in zip((1, 2, 3, 4), _legacy_dims(array.shape)))
                blob_head += delimited_head(5, array.nbytes)  # packed float `data`
                blobs.append((blob_head, array))
            body = len(head) + sum(len(delimited_head(6, len(h) + a.nbytes)) + len(h) + a.nbytes for h, a in blobs)
            f.write(delimited_head(2, body) + head)
            for blob_head, array in blobs:
                f.write(delimited_head(6, len(blob_head) + array.nbytes) + blob_head)
                f.write(memoryview(array.reshape(-1)).cast("B"))
    os.replace(tmp, path)
    return path


def generated_caffemodel(model: str, cache: Path = DEFAULT_CACHE, seed: int = 0) -> Path:
    """The cached seeded-random caffemodel for `model` (NIN or VGG16), generated on first use."""
    from ninport.api import load_spec
    from ninport.build.shapes import infer_shapes
    from ninport.caffe.weights import random_weights

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{model.lower()}_v1_seed{seed}.caffemodel"
    if path.is_file():
        return path
    spec = load_spec(MODELS[model])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = random_weights(infer_shapes(spec), spec, seed)
    layers = [(layer.name, layer.type, weights[layer.name]) for layer in spec.layers if weights.get(layer.name)]
    return write_v1_caffemodel(path, spec.name or model, layers)


def exported_onnx(model: str, weights: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """The cached ONNX export (dynamic batch) of `model` with `weights`."""
    path = cache / f"{weights.stem}.onnx"
    if path.is_file() and path.stat().st_mtime >= weights.stat().st_mtime:
        return path
    import ninport

    module = ninport.load(MODELS[model], weights)
    ninport.export_onnx(module, path)
    return path
