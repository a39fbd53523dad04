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


# --- repeated layer names in the prototxt (issue 21: HED names five Crop layers "crop") ---------------
# What BVLC Caffe 9b891540 does, run with ../shared/oracles: a caffemodel layer "conv" reaches the FIRST
# net layer named "conv" (Net::CopyTrainedLayersFrom scans layer_names_ from the start); the second one
# keeps its fillers. Source blobs that fit only the second layer: "Cannot copy param 0 weights from layer
# 'conv'; shape mismatch". A first "conv" without blobs: "Incompatible number of blobs for layer conv".

DUPLICATE_NET = ('layer { name: "data" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } } }\n'
                 'layer { name: "conv" type: "FIRST" bottom: "data" top: "a" PARAM }\n'
                 'layer { name: "conv" type: "Convolution" bottom: "a" top: "b" '
                 'convolution_param { num_output: 2 kernel_size: 1 } }\n')
CONV_A = "convolution_param { num_output: 4 kernel_size: 3 }"


def _duplicate_net(tmp_path, first="Convolution", param=CONV_A, blobs=((4, 3, 3, 3), (4,))):
    from tests.caffe_files import write_caffemodel

    proto = tmp_path / "net.prototxt"
    proto.write_text(DUPLICATE_NET.replace("FIRST", first).replace("PARAM", param))
    weights = write_caffemodel(tmp_path / "w.caffemodel",
                               {"conv": [np.full(shape, 7.0, np.float32) for shape in blobs]})
    return proto, weights


def test_a_repeated_name_gets_weights_in_its_first_layer_only(tmp_path):
    proto, weights = _duplicate_net(tmp_path)
    with pytest.warns(ninport.NinportWarning) as caught:
        module = ninport.load(proto, weights)
    [warning] = [w for w in caught if "cannot get weights" in str(w.message)]
    assert 'layer "conv" (Convolution)' in str(warning.message) and "first layer of its name" in str(warning.message)
    first, second = ninport.describe(module).layers
    assert (first.name, second.name) == ("conv", "conv") and first.module != second.module
    assert bool((module.get_submodule(first.module).weight == 7).all())
    assert module.get_submodule(second.module).weight.shape == (2, 4, 1, 1)
    assert not bool((module.get_submodule(second.module).weight == 7).any())  # seeded random, not the first's


def test_a_repeated_name_with_the_second_layers_shapes_is_refused_as_caffe_does(tmp_path):
    proto, weights = _duplicate_net(tmp_path, blobs=((2, 4, 1, 1), (2,)))
    with pytest.warns(ninport.NinportWarning, match="cannot get weights"):
        with pytest.raises(WeightsError, match=r'"conv" \(Convolution\) blob 0: .*\[2, 4, 1, 1\].*\[4, 3, 3, 3\]'):
            ninport.load(proto, weights)


def test_a_repeated_name_whose_first_layer_has_no_weights_is_refused_as_caffe_does(tmp_path):
    proto, weights = _duplicate_net(tmp_path, first="ReLU", param="", blobs=((2, 3, 1, 1), (2,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(WeightsError, match=r"has 2 blobs .* ReLU has no weights"):
            ninport.load(proto, weights)


def test_repeated_names_without_weights_need_no_warning(tmp_path):
    """HED's five Crop layers are all named "crop"; its caffemodel lists them, without blobs."""
    from tests.caffe_files import write_caffemodel

    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
                     'layer { name: "act" type: "ReLU" bottom: "data" top: "a" }\n'
                     'layer { name: "act" type: "Sigmoid" bottom: "a" top: "b" }\n'
                     'layer { name: "fc" type: "InnerProduct" bottom: "b" top: "fc" '
                     'inner_product_param { num_output: 2 } }\n')
    weights = write_caffemodel(tmp_path / "w.caffemodel", {"act": [], "fc": [np.ones((2, 3), np.float32),
                                                                              np.ones(2, np.float32)]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = ninport.load(proto, weights)
    assert [(r.name, r.type, r.module) for r in ninport.describe(module).layers] == [
        ("act", "ReLU", "act"), ("act", "Sigmoid", "act_2"), ("fc", "InnerProduct", "fc")]
    assert [row.layer for row in ninport.summary(proto, weights=weights).layers] == ["act", "act", "fc"]
