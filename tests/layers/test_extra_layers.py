"""ArgMax, Reduction, Tile, MVN, Embed, Parameter and SPP against numpy formulas of Caffe's own code
(src/caffe/layers/*.cpp), their setup checks as ShapeErrors naming the layer, and each net through
ONNX and onnxruntime."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.caffe.geometry import pool_output_size
from tests.caffe_files import input_layer, write_caffemodel

FLT_MAX = float(np.finfo(np.float32).max)


def _net(tmp_path, body: str, shape=(2, 3, 4, 5), blobs: dict[str, list[np.ndarray]] | None = None):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "extra"\n' + input_layer(shape) + body)
    return proto, (write_caffemodel(tmp_path / "net.caffemodel", blobs) if blobs is not None else None)


def _run(tmp_path, body, x, blobs=None, onnx_check=True):
    """The converted net's output for `x`; and, where ONNX export exists, onnxruntime's must match it."""
    proto, weights = _net(tmp_path, body, x.shape, blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(proto, weights)
    with torch.no_grad():
        out = module(torch.from_numpy(x)).detach().numpy()
    if onnx_check:
        _check_onnx(module, tmp_path, x, out)
    return out


def _check_onnx(module, tmp_path, x, expected):
    from ninport.export.onnx import export_onnx

    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(module, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _expect_error(tmp_path, body, error=ninport.ShapeError, shape=(2, 3, 4, 5), layer="L", words=()):
    proto, _ = _net(tmp_path, body, shape)
    with pytest.raises(error) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ninport.load(proto)
    message = str(info.value)
    assert f'"{layer}"' in message and str(proto) in message, message
    for word in words:
        assert word in message, message


def _x(shape=(2, 3, 4, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _ties(shape=(2, 3, 4, 5), seed=0):
    """Small integers: many equal values, to pin down Caffe's tie order."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float32)


# --- ArgMax ------------------------------------------------------------------------------------


def _caffe_top_k(values: np.ndarray, k: int) -> list[tuple[float, int]]:
    """std::partial_sort of (value, index) pairs with std::greater: value, then index, descending."""
    return sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)[:k]


def _argmax_reference(x, top_k, out_max_val, axis=None):
    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        top = [1] * max(3, x.ndim)
        top[0], top[2] = x.shape[0], top_k
        if out_max_val:
            top[1] = 2
        out = np.zeros((x.shape[0], 2 if out_max_val else 1, top_k), np.float32)
        for i, row in enumerate(flat):
            best = _caffe_top_k(row, top_k)
            out[i, 0] = [j for _, j in best]
            if out_max_val:
                out[i, 1] = [v for v, _ in best]
        return out.reshape(top)
    moved = np.moveaxis(x, axis, -1)
    out = np.zeros(moved.shape[:-1] + (top_k,), np.float32)
    for idx in np.ndindex(moved.shape[:-1]):
        best = _caffe_top_k(moved[idx], top_k)
        out[idx] = [v for v, _ in best] if out_max_val else [j for _, j in best]
    return np.moveaxis(out, -1, axis)


def _argmax_body(params: str) -> str:
    return f'layer {{ name: "L" type: "ArgMax" bottom: "data" top: "y" argmax_param {{ {params} }} }}\n'


@pytest.mark.parametrize("params, top_k, out_max_val, axis, shape", [
    ("", 1, False, None, (2, 1, 1, 1)),
    ("top_k: 4", 4, False, None, (2, 1, 4, 1)),
    ("out_max_val: true", 1, True, None, (2, 2, 1, 1)),
    ("out_max_val: true top_k: 5", 5, True, None, (2, 2, 5, 1)),
    ("axis: 1", 1, False, 1, (2, 1, 4, 5)),
    ("axis: 1 top_k: 2", 2, False, 1, (2, 2, 4, 5)),
    ("axis: -1 top_k: 3 out_max_val: true", 3, True, 3, (2, 3, 4, 3)),
    ("axis: 0 out_max_val: true", 1, True, 0, (1, 3, 4, 5)),
])
@pytest.mark.parametrize("make", [_x, _ties], ids=["distinct", "ties"])
def test_argmax_matches_caffes_order_and_layout(tmp_path, params, top_k, out_max_val, axis, shape, make):
    x = make()
    # ONNX once per layout (with ties, the stricter case); axis 0 fixes the batch
    out = _run(tmp_path, _argmax_body(params), x, onnx_check=make is _ties and axis != 0)
    assert out.shape == shape
    np.testing.assert_array_equal(out, _argmax_reference(x, top_k, out_max_val, axis))


def test_argmax_ties_go_to_the_larger_index(tmp_path):
    x = np.zeros((1, 6), np.float32)
    x[0, [1, 4]] = 7
    out = _run(tmp_path, _argmax_body("out_max_val: true top_k: 3"), x)
    assert out.shape == (1, 2, 3)  # a 2-D bottom still gives 3 axes
    np.testing.assert_array_equal(out[0], [[4, 1, 5], [7, 7, 0]])


@pytest.mark.parametrize("params, words", [
    ("top_k: 0", ["top_k"]),
    ("top_k: 61", ["top_k 61"]),
    ("axis: 2 top_k: 5", ["top_k 5", "axis 2"]),
    ("axis: 4", ["axis 4"]),
])
def test_argmax_bad_parameters(tmp_path, params, words):
    _expect_error(tmp_path, _argmax_body(params), words=words)


# --- Reduction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis, coeff", [(1, 1.0), (2, -0.5), (-1, 3.0), (0, 2.0)])
def test_reduction(tmp_path, op, axis, coeff):
    x = _x(seed=3)
    body = (f'layer {{ name: "L" type: "Reduction" bottom: "data" top: "y" '
            f'reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }} }}\n')
    out = _run(tmp_path, body, x, onnx_check=axis == 2)  # ONNX once per operation
    a = axis % x.ndim
    flat = x.reshape(x.shape[:a] + (-1,)).astype(np.float64)
    expected = {"SUM": flat.sum(-1), "ASUM": np.abs(flat).sum(-1), "SUMSQ": (flat ** 2).sum(-1),
                "MEAN": flat.mean(-1)}[op] * coeff
    assert out.shape == x.shape[:a]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_reduction_defaults_sum_everything(tmp_path):
    x = _x(seed=4)
    out = _run(tmp_path, 'layer { name: "L" type: "Reduction" bottom: "data" top: "y" }\n', x, onnx_check=False)
    assert out.shape == ()
    np.testing.assert_allclose(out, x.astype(np.float64).sum(), rtol=1e-5, atol=1e-5)


def test_reduction_bad_axis(tmp_path):
    _expect_error(tmp_path, 'layer { name: "L" type: "Reduction" bottom: "data" top: "y" '
                            'reduction_param { axis: 4 } }\n', words=["axis 4"])


# --- Tile --------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis, tiles", [(1, 3), (-1, 2), (2, 1), (0, 2)])
def test_tile(tmp_path, axis, tiles):
    x = _x(seed=5)
    body = f'layer {{ name: "L" type: "Tile" bottom: "data" top: "y" tile_param {{ axis: {axis} tiles: {tiles} }} }}\n'
    out = _run(tmp_path, body, x)
    a = axis % x.ndim
    # Caffe: for each index before `axis`, the block from `axis` on is copied `tiles` times in a row
    outer = math.prod(x.shape[:a])
    expected = np.concatenate([x.reshape(outer, -1)] * tiles, axis=1)
    shape = list(x.shape)
    shape[a] *= tiles
    np.testing.assert_array_equal(out, expected.reshape(shape))


@pytest.mark.parametrize("params, words", [("", ["tiles"]), ("tiles: 0", ["tiles 0"]), ("tiles: -2", ["tiles -2"]),
                                           ("tiles: 2 axis: -5", ["axis -5"])])
def test_tile_bad_parameters(tmp_path, params, words):
    _expect_error(tmp_path, f'layer {{ name: "L" type: "Tile" bottom: "data" top: "y" tile_param {{ {params} }} }}\n',
                  words=words)


# --- MVN ---------------------------------------------------------------------------------------


def _mvn_reference(x, normalize_variance, across_channels, eps):
    x = x.reshape(x.shape + (1,) * (4 - x.ndim)).astype(np.float64)
    axes = (1, 2, 3) if across_channels else (2, 3)
    y = x - x.mean(axis=axes, keepdims=True)
    if normalize_variance:  # mvn_layer.cpp: sqrt of E((X-EX)^2), THEN + eps
        y = y / (np.sqrt((y ** 2).mean(axis=axes, keepdims=True)) + eps)
    return y


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [True, False])
@pytest.mark.parametrize("eps", [1e-9, 0.5])
def test_mvn(tmp_path, normalize_variance, across_channels, eps):
    x = _x(seed=6) * 3 + 1
    body = (f'layer {{ name: "L" type: "MVN" bottom: "data" top: "y" mvn_param {{ '
            f'normalize_variance: {str(normalize_variance).lower()} across_channels: {str(across_channels).lower()} '
            f'eps: {eps} }} }}\n')
    out = _run(tmp_path, body, x, onnx_check=eps == 0.5)
    np.testing.assert_allclose(out, _mvn_reference(x, normalize_variance, across_channels, eps),
                               rtol=1e-5, atol=1e-5)


def test_mvn_eps_is_added_to_the_standard_deviation(tmp_path):
    x = np.array([[[[0.0, 2.0]]]], np.float32)  # mean 1, std 1
    out = _run(tmp_path, 'layer { name: "L" type: "MVN" bottom: "data" top: "y" mvn_param { eps: 1 } }\n', x)
    np.testing.assert_allclose(out, [[[[-0.5, 0.5]]]], rtol=1e-6)  # 1/(1+1), not 1/sqrt(1+1)


def test_mvn_of_a_2d_bottom_gives_caffes_4d_top(tmp_path):
    x = _x((4, 6), seed=7)
    body = 'layer { name: "L" type: "MVN" bottom: "data" top: "y" mvn_param { across_channels: true } }\n'
    out = _run(tmp_path, body, x)
    assert out.shape == (4, 6, 1, 1)
    np.testing.assert_allclose(out, _mvn_reference(x, True, True, 1e-9), rtol=1e-5, atol=1e-5)


def test_mvn_bad_bottom(tmp_path):
    _expect_error(tmp_path, 'layer { name: "L" type: "MVN" bottom: "data" top: "y" }\n', shape=(2, 3, 4, 5, 6),
                  words=["at most 4 axes"])


# --- Embed -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias_term", [True, False])
def test_embed(tmp_path, bias_term):
    rng = np.random.default_rng(8)
    k, n = 7, 4
    x = rng.integers(0, k, size=(2, 3)).astype(np.float32)
    weight = rng.normal(size=(k, n)).astype(np.float32)
    bias = rng.normal(size=(n,)).astype(np.float32)
    body = (f'layer {{ name: "L" type: "Embed" bottom: "data" top: "y" embed_param {{ num_output: {n} '
            f'input_dim: {k} bias_term: {str(bias_term).lower()} }} }}\n')
    out = _run(tmp_path, body, x, {"L": [weight, bias] if bias_term else [weight]})
    expected = weight[x.astype(int)] + (bias if bias_term else 0)
    assert out.shape == (2, 3, n)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_embed_truncates_like_static_cast(tmp_path):
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    x = np.array([[2.9, 0.5, 3.0]], np.float32)
    body = 'layer { name: "L" type: "Embed" bottom: "data" top: "y" embed_param { num_output: 3 input_dim: 4 bias_term: false } }\n'
    out = _run(tmp_path, body, x, {"L": [weight]}, onnx_check=False)
    np.testing.assert_array_equal(out[0], weight[[2, 0, 3]])


@pytest.mark.parametrize("params, words", [("input_dim: 4", ["num_output"]), ("num_output: 3", ["input_dim"])])
def test_embed_bad_parameters(tmp_path, params, words):
    _expect_error(tmp_path, f'layer {{ name: "L" type: "Embed" bottom: "data" top: "y" embed_param {{ {params} }} }}\n',
                  shape=(2, 3), words=words)


# --- Parameter ---------------------------------------------------------------------------------


def test_parameter_feeds_a_bias(tmp_path):
    value = _x((3, 4, 5), seed=9)
    body = ('layer { name: "L" type: "Parameter" top: "p" parameter_param { shape { dim: 3 dim: 4 dim: 5 } } }\n'
            'layer { name: "b" type: "Bias" bottom: "data" bottom: "p" top: "y" bias_param { axis: 1 } }\n')
    x = _x(seed=10)
    out = _run(tmp_path, body, x, {"L": [value]})
    np.testing.assert_allclose(out, x + value[None], rtol=1e-6)


def test_parameter_as_an_output(tmp_path):
    value = _x((2, 3), seed=11)
    body = ('layer { name: "L" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }\n')
    proto, weights = _net(tmp_path, body, blobs={"L": [value]})
    module = ninport.load(proto, weights)
    outputs = module(torch.from_numpy(_x()))
    by_name = dict(zip(list(ninport.describe(module).outputs), outputs))
    np.testing.assert_array_equal(by_name["p"].detach().numpy(), value)


@pytest.mark.parametrize("params, bottom, words", [
    ("shape { dim: 3 dim: 0 }", "", ["non-positive"]),
    ("", "", ["shape"]),
    ("shape { dim: 3 }", 'bottom: "data"', ["no bottom"]),
])
def test_parameter_bad_parameters(tmp_path, params, bottom, words):
    _expect_error(tmp_path, f'layer {{ name: "L" type: "Parameter" {bottom} top: "p" parameter_param {{ {params} }} }}\n',
                  words=words)


# --- SPP ---------------------------------------------------------------------------------------


def _caffe_pool(x, kernel, pad, stride, method):
    """pooling_layer.cpp's Forward_cpu, window by window."""
    n, c, h, w = x.shape
    oh = pool_output_size(h, kernel[0], pad[0], stride[0], True)
    ow = pool_output_size(w, kernel[1], pad[1], stride[1], True)
    out = np.zeros((n, c, oh, ow), np.float64)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            size = (he - hs) * (we - ws)
            window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            if method == "MAX":
                out[:, :, ph, pw] = window.max(axis=(2, 3)) if window.size else -FLT_MAX
            else:
                out[:, :, ph, pw] = window.sum(axis=(2, 3)) / size
    return out


def _spp_reference(x, height, method):
    n, c, h, w = x.shape
    levels = []
    for level in range(height):
        bins = 2 ** level
        kernel = [math.ceil(s / bins) for s in (h, w)]
        pad = [(k * bins - s + 1) // 2 for k, s in zip(kernel, (h, w))]
        levels.append(_caffe_pool(x, kernel, pad, kernel, method))
    if height == 1:
        return levels[0]
    return np.concatenate([lv.reshape(n, -1) for lv in levels], axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height, shape, top", [
    (1, (2, 3, 4, 5), (2, 3, 1, 1)),
    (2, (2, 3, 7, 9), (2, 3 * (1 + 4))),
    (3, (2, 3, 7, 9), (2, 3 * (1 + 4 + 16))),
    (3, (1, 2, 13, 6), None),
])
def test_spp(tmp_path, method, height, shape, top):
    x = _x(shape, seed=12)
    body = (f'layer {{ name: "L" type: "SPP" bottom: "data" top: "y" '
            f'spp_param {{ pyramid_height: {height} pool: {method} }} }}\n')
    out = _run(tmp_path, body, x)
    expected = _spp_reference(x, height, method)
    if top is not None:
        assert out.shape == top
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params, shape, error, words", [
    ("pyramid_height: 0", (2, 3, 4, 5), ninport.ShapeError, ["pyramid_height"]),
    ("pyramid_height: 3", (2, 3, 5, 5), ninport.ShapeError, ["pyramid level 2", "pad"]),  # 4 bins of 5: pad 2 = kernel 2
    ("pyramid_height: 2 pool: STOCHASTIC", (2, 3, 4, 5), ninport.UnsupportedLayerError, ["STOCHASTIC"]),
    ("pyramid_height: 2", (2, 12), ninport.ShapeError, ["4-D"]),
])
def test_spp_bad_parameters(tmp_path, params, shape, error, words):
    _expect_error(tmp_path, f'layer {{ name: "L" type: "SPP" bottom: "data" top: "y" spp_param {{ {params} }} }}\n',
                  error=error, shape=shape, words=words)


def test_reduction_mean_divides_by_the_actual_input_size(tmp_path):
    """Built at one size, run at another: MEAN's divisor follows the input (it once stayed the build size's)."""
    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
                     'layer { name: "r" type: "Reduction" bottom: "data" top: "r" '
                     'reduction_param { operation: MEAN axis: 1 coeff: 2 } }\n')
    module = ninport.load(proto)
    for shape in [(2, 3, 4, 5), (1, 3, 7, 9)]:
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        with torch.no_grad():
            out = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, 2 * x.reshape(shape[0], -1).mean(axis=1), rtol=1e-5)
