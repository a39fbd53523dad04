"""Convolution and Deconvolution: Caffe's weight layouts equal torch's, so weights copy as they are.

torch computes the same output sizes as Caffe at every input size (`geometry.ConvGeometry`); a bottom
torch would fail on (wrong rank or channels, or a kernel larger than the padded input) is refused by
the shape rule, naming the layer, before the forward runs (`ninport.build.size_checks`).
"""
from __future__ import annotations

from torch import nn

from ninport.build.context import LayerContext
from ninport.caffe.geometry import conv_geometry


class CaffeConv2d(nn.Conv2d):
    """nn.Conv2d: torch's output sizes are Caffe's at every input size (sizes refused by the shape rule)."""


class CaffeConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d, Caffe's Deconvolution at every input size."""


def convolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    # Built on the meta device: torch's random init would be thrown away by the Caffe weights.
    conv = CaffeConv2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride, padding=g.pad,
                       dilation=g.dilation, groups=p.group, bias=p.bias_term, device="meta")
    conv.weight = ctx.parameter(0)
    if p.bias_term:
        conv.bias = ctx.parameter(1)
    return conv


def deconvolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    deconv = CaffeConvTranspose2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride,
                                  padding=g.pad, dilation=g.dilation, groups=p.group, bias=p.bias_term,
                                  device="meta")
    deconv.weight = ctx.parameter(0)
    if p.bias_term:
        deconv.bias = ctx.parameter(1)
    return deconv
