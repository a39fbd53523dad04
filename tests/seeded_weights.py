"""The NIN golden cases' 30 MB caffemodel, rebuilt from its seed instead of being committed.

BVLC Caffe ran tests/fixtures/caffe-golden-nin/ (blobs.npz) on seeded random weights. Those weights are
numpy's default_rng(1) in layer order, so this module writes the very same bytes again into the case
folder (git ignores the file) and checks them against the sha256 recorded here before any test uses
them. If numpy's generator or this writer ever changes, the check fails loudly: Caffe's blobs no longer
belong to the weights, and the fixture must be remade (see that folder's README).

Run `python -m tests.seeded_weights` to (re)write the file and print its sha256.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from ninport.caffe import caffe_pb2 as pb2

NIN_GOLDEN = Path(__file__).resolve().parent / "fixtures" / "caffe-golden-nin"
NIN_PROTOTXT = NIN_GOLDEN / "nin_v1_224" / "net.prototxt"
NIN_WEIGHTS = NIN_GOLDEN / "nin_v1_224" / "weights.caffemodel"
NIN_SEED = 1  # case.json's "seed"
NIN_SHA256 = "fa8b509c341ffa801fcd888003481f12d198d3c3c362de537ce2a8296de86cb4"  # 30,381,884 bytes
BIAS_STD = 0.1


# --- protobuf wire format, written by hand: fast (no per-float Python calls) and independent of the
# protobuf runtime's serializer. Field numbers are caffe.proto's NetParameter, V1LayerParameter, BlobProto.

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _number(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _legacy_blob(values: np.ndarray, shape4: tuple[int, int, int, int]) -> bytes:
    """BlobProto with num/channels/height/width (1..4) and packed float32 data (5), as old files store it."""
    dims = b"".join(_number(field, size) for field, size in enumerate(shape4, start=1))
    return dims + _length_delimited(5, values.astype("<f4").tobytes())


def seeded_v1_caffemodel(prototxt: Path, seed: int) -> bytes:
    """A legacy V1 caffemodel for a V1 net of Convolution, ReLU, Pooling and Dropout layers (NIN).

    Every Convolution gets He-normal weights N(0, 2 / fan_in) then N(0, BIAS_STD²) biases, drawn in layer
    order from numpy's default_rng(seed) in float64 and stored as float32; every layer keeps its name,
    type, bottoms and tops, as Caffe's V1 files do."""
    net = text_format.Parse(prototxt.read_text(), pb2.NetParameter())
    if len(net.input_dim) != 4 or net.layer:
        raise ValueError(f"{prototxt}: expected a V1 net with one input given by input_dim")
    channels = {net.input[0]: net.input_dim[1]}
    rng = np.random.default_rng(seed)
    V1 = pb2.V1LayerParameter
    layers = []
    for layer in net.layers:
        in_channels = channels[layer.bottom[0]]
        record = b"".join(_length_delimited(2, b.encode()) for b in layer.bottom)
        record += b"".join(_length_delimited(3, t.encode()) for t in layer.top)
        record += _length_delimited(4, layer.name.encode()) + _number(5, layer.type)
        if layer.type == V1.CONVOLUTION:
            p = layer.convolution_param
            kernel = p.kernel_size[0]
            shape = (p.num_output, in_channels // p.group, kernel, kernel)
            fan_in = shape[1] * kernel * kernel
            weights = rng.standard_normal(shape) * np.sqrt(2 / fan_in)
            bias = rng.standard_normal(p.num_output) * BIAS_STD
            record += _length_delimited(6, _legacy_blob(weights, shape))
            record += _length_delimited(6, _legacy_blob(bias, (1, 1, 1, p.num_output)))
            in_channels = p.num_output
        elif layer.type not in (V1.RELU, V1.POOLING, V1.DROPOUT):
            raise ValueError(f"{prototxt}: layer {layer.name!r}: no seeded weights for type {layer.type}")
        channels.update((top, in_channels) for top in layer.top)
        layers.append(_length_delimited(2, record))
    return _length_delimited(1, net.name.encode()) + b"".join(layers)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_seeded_caffemodel(path: Path, prototxt: Path, seed: int, sha256: str) -> Path:
    """`path` holding the seeded caffemodel with this sha256: kept if it already does, else rewritten
    (atomically, so parallel test processes never see half a file). Raises if the bytes the generator
    makes now are not the recorded ones."""
    if path.is_file() and _sha256(path) == sha256:
        return path
    data = seeded_v1_caffemodel(prototxt, seed)
    made = hashlib.sha256(data).hexdigest()
    if made != sha256:
        raise RuntimeError(
            f"seeded weights for {prototxt} (seed {seed}) now have sha256 {made}, not the recorded {sha256}: "
            f"numpy {np.__version__}'s default_rng or the writer changed, so Caffe's golden blobs no longer "
            f"belong to these weights; remake the fixture (see {prototxt.parent.parent / 'README.md'})")
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".weights-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make it the only private file of the checkout
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


@functools.cache
def nin_weights() -> Path:
    """The NIN golden caffemodel (both nin_v1_224 and nin_v1_227 use it), checked once per process."""
    return ensure_seeded_caffemodel(NIN_WEIGHTS, NIN_PROTOTXT, NIN_SEED, NIN_SHA256)


if __name__ == "__main__":
    print(nin_weights(), _sha256(NIN_WEIGHTS))
