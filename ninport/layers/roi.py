"""The two-stage detectors' region pooling: Fast/Faster R-CNN's ROIPooling and R-FCN's PSROIPooling.

- `ROIPooling` (rbgirshick/caffe-fast-rcnn, roi_pooling_layer.cpp): bottoms features (N, C, H, W) and rois (R, 5)
  rows of [batch index, x1, y1, x2, y2] in image pixels; top (R, C, pooled_h, pooled_w). Each roi corner is
  round(x * spatial_scale) (a float product, C's round: half away from zero), the roi is max(end - start + 1, 1)
  cells, a bin is that / pooled cells (a float), bin ph covers [floor(ph * bin), ceil((ph + 1) * bin)) from the
  roi's start, clipped to [0, H); the top is the MAX over the bin (NaN never wins, -inf gives -FLT_MAX, as
  Caffe's `>` starting from -FLT_MAX), 0 for an empty bin.
- `PSROIPooling` (daijifeng001/caffe-rfcn, the CUDA kernel in psroi_pooling_layer.cu; its Forward_cpu is
  NOT_IMPLEMENTED): bottoms score maps (N, output_dim * group_size^2, H, W) and rois; top (R, output_dim,
  group_size, group_size). The roi is [round(x1) * scale, (round(x2) + 1) * scale) in floats, at least 0.1
  wide; bin ph covers [floor(ph * bin + start), ceil((ph + 1) * bin + start)) clipped to [0, H); top
  (ctop, ph, pw) is the AVERAGE over that bin of channel (ctop * group_size + ph) * group_size + pw, summed in
  float in row-major order as the kernel does (bit for bit), 0 for an empty bin. Where nvcc fuses
  `ph * bin + start` into one multiply-add, a GPU can move a bin edge that lies within an ulp of an integer;
  ninport rounds the product and the sum separately, as the C++ reads and as an x86-64 build computes it.

The number of rois is data: the module takes any R at run time. A batch index (truncated toward zero) outside
[0, N) makes caffe-fast-rcnn abort (CHECK) and the R-FCN kernel read outside the blob; ninport gives NaN for that
roi's whole top. The parameters are the forks' own messages (`roi_pooling_param`, `psroi_pooling_param`), kept
as fields ninport's caffe.proto does not know: the forks number them differently (8266711 in caffe-fast-rcnn and
caffe-rfcn; psroi_pooling_param is 10001 in caffe-rfcn, 149, 153 or 207 elsewhere), and prototxts name them.

Each layer's work is one custom op (`ninport::roi_max_pool`, `ninport::psroi_average_pool`), so torch.export keeps
it whole at any R, H and W, and `onnx_translations()` writes it in standard ONNX operators:
- ROIPooling: a sparse table of maxima (level (a, b) holds the max over the 2^a x 2^b block at each position,
  built by ONNX Loops over the levels H and W need), then each bin's max is the max of the 4 blocks that cover
  it exactly (4 Gathers). onnxruntime's MaxRoiPool is not used: it starts each bin at FLT_MIN (the smallest
  positive float) instead of -FLT_MAX, so a bin of negative values gives 1.2e-38, and it refuses rois with
  more than 5 values per row.
- PSROIPooling: one ONNX Loop over the offsets inside the largest bin, adding each bin's values in Caffe's order.
The eager implementations (`roi_max_pool`, `psroi_average_pool`) are plain torch: the generated .py copies them.
"""
from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import fail
from ninport.caffe.spec import LayerSpec
from ninport.errors import shape_text
from ninport.layers.rules import check_unknown_fields, fork_float, fork_int
from ninport.registry import LayerShapes, Shape, builtin_layer, layer_fields, layer_param

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---

ROI_ORIGIN = "Fast/Faster R-CNN Caffe (rbgirshick/caffe-fast-rcnn)"
PSROI_ORIGIN = "R-FCN Caffe (daijifeng001/caffe-rfcn)"
ROI_FIELDS = ("pooled_h", "pooled_w", "spatial_scale")
PSROI_FIELDS = ("spatial_scale", "output_dim", "group_size")


def float32(value: float) -> float:
    """`value` as Caffe stores it in a float field."""
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclass(frozen=True)
class ROIPoolingParams:
    """ROIPoolingParameter as caffe-fast-rcnn's LayerSetUp reads it."""

    pooled_h: int
    pooled_w: int
    spatial_scale: float  # a float32 value


@dataclass(frozen=True)
class PSROIPoolingParams:
    """PSROIPoolingParameter as caffe-rfcn's LayerSetUp reads it (pooled height and width are group_size)."""

    spatial_scale: float  # a float32 value
    output_dim: int
    group_size: int


def _check_fields(layer: LayerSpec, message: str, known: tuple[str, ...]) -> None:
    """The fork's protobuf parser refuses a field its message does not define."""
    check_unknown_fields(layer, message)
    stray = sorted(layer_fields(layer, message) - set(known))
    if stray:
        fail(f"{message} has no field {stray[0]!r} in the fork's caffe.proto (its fields: {', '.join(known)})")


def _scale(layer: LayerSpec, path: str, default: float) -> float:
    scale = fork_float(layer, path, default)
    if not math.isfinite(float32(scale)):
        fail(f"{path} {scale!r} is not a finite float (the fork's result would be undefined)")
    return float32(scale)


def roi_pooling_params(layer: LayerSpec) -> ROIPoolingParams:
    _check_fields(layer, "roi_pooling_param", ROI_FIELDS)
    pooled = []
    for name in ("pooled_h", "pooled_w"):
        value = fork_int(layer, f"roi_pooling_param.{name}", 0)
        if value <= 0:
            fail(f"roi_pooling_param.{name} {value} must be > 0 (caffe-fast-rcnn's CHECK_GT; 0 is the default)")
        pooled.append(value)
    return ROIPoolingParams(pooled[0], pooled[1], _scale(layer, "roi_pooling_param.spatial_scale", 1.0))


def psroi_pooling_params(layer: LayerSpec) -> PSROIPoolingParams:
    _check_fields(layer, "psroi_pooling_param", PSROI_FIELDS)
    if not layer_fields(layer, "psroi_pooling_param"):
        fail("needs psroi_pooling_param { spatial_scale output_dim group_size } (caffe-rfcn's CHECK_GT fails on "
             "output_dim 0)")
    for name in PSROI_FIELDS:
        if layer_param(layer, f"psroi_pooling_param.{name}") is None:
            fail(f"psroi_pooling_param.{name} is missing: caffe-rfcn's caffe.proto declares it required, so Caffe "
                 "refuses the prototxt")
    sizes = {}
    for name in ("output_dim", "group_size"):
        sizes[name] = fork_int(layer, f"psroi_pooling_param.{name}")
        if sizes[name] <= 0:
            fail(f"psroi_pooling_param.{name} {sizes[name]} must be > 0 (caffe-rfcn's CHECK_GT)")
    return PSROIPoolingParams(_scale(layer, "psroi_pooling_param.spatial_scale", 0.0), sizes["output_dim"],
                              sizes["group_size"])


def _bottoms(layer: LayerSpec, shapes: list[Shape]) -> tuple[Shape, int]:
    """The feature bottom (N, C, H, W) and the number of rois, checked."""
    if len(shapes) != 2:
        fail(f"expects 2 bottoms (the feature map and the rois), got {len(shapes)}")
    features, rois = (tuple(s) for s in shapes)
    if len(features) != 4:
        fail(f"the feature bottom must be 4-D (N, C, H, W), got {shape_text(features)}")
    if not 2 <= len(rois) <= 4 or math.prod(rois[1:]) < 5:
        fail(f"the rois bottom must be R x 5 (rows of batch index, x1, y1, x2, y2), got {shape_text(rois)}")
    return features, rois[0]


def sparse_table_elements(shape: Shape) -> int:
    """Elements of ROIPooling's table of block maxima for features of `shape` at most (see `window_max_table`:
    bins as large as the map)."""
    n, c, h, w = shape
    return h.bit_length() * w.bit_length() * n * c * h * w


def _roi_settings(layer: LayerSpec) -> str:
    p = roi_pooling_params(layer)
    return f"{p.pooled_h}x{p.pooled_w}, scale {p.spatial_scale:g}"


def _psroi_settings(layer: LayerSpec) -> str:
    p = psroi_pooling_params(layer)
    return f"{p.output_dim} x {p.group_size}x{p.group_size}, scale {p.spatial_scale:g}"


# fast_rcnn_layers.hpp: Min/MaxBottomBlobs 2, Min/MaxTopBlobs 1 (the argmax stays inside the layer).
@builtin_layer("ROIPooling", converter="roi:roi_pooling", bottoms=2, tops=1, origin=ROI_ORIGIN,
               reads_unknown_fields=True, settings=_roi_settings, onnx_translations="roi:onnx_translations")
def _roi_pooling(layer, shapes):
    params = roi_pooling_params(layer)
    features, rois = _bottoms(layer, shapes)
    top = (rois, features[1], params.pooled_h, params.pooled_w)
    return LayerShapes(tops=[top], scratch=sparse_table_elements(features) + 4 * math.prod(top), parsed=params)


# rfcn_layers.hpp: Min/MaxBottomBlobs 2, Min/MaxTopBlobs 1 (mapping_channel stays inside the layer).
@builtin_layer("PSROIPooling", converter="roi:psroi_pooling", bottoms=2, tops=1, origin=PSROI_ORIGIN,
               reads_unknown_fields=True, settings=_psroi_settings, onnx_translations="roi:onnx_translations")
def _psroi_pooling(layer, shapes):
    params = psroi_pooling_params(layer)
    features, rois = _bottoms(layer, shapes)
    groups = params.group_size * params.group_size
    if features[1] != params.output_dim * groups:
        fail(f"the feature bottom {shape_text(features)} has {features[1]} channels; output_dim {params.output_dim} x "
             f"group_size {params.group_size}^2 needs {params.output_dim * groups} (caffe-rfcn's CHECK_EQ)")
    top = (rois, params.output_dim, params.group_size, params.group_size)
    return LayerShapes(tops=[top], scratch=4 * math.prod(top), parsed=params)


# --- torch modules and their converters ------------------------------------------------------


FLT_MAX = 3.4028234663852886e38


def c_round(x: torch.Tensor) -> torch.Tensor:
    """C's round(): half away from zero (torch.round rounds half to even); exact in float32."""
    magnitude = x.abs()
    whole = magnitude.floor()
    rounded = torch.where(magnitude - whole >= 0.5, whole + 1, whole)
    return torch.where(x < 0, -rounded, rounded)


def roi_batch_index(rois: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each roi's batch index as C converts the float (toward zero), 0 where it is outside [0, batch); and
    whether it was inside."""
    index = rois[:, 0].to(torch.int64)
    valid = (index >= 0) & (index < batch)
    return torch.where(valid, index, torch.zeros_like(index)), valid


def roi_bins(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """caffe-fast-rcnn's bins along one axis for rois from cell `start` to cell `end` (int64, (R,)): the first
    and one-past-last cells of each bin, (R, pooled) each, clipped to [0, size]."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)
    bin_size = length / torch.full_like(length, float(pooled))  # float / float, as Caffe divides
    index = torch.arange(pooled, dtype=torch.float32, device=start.device)
    first = torch.floor(index * bin_size[:, None]).to(torch.int64) + start[:, None]
    last = torch.ceil((index + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
    return first.clamp(0, size), last.clamp(0, size)


def floor_log2(length: torch.Tensor, bits: int) -> torch.Tensor:
    """floor(log2(length)) of int64 values in [1, 2^bits), exactly (float log2 is off near powers of 2)."""
    result = torch.zeros_like(length)
    for k in range(1, bits):
        result += (length >= (1 << k)).to(torch.int64)
    return result


def window_max_table(x: torch.Tensor, bits_h: int, bits_w: int) -> torch.Tensor:
    """x (N, H, W, C) -> (bits_h, bits_w, N, H, W, C): [a, b, n, i, j] the max of x[n] over rows [i, i + 2^a) and
    columns [j, j + 2^b), cut at the border. Built by doubling: level a is the max of level a - 1 at i and at
    i + 2^(a - 1) where that is inside (past it, level a - 1 already reaches the border)."""
    n, h, w, c = x.shape
    table = x.new_empty((bits_h, bits_w, n, h, w, c))
    table[0, 0] = x
    for b in range(1, bits_w):
        shift, previous = 1 << (b - 1), table[0, b - 1]
        table[0, b] = previous
        torch.maximum(previous[:, :, :w - shift], previous[:, :, shift:], out=table[0, b, :, :, :w - shift])
    for a in range(1, bits_h):
        shift, previous = 1 << (a - 1), table[a - 1]
        table[a] = previous
        torch.maximum(previous[:, :, :h - shift], previous[:, :, shift:], out=table[a, :, :, :h - shift])
    return table


def roi_max_pool(features: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int,
                 spatial_scale: float) -> torch.Tensor:
    """caffe-fast-rcnn's ROIPooling forward: features (N, C, H, W), rois (R, 5) -> (R, C, pooled_h, pooled_w).

    A bin [h0, h1) x [w0, w1) is covered exactly by the 2^a x 2^b blocks at its four corners (2^a <= h1 - h0 <
    2^(a + 1)), so its max is the max of 4 rows of `window_max_table` (channels last: one row per block)."""
    n, c, h, w = features.shape
    scale = torch.tensor(spatial_scale, dtype=torch.float32, device=rois.device)
    corners = c_round(rois[:, 1:5] * scale).to(torch.int64)  # x1, y1, x2, y2 in feature cells
    h0, h1 = roi_bins(corners[:, 1], corners[:, 3], pooled_h, h)
    w0, w1 = roi_bins(corners[:, 0], corners[:, 2], pooled_w, w)
    empty = (h1 <= h0)[:, :, None] | (w1 <= w0)[:, None, :]  # (R, pooled_h, pooled_w)
    # an empty bin looks at one cell inside the map instead, so that every look-up is in range
    h0, w0 = h0.clamp(max=h - 1), w0.clamp(max=w - 1)
    h1, w1 = torch.maximum(h1, h0 + 1), torch.maximum(w1, w0 + 1)
    bits_h = int((h1 - h0).max()).bit_length() if h0.numel() else 1  # the levels the largest bin needs
    bits_w = int((w1 - w0).max()).bit_length() if w0.numel() else 1
    level_h, level_w = floor_log2(h1 - h0, bits_h), floor_log2(w1 - w0, bits_w)
    x = features.permute(0, 2, 3, 1).contiguous()
    table = window_max_table(torch.where(torch.isnan(x), -math.inf, x), bits_h, bits_w).reshape(-1, c)
    batch, valid = roi_batch_index(rois, n)
    levels = (level_h[:, :, None] * bits_w + level_w[:, None, :]) * n + batch[:, None, None]  # (R, pooled_h, pooled_w)
    result = None
    for row in (h0, h1 - (1 << level_h)):
        for column in (w0, w1 - (1 << level_w)):
            index = (levels * h + row[:, :, None]) * w + column[:, None, :]
            block = table.index_select(0, index.flatten())
            result = block if result is None else torch.maximum(result, block)
    result = result.reshape(rois.shape[0], pooled_h, pooled_w, c).clamp_(min=-FLT_MAX)
    result.masked_fill_(empty[..., None], 0.0).masked_fill_(~valid[:, None, None, None], math.nan)
    return result.permute(0, 3, 1, 2).contiguous()


def psroi_bins(start: torch.Tensor, end: torch.Tensor, group_size: int, size: int):
    """caffe-rfcn's bins along one axis for rois from `start` to `end` (float32 (R,), in feature cells): the
    first and one-past-last cells of each bin, (R, group_size) int64 each, clipped to [0, size]."""
    extent = torch.fmax(end - start, torch.full_like(start, 0.1))  # CUDA's max(float, 0.1), stored in a float
    bin_size = extent / torch.full_like(extent, float(group_size))
    index = torch.arange(group_size, dtype=torch.float32, device=start.device)
    first = torch.floor(index * bin_size[:, None] + start[:, None]).to(torch.int64)
    last = torch.ceil((index + 1) * bin_size[:, None] + start[:, None]).to(torch.int64)
    return first.clamp(0, size), last.clamp(0, size)


def psroi_average_pool(features: torch.Tensor, rois: torch.Tensor, spatial_scale: float, output_dim: int,
                       group_size: int) -> torch.Tensor:
    """caffe-rfcn's PSROIPooling forward: features (N, output_dim * group_size^2, H, W), rois (R, 5) ->
    (R, output_dim, group_size, group_size). Top (ctop, ph, pw) reads channel (ctop * g + ph) * g + pw, so the
    features are laid out as rows (n, ph * g + pw, y, x) of the output_dim values; each bin's values are added
    one offset at a time, in the kernel's row-major order, so the float sums are the kernel's own."""
    n, _, h, w = features.shape
    g = group_size
    scale = torch.tensor(spatial_scale, dtype=torch.float32, device=rois.device)
    corners = c_round(rois[:, 1:5])
    start = corners[:, 0:2] * scale  # (x1, y1), as float(round(x)) * scale
    end = (corners[:, 2:4] + 1) * scale
    h0, h1 = psroi_bins(start[:, 1], end[:, 1], g, h)
    w0, w1 = psroi_bins(start[:, 0], end[:, 0], g, w)
    empty = (h1 <= h0)[:, :, None] | (w1 <= w0)[:, None, :]  # (R, g, g)
    area = ((h1 - h0)[:, :, None] * (w1 - w0)[:, None, :]).to(torch.float32)
    batch, valid = roi_batch_index(rois, n)
    maps = features.reshape(n, output_dim, g * g, h, w).permute(0, 2, 3, 4, 1).reshape(-1, output_dim)
    zero_row = maps.shape[0]  # a row of zeros appended below: what an offset outside its bin reads
    maps = torch.cat([maps, maps.new_zeros((1, output_dim))])
    cell = torch.arange(g * g, device=features.device).reshape(1, g, g)
    plane = (batch[:, None, None] * (g * g) + cell) * h  # (R, g, g): the first row of each bin's cell plane
    total = features.new_zeros((rois.shape[0] * g * g, output_dim))
    for dy in range(int((h1 - h0).max()) if h0.numel() else 0):
        y = h0 + dy
        for dx in range(int((w1 - w0).max()) if w0.numel() else 0):
            x = w0 + dx
            inside = (y < h1)[:, :, None] & (x < w1)[:, None, :]
            index = (plane + y.clamp(max=h - 1)[:, :, None]) * w + x.clamp(max=w - 1)[:, None, :]
            index = torch.where(inside, index, torch.full_like(index, zero_row)).reshape(-1, 1)
            total = total + torch.gather(maps, 0, index.expand(-1, output_dim))  # + 0.0 outside: exact
    result = (total.reshape(rois.shape[0], g, g, output_dim) / area[..., None]).masked_fill_(empty[..., None], 0.0)
    result.masked_fill_(~valid[:, None, None, None], math.nan)
    return result.permute(0, 3, 1, 2).contiguous()


def _roi_rows(rois: torch.Tensor) -> torch.Tensor:
    """The 5 values Caffe reads of each roi: the first 5 of its row (R x K or R x K x 1 x 1 blobs)."""
    return rois.flatten(1)[:, :5] if rois.dim() > 2 or rois.shape[1] != 5 else rois


@torch.library.custom_op("ninport::roi_max_pool", mutates_args=())
def roi_max_pool_op(features: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int,
                    spatial_scale: float) -> torch.Tensor:
    """`roi_max_pool` as one op: torch.export keeps it whole at any R, H and W and the ONNX exporter translates it
    (`onnx_translations`)."""
    return roi_max_pool(features, rois, pooled_h, pooled_w, spatial_scale)


@roi_max_pool_op.register_fake
def _roi_max_pool_fake(features, rois, pooled_h, pooled_w, spatial_scale):
    return features.new_empty((rois.shape[0], features.shape[1], pooled_h, pooled_w))


@torch.library.custom_op("ninport::psroi_average_pool", mutates_args=())
def psroi_average_pool_op(features: torch.Tensor, rois: torch.Tensor, spatial_scale: float, output_dim: int,
                          group_size: int) -> torch.Tensor:
    """`psroi_average_pool` as one op (see `roi_max_pool_op`)."""
    return psroi_average_pool(features, rois, spatial_scale, output_dim, group_size)


@psroi_average_pool_op.register_fake
def _psroi_average_pool_fake(features, rois, spatial_scale, output_dim, group_size):
    return features.new_empty((rois.shape[0], output_dim, group_size, group_size))


@records_args
class ROIPooling(nn.Module):
    """Fast R-CNN's ROIPooling (see `roi_max_pool`): (features, rois) -> (R, C, pooled_h, pooled_w). Plain torch
    (the generated .py copies it); ninport's module is `CaffeROIPooling`."""

    def __init__(self, pooled_h: int, pooled_w: int, spatial_scale: float):
        super().__init__()
        self.pooled_h = pooled_h
        self.pooled_w = pooled_w
        self.spatial_scale = spatial_scale  # a float32 value

    def extra_repr(self) -> str:
        return f"pooled={self.pooled_h}x{self.pooled_w}, spatial_scale={self.spatial_scale}"

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_max_pool(features, rois, self.pooled_h, self.pooled_w, self.spatial_scale)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.pool(features, _roi_rows(rois))


class CaffeROIPooling(ROIPooling):
    """ROIPooling whose pooling is the `ninport::roi_max_pool` op (kept whole by export, translated to ONNX)."""

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return torch.ops.ninport.roi_max_pool(features, rois, self.pooled_h, self.pooled_w, self.spatial_scale)


@records_args
class PSROIPooling(nn.Module):
    """R-FCN's PSROIPooling (see `psroi_average_pool`): (score maps, rois) -> (R, output_dim, g, g). Plain torch
    (the generated .py copies it); ninport's module is `CaffePSROIPooling`."""

    def __init__(self, spatial_scale: float, output_dim: int, group_size: int):
        super().__init__()
        self.spatial_scale = spatial_scale  # a float32 value
        self.output_dim = output_dim
        self.group_size = group_size

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, group_size={self.group_size}, spatial_scale={self.spatial_scale}"

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return psroi_average_pool(features, rois, self.spatial_scale, self.output_dim, self.group_size)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.pool(features, _roi_rows(rois))


class CaffePSROIPooling(PSROIPooling):
    """PSROIPooling whose pooling is the `ninport::psroi_average_pool` op."""

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return torch.ops.ninport.psroi_average_pool(features, rois, self.spatial_scale, self.output_dim,
                                                    self.group_size)


def roi_pooling(ctx: LayerContext) -> nn.Module:
    p: ROIPoolingParams = ctx.parsed
    return CaffeROIPooling(p.pooled_h, p.pooled_w, p.spatial_scale)


def psroi_pooling(ctx: LayerContext) -> nn.Module:
    p: PSROIPoolingParams = ctx.parsed
    return CaffePSROIPooling(p.spatial_scale, p.output_dim, p.group_size)


# --- ONNX ----------------------------------------------------------------------------------------

# bit_length / floor(log2) of sizes below 2^31 by counting the powers of 2 they reach
_POWERS = [1 << k for k in range(31)]


def _onnx_ints(*values):
    from onnxscript import opset18 as op
    return op.Constant(value_ints=list(values))


def _onnx_c_round(x):
    from onnxscript import opset18 as op
    magnitude = op.Abs(x)
    whole = op.Floor(magnitude)
    rounded = op.Where(op.GreaterOrEqual(op.Sub(magnitude, whole), op.Constant(value_float=0.5)),
                       op.Add(whole, op.Constant(value_float=1.0)), whole)
    return op.Where(op.Less(x, op.Constant(value_float=0.0)), op.Neg(rounded), rounded)


def _onnx_bit_length(size):
    """size.bit_length() of an int64 tensor of values >= 0, elementwise (a new last axis summed away)."""
    from onnxscript import opset18 as op
    reached = op.GreaterOrEqual(op.Unsqueeze(size, _onnx_ints(-1)), op.Constant(value_ints=_POWERS))
    return op.ReduceSum(op.Cast(reached, to=7), _onnx_ints(-1), keepdims=0)


def _onnx_batch_index(rois, features):
    from onnxscript import opset18 as op
    index = op.Cast(op.Gather(rois, op.Constant(value_int=0), axis=1), to=7)  # (R,), toward zero
    batch = op.Shape(features, start=0, end=1)
    valid = op.And(op.GreaterOrEqual(index, op.Constant(value_int=0)), op.Less(index, batch))
    return op.Where(valid, index, op.Constant(value_int=0)), valid


def _onnx_column(x, i: int):
    from onnxscript import opset18 as op
    return op.Gather(x, op.Constant(value_int=i), axis=1)


def _onnx_roi_bins(start, end, pooled: int, size):
    """`roi_bins` in ONNX: int64 (R,) corners -> (R, pooled) first and one-past-last cells."""
    from onnxscript import opset18 as op
    one = op.Constant(value_int=1)
    length = op.Cast(op.Max(op.Add(op.Sub(end, start), one), one), to=1)
    bin_size = op.Unsqueeze(op.Div(length, op.Constant(value_float=float(pooled))), _onnx_ints(1))
    index = op.Constant(value_floats=[float(i) for i in range(pooled)])
    after = op.Constant(value_floats=[float(i + 1) for i in range(pooled)])
    begin = op.Unsqueeze(start, _onnx_ints(1))
    first = op.Add(op.Cast(op.Floor(op.Mul(index, bin_size)), to=7), begin)
    last = op.Add(op.Cast(op.Ceil(op.Mul(after, bin_size)), to=7), begin)
    zero = op.Constant(value_int=0)
    return op.Clip(first, zero, size), op.Clip(last, zero, size)


def _onnx_psroi_bins(start, end, group_size: int, size):
    """`psroi_bins` in ONNX: float (R,) roi edges -> (R, g) first and one-past-last cells."""
    from onnxscript import opset18 as op
    extent = op.Max(op.Sub(end, start), op.Constant(value_float=float32(0.1)))
    bin_size = op.Unsqueeze(op.Div(extent, op.Constant(value_float=float(group_size))), _onnx_ints(1))
    index = op.Constant(value_floats=[float(i) for i in range(group_size)])
    after = op.Constant(value_floats=[float(i + 1) for i in range(group_size)])
    begin = op.Unsqueeze(start, _onnx_ints(1))
    first = op.Cast(op.Floor(op.Add(op.Mul(index, bin_size), begin)), to=7)
    last = op.Cast(op.Ceil(op.Add(op.Mul(after, bin_size), begin)), to=7)
    zero = op.Constant(value_int=0)
    return op.Clip(first, zero, size), op.Clip(last, zero, size)


@functools.cache
def _block_max_levels_function():
    """An onnxscript function holding one ONNX Loop: x (..., S, C) and count -> (count, ..., S, C), level k the max
    over [j, j + 2^k) of axis -2, cut at the border (built by doubling, as `window_max_table`). Built on first use
    so that loading a net does not import onnxscript; ninport's ONNX optimization inlines it."""
    import onnxscript
    from onnxscript import FLOAT, INT64
    from onnxscript import opset18 as op

    @onnxscript.script(default_opset=op)
    def roi_block_max_levels(x, count):
        size = op.Shape(x, start=-2, end=-1)
        last = op.Sub(size, op.Constant(value_ints=[1]))
        positions = op.Range(op.Constant(value_int=0), op.Squeeze(size), op.Constant(value_int=1))
        level = x
        levels = op.Unsqueeze(x, op.Constant(value_ints=[0]))
        steps = op.Sub(count, op.Constant(value_int=1))
        for k in range(steps):  # level k + 1 from level k
            partner = op.Min(op.Add(positions, op.Pow(op.Constant(value_int=2), k)), last)
            level = op.Max(level, op.Gather(level, partner, axis=-2))
            levels = op.Concat(levels, op.Unsqueeze(level, op.Constant(value_ints=[0])), axis=0)
        return levels

    roi_block_max_levels.__annotations__ = {"x": FLOAT, "count": INT64, "return": FLOAT}
    return roi_block_max_levels


def _roi_max_pool_onnx(features, rois, pooled_h: int, pooled_w: int, spatial_scale: float):
    """`roi_max_pool` in standard ONNX operators: the same table of block maxima and the same 4 look-ups."""
    from onnxscript import opset18 as op

    ints = _onnx_ints
    n = op.Shape(features, start=0, end=1)
    channels = op.Shape(features, start=1, end=2)
    height = op.Shape(features, start=2, end=3)
    width = op.Shape(features, start=3, end=4)
    scale = op.Constant(value_float=spatial_scale)
    corners = op.Cast(_onnx_c_round(op.Mul(op.Slice(rois, ints(1), ints(5), ints(1)), scale)), to=7)
    h0, h1 = _onnx_roi_bins(_onnx_column(corners, 1), _onnx_column(corners, 3), pooled_h, op.Squeeze(height))
    w0, w1 = _onnx_roi_bins(_onnx_column(corners, 0), _onnx_column(corners, 2), pooled_w, op.Squeeze(width))
    empty = op.Or(op.Unsqueeze(op.LessOrEqual(h1, h0), ints(2)), op.Unsqueeze(op.LessOrEqual(w1, w0), ints(1)))
    h0, w0 = op.Min(h0, op.Sub(height, ints(1))), op.Min(w0, op.Sub(width, ints(1)))
    h1, w1 = op.Max(h1, op.Add(h0, ints(1))), op.Max(w1, op.Add(w0, ints(1)))
    one = op.Constant(value_int=1)
    bits_h = _onnx_bit_length(op.Max(op.ReduceMax(op.Sub(h1, h0), keepdims=0), one))  # the largest bin's levels
    bits_w = _onnx_bit_length(op.Max(op.ReduceMax(op.Sub(w1, w0), keepdims=0), one))
    level_h = op.Sub(_onnx_bit_length(op.Sub(h1, h0)), one)  # (R, pooled_h)
    level_w = op.Sub(_onnx_bit_length(op.Sub(w1, w0)), one)
    x = op.Transpose(features, perm=[0, 2, 3, 1])
    finite = op.Where(op.IsNaN(x), op.Constant(value_float=-math.inf), x)
    levels = _block_max_levels_function()
    by_columns = levels(finite, bits_w)  # (bits_w, N, H, W, C)
    table = levels(op.Transpose(by_columns, perm=[0, 1, 3, 2, 4]), bits_h)  # (bits_h, bits_w, N, W, H, C)
    blocks = op.Reshape(table, op.Concat(ints(-1), channels, axis=0))
    batch, valid = _onnx_batch_index(rois, features)
    # the row of [level_h, level_w, batch, column, row] in the (bits_h, bits_w, N, W, H) rows of the table
    level = op.Add(op.Mul(op.Unsqueeze(level_h, ints(2)), op.Unsqueeze(bits_w, ints(0))),
                   op.Unsqueeze(level_w, ints(1)))
    plane = op.Add(op.Mul(level, n), op.Unsqueeze(batch, ints(1, 2)))  # (R, pooled_h, pooled_w)
    two = ints(2)
    result = None
    for row in (h0, op.Sub(h1, op.Pow(two, level_h))):
        for column in (w0, op.Sub(w1, op.Pow(two, level_w))):
            index = op.Add(op.Mul(op.Add(op.Mul(plane, width), op.Unsqueeze(column, ints(1))), height),
                           op.Unsqueeze(row, ints(2)))
            block = op.Gather(blocks, index, axis=0)  # (R, pooled_h, pooled_w, C)
            result = block if result is None else op.Max(result, block)
    result = op.Transpose(result, perm=[0, 3, 1, 2])
    result = op.Where(op.Unsqueeze(empty, ints(1)), op.Constant(value_float=0.0),
                      op.Max(result, op.Constant(value_float=-FLT_MAX)))
    return op.Where(op.Unsqueeze(valid, ints(1, 2, 3)), result, op.Constant(value_float=math.nan))


@functools.cache
def _bin_sum_function():
    """An onnxscript function holding one ONNX Loop over the offsets (dy, dx) of the largest bin, row-major, as
    `psroi_average_pool`: maps (rows, D) ending with a row of zeros, plane (R, g, g) each bin's first row, y0/y1
    (R, g, 1) and x0/x1 (R, 1, g) the bins, width, the last row and column, rows, columns -> (R, g, g, D) the
    bins' sums in the kernel's order."""
    import onnxscript
    from onnxscript import FLOAT, INT64
    from onnxscript import opset18 as op

    @onnxscript.script(default_opset=op)
    def psroi_bin_sums(maps, plane, y0, y1, x0, x1, width, last_y, last_x, rows, columns):
        zero_row = op.Sub(op.Shape(maps, start=0, end=1), op.Constant(value_ints=[1]))
        shape = op.Concat(op.Shape(plane), op.Shape(maps, start=1, end=2), axis=0)
        total = op.Cast(op.ConstantOfShape(shape), to=1)
        trips = op.Mul(rows, columns)
        for t in range(trips):
            dy = op.Div(t, columns)
            dx = op.Mod(t, columns)
            y = op.Add(y0, dy)
            x = op.Add(x0, dx)
            inside = op.And(op.Less(y, y1), op.Less(x, x1))
            index = op.Add(op.Mul(op.Add(plane, op.Min(y, last_y)), width), op.Min(x, last_x))
            total = op.Add(total, op.Gather(maps, op.Where(inside, index, zero_row), axis=0))  # + 0.0 outside
        return total

    psroi_bin_sums.__annotations__ = {"maps": FLOAT, "plane": INT64, "y0": INT64, "y1": INT64, "x0": INT64,
                                      "x1": INT64, "width": INT64, "last_y": INT64, "last_x": INT64, "rows": INT64,
                                      "columns": INT64, "return": FLOAT}
    return psroi_bin_sums


def _psroi_average_pool_onnx(features, rois, spatial_scale: float, output_dim: int, group_size: int):
    """`psroi_average_pool` in standard ONNX operators: one Loop adds the bins' values in the kernel's order."""
    from onnxscript import opset18 as op

    ints = _onnx_ints
    g = group_size
    n = op.Shape(features, start=0, end=1)
    height = op.Shape(features, start=2, end=3)
    width = op.Shape(features, start=3, end=4)
    scale = op.Constant(value_float=spatial_scale)
    corners = _onnx_c_round(op.Slice(rois, ints(1), ints(5), ints(1)))
    start = op.Mul(op.Slice(corners, ints(0), ints(2), ints(1)), scale)  # (x1, y1)
    end = op.Mul(op.Add(op.Slice(corners, ints(2), ints(4), ints(1)), op.Constant(value_float=1.0)), scale)
    h0, h1 = _onnx_psroi_bins(_onnx_column(start, 1), _onnx_column(end, 1), g, op.Squeeze(height))
    w0, w1 = _onnx_psroi_bins(_onnx_column(start, 0), _onnx_column(end, 0), g, op.Squeeze(width))
    empty = op.Or(op.Unsqueeze(op.LessOrEqual(h1, h0), ints(2)), op.Unsqueeze(op.LessOrEqual(w1, w0), ints(1)))
    area = op.Cast(op.Mul(op.Unsqueeze(op.Sub(h1, h0), ints(2)), op.Unsqueeze(op.Sub(w1, w0), ints(1))), to=1)
    batch, valid = _onnx_batch_index(rois, features)
    # rows (n, ph * g + pw, y, x) of the output_dim values of channels (ctop * g + ph) * g + pw
    maps = op.Reshape(features, op.Concat(n, ints(output_dim, g * g), height, width, axis=0))
    maps = op.Reshape(op.Transpose(maps, perm=[0, 2, 3, 4, 1]), ints(-1, output_dim))
    maps = op.Concat(maps, op.Expand(op.Constant(value_float=0.0), ints(1, output_dim)), axis=0)  # the zero row
    cell = op.Constant(value_ints=list(range(g * g)))
    plane = op.Mul(op.Add(op.Mul(op.Unsqueeze(batch, ints(1, 2)), ints(g * g)), op.Reshape(cell, ints(1, g, g))),
                   height)  # (R, g, g)
    zero = op.Constant(value_int=0)
    rows = op.Max(op.ReduceMax(op.Sub(h1, h0), keepdims=0), zero)  # the largest bin's rows (0 without rois)
    columns = op.Max(op.ReduceMax(op.Sub(w1, w0), keepdims=0), zero)
    total = _bin_sum_function()(maps, plane, op.Unsqueeze(h0, ints(2)), op.Unsqueeze(h1, ints(2)),
                                op.Unsqueeze(w0, ints(1)), op.Unsqueeze(w1, ints(1)), width,
                                op.Sub(height, ints(1)), op.Sub(width, ints(1)), rows, columns)
    result = op.Where(op.Unsqueeze(empty, ints(3)), op.Constant(value_float=0.0),
                      op.Div(total, op.Unsqueeze(area, ints(3))))
    result = op.Transpose(result, perm=[0, 3, 1, 2])
    return op.Where(op.Unsqueeze(valid, ints(1, 2, 3)), result, op.Constant(value_float=math.nan))


def onnx_translations() -> dict:
    """Translations of ninport's custom ops into standard ONNX, for torch.onnx.export(custom_translation_table=)."""
    return {torch.ops.ninport.roi_max_pool.default: _roi_max_pool_onnx,
            torch.ops.ninport.psroi_average_pool.default: _psroi_average_pool_onnx}
