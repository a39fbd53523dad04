"""Layers that route or reshape blobs: Eltwise, Concat, Slice, Split, Flatten, Reshape, Crop, Softmax."""
from __future__ import annotations

import torch
from torch import nn

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.shapes import canonical_axis, concat_axis, crop_offsets, slice_sizes
from ninport.convert.registry import LayerContext


class EltwiseSum(nn.Module):
    def __init__(self, coeffs: list[float]):
        super().__init__()
        self.coeffs = coeffs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] if self.coeffs[0] == 1 else xs[0] * self.coeffs[0]
        for x, c in zip(xs[1:], self.coeffs[1:]):
            out = out + (x if c == 1 else x * c)
        return out


class EltwiseProd(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


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


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=self.axis)


def concat(ctx: LayerContext) -> nn.Module:
    return Concat(concat_axis(ctx.proto.concat_param, len(ctx.bottom_shapes[0])))


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


class Split(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return x if self.count == 1 else (x,) * self.count


def split(ctx: LayerContext) -> nn.Module:
    return Split(len(ctx.layer.tops))


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


class Reshape(nn.Module):
    """Caffe's Reshape, evaluated on the actual input so the batch stays dynamic in ONNX:
    axes [axis, end) are replaced by `spec`, where 0 copies the input's dim and -1 is inferred."""

    def __init__(self, axis: int, end: int, spec: list[int]):
        super().__init__()
        self.axis, self.end, self.spec = axis, end, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = [x.shape[self.axis + i] if d == 0 else d for i, d in enumerate(self.spec)]
        return torch.reshape(x, [*x.shape[: self.axis], *middle, *x.shape[self.end:]])


def reshape(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.reshape_param
    ndim = len(ctx.bottom_shapes[0])
    axis = p.axis if p.axis >= 0 else ndim + 1 + p.axis
    end = ndim if p.num_axes == -1 else axis + p.num_axes
    return Reshape(axis, end, [int(d) for d in p.shape.dim])


class Crop(nn.Module):
    def __init__(self, axis: int, offsets: list[int], sizes: list[int]):
        super().__init__()
        self.axis, self.offsets, self.sizes = axis, offsets, sizes

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, (off, size) in enumerate(zip(self.offsets, self.sizes)):
            x = torch.narrow(x, self.axis + i, off, size)
        return x


def crop(ctx: LayerContext) -> nn.Module:
    shape, ref = ctx.bottom_shapes
    axis, offsets = crop_offsets(ctx.proto.crop_param, shape, ref)
    return Crop(axis, offsets, list(ref[axis:]))


class Softmax(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


def softmax(ctx: LayerContext) -> nn.Module:
    return Softmax(canonical_axis(ctx.proto.softmax_param.axis, len(ctx.bottom_shapes[0])))
