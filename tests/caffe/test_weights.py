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
    from ninport.build.shapes import infer_shapes
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


# --- random weights follow the prototxt's fillers, as Caffe initialises a net --------------------

def _filler(**fields) -> pb2.FillerParameter:
    return pb2.FillerParameter(**fields)


def _draw(shape, **fields) -> np.ndarray:
    from ninport.caffe.weights import caffe_filler_values

    return caffe_filler_values(_filler(**fields), shape, np.random.default_rng(0))


def test_constant_uniform_and_gaussian_fillers():
    assert np.all(_draw((3, 4), type="constant", value=0.2) == np.float32(0.2))
    assert np.all(_draw((3,), type="constant") == 0)  # Caffe's default filler: constant 0
    u = _draw((200, 500), type="uniform", min=-0.3, max=0.5)
    assert u.min() >= -0.3 and u.max() < 0.5 and abs(u.mean() - 0.1) < 0.01
    g = _draw((200, 500), type="gaussian", mean=1.0, std=0.02)
    assert abs(g.mean() - 1.0) < 0.001 and abs(g.std() - 0.02) < 0.001
    assert abs(_draw((100, 1000), type="gaussian").std() - 1.0) < 0.01  # Caffe's default std is 1


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    """`sparse: 3` on a 10 x 2000 weight: each value survives with probability 3 / 10 (num_outputs = shape[0])."""
    values = _draw((10, 2000), type="gaussian", std=1.0, sparse=3)
    assert abs(np.mean(values != 0) - 0.3) < 0.02


def test_positive_unitball_rows_sum_to_one():
    values = _draw((4, 3, 5), type="positive_unitball")
    assert values.min() >= 0 and np.allclose(values.reshape(4, -1).sum(axis=1), 1.0)


@pytest.mark.parametrize("norm,n", [(None, 32 * 9), ("FAN_IN", 32 * 9), ("FAN_OUT", 64 * 9),
                                    ("AVERAGE", (32 * 9 + 64 * 9) / 2)])
def test_xavier_and_msra_scale_by_caffes_fans(norm, n):
    """A (64, 32, 3, 3) weight: fan_in = count / num = 288, fan_out = count / channels = 576."""
    extra = {} if norm is None else {"variance_norm": getattr(pb2.FillerParameter, norm)}
    xavier = _draw((64, 32, 3, 3), type="xavier", **extra)
    bound = np.sqrt(3.0 / n)
    assert np.abs(xavier).max() <= bound and np.abs(xavier).max() > 0.99 * bound
    assert abs(xavier.std() - bound / np.sqrt(3)) < 0.02 * bound
    msra = _draw((64, 32, 3, 3), type="msra", **extra)
    std = np.sqrt(2.0 / n)
    assert abs(msra.mean()) < 0.05 * std and abs(msra.std() - std) < 0.02 * std


def test_inner_product_fans_follow_the_blob_shape():
    """Caffe's fans come from the blob's shape: an InnerProduct weight (N, K) has fan_in K, fan_out N."""
    values = _draw((10, 4000), type="xavier", variance_norm=pb2.FillerParameter.FAN_OUT)
    assert np.abs(values).max() <= np.sqrt(3.0 / 10) and np.abs(values).max() > 0.99 * np.sqrt(3.0 / 10)


def test_bilinear_filler_is_caffes_upsampling_kernel():
    even = _draw((2, 1, 4, 4), type="bilinear")
    line = np.array([0.25, 0.75, 0.75, 0.25])
    assert np.allclose(even[0, 0], np.outer(line, line)) and np.allclose(even[1, 0], even[0, 0])
    odd = _draw((1, 1, 3, 3), type="bilinear")  # f = 2, c = (2f - 1 - f % 2) / 2f = 0.75
    assert np.allclose(odd[0, 0], np.outer([0.25, 0.75, 0.75], [0.25, 0.75, 0.75]))


@pytest.mark.parametrize("fields,message", [
    ({"type": "nonsense"}, "unknown filler type"),
    ({"type": "xavier", "sparse": 2}, "sparse"),
])
def test_fillers_caffe_refuses_raise(fields, message):
    with pytest.raises(ValueError, match=message):
        _draw((4, 4), **fields)
    with pytest.raises(ValueError, match="bilinear"):
        _draw((4, 4), type="bilinear")


FILLED_NET = """
name: "filled"
input: "data"
input_shape { dim: 1 dim: 8 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3
    weight_filler { type: "msra" variance_norm: FAN_OUT } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
  convolution_param { num_output: 16 group: 16 kernel_size: 4 stride: 2 bias_term: false
    weight_filler { type: "bilinear" } } }
layer { name: "scale" type: "Scale" bottom: "up" top: "up"
  scale_param { bias_term: true filler { type: "constant" value: 2 } bias_filler { type: "constant" value: -1 } } }
layer { name: "prelu" type: "PReLU" bottom: "up" top: "up" prelu_param { filler { type: "constant" value: 0.3 } } }
layer { name: "fc" type: "InnerProduct" bottom: "up" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "odd" type: "InnerProduct" bottom: "fc" top: "odd"
  inner_product_param { num_output: 3 weight_filler { type: "weird" } } }
"""


def test_random_weights_follow_the_prototxts_fillers(tmp_path):
    """Without a caffemodel each blob is drawn as its filler says; a blob without one keeps ninport's
    default; a filler Caffe does not know falls back to the default with a warning naming the layer."""
    prototxt = tmp_path / "filled.prototxt"
    prototxt.write_text(FILLED_NET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = ninport.load(prototxt)
    messages = [str(w.message) for w in caught if issubclass(w.category, ninport.NinportWarning)]
    assert any('layer "odd"' in m and "unknown filler type 'weird'" in m for m in messages), messages
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    meta = ninport.describe(module)

    def blob(layer, name):
        return weights[f"{meta.module_of(layer)}.{name}"]
    conv = blob("conv", "weight")
    assert abs(conv.std() - np.sqrt(2.0 / (16 * 9))) < 0.1 * np.sqrt(2.0 / (16 * 9))  # msra, fan_out = 16*3*3
    assert np.all(blob("conv", "bias") == np.float32(0.1))
    line = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    assert np.allclose(blob("up", "weight"), np.outer(line, line))
    scale_blobs = sorted(v.reshape(-1)[0] for k, v in weights.items() if k.startswith(meta.module_of("scale")))
    assert scale_blobs == [-1.0, 2.0]
    assert np.allclose(next(v for k, v in weights.items() if k.startswith(meta.module_of("prelu"))), 0.3)
    fc = blob("fc", "weight")  # no filler: ninport's default, xavier-like uniform over fan_in
    assert np.abs(fc).max() <= np.sqrt(3.0 / fc.shape[1])


def test_nets_without_fillers_keep_their_seeded_weights():
    """Following fillers changes nothing for a prototxt that declares none: the same seed gives the
    same numbers as before (the random stream is drawn in the same order)."""
    from ninport.api import load_spec
    from ninport.build.shapes import infer_shapes
    from ninport.caffe.weights import random_weights

    spec = load_spec(NIN_DEPLOY)
    blobs = random_weights(infer_shapes(spec), spec, seed=0)
    rng = np.random.default_rng(0)
    first = spec.layers[0]
    shape = blobs[first.name][0].shape
    expected = (rng.uniform(-1, 1, shape) * np.sqrt(3.0 / np.prod(shape[1:]))).astype(np.float32)
    assert np.array_equal(blobs[first.name][0], expected)
    assert np.array_equal(blobs[first.name][1], rng.normal(0, 0.01, blobs[first.name][1].shape).astype(np.float32))
