"""Matching caffemodel blobs to layers: legacy 4-D reconciliation, dtype, refusal before tensors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ninport
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.io import RawBlob
from ninport.caffe.weights import reconcile_blob
from ninport.errors import WeightsError

from tests.conftest import NIN_DEPLOY, VENDORED_GOLDEN, load_golden

NET = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
       'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 4 } }\n')


def test_legacy_bias_1x1x1xn_reconciles():
    blob = RawBlob(np.arange(4, dtype=np.float32), legacy_shape=(1, 1, 1, 4))
    assert reconcile_blob(blob, (4,), "b").shape == (4,)
    weight = RawBlob(np.zeros(12, dtype=np.float32), legacy_shape=(1, 1, 4, 3))
    assert reconcile_blob(weight, (4, 3), "w").shape == (4, 3)


def test_legacy_shape_that_does_not_pad_to_expected_is_refused():
    blob = RawBlob(np.arange(4, dtype=np.float32), legacy_shape=(1, 1, 4, 1))
    with pytest.raises(WeightsError, match=r"\[1, 1, 4, 1\].*\[4\]"):
        reconcile_blob(blob, (4,), "b")


def test_modern_shape_must_match_exactly():
    blob = RawBlob(np.arange(4, dtype=np.float32), shape=(1, 4))
    with pytest.raises(WeightsError, match=r"\[1, 4\].*\[4\]"):
        reconcile_blob(blob, (4,), "b")


def test_double_blobs_become_float32():
    blob = RawBlob(np.arange(4, dtype=np.float64), shape=(4,))
    out = reconcile_blob(blob, (4,), "b")
    assert out.dtype == np.float32 and out.tolist() == [0, 1, 2, 3]


def _write_model(path, blob_fn):
    net = pb2.NetParameter()
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob_fn(layer.blobs.add(), layer.blobs.add())
    path.write_bytes(net.SerializeToString())
    return path


def test_load_with_double_data_and_v1_bias(tmp_path):
    import torch

    proto = tmp_path / "net.prototxt"
    proto.write_text(NET)

    def blobs(w, b):
        w.shape.dim.extend([4, 3])
        w.double_data.extend([float(i) for i in range(12)])
        b.num, b.channels, b.height, b.width = 1, 1, 1, 4
        b.data.extend([1, 1, 1, 1])
    module = ninport.load(proto, _write_model(tmp_path / "w.caffemodel", blobs))
    out = module(torch.ones(1, 3))
    expected = np.arange(12, dtype=np.float32).reshape(4, 3).sum(1) + 1
    np.testing.assert_allclose(out.detach().numpy()[0], expected)


def test_golden_legacy_v1_weights_load():
    case = VENDORED_GOLDEN / "legacy_v1"
    module = ninport.load(case / "net.prototxt", case / "weights.caffemodel")
    assert ninport.describe(module).weights.endswith("weights.caffemodel")


@pytest.mark.parametrize("name", ["nin_v1_224", "nin_v1_227"])
def test_nin_caffemodel_loads(name):
    case = load_golden(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(case.prototxt, case.weights)
    params = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    assert params >= 7_595_176


def test_nin_weights_fit_deploy_at_227():
    module = ninport.load(NIN_DEPLOY, load_golden("nin_v1_224").weights, input_shape=(1, 3, 227, 227))
    assert ninport.describe(module).inputs["data"] == (1, 3, 227, 227)


# --- duplicate layer names in a caffemodel (issue 10) -----------------------------------------


def _attach(tmp_path, fill_layers):
    from ninport.caffe import io
    from ninport.caffe.shapes import infer_shapes
    from ninport.caffe.spec import load_netspec
    from ninport.caffe.weights import attach_weights

    proto = tmp_path / "net.prototxt"
    proto.write_text(NET)
    net = pb2.NetParameter()
    fill_layers(net)
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(net.SerializeToString())
    spec = load_netspec(proto)
    return attach_weights(spec, infer_shapes(spec), io.read_caffemodel(weights), str(weights))


def _fc(net, value, rows=4):
    layer = net.layer.add(name="fc", type="InnerProduct")
    w = layer.blobs.add()
    w.shape.dim.extend([rows, 3])
    w.data.extend([value] * rows * 3)
    b = layer.blobs.add()
    b.shape.dim.append(rows)
    b.data.extend([value] * rows)


def test_duplicate_named_layers_last_one_wins_like_caffe(tmp_path):
    """Net::CopyTrainedLayersFrom copies every source layer of a name in order: the last wins."""
    weights = _attach(tmp_path, lambda net: (_fc(net, 1.0), _fc(net, 2.0)))
    assert weights["fc"][0].shape == (4, 3) and float(weights["fc"][0][0, 0]) == 2.0
    assert float(weights["fc"][1][0]) == 2.0


def test_every_duplicate_is_shape_checked(tmp_path):
    """Caffe checks each copy: a wrong shape in the first copy fails even if the last one fits."""
    with pytest.raises(WeightsError, match=r"copy 1 of 2.*\[5, 3\].*\[4, 3\]"):
        _attach(tmp_path, lambda net: (_fc(net, 1.0, rows=5), _fc(net, 2.0)))
    with pytest.raises(WeightsError, match=r"copy 2 of 2 .*blobs"):
        _attach(tmp_path, lambda net: (_fc(net, 1.0), net.layer.add(name="fc", type="InnerProduct")))
