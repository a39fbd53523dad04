"""Caffe's geometry in one place (ninport/caffe/geometry.py), against transcriptions of Caffe's C++."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ninport.api import load_spec
from ninport.build.shapes import size_fixing_layers
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import geometry
from tests.conftest import REPO, SIZES_GOLDEN, VENDORED_GOLDEN


def caffe_pooled_size(size, kernel, pad, stride, ceil=True):
    """PoolingLayer::Reshape (BVLC), transcribed: ceil (or floor), then drop a window starting in the padding."""
    span = size + 2 * pad - kernel
    out = (int(np.ceil(span / stride)) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@pytest.mark.parametrize("ceil", [True, False])
def test_pool_output_size_is_caffes_rule(ceil):
    checked = 0
    for kernel in range(1, 8):
        for pad in range(kernel):
            for stride in range(1, 9):
                for size in range(1, 40):  # kernels larger than the padded input included
                    got = geometry.pool_output_size(size, kernel, pad, stride, ceil)
                    assert got == caffe_pooled_size(size, kernel, pad, stride, ceil), (size, kernel, pad, stride)
                    checked += 1
    assert checked > 5000


@pytest.mark.parametrize("ceil", [True, False])
def test_pooling_refuses_exactly_the_sizes_whose_caffe_output_is_not_positive(ceil):
    """Caffe accepts a kernel larger than the padded input while ceil((in + 2 pad - k) / s) + 1 > 0
    (OpenPose's 2x2 stride-2 pools on its 1x1 placeholder); it refuses only an output size <= 0."""
    accepted_larger = 0
    for kernel in range(1, 8):
        for pad in range(kernel):
            for stride in range(1, 9):
                params = geometry.PoolParams((kernel, kernel), (pad, pad), (stride, stride), ceil, "max")
                for size in range(1, 20):
                    positive = caffe_pooled_size(size, kernel, pad, stride, ceil) > 0
                    assert (size >= params.smallest_input(0)) == positive, (size, kernel, pad, stride)
                    if positive:
                        params.check_output((size, size))
                        accepted_larger += size + 2 * pad < kernel
                    else:
                        with pytest.raises(geometry.GeometryError, match="Caffe refuses an output size"):
                            params.check_output((size, size))
    assert (accepted_larger > 100) == ceil  # floor rounding never keeps a window larger than the padded input
    p = pb2.PoolingParameter(pool=pb2.PoolingParameter.MAX, kernel_size=2, stride=2)
    assert geometry.pool_geometry(p, (1, 1)).out == (1, 1)  # OpenPose at its declared 1x1


@pytest.mark.parametrize("ceil", [True, False])
def test_right_pad_bound_covers_the_last_window_at_every_size(ceil):
    """The padding a traced (symbolic-size) pooling adds after the input: enough at every size Caffe
    takes, and tight (reached at some size), so a huge stride with padding does not pad hugely."""
    for kernel in range(1, 8):
        for pad in range(kernel):
            for stride in range(1, 12):
                params = geometry.PoolParams((kernel, kernel), (pad, pad), (stride, stride), ceil, "max")
                reach = [params.window((size, size)).right_pad(0) for size in range(params.smallest_input(0), 60)]
                assert max(reach) <= params.right_pad_bound(0), (kernel, pad, stride)
                assert max(reach) == params.right_pad_bound(0) or max(reach) <= 0, (kernel, pad, stride)


def test_ave_divisor_is_caffes_pool_size_including_the_empty_last_window():
    """AVE: pool_size = min(hstart + k, in + pad) - hstart, zero or negative past the input (pad 0, stride > k)."""
    for kernel, pad, stride, size in [(3, 1, 2, 8), (2, 1, 2, 5), (1, 0, 3, 5), (3, 2, 1, 4), (6, 0, 1, 8)]:
        p = pb2.PoolingParameter(pool=pb2.PoolingParameter.AVE, kernel_size=kernel, pad=pad, stride=stride)
        win = geometry.pool_geometry(p, (size, size))
        starts = np.arange(win.out[0]) * stride - pad
        expected = np.minimum(starts + kernel, size + pad) - starts
        np.testing.assert_array_equal(win.ave_divisor(0, starts), expected)
        assert [win.ave_divisor(0, int(s)) for s in starts] == list(expected)
    # the corner: kernel 1, stride 3 over 5 keeps a window at 6, past the input: divisor -1 as in Caffe
    assert geometry.pool_geometry(pb2.PoolingParameter(kernel_size=1, stride=3), (5, 5)).out == (3, 3)


def test_spp_levels_always_tile_exactly_bins_windows_when_caffe_accepts_them():
    """geometry.SPPLevel's claim: pad < kernel implies Caffe's pooling gives `bins` windows inside [-pad, in + pad)."""
    accepted = refused = 0
    for level in range(6):
        for size in range(1, 600):
            lv = geometry.spp_level(level, (size, size))
            if not lv.accepted(0):
                refused += 1
                continue
            accepted += 1
            k, pad = lv.kernel[0], lv.pad[0]
            assert caffe_pooled_size(size, k, pad, k) == lv.bins
            assert lv.right_pad(0) >= 0 and k * lv.bins - pad <= size + pad
    assert accepted > 3000 and refused > 10
    with pytest.raises(geometry.GeometryError, match="pyramid level 2"):
        geometry.spp_levels(pb2.SPPParameter(pyramid_height=3), (5, 5))


def test_conv_and_deconv_sizes():
    g = geometry.conv_geometry(pb2.ConvolutionParameter(kernel_size=[3], pad=[1], stride=[2], dilation=[2]))
    assert g.output_size(0, 10) == (10 + 2 - 5) // 2 + 1
    assert g.deconv_output_size(0, 4) == 2 * 3 + 5 - 2
    assert g.smallest_input(0) == 3


def test_crop_and_reshape_and_broadcast():
    p = pb2.CropParameter(axis=2, offset=[2])
    assert geometry.check_crop(p, (1, 5, 36, 48), (1, 3, 33, 45)) == (2, [2, 2])
    with pytest.raises(geometry.GeometryError, match="does not fit axis 3"):
        geometry.check_crop(p, (1, 5, 36, 40), (1, 3, 33, 45))
    r = pb2.ReshapeParameter(shape=pb2.BlobShape(dim=[0, -1]))
    assert geometry.reshape_output(r, (2, 3, 4, 5)) == (2, 60)
    assert geometry.reshape_axes(pb2.ReshapeParameter(axis=-1, num_axes=0), 4) == (4, 4)
    assert geometry.broadcast_view(4, 1, (3,)) == [1, 3, 1, 1]
    assert geometry.scale_param_shape((2, 3, 4, 5), 1, 2) == (3, 4)


def test_smin_on_ints():
    assert geometry.smin(3, 5) == 3 and geometry.smin(7, 2) == 2


def test_geometry_never_imports_torch():
    code = "import sys, ninport.caffe.geometry, ninport.caffe.spec; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_size_fixing_layers_names_the_inner_product_after_pooling():
    fixing = size_fixing_layers(load_spec(VENDORED_GOLDEN / "innerproduct_softmax" / "net.prototxt"))
    assert [name for name, _ in fixing] == ["fc"]
    assert "weights [10, 48]" in fixing[0][1]


@pytest.mark.parametrize("net", ["fcn_mini_32x32", "pnet_like_12x12", "nin_mini_35x35", "spp_fc_13x13"])
def test_size_agnostic_nets_have_no_size_fixing_layer(net):
    assert size_fixing_layers(load_spec(SIZES_GOLDEN / f"sz_{net}" / "net.prototxt")) == []


@pytest.mark.parametrize("fields, expected", [("", 27), ("ceil_mode: true", 27), ("ceil_mode: false", 26),
                                              ("round_mode: FLOOR", 26)])
def test_ceil_mode_of_the_densenet_forks_switches_rounding(tmp_path, fields, expected):
    """PoolingParameter.ceil_mode (BVLC PR 3057): false floors the output size, like round_mode FLOOR."""
    import ninport
    from ninport.build.shapes import infer_shapes

    net = tmp_path / "net.prototxt"
    net.write_text('input: "data"\ninput_shape { dim: 1 dim: 2 dim: 54 dim: 54 }\n'
                   f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
                   f'pooling_param {{ pool: MAX kernel_size: 3 stride: 2 {fields} }} }}\n')
    spec = ninport.load_spec(net)
    assert infer_shapes(spec).blobs["p"] == (1, 2, expected, expected)
    import torch

    with torch.no_grad():
        assert tuple(ninport.load(net)(torch.rand(1, 2, 54, 54)).shape) == (1, 2, expected, expected)
