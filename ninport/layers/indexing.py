"""Layers that look up, repeat or emit stored values: Embed, Tile, Parameter."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    canonical_axis,
    fail,
)
from ninport.layers.rules import (
    one_bottom,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


@builtin_layer("Tile", converter="indexing:tile", bottoms=1, tops=1)
def _tile(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.tile_param
    axis = canonical_axis(p.axis, len(shape))
    if not p.HasField("tiles"):
        fail("tile_param.tiles must be given (Caffe's rule)")
    if p.tiles <= 0:
        fail(f"tiles {p.tiles} must be positive")
    return LayerShapes(tops=[shape[:axis] + (shape[axis] * p.tiles,) + shape[axis + 1:]])


@builtin_layer("Embed", converter="indexing:embed", bottoms=1, tops=1, index_input=True)
def _embed(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.embed_param
    if p.num_output <= 0:
        fail(f"num_output must be positive, got {p.num_output}")
    if p.input_dim <= 0:
        fail(f"input_dim must be positive, got {p.input_dim}")
    params = [(int(p.input_dim), int(p.num_output))] + ([(int(p.num_output),)] if p.bias_term else [])
    return LayerShapes(tops=[tuple(shape) + (int(p.num_output),)], params=params)


@builtin_layer("Parameter", converter="indexing:parameter", bottoms=0, tops=1)
def _parameter(layer, shapes):
    p = layer.proto.parameter_param
    if not p.HasField("shape") or not len(p.shape.dim):
        fail("parameter_param.shape must give at least one dimension")
    shape = tuple(int(d) for d in p.shape.dim)
    return LayerShapes(tops=[shape], params=[shape])


# --- torch modules and their converters ------------------------------------------------------


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
