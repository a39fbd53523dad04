"""Layers that reduce or rank values along axes: Reduction, ArgMax, MVN.

ArgMax reproduces Caffe's order exactly: Caffe partially sorts (value, index) pairs with
std::greater, so the k results come by value, largest first, and among equal values the LARGER
index first. Here the axis is flipped, so that order becomes "lowest position first", found with
argmax (documented to return the first maximum; ONNX ArgMax likewise) for k = 1, and for k > 1
with topk for the values and, per result, the (r+1)-th position holding its value (r = earlier
results with the same value), because topk itself promises no order among equal values. That
needs an (items, top_k, axis size) comparison table. Indices are mapped back and returned as
floats, as Caffe stores them. NaN inputs have no defined order in Caffe (they break the strict weak ordering
std::partial_sort needs), and none is promised here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (
    canonical_axis,
    fail,
)
from ninport.errors import shape_text
from ninport.layers.rules import (
    MAX_BLOB_ELEMENTS,
    one_bottom,
)
from ninport.registry import LayerShapes, Shape, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


def argmax_top_shape(p, shape: Shape) -> tuple[int | None, Shape]:
    """Caffe's ArgMax: (axis or None, top shape).

    With `axis`: the bottom's shape with that axis cut to top_k. Without: max(3, ndim) axes of 1,
    with N at 0, top_k at 2 and 2 at 1 when out_max_val (indices then values).
    """
    if p.top_k < 1:
        fail(f"top_k {p.top_k} must be at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, len(shape))
        if p.top_k > shape[axis]:
            fail(f"top_k {p.top_k} exceeds the size {shape[axis]} of axis {axis}")
        return axis, shape[:axis] + (int(p.top_k),) + shape[axis + 1:]
    per_item = math.prod(shape[1:])
    if p.top_k > per_item:
        fail(f"top_k {p.top_k} exceeds the {per_item} values per item of the bottom {shape_text(shape)}")
    top = [1] * max(3, len(shape))
    top[0], top[2] = shape[0], int(p.top_k)
    if p.out_max_val:
        top[1] = 2
    return None, tuple(top)


@builtin_layer("ArgMax", converter="reduction:argmax", bottoms=1, tops=1)
def _argmax(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.argmax_param
    axis, top = argmax_top_shape(p, shape)
    # top_k > 1 ranks through an (items, top_k, axis size) comparison table in the converter
    scratch = math.prod(shape) * p.top_k if p.top_k > 1 else 0
    if scratch > MAX_BLOB_ELEMENTS:
        fail(f"top_k {p.top_k} over {math.prod(shape):,} values needs a {scratch:,}-element ranking "
              "table: implausibly large; is a number wrong?")
    return LayerShapes(tops=[top], scratch=scratch)


@builtin_layer("Reduction", converter="reduction:reduction", bottoms=1, tops=1)
def _reduction(layer, shapes):
    shape = one_bottom(layer, shapes)
    axis = canonical_axis(layer.proto.reduction_param.axis, len(shape))
    return LayerShapes(tops=[shape[:axis]])  # all axes from `axis` on are reduced; axis 0 gives a scalar


@builtin_layer("MVN", converter="reduction:mvn", bottoms=1, tops=1)
def _mvn(layer, shapes):
    shape = one_bottom(layer, shapes)
    if len(shape) > 4:
        fail(f"expects a bottom of at most 4 axes (Caffe's num/channels/height/width), got {shape_text(shape)}")
    # Caffe reshapes the top with num(), channels(), height(), width(): always 4-D.
    return LayerShapes(tops=[tuple(shape) + (1,) * (4 - len(shape))])


# --- torch modules and their converters ------------------------------------------------------


@records_args
class CaffeReduction(nn.Module):
    """SUM / ASUM / SUMSQ / MEAN over every axis from `axis` on, times `coeff`.

    MEAN divides coeff by the number of values reduced, counted on the actual input (so the module is
    right at any input size), in float32 as Caffe's `coeff_ /= dim_` does.
    """

    def __init__(self, op: str, axis: int, coeff: float):
        super().__init__()
        self.op, self.axis, self.coeff = op, axis, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = list(range(self.axis, x.dim()))
        if self.op == "asum":
            x = torch.abs(x)
        elif self.op == "sumsq":
            x = x * x
        y = torch.sum(x, dim=dims)
        if self.op == "mean":
            count = 1
            for d in x.shape[self.axis:]:
                count = count * d
            return y * (torch.tensor(self.coeff, dtype=torch.float32) / count).to(y.dtype)
        return y if self.coeff == 1.0 else y * self.coeff


_REDUCTION_OPS = {pb2.ReductionParameter.SUM: "sum", pb2.ReductionParameter.ASUM: "asum",
                  pb2.ReductionParameter.SUMSQ: "sumsq", pb2.ReductionParameter.MEAN: "mean"}


def reduction(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.reduction_param
    axis = canonical_axis(p.axis, len(ctx.bottom_shapes[0]))
    return CaffeReduction(_REDUCTION_OPS[p.operation], axis, float(p.coeff))


@records_args
class CaffeArgMax(nn.Module):
    def __init__(self, axis: int | None, top_k: int, out_max_val: bool, top_shape: list[int]):
        super().__init__()
        self.axis, self.top_k, self.out_max_val = axis, top_k, out_max_val
        self.top_shape = top_shape  # batch as -1 when the layer flattens per item

    def _positions(self, v: torch.Tensor) -> torch.Tensor:
        """Positions (in `v`, last axis) of the top_k values; equal values: lowest position first."""
        if self.top_k == 1:
            return torch.argmax(v, dim=-1, keepdim=True)  # documented: the first maximal value
        # topk gives the right values in order, but no defined order among equal values; so the
        # j-th result is the (r+1)-th occurrence of its value, r = earlier results with that value.
        top = torch.topk(v, self.top_k, dim=-1, largest=True, sorted=True).values
        same = top.unsqueeze(-1) == top.unsqueeze(-2)
        earlier = torch.ones(self.top_k, self.top_k, dtype=torch.bool, device=v.device).tril(-1)
        rank = torch.sum((same & earlier).to(torch.int32), dim=-1, keepdim=True)  # (..., k, 1)
        equal = v.unsqueeze(-2) == top.unsqueeze(-1)  # (..., k, D)
        occurrence = torch.cumsum(equal.to(torch.int32), dim=-1)
        hit = equal & (occurrence == rank + 1)
        return torch.argmax(hit.to(torch.float32), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            x = torch.flatten(x, 1)
            dim = 1
        else:
            dim = self.axis
        v = torch.flip(torch.movedim(x, dim, -1), [-1])  # ties then go to the larger original index
        pos = self._positions(v)
        values = torch.movedim(torch.gather(v, -1, pos), -1, dim)
        indices = torch.movedim(((v.shape[-1] - 1) - pos).to(x.dtype), -1, dim)
        if self.axis is not None:
            return values if self.out_max_val else indices
        out = torch.stack([indices, values], dim=1) if self.out_max_val else indices
        return torch.reshape(out, self.top_shape)


def argmax(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.argmax_param
    axis, top = argmax_top_shape(p, ctx.bottom_shapes[0])
    top_shape = [-1, *top[1:]]
    return CaffeArgMax(axis, int(p.top_k), bool(p.out_max_val), top_shape)


@records_args
class CaffeMVN(nn.Module):
    """(x - mean) / (std + eps) per item (and per channel unless across_channels); std is the
    population standard deviation and eps is added to it, not to the variance, as in Caffe."""

    def __init__(self, normalize_variance: bool, across_channels: bool, eps: float, top_shape: list[int] | None):
        super().__init__()
        self.normalize_variance = normalize_variance
        self.dims = [1, 2, 3] if across_channels else [2, 3]
        self.eps = eps
        self.top_shape = top_shape  # Caffe's top is always 4-D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.top_shape is not None:
            x = torch.reshape(x, self.top_shape)
        x = x - torch.mean(x, dim=self.dims, keepdim=True)
        if self.normalize_variance:
            std = torch.sqrt(torch.mean(x * x, dim=self.dims, keepdim=True))
            x = x / (std + self.eps)
        return x


def mvn(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.mvn_param
    bottom, top = ctx.bottom_shapes[0], ctx.top_shapes[0]
    top_shape = None if len(bottom) == 4 else [-1, *top[1:]]
    return CaffeMVN(bool(p.normalize_variance), bool(p.across_channels), float(p.eps), top_shape)
