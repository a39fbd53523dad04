"""Pooling with Caffe's exact geometry.

Caffe rounds the output size up and clips windows at the padded edge; PyTorch's ceil_mode
differs at the edges, refuses pad > kernel/2, and runtimes disagree on ceil_mode in ONNX.
So the padding is done explicitly (with -FLT_MAX for MAX, as Caffe's empty windows give, and
zeros for AVE), followed by a plain floor-mode pool without padding, and AVE's divisor is
corrected where Caffe's clipped window differs from the full kernel. The exported ONNX then
holds only Pad + MaxPool/AveragePool without ceil_mode, which every runtime executes alike.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.shapes import pool_geometry
from ninport.convert.registry import LayerContext

FLT_MAX = float(np.finfo(np.float32).max)


def _caffe_ave_divisors(size: int, kernel: int, pad: int, stride: int, out: int) -> np.ndarray:
    """Per output position, the divisor Caffe uses: the window clipped to [-pad, size + pad)."""
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    return (ends - starts).astype(np.float64)


class CaffePool2d(nn.Module):
    def __init__(self, mode: str, kernel, stride, pad_left, pad_right, ave_correction: torch.Tensor | None,
                 crop: tuple[int, int] | None):
        super().__init__()
        self.mode = mode
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        # F.pad order: (w_left, w_right, h_top, h_bottom)
        self.padding = (pad_left[1], pad_right[1], pad_left[0], pad_right[0])
        self.crop = crop
        if ave_correction is not None:
            self.register_buffer("ave_correction", ave_correction)
        else:
            self.ave_correction = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:  # input rows/cols Caffe never reaches (floor rounding)
            x = x[:, :, : self.crop[0], : self.crop[1]]
        if any(self.padding):
            fill = -FLT_MAX if self.mode == "max" else 0.0
            x = F.pad(x, self.padding, mode="constant", value=fill)
        if self.mode == "max":
            return F.max_pool2d(x, self.kernel, self.stride)
        y = F.avg_pool2d(x, self.kernel, self.stride)
        if self.ave_correction is not None:
            y = y * self.ave_correction
        return y


def pooling(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.pooling_param
    n, c, h, w = ctx.bottom_shapes[0]
    geo = pool_geometry(p, (h, w))
    sizes = (h, w)
    pad_right, crop = [], [h, w]
    for a in (0, 1):
        needed = (geo.out[a] - 1) * geo.stride[a] + geo.kernel[a]  # extent the windows cover
        right = needed - sizes[a] - geo.pad[a]
        if right < 0:
            crop[a] = sizes[a] + right
            right = 0
        pad_right.append(right)
    crop_hw = None if tuple(crop) == (h, w) else tuple(crop)
    mode = "max" if p.pool == pb2.PoolingParameter.MAX else "ave"
    correction = None
    if mode == "ave":
        div_h = _caffe_ave_divisors(h, geo.kernel[0], geo.pad[0], geo.stride[0], geo.out[0])
        div_w = _caffe_ave_divisors(w, geo.kernel[1], geo.pad[1], geo.stride[1], geo.out[1])
        divisors = np.outer(div_h, div_w)
        full = geo.kernel[0] * geo.kernel[1]
        if not np.all(divisors == full):
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = (full / divisors).astype(np.float32)
            correction = torch.from_numpy(factor).reshape(1, 1, *geo.out)
    return CaffePool2d(mode, geo.kernel, geo.stride, geo.pad, pad_right, correction, crop_hw)
