"""Layers that look up, repeat or emit stored values: Embed, Tile, Parameter."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.shapes import canonical_axis


@records_args
class CaffeEmbed(nn.Module):
    """Row `int(x)` of the (input_dim, num_output) weight for every value x, plus the bias.

    Caffe casts each value with static_cast<int> (truncation toward zero) and only checks the
    range in debug builds; here an index outside [0, input_dim) raises instead of reading past
    the weight.
    """

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.embedding(x.to(torch.int64), self.weight)
        return out if self.bias is None else out + self.bias


def embed(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.embed_param
    return CaffeEmbed(ctx.parameter(0), ctx.parameter(1) if p.bias_term else None)


@records_args
class Tile(nn.Module):
    """Caffe's Tile: the whole axis repeated `tiles` times (torch's repeat, not repeat_interleave)."""

    def __init__(self, repeats: list[int]):
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.repeats)


def tile(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.tile_param
    ndim = len(ctx.bottom_shapes[0])
    repeats = [1] * ndim
    repeats[canonical_axis(p.axis, ndim)] = int(p.tiles)
    return Tile(repeats)


@records_args
class Parameter(nn.Module):
    """A learned blob with no bottom: the layer's output is its weight."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self) -> torch.Tensor:
        return self.weight


def parameter(ctx: LayerContext) -> nn.Module:
    return Parameter(ctx.parameter(0))
