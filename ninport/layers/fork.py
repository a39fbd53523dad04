"""Layers of the Caffe forks people still run: ReLU6, the depthwise convolutions, Axpy (SENet),
ShuffleChannel (ShuffleNet) and the one-layer BN of PSPNet / SegNet. Interp and Upsample live in
`resize`. Each type's shape rule (the fork facts it reads) comes first, then its module."""
from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    fail,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import UnsupportedLayerError, safe_text, shape_text
from ninport.layers.activation import Elementwise
from ninport.layers.convolution import convolution
from ninport.layers.rules import (
    check_unknown_fields,
    fork_float,
    fork_int,
    fork_name,
    one_bottom,
    same_as_bottom,
    spatial_4d,
)
from ninport.registry import LayerShapes, builtin_layer, layer_fields, layer_type

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


# A NeuronLayer in the ports that define it (e.g. eric612/MobileNet-YOLO relu6_layer.hpp): one bottom, one top.
builtin_layer("ReLU6", converter="fork:relu6", bottoms=1, tops=1,
              origin="MobileNetV2 Caffe ports (ReLU6 layer)")(same_as_bottom)


def depthwise_as_convolution(layer: LayerSpec, channels: int) -> LayerSpec:
    """The layer as the grouped Convolution it computes (group = input channels), so Convolution's
    own shape rule and converter do the geometry and the weights.

    `DepthwiseConvolution` (yonghenglh6/DepthwiseConvolution, a BaseConvolutionLayer) keeps num_output:
    any multiple of the channels, weights (num_output, 1, kh, kw); `group` may be left out, and if
    given must be the channel count. `ConvolutionDepthwise` (farmingyard/caffe-mobilenet,
    conv_dw_layer.cpp) ignores num_output: top and weights have the bottom's channels (C, 1, kh, kw).
    """
    proto = copy.deepcopy(layer.proto)
    p = proto.convolution_param
    if layer.proto.convolution_param.HasField("group") and p.group != channels:
        fail(f"group {p.group} must equal the {channels} input channels (a depthwise convolution); "
              "leave group out or use a Convolution layer")
    p.group = channels
    if layer.type == "ConvolutionDepthwise":
        p.num_output = channels
    elif p.num_output <= 0 or p.num_output % channels:
        fail(f"num_output {p.num_output} must be a positive multiple of the {channels} input channels")
    return dataclasses.replace(layer, proto=proto)


# DepthwiseConvolutionLayer is a BaseConvolutionLayer (one top per bottom); farmingyard's
# ConvolutionDepthwiseLayer (conv_dw_layer.hpp) takes exactly one bottom and one top.
@builtin_layer("DepthwiseConvolution", converter="fork:depthwise_convolution", bottoms=(1, None), tops=(1, None),
               one_top_per_bottom=True, origin="DepthwiseConvolution fork (yonghenglh6)")
@builtin_layer("ConvolutionDepthwise", converter="fork:depthwise_convolution", bottoms=1, tops=1,
               origin="MobileNet Caffe fork (farmingyard/caffe-mobilenet)")
def _depthwise(layer, shapes):
    shape = spatial_4d(layer, one_bottom(layer, shapes))
    as_convolution = depthwise_as_convolution(layer, shape[1])
    result = layer_type("Convolution").shapes(as_convolution, shapes)
    return dataclasses.replace(result, parsed=(as_convolution, result.parsed))  # the Convolution to build


@builtin_layer("Axpy", converter="fork:axpy", bottoms=3, tops=1, origin="SENet Caffe (hujie-frank)")
def _axpy(layer, shapes):
    """top = a * x + y, bottoms (a, x, y); a holds one factor per (n, c): N x C or N x C x 1 x 1."""
    if len(shapes) != 3:
        fail(f"expects 3 bottoms (scale a, x, y: top = a * x + y), got {len(shapes)}")
    a, x, y = shapes
    if len(x) < 2:
        fail(f"x {shape_text(x)} needs a channel axis")
    if tuple(a[:2]) != tuple(x[:2]) or math.prod(a) != x[0] * x[1] or (len(a) == 4 and a[2:] != (1, 1)):
        fail(f"scale a {shape_text(a)} must be N x C x 1 x 1 (or N x C) for x {shape_text(x)}")
    if tuple(x) != tuple(y):
        fail(f"x {shape_text(x)} and y {shape_text(y)} must have the same shape")
    return LayerShapes(tops=[tuple(x)])


def shuffle_groups(layer: LayerSpec, channels: int) -> int:
    groups = fork_int(layer, "shuffle_channel_param.group", 1)
    if groups <= 0:
        fail(f"group {groups} must be positive")
    if channels % groups:
        fail(f"group {groups} does not divide the {channels} channels")
    return groups


# shuffle_channel_layer.hpp declares no counts, so Caffe checks none; the shape rule takes one bottom and
# the driver one top.
@builtin_layer("ShuffleChannel", converter="fork:shuffle_channel", bottoms=None, tops=None,
               origin="ShuffleNet Caffe (farmingyard/ShuffleNet)", reads_unknown_fields=True)
def _shuffle_channel(layer, shapes):
    check_unknown_fields(layer, "shuffle_channel_param")
    shape = spatial_4d(layer, one_bottom(layer, shapes))
    return LayerShapes(tops=[shape], parsed=shuffle_groups(layer, shape[1]))


SEGNET_BN_FIELDS = {"bn_mode", "scale_filler", "shift_filler"}


PSPNET_BN_FIELDS = {"slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine"}


def bn_variant(layer: LayerSpec) -> str:
    """"pspnet" (blobs slope, bias, mean, variance; y = slope (x - mean) / sqrt(var + eps) + bias at test
    time) or "segnet" (bn_mode INFERENCE: blobs scale, shift; y = scale x + shift). SegNet's LEARN mode,
    which normalizes with the batch's own statistics even at test time, is refused by name."""
    fields = layer_fields(layer, "bn_param")
    if fields & SEGNET_BN_FIELDS and fields & PSPNET_BN_FIELDS:
        fail(f"bn_param mixes SegNet's fields ({', '.join(sorted(fields & SEGNET_BN_FIELDS))}) and PSPNet's "
              f"({', '.join(sorted(fields & PSPNET_BN_FIELDS))}); which fork wrote it?")
    if fields & SEGNET_BN_FIELDS:
        mode = fork_name(layer, "bn_param.bn_mode", "LEARN")
        if mode not in ("INFERENCE", "1"):
            raise UnsupportedLayerError(
                f"SegNet's BN in {safe_text(mode, 20)} mode normalizes with the statistics of the batch itself; "
                "run SegNet's compute_bn_statistics.py to get the bn_mode: INFERENCE weights and convert those")
        return "segnet"
    return "pspnet"


@dataclasses.dataclass(frozen=True)
class BNParams:
    """A BN layer as its shape rule read it: which fork's BN (`bn_variant`) and PSPNet's eps."""

    variant: str  # "pspnet" or "segnet"
    eps: float = 1e-5


def _bn_max_tops(layer: LayerSpec) -> int:
    """PSPNet's BNLayer: exactly one top; SegNet's: up to 3 in LEARN mode (the batch statistics), else 1."""
    if layer_fields(layer, "bn_param") & SEGNET_BN_FIELDS and fork_name(layer, "bn_param.bn_mode", "LEARN") == "LEARN":
        return 3
    return 1


def _bn_statistics(layer: LayerSpec) -> tuple[int, ...]:
    """PSPNet's blobs 2 and 3 are the running mean and variance; SegNet's INFERENCE blobs (scale, shift) are
    what compute_bn_statistics.py folded the statistics into: learned values only."""
    return () if bn_variant(layer) == "segnet" else (2, 3)


def _bn_settings(layer: LayerSpec) -> str:
    if bn_variant(layer) == "segnet":
        return "SegNet, INFERENCE: scale, shift"
    return f"PSPNet, eps {fork_float(layer, 'bn_param.eps', 1e-5):g}; statistics: mean, variance"


@builtin_layer("BN", converter="fork:bn", bottoms=1, tops=(1, _bn_max_tops), origin="PSPNet / SegNet Caffe (BN layer)",
               reads_unknown_fields=True, statistics=_bn_statistics, settings=_bn_settings)
def _bn(layer, shapes):
    check_unknown_fields(layer, "bn_param")
    shape = one_bottom(layer, shapes)
    if not 2 <= len(shape) <= 4:
        fail(f"expects a bottom of 2 to 4 axes (N, C, H, W), got {shape_text(shape)}")
    blob = (1, shape[1], 1, 1)
    if bn_variant(layer) == "segnet":
        return LayerShapes(tops=[shape], params=[blob, blob], parsed=BNParams("segnet"))
    eps = fork_float(layer, "bn_param.eps", 1e-5)
    if not eps >= 0:
        fail(f"eps {eps} must be non-negative")
    return LayerShapes(tops=[shape], params=[blob] * 4, parsed=BNParams("pspnet", eps))


# --- torch modules and their converters ------------------------------------------------------


def relu6(ctx: LayerContext) -> nn.Module:
    """min(max(x, 0), 6), as the forks' relu6_layer.cpp."""
    return Elementwise("clip", min=0.0, max=6.0)


def depthwise_convolution(ctx: LayerContext) -> nn.Module:
    """A Conv2d with groups = input channels (the Convolution layer its shape rule made of it, and that
    layer's geometry: `ctx.parsed`); the weights are in Convolution's layout."""
    as_convolution, geometry = ctx.parsed
    return convolution(dataclasses.replace(ctx, layer=as_convolution, parsed=geometry))


@records_args
class Axpy(nn.Module):
    """top = a * x + y, with a the (N, C[, 1, 1]) per-channel factor (bottoms a, x, y)."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        factor = a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2)))
        return factor * x + y


def axpy(ctx: LayerContext) -> nn.Module:
    return Axpy()


@records_args
class ShuffleChannel(nn.Module):
    """Channel i * (C / g) + j of the bottom becomes channel j * g + i: a (g, C/g) transpose."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        grouped = x.reshape(n, self.groups, c // self.groups, h, w)
        return grouped.transpose(1, 2).reshape(n, c, h, w)


def shuffle_channel(ctx: LayerContext) -> nn.Module:
    return ShuffleChannel(ctx.parsed)  # the group count its shape rule checked


@records_args
class ChannelAffine(nn.Module):
    """PSPNet's BN at test time, in Caffe's order: ((x - mean) * (var + eps)^-1/2) * slope + bias;
    SegNet's BN in INFERENCE mode: x * scale + shift (mean None)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, mean: torch.Tensor | None = None,
                 inv_std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", inv_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.mean is not None:
            x = (x - self.mean.reshape(shape)) * self.inv_std.reshape(shape)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


def bn(ctx: LayerContext) -> nn.Module:
    channels = ctx.bottom_shapes[0][1]

    def blob(i: int) -> torch.Tensor:
        return ctx.parameter(i, (channels,)).data

    params: BNParams = ctx.parsed
    if params.variant == "segnet":
        return ChannelAffine(blob(0), blob(1))
    inv_std = torch.pow(blob(3) + torch.tensor(params.eps, dtype=torch.float32), -0.5)
    return ChannelAffine(blob(0), blob(1), blob(2), inv_std)
