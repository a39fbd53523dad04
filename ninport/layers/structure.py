"""Layers that route or reshape blobs: Eltwise, Concat, Slice, Split, Flatten, Reshape, Crop, Softmax.

Their sizes come from the actual bottoms in every forward (Crop's from its reference bottom, Reshape's
0 and -1 from the bottom it reshapes), so they run at any input size; bottoms that stop agreeing at a
size raise a ShapeError naming the layer instead of broadcasting or failing inside torch.
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
    check_crop,
    fail,
    reshape_axes,
    reshape_output,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import shape_text
from ninport.layers.rules import (
    one_bottom,
)
from ninport.registry import LayerShapes, Shape, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


@builtin_layer("Eltwise", converter="structure:eltwise", bottoms=(2, None), tops=1,
               settings=lambda layer: pb2.EltwiseParameter.EltwiseOp.Name(layer.proto.eltwise_param.operation))
def _eltwise(layer, shapes):
    if len(shapes) < 2:
        fail(f"expects at least 2 bottoms, got {len(shapes)}")
    if any(s != shapes[0] for s in shapes):
        fail(f"bottoms must all have the same shape, got {', '.join(shape_text(s) for s in shapes)}")
    p = layer.proto.eltwise_param
    if len(p.coeff) and len(p.coeff) != len(shapes):
        fail(f"{len(p.coeff)} coeff values for {len(shapes)} bottoms")
    if len(p.coeff) and p.operation != pb2.EltwiseParameter.SUM:
        fail("coeff is only allowed with operation SUM")
    return LayerShapes(tops=[shapes[0]])


def concat_axis(p, ndim: int) -> int:
    if p.HasField("concat_dim") and not p.HasField("axis"):
        return canonical_axis(p.concat_dim, ndim)
    return canonical_axis(p.axis, ndim)


@builtin_layer("Concat", converter="structure:concat", bottoms=(1, None), tops=1)
def _concat(layer, shapes):
    if not shapes:
        fail("expects at least 1 bottom")
    axis = concat_axis(layer.proto.concat_param, len(shapes[0]))
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(s[a] != shapes[0][a] for a in range(len(s)) if a != axis):
            fail(f"bottoms {', '.join(shape_text(x) for x in shapes)} differ outside the concat axis {axis}")
    top = list(shapes[0])
    top[axis] = sum(s[axis] for s in shapes)
    return LayerShapes(tops=[tuple(top)], parsed=axis)


def slice_sizes(p, shape: Shape, n_tops: int) -> tuple[int, list[int]]:
    """Axis and per-top sizes of a Slice layer (slice_point or an even split)."""
    if p.HasField("slice_dim") and not p.HasField("axis"):
        axis = canonical_axis(p.slice_dim, len(shape))
    else:
        axis = canonical_axis(p.axis, len(shape))
    total = shape[axis]
    points = list(p.slice_point)
    if points:
        if len(points) != n_tops - 1:
            fail(f"{len(points)} slice_point values for {n_tops} tops (need {n_tops - 1})")
        bounds = [0] + points + [total]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if any(s <= 0 for s in sizes):
            fail(f"slice_point {points} do not split axis {axis} of size {total} into positive parts")
    else:
        if n_tops == 0 or total % n_tops:
            fail(f"axis {axis} of size {total} cannot be split evenly into {n_tops} tops")
        sizes = [total // n_tops] * n_tops
    return axis, sizes


@builtin_layer("Slice", converter="structure:slice_", bottoms=1, tops=(1, None))
def _slice(layer, shapes):
    shape = one_bottom(layer, shapes)
    axis, sizes = slice_sizes(layer.proto.slice_param, shape, len(layer.tops))
    return LayerShapes(tops=[shape[:axis] + (s,) + shape[axis + 1:] for s in sizes], parsed=(axis, sizes))


@builtin_layer("Split", converter="structure:split", bottoms=1, tops=(1, None))
def _split(layer, shapes):
    shape = one_bottom(layer, shapes)
    return LayerShapes(tops=[shape] * len(layer.tops))


@builtin_layer("Flatten", converter="structure:flatten", bottoms=1, tops=1)
def _flatten(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.flatten_param
    start = canonical_axis(p.axis, len(shape))
    end = canonical_axis(p.end_axis, len(shape))
    if end < start:
        fail(f"end_axis {p.end_axis} comes before axis {p.axis}")
    return LayerShapes(tops=[shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]],
                       parsed=(start, end))


@builtin_layer("Reshape", converter="structure:reshape", bottoms=1, tops=1)
def _reshape(layer, shapes):
    p = layer.proto.reshape_param
    shape = one_bottom(layer, shapes)
    top = reshape_output(p, shape)
    axis, end = reshape_axes(p, len(shape))
    return LayerShapes(tops=[top], parsed=(axis, end, [int(d) for d in p.shape.dim]))


def crop_settings(layer: LayerSpec) -> str:
    """'axis 2 offset 1,1' (in dialect hed, the offsets HED's Caffe derives from the net)."""
    p = layer.proto.crop_param
    return f"axis {p.axis} offset {','.join(str(o) for o in p.offset) or 0}"


@builtin_layer("Crop", converter="structure:crop", bottoms=2, tops=1, settings=crop_settings)
def _crop(layer, shapes):
    if len(shapes) != 2:
        fail(f"expects 2 bottoms (data and reference), got {len(shapes)}")
    shape, ref = shapes
    if len(shape) != len(ref):
        fail(f"bottoms have different ranks {shape_text(shape)} and {shape_text(ref)}")
    axis, offsets = check_crop(layer.proto.crop_param, shape, ref)
    return LayerShapes(tops=[shape[:axis] + ref[axis:]], parsed=(axis, offsets))


@builtin_layer("Softmax", converter="structure:softmax", bottoms=1, tops=1)
def _softmax(layer, shapes):
    shape = one_bottom(layer, shapes)
    return LayerShapes(tops=[shape], parsed=canonical_axis(layer.proto.softmax_param.axis, len(shape)))


# --- torch modules and their converters ------------------------------------------------------


@records_args
class EltwiseSum(nn.Module):
    """Caffe's Eltwise SUM: the inputs times their coefficients, added in order."""

    def __init__(self, coeffs: list[float]):
        super().__init__()
        self.coeffs = coeffs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] if self.coeffs[0] == 1 else xs[0] * self.coeffs[0]
        for x, c in zip(xs[1:], self.coeffs[1:]):
            out = out + (x if c == 1 else x * c)
        return out


@records_args
class EltwiseProd(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


@records_args
class EltwiseMax(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = torch.maximum(out, x)
        return out


def eltwise(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.eltwise_param
    if p.operation == pb2.EltwiseParameter.PROD:
        return EltwiseProd()
    if p.operation == pb2.EltwiseParameter.MAX:
        return EltwiseMax()
    return EltwiseSum(list(p.coeff) or [1.0] * len(ctx.bottom_shapes))


@records_args
class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) == 1:
            return xs[0]
        return torch.cat(xs, dim=self.axis)


def concat(ctx: LayerContext) -> nn.Module:
    return Concat(ctx.parsed)  # the axis its shape rule checked


@records_args
class Slice(nn.Module):
    def __init__(self, axis: int, sizes: list[int]):
        super().__init__()
        self.axis, self.sizes = axis, sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(self.sizes) == 1:  # one top: the blob itself, as for every single-top layer
            return x
        return tuple(torch.split(x, self.sizes, dim=self.axis))


def slice_(ctx: LayerContext) -> nn.Module:
    axis, sizes = ctx.parsed  # what its shape rule checked
    return Slice(axis, sizes)


@records_args
class Split(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return x if self.count == 1 else (x,) * self.count


def split(ctx: LayerContext) -> nn.Module:
    return Split(len(ctx.layer.tops))


@records_args
class Flatten(nn.Module):
    def __init__(self, start: int, end: int):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start, self.end)


def flatten(ctx: LayerContext) -> nn.Module:
    start, end = ctx.parsed  # the axes its shape rule checked
    return Flatten(start, end)


@records_args
class Reshape(nn.Module):
    """Caffe's Reshape: axes [axis, end) are replaced by `spec`, where 0 copies the bottom's dim and -1 is
    inferred (by torch.reshape, as Caffe infers it), so the batch and spatial sizes may change."""

    def __init__(self, axis: int, end: int, spec: list[int]):
        super().__init__()
        self.axis, self.end, self.spec = axis, end, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = [x.shape[self.axis + i] if d == 0 else d for i, d in enumerate(self.spec)]
        return torch.reshape(x, [*x.shape[: self.axis], *middle, *x.shape[self.end:]])


def reshape(ctx: LayerContext) -> nn.Module:
    axis, end, dims = ctx.parsed  # what its shape rule checked
    return Reshape(axis, end, dims)


@records_args
class Crop(nn.Module):
    """Caffe's Crop: from `axis` on, the reference bottom's sizes at fixed offsets, taken from the
    reference bottom at run time."""

    def __init__(self, axis: int, offsets: list[int]):
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * self.axis + [slice(off, off + reference.shape[self.axis + i])
                                             for i, off in enumerate(self.offsets)]
        return x[tuple(index)]


def crop(ctx: LayerContext) -> nn.Module:
    axis, offsets = ctx.parsed  # what its shape rule checked (the hed dialect's rule too)
    return Crop(axis, offsets)


@records_args
class Softmax(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


def softmax(ctx: LayerContext) -> nn.Module:
    return Softmax(ctx.parsed)  # the axis its shape rule checked
