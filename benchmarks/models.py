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
    "GoogLeNet": REPO / "reference_models" / "bvlc_googlenet" / "deploy.prototxt",
    "SqueezeNet": REPO / "reference_models" / "squeezenet_v1.1" / "deploy.prototxt",
    "res10": REPO / "reference_models" / "opencv_face_detector" / "deploy.prototxt",
    "MobileNet": REPO / "reference_models" / "mobilenet_v1" / "deploy.prototxt",
    "ResNet-50": REPO / "reference_models" / "resnet50" / "deploy.prototxt",
}
# The nets of the runtime comparison (section "nets") by default, with their input height = width; the face
# detector's published weights where tests/published_models.py has cached them, seeded weights otherwise.
NETS = {"NIN": 224, "GoogLeNet": 224, "SqueezeNet": 227, "res10": 300}
# More nets `--nets` can name: BatchNorm + Scale after every convolution (seeded weights).
MORE_NETS = {"MobileNet": 224, "ResNet-50": 224}
# Nets whose seeded caffemodel is written in the current format (BatchNorm, Scale: no V1 layout)
_CURRENT_FORMAT = {"res10", "MobileNet", "ResNet-50"}
FACE_DETECTOR_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
FACE_DETECTOR_SHA256 = "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d"
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
    """The cached seeded-random caffemodel for `model` (NIN, VGG16, GoogLeNet, SqueezeNet: convolutions and
    inner products only), generated on first use."""
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


def published_face_detector() -> Path | None:
    """OpenCV's res10 face detector weights where the tests cached them (`$NINPORT_TEST_CACHE`, default
    ~/.cache/ninport-tests, see tests/published_models.py) and their sha256 is the published one; else None."""
    import hashlib

    folder = Path(os.environ.get("NINPORT_TEST_CACHE") or Path.home() / ".cache" / "ninport-tests")
    path = folder / "opencv_face_detector" / FACE_DETECTOR_WEIGHTS
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path if digest == FACE_DETECTOR_SHA256 else None


def write_caffemodel(path: Path, net_name: str, layers: list[tuple[str, str, list[np.ndarray]]]) -> Path:
    """A current-format caffemodel (NetParameter.layer, blobs with shape): `layers` is (name, type, blobs).
    For the nets the V1 layout cannot hold (BatchNorm, Scale, Normalize). Written to a temporary name, then renamed."""
    from ninport.caffe import caffe_pb2

    net = caffe_pb2.NetParameter(name=net_name)
    for layer_name, layer_type, arrays in layers:
        layer = net.layer.add(name=layer_name, type=layer_type)
        for array in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, dtype=np.float32).reshape(-1).tolist())
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(net.SerializeToString())
    os.replace(tmp, path)
    return path


def net_weights(model: str, cache: Path = DEFAULT_CACHE, seed: int = 0) -> tuple[Path, str]:
    """The weights the runtime comparison uses for `model`, and where they come from ("published", "seeded")."""
    if model == "res10":
        published = published_face_detector()
        if published is not None:
            return published, "published"
    if model in _CURRENT_FORMAT:
        path = cache / f"{model.lower()}_seed{seed}.caffemodel"
        if not path.is_file():
            from ninport.api import load_spec
            from ninport.build.shapes import infer_shapes
            from ninport.caffe.weights import random_weights

            spec = load_spec(MODELS[model])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                weights = random_weights(infer_shapes(spec), spec, seed)
            cache.mkdir(parents=True, exist_ok=True)
            write_caffemodel(path, spec.name or model, [(layer.name, layer.type, weights[layer.name])
                                                        for layer in spec.layers if weights.get(layer.name)])
        return path, "seeded"
    return generated_caffemodel(model, cache, seed), "seeded"


def _newest_source() -> float:
    """When ninport's layers or exporter last changed: an older cached ONNX file is exported again."""
    folders = [REPO / "ninport" / "layers", REPO / "ninport" / "export"]
    return max((p.stat().st_mtime for folder in folders for p in folder.glob("*.py")), default=0.0)


def exported_onnx(model: str, weights: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """The cached ONNX export (dynamic batch) of `model` with `weights`."""
    path = cache / f"{weights.stem}.onnx"
    if path.is_file() and path.stat().st_mtime >= max(weights.stat().st_mtime, _newest_source()):
        return path
    import ninport

    module = ninport.load(MODELS[model], weights)
    ninport.export_onnx(module, path)
    return path
