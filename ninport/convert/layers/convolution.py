"""Convolution and Deconvolution: Caffe's weight layouts equal torch's, so weights copy as they are."""
from __future__ import annotations

from torch import nn

from ninport.caffe.shapes import conv_geometry
from ninport.convert.registry import LayerContext


def convolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    # Built on the meta device: torch's random init would be thrown away by the Caffe weights.
    conv = nn.Conv2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride, padding=g.pad,
                     dilation=g.dilation, groups=p.group, bias=p.bias_term, device="meta")
    conv.weight = ctx.parameter(0)
    if p.bias_term:
        conv.bias = ctx.parameter(1)
    return conv


def deconvolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    deconv = nn.ConvTranspose2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride,
                                padding=g.pad, dilation=g.dilation, groups=p.group, bias=p.bias_term,
                                device="meta")
    deconv.weight = ctx.parameter(0)
    if p.bias_term:
        deconv.bias = ctx.parameter(1)
    return deconv
