"""Layers that route or reshape blobs: Eltwise, Concat, Slice, Split, Flatten, Reshape, Crop, Softmax.

Their sizes come from the actual bottoms in every forward (Crop's from its reference bottom, Reshape's
0 and -1 from the bottom it reshapes), so they run at any input size; bottoms that stop agreeing at a
size raise a ShapeError naming the layer instead of broadcasting or failing inside torch.
"""
from __future__ import annotations

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import canonical_axis, crop_offsets, reshape_axes
from ninport.caffe.shapes import concat_axis, slice_sizes


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
    return Concat(concat_axis(ctx.proto.concat_param, len(ctx.bottom_shapes[0])))


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
    axis, sizes = slice_sizes(ctx.proto.slice_param, ctx.bottom_shapes[0], len(ctx.layer.tops))
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
    p = ctx.proto.flatten_param
    ndim = len(ctx.bottom_shapes[0])
    return Flatten(canonical_axis(p.axis, ndim), canonical_axis(p.end_axis, ndim))


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
    p = ctx.proto.reshape_param
    axis, end = reshape_axes(p, len(ctx.bottom_shapes[0]))
    return Reshape(axis, end, [int(d) for d in p.shape.dim])


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
    axis, offsets = crop_offsets(ctx.proto.crop_param, len(ctx.bottom_shapes[0]))
    return Crop(axis, offsets)


@records_args
class Softmax(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


def softmax(ctx: LayerContext) -> nn.Module:
    return Softmax(canonical_axis(ctx.proto.softmax_param.axis, len(ctx.bottom_shapes[0])))
