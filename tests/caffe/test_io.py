"""Reading prototxts and caffemodels: every golden file, all formats, wire-level blob decoding."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.spec import load_netspec

from tests.conftest import SHARED_GOLDEN, VENDORED_GOLDEN


def golden_folders() -> list[Path]:
    folders = sorted(p for p in VENDORED_GOLDEN.iterdir() if (p / "case.json").is_file())
    if SHARED_GOLDEN.is_dir():
        folders += sorted(p for p in SHARED_GOLDEN.glob("nin_*") if (p / "case.json").is_file())
    return folders


@pytest.mark.parametrize("folder", golden_folders(), ids=lambda p: p.name)
def test_every_golden_prototxt_and_caffemodel_reads(folder):
    import json

    info = json.loads((folder / "case.json").read_text())
    spec = load_netspec(folder / info["prototxt"])
    assert spec.outputs == info["outputs"]
    assert {k: list(v) for k, v in spec.inputs.items()} == {k: list(v) for k, v in info["inputs"].items()} \
        or set(spec.inputs) == set(info["inputs"])
    if info.get("weights"):
        raw = io.read_caffemodel(folder / info["weights"])
        assert raw and all(isinstance(layer.name, str) for layer in raw)
        for layer in raw:
            for blob in layer.blobs:
                assert blob.data.dtype in (np.float32, np.float64) and blob.data.ndim == 1


def test_all_three_formats_occur_in_the_golden_set():
    formats = {load_netspec(p / "net.prototxt").source_format for p in golden_folders()}
    assert formats == {"V0", "V1", "current"}


def _net_with(blob_setter) -> bytes:
    net = pb2.NetParameter()
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob_setter(layer.blobs.add())
    return net.SerializeToString()


def test_packed_float_data(tmp_path):
    values = np.arange(12, dtype=np.float32)
    path = tmp_path / "w.caffemodel"

    def setter(blob):
        blob.shape.dim.extend([3, 4])
        blob.data.extend(values.tolist())
    path.write_bytes(_net_with(setter))
    [layer] = io.read_caffemodel(path)
    assert layer.name == "fc" and layer.type == "InnerProduct"
    assert layer.blobs[0].shape == (3, 4)
    np.testing.assert_array_equal(layer.blobs[0].data, values)


def test_unpacked_float_data(tmp_path):
    """Old writers emit `data` one float per field (wire type 5), not packed: read them too."""
    values = [1.5, -2.0, 3.25]
    body = b"".join(b"\x2d" + np.float32(v).tobytes() for v in values)  # field 5, wire type 5
    shape = b"\x3a\x02\x08\x03"                                        # field 7: BlobShape { dim: 3 }
    blob = shape + body
    layer = b"\x0a\x02fc" + b"\x12\x0cInnerProduct" + b"\x3a" + bytes([len(blob)]) + blob
    data = b"\xa2\x06" + bytes([len(layer)]) + layer                  # field 100, length-delimited
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data)
    [raw] = io.read_caffemodel(path)
    np.testing.assert_array_equal(raw.blobs[0].data, np.array(values, dtype=np.float32))
    assert raw.blobs[0].shape == (3,)


def test_double_data(tmp_path):
    values = np.linspace(-1, 1, 6)

    def setter(blob):
        blob.shape.dim.extend([2, 3])
        blob.double_data.extend(values.tolist())
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_net_with(setter))
    [layer] = io.read_caffemodel(path)
    assert layer.blobs[0].data.dtype == np.float64
    np.testing.assert_array_equal(layer.blobs[0].data, values)


def test_legacy_v1_blob_dims(tmp_path):
    net = pb2.NetParameter()
    v1 = net.layers.add(name="conv", type=pb2.V1LayerParameter.CONVOLUTION)
    blob = v1.blobs.add(num=1, channels=1, height=1, width=4)
    blob.data.extend([1, 2, 3, 4])
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net.SerializeToString())
    [layer] = io.read_caffemodel(path)
    assert layer.name == "conv" and layer.type == str(pb2.V1LayerParameter.CONVOLUTION)
    assert layer.blobs[0].legacy_shape == (1, 1, 1, 4) and layer.blobs[0].shape is None


def test_layers_without_blobs_are_kept(tmp_path):
    net = pb2.NetParameter()
    net.layer.add(name="relu", type="ReLU")
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net.SerializeToString())
    [layer] = io.read_caffemodel(path)
    assert layer.name == "relu" and layer.blobs == []


def test_blob_decoding_has_no_per_float_python():
    """Fast path: float data is handed to numpy as a view, never decoded float by float."""
    source = Path(io.__file__).read_text()
    tree = ast.parse(source)
    decoders = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("_read_blob", "_typed_array")]
    assert len(decoders) == 2
    calls = {getattr(c.func, "attr", getattr(c.func, "id", "")) for d in decoders for c in ast.walk(d)
             if isinstance(c, ast.Call)}
    assert "frombuffer" in calls
    assert "unpack" not in calls and "unpack_from" not in calls


def test_caffemodel_arrays_are_views_of_the_file(tmp_path):
    values = np.arange(1000, dtype=np.float32)

    def setter(blob):
        blob.shape.dim.append(1000)
        blob.data.extend(values.tolist())
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_net_with(setter))
    [layer] = io.read_caffemodel(path)
    assert layer.blobs[0].data.base is not None  # a view, not a copy


def test_layer_lines_skip_comments_and_strings():
    text = '# layer { not this\nname: "x { layer {"\nlayer {\n  name: "a"\n}\nlayers {\n}\n'
    assert io.layer_lines(text) == [3, 6]


def test_read_caffemodel_proto_full_parse():
    net = io.read_caffemodel_proto(VENDORED_GOLDEN / "legacy_v1" / "weights.caffemodel")
    assert len(net.layers) > 0
