"""Convolution and Deconvolution: Caffe's weight layouts equal torch's, so weights copy as they are.

torch computes the same output sizes as Caffe at every input size (`geometry.ConvGeometry`); the
modules only refuse, naming the layer, a bottom torch would fail on (wrong rank or channels, or a
kernel larger than the padded input).
"""
from __future__ import annotations

import torch
from torch import nn

from ninport.caffe.geometry import ConvGeometry, conv_geometry
from ninport.convert.registry import LayerContext
from ninport.convert.size_checks import SizeCheckedLayer, static_shape


class _CheckedBottom(SizeCheckedLayer):
    def check_bottom(self, x: torch.Tensor, g: ConvGeometry, channels: int, deconv: bool) -> None:
        shapes = [x.shape]
        if not static_shape(x.shape):  # tracing: no check, and no symbolic arithmetic left in the graph
            return
        self.check(shapes, x.dim() == 4, lambda: "needs a 4-D (N, C, H, W) bottom")
        self.check(shapes, x.shape[1] == channels, lambda: f"the weights take {channels} input channels")
        if not deconv:
            for a in (0, 1):
                self.check(shapes, g.output_size(a, x.shape[2 + a]) > 0,
                           lambda: f"kernel {g.kernel[0]}x{g.kernel[1]} (dilation {g.dilation[0]}x{g.dilation[1]}, "
                                   f"pad {g.pad[0]}x{g.pad[1]}) is larger than the padded input")
        else:
            for a in (0, 1):
                self.check(shapes, g.deconv_output_size(a, x.shape[2 + a]) > 0,
                           lambda: "the output size is not positive")


class CaffeConv2d(nn.Conv2d, _CheckedBottom):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_bottom(x, self.caffe_geometry, self.in_channels, deconv=False)
        return super().forward(x)


class CaffeConvTranspose2d(nn.ConvTranspose2d, _CheckedBottom):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_bottom(x, self.caffe_geometry, self.in_channels, deconv=True)
        return super().forward(x)


def _label(module: _CheckedBottom, ctx: LayerContext, g: ConvGeometry) -> nn.Module:
    module.label(ctx.layer, ctx.bottom_shapes)
    module.caffe_geometry = g
    return module


def convolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    # Built on the meta device: torch's random init would be thrown away by the Caffe weights.
    conv = CaffeConv2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride, padding=g.pad,
                       dilation=g.dilation, groups=p.group, bias=p.bias_term, device="meta")
    conv.weight = ctx.parameter(0)
    if p.bias_term:
        conv.bias = ctx.parameter(1)
    return _label(conv, ctx, g)


def deconvolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = conv_geometry(p)
    deconv = CaffeConvTranspose2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride,
                                  padding=g.pad, dilation=g.dilation, groups=p.group, bias=p.bias_term,
                                  device="meta")
    deconv.weight = ctx.parameter(0)
    if p.bias_term:
        deconv.bias = ctx.parameter(1)
    return _label(deconv, ctx, g)
