"""Convolution (ninport/layers/convolution.py): CPU inference on oneDNN with the weight packed per input shape,
nn.Conv2d's own path everywhere else; the two agree to float32 rounding."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from ninport.layers import convolution
from ninport.layers.convolution import CaffeConv2d

needs_onednn = pytest.mark.skipif(not convolution.ONEDNN, reason="this torch build has no oneDNN")
TOLERANCE = 1e-5

# (in, out, kernel, stride, padding, dilation, groups, bias): NIN's and GoogLeNet's shapes, grouped,
# depthwise, dilated, rectangular, without bias
GEOMETRIES = [
    (3, 8, 11, 4, 0, 1, 1, True),
    (6, 8, 5, 1, 2, 1, 1, True),
    (8, 6, 1, 1, 0, 1, 1, True),
    (8, 8, 3, 1, 1, 1, 2, True),
    (8, 8, 3, 2, 1, 1, 8, False),
    (4, 6, 3, 1, 2, 2, 1, True),
    (4, 6, (3, 1), (1, 2), (1, 0), 1, 1, True),
]


def _conv(geometry, seed=0) -> CaffeConv2d:
    cin, cout, kernel, stride, padding, dilation, groups, bias = geometry
    torch.manual_seed(seed)
    return CaffeConv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@needs_onednn
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_onednn_path_matches_nn_conv2d(geometry):
    conv = _conv(geometry)
    for shape in [(1, geometry[0], 17, 15), (3, geometry[0], 12, 20), (1, geometry[0], 17, 15)]:
        x = torch.randn(shape)
        with torch.no_grad():
            got = conv(x)
            expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        assert x.shape in conv.packed.by_shape  # packed for this input's shape
        assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
        assert _relative(got, expected) <= TOLERANCE, (geometry, shape)


@needs_onednn
def test_alternating_input_shapes_keep_their_packings():
    """A batch size that alternates (the last, smaller batch of a folder, say) does not pack again each call;
    the packings kept are bounded."""
    conv = _conv(GEOMETRIES[1])
    calls = []
    reorder = torch._C._nn.mkldnn_reorder_conv2d_weight

    def counting(*args):
        calls.append(tuple(args[-1]))
        return reorder(*args)

    shapes = [(1, 6, 9, 9), (8, 6, 9, 9)] * 3 + [(n, 6, 9, 9) for n in range(2, 2 + convolution.PACKED_SHAPES)]
    torch._C._nn.mkldnn_reorder_conv2d_weight = counting
    try:
        with torch.no_grad():
            for shape in shapes:
                x = torch.randn(shape)
                expected = F.conv2d(x, conv.weight, conv.bias, padding=2)
                assert _relative(conv(x), expected) <= TOLERANCE
    finally:
        torch._C._nn.mkldnn_reorder_conv2d_weight = reorder
    assert calls[:2] == [(1, 6, 9, 9), (8, 6, 9, 9)] and len(calls) == 2 + convolution.PACKED_SHAPES
    assert len(conv.packed.by_shape) == convolution.PACKED_SHAPES


@needs_onednn
def test_a_large_weight_keeps_one_packing(monkeypatch):
    """A convolution whose weight is large (FCN's fc6 as a 7x7 convolution: 411 MB) keeps the packing of the
    latest input shape only: images of ever new sizes do not pile up copies of it."""
    conv = _conv(GEOMETRIES[1])
    weight_bytes = conv.weight.numel() * conv.weight.element_size()
    monkeypatch.setattr(convolution, "PACKED_BYTES", 2 * weight_bytes)  # this weight counts as large: 2 shapes
    with torch.no_grad():
        for n in range(1, 5):
            x = torch.randn(n, 6, 9, 9)
            assert _relative(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=2)) <= TOLERANCE
            assert len(conv.packed.by_shape) == min(n, 2)
        monkeypatch.setattr(convolution, "PACKED_BYTES", weight_bytes // 2)  # larger than the budget: one shape
        conv(torch.randn(7, 6, 9, 9))
    assert list(conv.packed.by_shape) == [torch.Size((7, 6, 9, 9))]


@needs_onednn
def test_a_changed_or_replaced_weight_is_packed_again():
    conv = _conv(GEOMETRIES[1])
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        before = conv(x)
        conv.weight.mul_(2)  # an optimizer step under no_grad: the version counter moves
        doubled = conv(x)
        conv.load_state_dict({"weight": torch.randn_like(conv.weight), "bias": conv.bias.clone()}, assign=True)
        replaced = conv(x)
        expected = F.conv2d(x, conv.weight, conv.bias, padding=2)
    bias = conv.bias.view(1, -1, 1, 1)
    assert _relative(doubled - bias, 2 * (before - bias)) <= TOLERANCE
    assert _relative(replaced, expected) <= TOLERANCE


def test_autograd_trace_and_switch_off_take_nn_conv2ds_own_path():
    conv = _conv(GEOMETRIES[3])
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    out = conv(x)  # autograd: the plain path, bit for bit nn.Conv2d
    assert torch.equal(out, F.conv2d(x, conv.weight, conv.bias, 1, 1, 1, 2))
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and not conv.packed.by_shape
    with torch.no_grad():
        traced = torch.compile(conv, fullgraph=True, backend="eager")(x)  # traced: nothing packed
        assert not conv.packed.by_shape
        available = convolution.ONEDNN
        convolution.ONEDNN = False
        try:
            plain = conv(x)
        finally:
            convolution.ONEDNN = available
        assert not conv.packed.by_shape
    assert torch.equal(traced, out.detach()) and torch.equal(plain, out.detach())


@needs_onednn
def test_a_packed_module_copies_and_pickles_without_its_packing():
    conv = _conv(GEOMETRIES[2])
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        expected = conv(x)
    assert conv.packed.by_shape
    twin = copy.deepcopy(conv)
    buffer = io.BytesIO()
    torch.save(conv, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert list(conv.state_dict()) == ["weight", "bias"]  # the packing is no part of the state
    for other in (twin, loaded):
        assert other.packed is not conv.packed and not other.packed.by_shape
        with torch.no_grad():
            assert _relative(other(x), expected) <= TOLERANCE
