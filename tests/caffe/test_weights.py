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

from tests.conftest import NIN_DEPLOY, SHARED_GOLDEN, VENDORED_GOLDEN

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
    import json

    folder = SHARED_GOLDEN / name
    if not folder.is_dir():
        pytest.skip("NIN golden cases (38 MB) need ../shared/caffe-golden beside the checkout")
    info = json.loads((folder / "case.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(folder / info["prototxt"], folder / info["weights"])
    params = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    assert params >= 7_595_176


def test_nin_weights_fit_deploy_at_227():
    folder = SHARED_GOLDEN / "nin_v1_224"
    if not folder.is_dir():
        pytest.skip("NIN golden cases need ../shared/caffe-golden")
    module = ninport.load(NIN_DEPLOY, folder / "weights.caffemodel", input_shape=(1, 3, 227, 227))
    assert ninport.describe(module).inputs["data"] == (1, 3, 227, 227)
