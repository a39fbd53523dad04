"""Layers of the Caffe forks people still run: ReLU6, the depthwise convolutions, Axpy (SENet),
ShuffleChannel (ShuffleNet) and the one-layer BN of PSPNet / SegNet. Interp and Upsample live in
`resize`. Shape rules and the fork facts are in `ninport.caffe.shapes_fork`."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.shapes_fork import BNParams
from ninport.layers.activation import Elementwise
from ninport.layers.convolution import convolution


def relu6(ctx: LayerContext) -> nn.Module:
    """min(max(x, 0), 6), as the forks' relu6_layer.cpp."""
    return Elementwise("clip", min=0.0, max=6.0)


def depthwise_convolution(ctx: LayerContext) -> nn.Module:
    """A Conv2d with groups = input channels (the Convolution layer its shape rule made of it, `ctx.parsed`);
    the weights are in Convolution's layout."""
    return convolution(dataclasses.replace(ctx, layer=ctx.parsed, parsed=None))


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
