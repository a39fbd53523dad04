"""Converters not covered by a golden case, checked against numpy formulas of Caffe's semantics,
and a guard that every registered converter is exercised somewhere."""
from __future__ import annotations


import numpy as np
import pytest
import torch

import ninport
from ninport import registry
from tests.caffe_files import input_layer, write_caffemodel

def _write_net(tmp_path, body: str, blobs: dict[str, list[np.ndarray]] | None = None, shape=(2, 3, 4, 5)):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "t"\n' + input_layer(shape) + body)
    return proto, (write_caffemodel(tmp_path / "net.caffemodel", blobs) if blobs is not None else None)


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 3, 4, 5)).astype(np.float32)


def test_swish(tmp_path):
    proto, _ = _write_net(tmp_path, 'layer { name: "s" type: "Swish" bottom: "data" top: "s" swish_param { beta: 1.5 } }')
    x = _x()
    out = ninport.load(proto)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, x / (1 + np.exp(-1.5 * x)), rtol=1e-5, atol=1e-6)


def test_scale_with_second_bottom_and_bias(tmp_path):
    body = ('layer { name: "r" type: "Reduction" bottom: "data" top: "r" }\n')
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: AVE global_pooling: true } }\n'
            'layer { name: "f" type: "Flatten" bottom: "p" top: "f" }\n'
            'layer { name: "sc" type: "Scale" bottom: "data" bottom: "f" top: "y" scale_param { axis: 0 bias_term: true } }\n')
    bias = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto, weights = _write_net(tmp_path, body, {"sc": [bias]})
    x = _x(1)
    out = ninport.load(proto, weights)(torch.from_numpy(x)).detach().numpy()
    factor = x.mean(axis=(2, 3))
    np.testing.assert_allclose(out, x * factor[:, :, None, None] + bias[:, :, None, None], rtol=1e-5, atol=1e-6)


def test_bias_with_second_bottom(tmp_path):
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX global_pooling: true } }\n'
            'layer { name: "f" type: "Flatten" bottom: "p" top: "f" }\n'
            'layer { name: "b" type: "Bias" bottom: "data" bottom: "f" top: "y" bias_param { axis: 0 } }\n')
    proto, _ = _write_net(tmp_path, body)
    x = _x(2)
    out = ninport.load(proto)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, x + x.max(axis=(2, 3))[:, :, None, None], rtol=1e-6)


def test_batchnorm_without_global_stats_uses_batch_statistics(tmp_path):
    body = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y" batch_norm_param { use_global_stats: false } }\n'
    ones = np.ones(3, dtype=np.float32)
    proto, weights = _write_net(tmp_path, body, {"bn": [ones * 100, ones * 100, np.ones(1, np.float32)]})
    x = _x(3)
    out = ninport.load(proto, weights)(torch.from_numpy(x)).detach().numpy()
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_batchnorm_zero_scale_factor_means_zero_statistics(tmp_path):
    body = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y" }\n'
    ones = np.ones(3, dtype=np.float32)
    proto, weights = _write_net(tmp_path, body, {"bn": [ones * 7, ones * 9, np.zeros(1, np.float32)]})
    x = _x(4)
    out = ninport.load(proto, weights)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, x / np.sqrt(1e-5), rtol=1e-5)


def test_max_pool_window_past_the_input_gives_caffes_lowest_float(tmp_path):
    """pad 0, stride > kernel: Caffe keeps a last window that starts past the input."""
    body = 'layer { name: "p" type: "Pooling" bottom: "data" top: "y" pooling_param { pool: MAX kernel_size: 1 stride: 3 } }\n'
    proto, _ = _write_net(tmp_path, body)
    x = _x(5)
    out = ninport.load(proto)(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (2, 3, 2, 3)  # ceil((4-1)/3)+1 = 2, ceil((5-1)/3)+1 = 3
    np.testing.assert_array_equal(out[:, :, :, :2], x[:, :, ::3, ::3][:, :, :2, :2])
    assert (out[:, :, :, 2] == -np.finfo(np.float32).max).all()


def test_a_huge_stride_pads_only_to_the_last_window(tmp_path):
    """Found by a fuzz campaign: stride 65536 once padded 65536 columns and rows (51 GB) for a 7x7 input.
    Caffe keeps one window, [-1, 1) on each axis, and AVE divides by its 2x2 size."""
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "y" '
            'pooling_param { pool: AVE kernel_size: 2 stride: 65536 pad: 1 } }\n')
    proto, _ = _write_net(tmp_path, body, shape=(1, 3, 7, 7))
    x = np.random.default_rng(0).normal(size=(1, 3, 7, 7)).astype(np.float32)
    out = ninport.load(proto)(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(out[:, :, 0, 0], x[:, :, 0, 0] / 4, rtol=1e-6)


def test_every_builtin_record_names_a_converter_that_exists():
    """A type with a shape rule but no converter would pass inspect and fail load."""
    for record in registry.all_layer_types():
        assert callable(record.convert_function()), record.name


def test_registering_a_type_twice_is_an_error():
    with pytest.raises(ninport.NinportError, match="already registered"):
        ninport.register_layer("Convolution", shape=lambda layer, shapes: shapes, module=lambda ctx: None)


def test_multi_top_split_gives_every_top_the_bottom(tmp_path):
    body = ('layer { name: "sp" type: "Split" bottom: "data" top: "a" top: "b" top: "c" }\n'
            'layer { name: "ea" type: "Power" bottom: "a" top: "ya" power_param { scale: 2 } }\n'
            'layer { name: "eb" type: "Power" bottom: "b" top: "yb" power_param { shift: 1 } }\n'
            'layer { name: "sum" type: "Eltwise" bottom: "ya" bottom: "yb" bottom: "c" top: "y" }\n')
    proto, _ = _write_net(tmp_path, body)
    x = _x(3)
    module = ninport.load(proto)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), 2 * x + (x + 1) + x, rtol=1e-6)
    blobs = ninport.forward_blobs(module, torch.from_numpy(x))
    for top in "abc":
        np.testing.assert_array_equal(blobs[top].numpy(), x)


def test_unsupported_layer_names_layer_type_and_lists_supported(tmp_path):
    proto, _ = _write_net(tmp_path, 'layer { name: "weird" type: "Im2col" bottom: "data" top: "y" }\n')
    with pytest.raises(ninport.UnsupportedLayerError) as info:
        ninport.load(proto)
    message = str(info.value)
    assert "weird" in message and "Im2col" in message and "Convolution" in message and str(proto) in message


@pytest.mark.parametrize("param,expected", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("axis: 1 num_axes: 2 shape { dim: 12 }", (2, 12, 5)),
    ("axis: -1 num_axes: 0 shape { dim: 1 }", (2, 3, 4, 5, 1)),
    ("axis: 0 num_axes: 0 shape { dim: 1 }", (1, 2, 3, 4, 5)),
    ("axis: 2 shape { dim: 2 dim: -1 dim: 5 }", (2, 3, 2, 2, 5)),
])
def test_reshape_axis_and_num_axes_follow_caffe(tmp_path, param, expected):
    """Caffe's reshape_param examples: 0 copies, -1 infers, axis/num_axes pick the replaced range."""
    proto, _ = _write_net(tmp_path, f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "y" '
                                    f'reshape_param {{ {param} }} }}\n')
    x = _x(6)
    module = ninport.load(proto)
    out = module(torch.from_numpy(x)).detach().numpy()
    assert out.shape == expected
    np.testing.assert_array_equal(out.ravel(), x.ravel())
    # the batch stays dynamic: the exported file reshapes a batch of 6 the same way torch does
    from ninport.export.artifacts import verify_onnx
    from ninport.export.onnx import export_onnx

    big = np.concatenate([x] * 3)
    (got,) = verify_onnx(export_onnx(module, tmp_path / "r.onnx"), {"data": big})
    np.testing.assert_array_equal(got, module(torch.from_numpy(big)).detach().numpy())
