"""LRN (both regions), BatchNorm (with Caffe's scale-factor blob), Scale and Bias."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (
    canonical_axis,
    fail,
    scale_param_shape,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import shape_text
from ninport.layers.rules import (
    check_broadcast,
    one_bottom,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


def _lrn_settings(layer: LayerSpec) -> str:
    p = layer.proto.lrn_param
    return f"n{p.local_size} alpha {p.alpha:g} beta {p.beta:g}"


@builtin_layer("LRN", converter="normalization:lrn", bottoms=1, tops=1, settings=_lrn_settings)
def _lrn(layer, shapes):
    p = layer.proto.lrn_param
    if p.local_size % 2 != 1:
        fail(f"local_size {p.local_size} must be odd (Caffe's rule)")
    shape = one_bottom(layer, shapes)
    if len(shape) != 4:
        fail(f"expects a 4-D (N, C, H, W) bottom, got shape {shape_text(shape)}")
    n, c, h, w = shape
    size = p.local_size
    # The converter pads the squared input by (size - 1) / 2 on each side of the window's axes.
    if p.norm_region == pb2.LRNParameter.WITHIN_CHANNEL:
        scratch = n * c * (h + size - 1) * (w + size - 1)
    else:
        scratch = n * (c + size - 1) * h * w
    return LayerShapes(tops=[shape], scratch=scratch)


@builtin_layer("BatchNorm", converter="normalization:batch_norm", bottoms=1, tops=1,
               settings=lambda layer: "statistics: mean, variance, scale factor",
               statistics=(0, 1, 2))  # every blob: running mean and variance sums, the moving-average factor
def _batch_norm(layer, shapes):
    shape = one_bottom(layer, shapes)
    c = shape[1] if len(shape) > 1 else 1
    eps = layer.proto.batch_norm_param.eps
    if not eps >= 0:
        fail(f"eps {eps} must be non-negative")
    return LayerShapes(tops=[shape], params=[(c,), (c,), (1,)])


_scale_param_shape = scale_param_shape


@builtin_layer("Scale", converter="normalization:scale", bottoms=(1, 2), tops=1)
def _scale(layer, shapes):
    p = layer.proto.scale_param
    if len(shapes) not in (1, 2):
        fail(f"expects 1 or 2 bottoms, got {len(shapes)}")
    shape = shapes[0]
    if len(shapes) == 2:  # the scale comes from the second bottom; only a bias is learned
        check_broadcast(shape, shapes[1], p.axis)
        return LayerShapes(tops=[shape], params=[tuple(shapes[1])] if p.bias_term else [])
    pshape = _scale_param_shape(shape, p.axis, p.num_axes)
    params = [pshape] + ([pshape] if p.bias_term else [])
    return LayerShapes(tops=[shape], params=params)


@builtin_layer("Bias", converter="normalization:bias", bottoms=(1, 2), tops=1)
def _bias(layer, shapes):
    p = layer.proto.bias_param
    if len(shapes) not in (1, 2):
        fail(f"expects 1 or 2 bottoms, got {len(shapes)}")
    shape = shapes[0]
    if len(shapes) == 2:
        check_broadcast(shape, shapes[1], p.axis)
        return LayerShapes(tops=[shape])
    return LayerShapes(tops=[shape], params=[_scale_param_shape(shape, p.axis, p.num_axes)])


# --- torch modules and their converters ------------------------------------------------------


@records_args
class LRNAcrossChannels(nn.Module):
    """x / (k + alpha/n * sum of x^2 over n neighbouring channels)^beta, zero-padded (odd n)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.local_response_norm's sum over the channel window, as `size` shifted slices of the zero-padded
        # squares added in the window's order (its avg_pool3d is a scalar loop: 4x slower on the CPU)
        squares = F.pad(x * x, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        channels = x.shape[1]
        window_sum = squares[:, 0:channels] + squares[:, 1:channels + 1] if self.size > 1 else squares[:, 0:channels]
        for i in range(2, self.size):
            window_sum = window_sum.add_(squares[:, i:i + channels])  # a new tensor, added to in place
        scale = window_sum * (self.alpha / self.size) + self.k
        return x / scale.pow_(self.beta)


@records_args
class LRNWithinChannel(nn.Module):
    """x / (1 + alpha/n^2 * sum of x^2 over an n x n window)^beta; Caffe ignores k here."""

    def __init__(self, size: int, alpha: float, beta: float):
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.size - 1) // 2
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=pad, count_include_pad=True)
        return x * torch.pow(1.0 + self.alpha * mean_sq, -self.beta)


def lrn(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.lrn_param
    if p.norm_region == pb2.LRNParameter.WITHIN_CHANNEL:
        return LRNWithinChannel(p.local_size, p.alpha, p.beta)
    return LRNAcrossChannels(p.local_size, p.alpha, p.beta, p.k)


@records_args
class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm over axis 1, TEST and TRAIN phase.

    Caffe stores sums (mean, variance) and a scale factor s; the statistics are sum / s. Here the
    buffers hold the statistics themselves and `scale_factor` keeps s, so training continues exactly
    as Caffe would: each TRAIN step sets s <- maf * s + 1 and the statistics to
    (maf * s_old * stat + batch_stat) / s_new, with the batch variance times m / (m - 1)
    (m = values per channel). That is PyTorch's running average with momentum 1 / s_new, which equals
    1 - moving_average_fraction once s has reached its steady value 1 / (1 - maf) (a long-trained
    caffemodel); a fresh s (0 or 1) weighs the first batches more, as Caffe does.
    `use_global_stats` unset means Caffe's phase default: stored statistics in eval(), the batch's own
    statistics (and the update) in train().
    """

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, scale_factor: torch.Tensor, eps: float,
                 moving_average_fraction: float, use_global_stats: bool | None, inplace: bool = False):
        super().__init__()
        self.register_buffer("running_mean", mean)
        self.register_buffer("running_var", var)
        self.register_buffer("scale_factor", scale_factor)
        self.eps = eps
        self.moving_average_fraction = moving_average_fraction
        self.use_global_stats = use_global_stats
        self.inplace = inplace  # inference may overwrite x: Caffe's layer is in place over a blob nothing else reads

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, moving_average_fraction={self.moving_average_fraction}, "
                f"use_global_stats={self.use_global_stats}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_global = self.use_global_stats if self.use_global_stats is not None else not self.training
        if use_global and self.inplace and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # (x - mean) / sqrt(var + eps), Caffe's order of operations, written into x
            shape = [1, -1] + [1] * (x.dim() - 2)
            return x.sub_(self.running_mean.view(shape)).div_(torch.sqrt(self.running_var + self.eps).view(shape))
        if use_global:
            return F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)
        dims = [d for d in range(x.dim()) if d != 1]
        if self.training:  # batch statistics, and Caffe's moving-average update (unbiased variance)
            s_new = self.moving_average_fraction * float(self.scale_factor[0]) + 1.0
            self.scale_factor.fill_(s_new)
            if x.numel() > x.shape[1]:
                return F.batch_norm(x, self.running_mean, self.running_var, None, None, True, 1.0 / s_new, self.eps)
            # one value per channel: torch's batch_norm refuses it; Caffe's variance is 0, uncorrected
            with torch.no_grad():
                self.running_mean.mul_(1.0 - 1.0 / s_new).add_(x.detach().reshape(-1) / s_new)
                self.running_var.mul_(1.0 - 1.0 / s_new)
        mean = x.mean(dim=dims, keepdim=True)  # the batch's statistics (TEST phase with use_global_stats: false)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


def batch_norm(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.batch_norm_param
    mean, var, factor = (torch.from_numpy(w.astype("float32", copy=True)) for w in ctx.weights[:3])
    scale = 0.0 if float(factor[0]) == 0 else 1.0 / float(factor[0])
    use_global = p.use_global_stats if p.HasField("use_global_stats") else None
    return CaffeBatchNorm(mean * scale, var * scale, factor.reshape(1).clone(), p.eps,
                          p.moving_average_fraction, use_global, inplace=ctx.may_overwrite_bottom)


def broadcast_from(x: torch.Tensor, value: torch.Tensor, axis: int, shape) -> torch.Tensor:
    """`value` (of Caffe shape `shape`, covering axes [axis, axis + len(shape)) of x) viewed against x."""
    return value.reshape((1,) * axis + tuple(shape) + (1,) * (x.dim() - axis - len(shape)))


@records_args
class ScaleBias(nn.Module):
    """x * scale + bias with Caffe's axis/num_axes broadcasting: the scale and bias cover axes
    [axis, axis + n) of x. A scale given as a second bottom broadcasts at its run-time shape (it
    follows the input, e.g. an attention map); the learned parameters have `param_shape`."""

    def __init__(self, axis: int, param_shape: list[int], weight: nn.Parameter | None, bias: nn.Parameter | None,
                 inplace: bool = False):
        super().__init__()
        self.axis = axis
        self.param_shape = tuple(param_shape)
        self.weight = weight
        self.bias = bias
        self.inplace = inplace  # inference may overwrite x: Caffe's layer is in place over a blob nothing else reads

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if self.inplace and scale is None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            if self.weight is not None:
                x = x.mul_(broadcast_from(x, self.weight, self.axis, self.param_shape))
            if self.bias is not None:
                x = x.add_(broadcast_from(x, self.bias, self.axis, self.param_shape))
            return x
        if scale is not None:
            x = x * broadcast_from(x, scale, self.axis, scale.shape)
        elif self.weight is not None:
            x = x * broadcast_from(x, self.weight, self.axis, self.param_shape)
        if self.bias is not None:
            x = x + broadcast_from(x, self.bias, self.axis, self.param_shape)
        return x


@records_args
class AddSecondBottom(nn.Module):
    """Bias given as a second bottom: x + bias over axes [axis, axis + bias.dim()), at its run-time shape."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + broadcast_from(x, bias, self.axis, bias.shape)


def _param_span(ctx: LayerContext, axis: int, num_axes: int) -> tuple[int, tuple[int, ...]]:
    """The first bottom's axis where a Scale/Bias parameter (or second bottom) starts, and its shape."""
    shape = ctx.bottom_shapes[0]
    axis = canonical_axis(axis, len(shape))
    if len(ctx.bottom_shapes) == 2:
        return axis, tuple(ctx.bottom_shapes[1])
    end = len(shape) if num_axes == -1 else axis + num_axes
    return axis, tuple(shape[axis:end])


def scale(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.scale_param
    axis, span = _param_span(ctx, p.axis, p.num_axes)
    if len(ctx.bottom_shapes) == 2:
        bias = ctx.parameter(0) if p.bias_term else None
        return ScaleBias(axis, span, None, bias)
    weight = ctx.parameter(0)
    bias = ctx.parameter(1) if p.bias_term else None
    return ScaleBias(axis, span, weight, bias, inplace=ctx.may_overwrite_bottom)


def bias(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.bias_param
    axis, span = _param_span(ctx, p.axis, p.num_axes)
    if len(ctx.bottom_shapes) == 2:
        return AddSecondBottom(axis)
    return ScaleBias(axis, span, None, ctx.parameter(0))
