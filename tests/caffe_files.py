"""Writing small Caffe files for tests: prototxt snippets and caffemodels with given weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.models import delimited_head
from ninport.caffe import caffe_pb2


def input_layer(shape, name: str = "data") -> str:
    """A current-format Input layer producing blob `name` of `shape`."""
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def write_caffemodel(path: Path, weights: dict[str, list[np.ndarray]], types: dict[str, str] | None = None,
                     net_name: str = "synthetic") -> Path:
    """A current-format caffemodel holding `weights` (layer name -> blobs, Caffe layout).

    The messages are caffe_pb2's; each blob's floats go in as one packed `data` field written
    straight from the array: wire-identical to filling BlobProto.data, which takes minutes for
    VGG-16's 138M values.
    """
    types = types or {}
    with open(path, "wb") as f:
        f.write(caffe_pb2.NetParameter(name=net_name).SerializeToString())
        for name, arrays in weights.items():
            layer = caffe_pb2.LayerParameter(name=name)
            if name in types:
                layer.type = types[name]
            pieces: list = [layer.SerializeToString()]
            for array in arrays:
                array = np.ascontiguousarray(array, dtype="<f4")
                blob = caffe_pb2.BlobProto()
                blob.shape.dim.extend(array.shape)
                head = blob.SerializeToString() + delimited_head(5, array.nbytes)
                pieces += [delimited_head(7, len(head) + array.nbytes) + head, array]
            f.write(delimited_head(100, sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)))
            for piece in pieces:
                f.write(piece if isinstance(piece, bytes) else memoryview(piece.reshape(-1)).cast("B"))
    return Path(path)
