"""The forks' layers (ReLU6, depthwise convolutions, Axpy, ShuffleChannel, Interp, Upsample, BN)
against numpy transcriptions of each fork's own layer source (no fork's Caffe is in the oracles, so
these transcriptions are the reference), in torch at two input sizes and through ONNX in onnxruntime.

The fork's parameters reach the layers as the reader keeps them: `LayerSpec.unknown_fields` with
dotted paths (set here directly, as the fork-tolerant reader does) or typed fields.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ninport
from ninport.api import load_spec
from ninport.build.graph import build_graph_module
from ninport.build.shapes import infer_shapes
from ninport.caffe.weights import random_weights
from ninport.export.artifacts import verify_onnx
from ninport.export.onnx import export_onnx
from tests.caffe_files import input_layer
from tests.conftest import plain_kernels
from tests.generated import generated_twin

# --- numpy transcriptions of the forks' Forward_cpu -------------------------------------------------


def np_relu6(x):  # relu6_layer.cpp: min(max(x, 0), 6)
    return np.minimum(np.maximum(x, np.float32(0)), np.float32(6))


def np_depthwise(x, weight, bias, pad, stride, dilation=(1, 1)):
    """conv_dw_layer.cpp: out[n, c] = sum over kh, kw of w[c, kh, kw] * x[n, c, h_in, w_in] (zero outside),
    with a channel multiplier m = weight rows / C: output channel o reads input channel o // m."""
    n, c, h, w = x.shape
    rows, _, kh, kw = weight.shape
    mult = rows // c
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, rows, oh, ow), np.float64)
    for o in range(rows):
        for i in range(oh):
            for j in range(ow):
                for a in range(kh):
                    for b in range(kw):
                        hi = -pad[0] + i * stride[0] + a * dilation[0]
                        wi = -pad[1] + j * stride[1] + b * dilation[1]
                        if 0 <= hi < h and 0 <= wi < w:
                            out[:, o, i, j] += weight[o, 0, a, b] * x[:, o // mult, hi, wi]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def np_axpy(a, x, y):  # axpy_layer.cpp: top = y; top[n, c] += a[n * C + c] * x[n, c]
    top = y.copy()
    flat = a.reshape(-1)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            top[n, c] += flat[n * x.shape[1] + c] * x[n, c]
    return top


def np_shuffle(x, group):  # shuffle_channel_layer.cpp Resize_cpu: channel i * cols + j -> j * group + i
    c = x.shape[1]
    cols = c // group
    out = np.empty_like(x)
    for i in range(group):
        for j in range(cols):
            out[:, j * group + i] = x[:, i * cols + j]
    return out


def np_interp2(x, pad_beg, eff_hw, out_hw):
    """caffe_cpu_interp2<Dtype, false> (interp.cpp), float32 as in Caffe; a copy when sizes agree."""
    h1, w1 = eff_hw
    h2, w2 = out_hw
    src = x[:, :, -pad_beg:-pad_beg + h1, -pad_beg:-pad_beg + w1]
    if (h1, w1) == (h2, w2):
        return src.copy()
    rheight = np.float32(h1 - 1) / np.float32(h2 - 1) if h2 > 1 else np.float32(0)
    rwidth = np.float32(w1 - 1) / np.float32(w2 - 1) if w2 > 1 else np.float32(0)
    out = np.empty(x.shape[:2] + (h2, w2), np.float32)
    for i in range(h2):
        h1r = np.float32(rheight * np.float32(i))
        hi = int(h1r)
        hp = 1 if hi < h1 - 1 else 0
        hl1 = np.float32(h1r - np.float32(hi))
        hl0 = np.float32(1) - hl1
        for j in range(w2):
            w1r = np.float32(rwidth * np.float32(j))
            wi = int(w1r)
            wp = 1 if wi < w1 - 1 else 0
            wl1 = np.float32(w1r - np.float32(wi))
            wl0 = np.float32(1) - wl1
            out[:, :, i, j] = (hl0 * (wl0 * src[:, :, hi, wi] + wl1 * src[:, :, hi, wi + wp])
                               + hl1 * (wl0 * src[:, :, hi + hp, wi] + wl1 * src[:, :, hi + hp, wi + wp]))
    return out


def np_interp_size(in_hw, pad_beg=0, pad_end=0, shrink=None, zoom=None, height=None, width=None):
    """InterpLayer::Reshape of the fork, branch by branch."""
    eff = [d + pad_beg + pad_end for d in in_hw]
    if shrink is not None and zoom is None:
        return eff, [(d - 1) // shrink + 1 for d in eff]
    if zoom is not None and shrink is None:
        return eff, [d + (d - 1) * (zoom - 1) for d in eff]
    if height is not None and width is not None:
        return eff, [height, width]
    out = [(d - 1) // shrink + 1 for d in eff]
    return eff, [d + (d - 1) * (zoom - 1) for d in out]


def np_upsample(x, scale):  # darknet2caffe upsample_layer.cpp: out[h, w] = in[h / scale, w / scale]
    n, c, h, w = x.shape
    out = np.empty((n, c, h * scale, w * scale), x.dtype)
    for i in range(h * scale):
        for j in range(w * scale):
            out[:, :, i, j] = x[:, :, i // scale, j // scale]
    return out


def np_bn_pspnet(x, slope, bias, mean, var, eps):
    """bn_layer.cpp (TEST): top = x - mean; top *= (var + eps)^-0.5; top *= slope; top += bias."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv_std = np.power(var.reshape(shape) + np.float32(eps), np.float32(-0.5)).astype(np.float32)
    return ((x - mean.reshape(shape)) * inv_std * slope.reshape(shape) + bias.reshape(shape)).astype(np.float32)


def np_bn_segnet(x, scale, shift):  # SegNet bn_layer.cpp, INFERENCE: top = x * scale + shift
    return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


# --- building nets ----------------------------------------------------------------------------------


def build(tmp_path, inputs: dict[str, tuple], body: str, fork_fields: dict[str, dict] | None = None,
          weights: dict[str, list[np.ndarray]] | None = None):
    """A net of `body` after Input layers; `fork_fields` {layer: {dotted path: [values]}} are put in
    `unknown_fields` as the fork-tolerant reader keeps a fork's params."""
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "fork"\n' + "".join(input_layer(s, n) for n, s in inputs.items()) + body)
    spec = load_spec(proto)
    for layer in spec.layers:
        layer.unknown_fields = dict((fork_fields or {}).get(layer.name, {}))
    table = infer_shapes(spec)
    blobs = weights if weights is not None else random_weights(table, spec, seed=1)
    return build_graph_module(spec, blobs, table), blobs


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 4


def run(module, *xs):
    """The module's output, after checking that its generated .py file computes exactly the same."""
    inputs = [torch.from_numpy(x) for x in xs]
    with plain_kernels(), torch.no_grad():
        out = module(*inputs)
        assert torch.equal(generated_twin(module)(*inputs), out), "the generated .py differs"
    return out.numpy()


def onnx_run(module, tmp_path, feeds: dict[str, np.ndarray]):
    path = export_onnx(module, tmp_path / "net.onnx")
    (out,) = verify_onnx(path, feeds)
    return out


def close(actual, expected, tol=1e-5):
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-6)
    assert float(np.abs(actual - expected).max()) / scale <= tol


SIZES = [(2, 6, 7, 9), (1, 6, 12, 5)]


# --- ReLU6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SIZES)
def test_relu6(tmp_path, shape):
    module, _ = build(tmp_path, {"data": shape}, 'layer { name: "r" type: "ReLU6" bottom: "data" top: "y" }\n')
    x = rand(shape) * 2
    assert (x > 6).any() and (x < 0).any()
    np.testing.assert_array_equal(run(module, x), np_relu6(x))
    if shape == SIZES[0]:
        np.testing.assert_array_equal(onnx_run(module, tmp_path, {"data": x}), np_relu6(x))


# --- depthwise convolutions --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("kind,param,out_channels", [
    ("ConvolutionDepthwise", "num_output: 6 kernel_size: 3 pad: 1 stride: 2", 6),
    ("ConvolutionDepthwise", "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 bias_term: false", 6),  # num_output ignored
    ("DepthwiseConvolution", "num_output: 6 kernel_size: 3 pad: 1", 6),  # group left out
    ("DepthwiseConvolution", "num_output: 12 group: 6 kernel_size: 3 dilation: 2 pad: 2", 12),  # multiplier 2
])
def test_depthwise_convolutions(tmp_path, shape, kind, param, out_channels):
    body = f'layer {{ name: "dw" type: "{kind}" bottom: "data" top: "y" convolution_param {{ {param} }} }}\n'
    module, blobs = build(tmp_path, {"data": shape}, body)
    weight = blobs["dw"][0]
    assert weight.shape[:2] == (out_channels, 1)
    bias = blobs["dw"][1] if len(blobs["dw"]) > 1 else None
    p = load_spec(tmp_path / "net.prototxt").layer("dw").proto.convolution_param
    from ninport.caffe.geometry import conv_geometry

    g = conv_geometry(p)
    x = rand(shape, 1)
    expected = np_depthwise(x, weight, bias, g.pad, g.stride, g.dilation)
    close(run(module, x), expected)
    if shape == SIZES[0] and out_channels == 12:
        close(onnx_run(module, tmp_path, {"data": x}), expected)


def test_depthwise_group_other_than_channels_is_refused(tmp_path):
    body = ('layer { name: "dw" type: "DepthwiseConvolution" bottom: "data" top: "y" '
            'convolution_param { num_output: 6 group: 2 kernel_size: 3 } }\n')
    with pytest.raises(ninport.ShapeError, match=r'"dw" \(DepthwiseConvolution\).*group 2 must equal the 6'):
        build(tmp_path, {"data": (1, 6, 8, 8)}, body)


# --- Axpy --------------------------------------------------------------------------------------------


AXPY = ('layer { name: "pool" type: "Pooling" bottom: "x" top: "s" pooling_param { pool: AVE global_pooling: true } }\n'
        'layer { name: "sig" type: "Sigmoid" bottom: "s" top: "a" }\n'
        'layer { name: "ax" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "z" }\n')


@pytest.mark.parametrize("shape", SIZES)
def test_axpy_scales_x_per_channel_and_adds_y(tmp_path, shape):
    module, _ = build(tmp_path, {"x": shape, "y": shape}, AXPY)
    x, y = rand(shape, 2), rand(shape, 3)
    a = 1 / (1 + np.exp(-x.mean(axis=(2, 3), keepdims=True)))
    expected = np_axpy(a.astype(np.float32), x, y)
    close(run(module, x, y), expected)
    if shape == SIZES[0]:
        close(onnx_run(module, tmp_path, {"x": x, "y": y}), expected)


@pytest.mark.parametrize("shapes,message", [
    ({"a": (2, 6, 1, 1), "x": (2, 6, 4, 4), "y": (2, 6, 4, 5)},
     r"x \[2, 6, 4, 4\] and y \[2, 6, 4, 5\] must have the same"),
    ({"a": (2, 5, 1, 1), "x": (2, 6, 4, 4), "y": (2, 6, 4, 4)}, r"scale a \[2, 5, 1, 1\] must be N x C x 1 x 1"),
    ({"a": (2, 6, 2, 1), "x": (2, 6, 4, 4), "y": (2, 6, 4, 4)}, r"scale a \[2, 6, 2, 1\]"),
])
def test_axpy_shapes_that_disagree_are_one_error_naming_the_layer(tmp_path, shapes, message):
    body = 'layer { name: "ax" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "z" }\n'
    with pytest.raises(ninport.ShapeError, match=r'layer "ax" \(Axpy\): ' + message):
        build(tmp_path, shapes, body)


# --- ShuffleChannel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("group", [2, 3])
def test_shuffle_channel_transposes_groups(tmp_path, shape, group):
    body = 'layer { name: "sh" type: "ShuffleChannel" bottom: "data" top: "y" }\n'
    module, _ = build(tmp_path, {"data": shape}, body, {"sh": {"shuffle_channel_param.group": [group]}})
    x = rand(shape, 4)
    expected = np_shuffle(x, group)
    np.testing.assert_array_equal(run(module, x), expected)
    assert not np.array_equal(expected, x)
    if shape == SIZES[0] and group == 3:
        np.testing.assert_array_equal(onnx_run(module, tmp_path, {"data": x}), expected)


@pytest.mark.parametrize("group,message", [(4, "group 4 does not divide the 6 channels"),
                                           (0, "group 0 must be positive"),
                                           ("two", "shuffle_channel_param.group must be an integer")])
def test_shuffle_channel_bad_group_is_one_error_naming_the_layer(tmp_path, group, message):
    body = 'layer { name: "sh" type: "ShuffleChannel" bottom: "data" top: "y" }\n'
    with pytest.raises(ninport.ShapeError, match=r'layer "sh" \(ShuffleChannel\): ' + message):
        build(tmp_path, {"data": (1, 6, 4, 4)}, body, {"sh": {"shuffle_channel_param.group": [group]}})


# --- Interp ----------------------------------------------------------------------------------------------


INTERP_CASES = [
    {"zoom_factor": 3},
    {"shrink_factor": 2},
    {"shrink_factor": 2, "zoom_factor": 4},
    {"height": 11, "width": 4},
    {"zoom_factor": 2, "pad_beg": -1, "pad_end": -2},
    {"height": 1, "width": 1},
]


def _interp_fields(params: dict) -> dict:
    return {f"interp_param.{k}": [v] for k, v in params.items()}


@pytest.mark.parametrize("params", INTERP_CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_interp_sizes_and_values_follow_the_fork(tmp_path, params):
    body = 'layer { name: "ip" type: "Interp" bottom: "data" top: "y" }\n'
    module, _ = build(tmp_path, {"data": SIZES[0]}, body, {"ip": _interp_fields(params)})
    rule = {"pad_beg": 0, "pad_end": 0, **{k.replace("_factor", ""): v for k, v in params.items()}}
    for shape in SIZES:  # the module built at the first size is right at the second too
        x = rand(shape, 5)
        eff, out = np_interp_size(shape[2:], rule["pad_beg"], rule["pad_end"], rule.get("shrink"),
                                  rule.get("zoom"), rule.get("height"), rule.get("width"))
        expected = np_interp2(x, rule["pad_beg"], eff, out)
        assert expected.shape[2:] == tuple(out)
        close(run(module, x), expected, 2e-6)
    x = rand(SIZES[0], 6)
    eff, out = np_interp_size(SIZES[0][2:], rule["pad_beg"], rule["pad_end"], rule.get("shrink"),
                              rule.get("zoom"), rule.get("height"), rule.get("width"))
    if params in (INTERP_CASES[0], INTERP_CASES[4]):
        close(onnx_run(module, tmp_path, {"data": x}), np_interp2(x, rule["pad_beg"], eff, out), 1e-5)


def test_interp_takes_the_size_of_a_second_bottom(tmp_path):
    body = ('layer { name: "pool" type: "Pooling" bottom: "data" top: "small" '
            'pooling_param { pool: AVE kernel_size: 3 stride: 3 } }\n'
            'layer { name: "ip" type: "Interp" bottom: "small" bottom: "data" top: "y" }\n')
    for shape in SIZES:  # (the AVE pooling before it is built for one input size)
        module, _ = build(tmp_path, {"data": shape}, body, {"ip": {}})
        x = rand(shape, 7)
        small = ninport.forward_blobs(module, torch.from_numpy(x))["small"].numpy()
        expected = np_interp2(small, 0, small.shape[2:], shape[2:])
        close(run(module, x), expected, 2e-6)
        if shape == SIZES[0]:
            close(onnx_run(module, tmp_path, {"data": x}), expected)


@pytest.mark.parametrize("fields,bottoms,error,message", [
    ({"interp_param.height": [0], "interp_param.width": [5]}, 1, ninport.ShapeError,
     "target size 0x5 must be positive"),
    ({"interp_param.height": [4]}, 1, ninport.ShapeError, "needs zoom_factor, shrink_factor, or both height and width"),
    ({}, 1, ninport.ShapeError, "needs zoom_factor"),
    ({"interp_param.zoom_factor": [0]}, 1, ninport.ShapeError, "zoom_factor 0 must be at least 1"),
    ({"interp_param.zoom_factor": [2], "interp_param.pad_beg": [1]}, 1, ninport.ShapeError,
     "only non-positive padding"),
    ({"interp_param.zoom_factor": [2], "interp_param.pad_beg": [-4], "interp_param.pad_end": [-4]}, 1,
     ninport.ShapeError, "leaves nothing of the 7x9 input"),
    ({"interp_param.zoom_factor": [2.5]}, 1, ninport.ShapeError, "zoom_factor must be an integer"),
    ({"interp_param.zoom_factor": [2]}, 2, ninport.ShapeError, "second bottom gives the output size"),
    ({"interp_param.zoom_factor": [2], "interp_param.type": ["NearestNeighbor"]}, 1, ninport.UnsupportedLayerError,
     "Interp type NearestNeighbor is not supported"),
    ({"interp_param.zoom_factor": [2], "pooling_param.ceil_mode": [True]}, 1, ninport.ShapeError,
     "fields this layer type does not read: pooling_param.ceil_mode"),
])
def test_interp_bad_parameters_are_one_error_naming_the_layer(tmp_path, fields, bottoms, error, message):
    bottom = 'bottom: "data" ' * bottoms
    body = f'layer {{ name: "ip" type: "Interp" {bottom}top: "y" }}\n'
    with pytest.raises(error, match=r'layer "ip" \(Interp\): .*' + message):
        build(tmp_path, {"data": SIZES[0]}, body, {"ip": fields})


def test_interp_at_a_size_it_cannot_take_is_a_ninport_error_naming_the_layer(tmp_path):
    """Built at 7x9, the net runs at other sizes; at 3x3 the crop by pad_beg = pad_end = -2 leaves nothing: a
    ShapeError naming the layer (a NinportError, which the CLI reports in one line), not a ValueError."""
    body = 'layer { name: "ip" type: "Interp" bottom: "data" top: "y" }\n'
    fields = {"interp_param.zoom_factor": [1], "interp_param.pad_beg": [-2], "interp_param.pad_end": [-2]}
    module, _ = build(tmp_path, {"data": (1, 2, 7, 9)}, body, {"ip": fields})
    with pytest.raises(ninport.ShapeError, match=r"layer 'ip' \(Interp\) cannot take bottom \[1, 2, 3, 3\] \(it was "
                                                 r"built for \[1, 2, 7, 9\]\): cropping pad_beg -2, pad_end -2 "
                                                 r"leaves nothing"):
        module(torch.zeros(1, 2, 3, 3))


def test_interp_params_kept_as_a_nested_message_read_the_same(tmp_path):
    """A fork message the reader keeps whole ({"interp_param": [{"zoom_factor": [2]}]})."""
    body = 'layer { name: "ip" type: "Interp" bottom: "data" top: "y" }\n'
    module, _ = build(tmp_path, {"data": SIZES[0]}, body, {"ip": {"interp_param": [{"zoom_factor": [2]}]}})
    x = rand(SIZES[0], 9)
    close(run(module, x), np_interp2(x, 0, SIZES[0][2:], (13, 17)), 2e-6)


# --- Upsample -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_nearest(tmp_path, shape, scale):
    body = 'layer { name: "up" type: "Upsample" bottom: "data" top: "y" }\n'
    module, _ = build(tmp_path, {"data": shape}, body, {"up": {"upsample_param.scale": [scale]}})
    x = rand(shape, 10)
    np.testing.assert_array_equal(run(module, x), np_upsample(x, scale))
    if shape == SIZES[0] and scale == 2:
        np.testing.assert_array_equal(onnx_run(module, tmp_path, {"data": x}), np_upsample(x, scale))


@pytest.mark.parametrize("fields", [{"upsample_param.upsample_h": [8], "upsample_param.upsample_w": [8]},
                                    {"upsample_param.scale_h": [2]}])
def test_segnets_fields_with_one_bottom_are_refused_by_name(tmp_path, fields):
    """SegNet's unpooling Upsample (tests/layers/test_segnet.py) takes the pooling mask as a second bottom."""
    body = 'layer { name: "up" type: "Upsample" bottom: "data" top: "y" }\n'
    with pytest.raises(ninport.UnsupportedLayerError,
                       match=r'"up" \(Upsample\): fields .* are SegNet.s unpooling Upsample, which takes 2'):
        build(tmp_path, {"data": (1, 2, 4, 4)}, body, {"up": fields})


# --- BN ------------------------------------------------------------------------------------------------


def _bn_blobs(channels, count, seed=11):
    rng = np.random.default_rng(seed)
    blobs = [rng.uniform(0.5, 2, (1, channels, 1, 1)), rng.normal(size=(1, channels, 1, 1)),
             rng.normal(size=(1, channels, 1, 1)), rng.uniform(0.1, 3, (1, channels, 1, 1))]
    return [b.astype(np.float32) for b in blobs[:count]]


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_pspnet_bn_uses_the_stored_mean_and_variance(tmp_path, shape, eps):
    body = 'layer { name: "bn" type: "BN" bottom: "data" top: "y" }\n'
    fields = {"bn_param.frozen": [True]} if eps is None else {"bn_param.eps": [eps]}
    blobs = _bn_blobs(shape[1], 4)
    module, _ = build(tmp_path, {"data": shape}, body, {"bn": fields}, {"bn": blobs})
    x = rand(shape, 12)
    expected = np_bn_pspnet(x, *blobs, 1e-5 if eps is None else eps)
    close(run(module, x), expected, 2e-6)
    if shape == SIZES[0] and eps:
        close(onnx_run(module, tmp_path, {"data": x}), expected, 2e-6)


def test_segnet_bn_in_inference_mode_is_scale_and_shift(tmp_path):
    body = 'layer { name: "bn" type: "BN" bottom: "data" top: "y" }\n'
    blobs = _bn_blobs(6, 2)
    module, _ = build(tmp_path, {"data": SIZES[1]}, body, {"bn": {"bn_param.bn_mode": ["INFERENCE"]}}, {"bn": blobs})
    x = rand(SIZES[1], 13)
    close(run(module, x), np_bn_segnet(x, *blobs), 1e-6)


def test_segnet_bn_in_learn_mode_is_refused_by_name(tmp_path):
    body = 'layer { name: "bn" type: "BN" bottom: "data" top: "y" }\n'
    with pytest.raises(ninport.UnsupportedLayerError, match=r'"bn" \(BN\): SegNet.s BN in LEARN mode'):
        build(tmp_path, {"data": SIZES[1]}, body, {"bn": {"bn_param.bn_mode": ["LEARN"]}})


def test_bn_blob_count_is_checked_against_the_caffemodel(tmp_path):
    from tests.caffe_files import write_caffemodel

    body = 'layer { name: "bn" type: "BN" bottom: "data" top: "y" }\n'
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "fork"\n' + input_layer(SIZES[1]) + body)
    weights = write_caffemodel(tmp_path / "net.caffemodel", {"bn": _bn_blobs(6, 2)})
    with pytest.raises(ninport.WeightsError, match=r'"bn" \(BN\): the caffemodel has 2 blobs, the prototxt implies 4'):
        ninport.load(proto, weights)


def test_fork_layers_show_in_the_layer_table_with_their_fork():
    from ninport import registry

    origins = {r.name: r.origin for r in registry.all_layer_types()}
    assert "PSPNet" in origins["BN"] and "YOLO" in origins["Upsample"] and "SENet" in origins["Axpy"]
    assert "ShuffleNet" in origins["ShuffleChannel"] and "DeepLab" in origins["Interp"]


def test_fork_prototxt_text_through_the_reader(tmp_path):
    """The fields as a fork's prototxt writes them: interp/shuffle/upsample params kept by the reader,
    PSPNet's bn_param typed, SegNet's bn_mode kept inside it."""
    from tests.caffe_files import write_caffemodel

    body = ('layer { name: "ip" type: "Interp" bottom: "data" top: "a" interp_param { zoom_factor: 2 pad_beg: -1 } }\n'
            'layer { name: "sh" type: "ShuffleChannel" bottom: "a" top: "b" shuffle_channel_param { group: 3 } }\n'
            'layer { name: "up" type: "Upsample" bottom: "b" top: "c" upsample_param { scale: 2 } }\n'
            'layer { name: "bn" type: "BN" bottom: "c" top: "d" bn_param { eps: 0.001 } }\n'
            'layer { name: "bn2" type: "BN" bottom: "d" top: "e" bn_param { bn_mode: INFERENCE } }\n')
    proto = tmp_path / "fork.prototxt"
    proto.write_text('name: "fork"\n' + input_layer(SIZES[0]) + body)
    psp, segnet = _bn_blobs(6, 4, 1), _bn_blobs(6, 2, 2)
    model = ninport.load(proto, write_caffemodel(tmp_path / "fork.caffemodel", {"bn": psp, "bn2": segnet}))
    x = rand(SIZES[0], 14)
    a = np_interp2(x, -1, (6, 8), (11, 15))
    expected = np_bn_segnet(np_bn_pspnet(np_upsample(np_shuffle(a, 3), 2), *psp, 1e-3), *segnet)
    close(run(model, x), expected, 2e-6)
