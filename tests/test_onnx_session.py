"""ninport.check.onnx_session: the self-check opens an ONNX file in onnxruntime with its large initializers mapped
from the file instead of copied, and what runs is the file's own graph and bytes."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ninport
from ninport.check.onnx_session import MAPPED_BYTES, model_without_weights, open_session
from ninport.errors import NinportError
from tests.caffe_files import input_layer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NET = ('layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param { num_output: 100 } }\n'
       'layer { name: "relu" type: "ReLU" bottom: "fc1" top: "fc1" }\n'
       'layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 10 } }\n')


@pytest.fixture()
def exported(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((2, 50)) + NET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        module = ninport.load(path)
    return ninport.export_onnx(module, tmp_path / "net.onnx")


def test_large_initializers_refer_to_their_bytes_in_the_file(exported):
    whole = onnx.load(str(exported))
    model = model_without_weights(exported)
    data = exported.read_bytes()
    by_name = {t.name: t for t in whole.graph.initializer}
    mapped = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert sorted(len(by_name[t.name].raw_data) for t in mapped) == [1000 * 4, 5000 * 4]  # fc2, fc1 weights
    for tensor in model.graph.initializer:
        original = by_name[tensor.name]
        assert list(tensor.dims) == list(original.dims) and tensor.data_type == original.data_type
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            assert info["location"] == exported.name and not tensor.raw_data
            start, length = int(info["offset"]), int(info["length"])
            assert data[start:start + length] == original.raw_data
        else:
            assert len(original.raw_data) < MAPPED_BYTES and tensor.raw_data == original.raw_data
    # everything but the initializers is the file's own
    for proto in (model, whole):
        del proto.graph.initializer[:]
    assert model == whole


def test_the_session_computes_what_the_file_computes(exported):
    inputs = {"data": np.random.default_rng(0).standard_normal((2, 50), dtype=np.float32)}
    plain = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    [expected] = plain.run(None, inputs)
    relu = next(n.output[0] for n in model_without_weights(exported).graph.node if n.op_type == "Relu")
    session = open_session(exported, extra_outputs=[relu])
    assert [o.name for o in session.get_outputs()] == ["fc2", relu]
    got, hidden = session.run(None, inputs)
    np.testing.assert_array_equal(got, expected)
    assert hidden.shape == (2, 100) and (hidden >= 0).all() and (hidden > 0).any()


def test_a_file_saved_with_external_data_still_opens(exported, tmp_path):
    whole = onnx.load(str(exported))
    other = tmp_path / "external.onnx"
    onnx.save_model(whole, str(other), save_as_external_data=True, location="external.data", size_threshold=0)
    inputs = {"data": np.ones((2, 50), np.float32)}
    np.testing.assert_array_equal(open_session(other).run(None, inputs)[0],
                                  open_session(exported).run(None, inputs)[0])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_broken_file_is_one_error_naming_it(exported, damage):
    data = exported.read_bytes()
    exported.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with pytest.raises(NinportError, match=f"{exported}: not a valid ONNX file"):
        model_without_weights(exported)


def test_an_older_onnxruntime_opens_the_file_itself(exported, monkeypatch):
    """onnxruntime before 1.21 cannot take external data from a folder for a model given in memory: the file is
    opened by path, or read whole with onnx when extra outputs are wanted; the numbers are the same."""
    from ninport.check import onnx_session

    inputs = {"data": np.random.default_rng(1).standard_normal((2, 50), dtype=np.float32)}
    relu = next(n.output[0] for n in model_without_weights(exported).graph.node if n.op_type == "Relu")
    mapped = open_session(exported, extra_outputs=[relu]).run(None, inputs)
    monkeypatch.setattr(onnx_session, "maps_external_data", lambda: False)
    for extra in ([], [relu]):
        got = open_session(exported, model_without_weights(exported), extra).run(None, inputs)
        assert len(got) == 1 + len(extra)
        for a, b in zip(got, mapped):
            np.testing.assert_array_equal(a, b)
