"""Caffe's spatial geometry, computed in one place from a shape.

Output sizes of Convolution, Deconvolution, Pooling and SPP levels, pooling's windows, pads and AVE
divisors, Crop offsets, Reshape's axes, InnerProduct's K and Scale/Bias broadcasting. Shape inference
calls these with Python ints (for `inspect` and the build-time checks); the converters call the very
same functions inside `forward` with the sizes of the actual input (`x.shape`), which are ints when the
module runs and `torch.SymInt`s while torch.export traces it, so the geometry follows the input size
into exported programs. Hence the size arithmetic here is branch-free in the sizes: it branches only on
layer parameters, and takes minima with `smin` (which uses SymInt's own `__sym_min__`, no torch import).
Every division's numerator is non-negative at the sizes a layer accepts: exported to ONNX, integer
division truncates toward zero, which equals Python's floor division only there.

Nothing here imports torch. Failures raise `GeometryError`, which shape inference turns into a
ShapeError naming the file and layer, and the converters into a ShapeError naming the layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from ninport.caffe import caffe_pb2 as pb2

# Caffe keeps kernel, pad, stride and dilation in C ints: larger values turn negative there.
INT32_MAX = 2 ** 31 - 1

Size = Any  # an int, or a torch.SymInt while an exporter traces the forward


class GeometryError(Exception):
    """A shape or a parameter that Caffe's geometry refuses; callers add the file and layer."""


def fail(message: str):
    raise GeometryError(message)


def is_static(*sizes: Any) -> bool:
    """True when every size is a plain int (a module running), False while an exporter traces it."""
    return all(isinstance(s, int) for s in sizes)


def smin(a: Size, b: Size) -> Size:
    """min(a, b) that stays symbolic for torch.SymInt (no guard on which one is smaller)."""
    if isinstance(a, int) and isinstance(b, int):
        return a if a <= b else b
    for value, other in ((a, b), (b, a)):
        sym_min = getattr(type(value), "__sym_min__", None)
        if sym_min is not None:
            return sym_min(value, other)
    raise TypeError(f"smin of {type(a).__name__} and {type(b).__name__}")


def ceil_div(a: Size, b: int) -> Size:
    """ceil(a / b) for a >= 0 (and a > -b), b > 0, as a floor division of a non-negative number."""
    return (a + (b - 1)) // b


def canonical_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        fail(f"axis {axis} out of range for a {ndim}-D blob")
    return axis % ndim


# --- Convolution and Deconvolution --------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    pad: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]

    def extent(self, axis: int) -> int:
        """How many input positions one (dilated) kernel spans."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def output_size(self, axis: int, size: Size) -> Size:
        """Convolution: floor((in + 2 pad - extent) / stride) + 1 (positive only if the kernel fits)."""
        return (size + 2 * self.pad[axis] - self.extent(axis)) // self.stride[axis] + 1

    def deconv_output_size(self, axis: int, size: Size) -> Size:
        """Deconvolution: stride (in - 1) + extent - 2 pad."""
        return self.stride[axis] * (size - 1) + self.extent(axis) - 2 * self.pad[axis]

    def smallest_input(self, axis: int) -> int:
        """The smallest input size a convolution accepts on `axis`."""
        return max(1, self.extent(axis) - 2 * self.pad[axis])


def _pair(repeated, h_value, w_value, has_hw: bool, default: int, what: str) -> tuple[int, int]:
    if has_hw:
        return int(h_value), int(w_value)
    values = list(repeated)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    fail(f"{what} has {len(values)} values; only 2-D spatial convolution is supported")


def conv_geometry(p) -> ConvGeometry:
    """Kernel/pad/stride/dilation of a ConvolutionParameter, with kernel_h/_w style overrides."""
    has_k = p.HasField("kernel_h") or p.HasField("kernel_w")
    if has_k and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        fail("kernel_h and kernel_w must be given together")
    if not has_k and not len(p.kernel_size):
        fail("convolution needs kernel_size or kernel_h/kernel_w")
    kernel = _pair(p.kernel_size, p.kernel_h, p.kernel_w, has_k, 0, "kernel_size")
    pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0, "pad")
    stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h") or p.HasField("stride_w"), 1, "stride")
    dilation = _pair(p.dilation, 0, 0, False, 1, "dilation")
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0 or min(pad) < 0 or \
            max(kernel + pad + stride + dilation) > INT32_MAX:
        fail(f"invalid geometry kernel {kernel} pad {pad} stride {stride} dilation {dilation}")
    return ConvGeometry(kernel, pad, stride, dilation)


# --- Pooling ---------------------------------------------------------------------------------------


def pool_output_size(size: Size, kernel: int, pad: int, stride: int, ceil: bool = True,
                     clip_last: bool | None = None) -> Size:
    """Caffe's pooling output size: ceil((in + 2 pad - kernel) / stride) + 1 (floor with round_mode
    FLOOR), then, when the layer pads (on either axis: `clip_last`, default pad > 0), a last window
    starting at or past in + pad is dropped.

    Caffe drops it with `if (pad_h_ || pad_w_) { if ((out - 1) * stride >= in + pad) --out; }` on both
    axes; with pad < kernel that removes at most one window, so it equals min(out, floor((in + pad - 1) /
    stride) + 1), the number of windows starting before in + pad: the branch-free form used here, exact
    for ints and SymInts alike.
    """
    span = size + 2 * pad - kernel
    out = (ceil_div(span, stride) if ceil else span // stride) + 1
    if pad > 0 if clip_last is None else clip_last:
        out = smin(out, (size + pad - 1) // stride + 1)
    return out


def torch_pool_output_size(size: int, kernel: int, pad: int, stride: int, ceil: bool) -> int:
    """The output size of torch's max_pool2d/avg_pool2d (ATen's pooling_output_shape, dilation 1): floor or
    ceil of (in + 2 pad - kernel) / stride, plus 1, and in ceil mode a last window starting at or past
    in + pad is always dropped (Caffe drops it only when the layer pads)."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class PoolParams(NamedTuple):
    """A pooling layer's size-independent parameters; `kernel` is None for global pooling."""

    kernel: tuple[int, int] | None
    pad: tuple[int, int]
    stride: tuple[int, int]
    ceil: bool
    mode: str  # "max" or "ave"

    def window(self, in_hw: Sequence[Size]) -> PoolWindow:
        """The windows at an input size (ints or SymInts): kernel, pad, stride, output size."""
        kernel = tuple(in_hw) if self.kernel is None else self.kernel
        clip_last = any(self.pad)
        out = tuple(pool_output_size(in_hw[a], kernel[a], self.pad[a], self.stride[a], self.ceil, clip_last)
                    for a in (0, 1))
        return PoolWindow(kernel, self.pad, self.stride, out, tuple(in_hw))

    def torch_pools_exactly_at_every_size(self) -> bool:
        """Whether torch's own max_pool2d/avg_pool2d (kernel, stride, padding, ceil_mode; AVE with
        count_include_pad) computes Caffe's pooling at every input size: torch takes pad <= kernel / 2
        only, and its ceil mode always drops a last window starting at or past in + pad, which Caffe drops
        only when the layer pads, so without padding a stride larger than the kernel can differ.
        Where the output sizes agree the windows, what MAX ignores (the padding) and AVE's divisor (the
        window clipped to [-pad, in + pad)) agree too."""
        if self.kernel is None or any(2 * p > k for p, k in zip(self.pad, self.kernel)):
            return False
        return not self.ceil or any(self.pad) or all(s <= k for s, k in zip(self.stride, self.kernel))

    def torch_pools_exactly(self, in_hw: Sequence[int]) -> bool:
        """Whether torch's own pooling computes Caffe's at this (int) input size: it does at every size
        (`torch_pools_exactly_at_every_size`), or it takes the padding and gives Caffe's output size."""
        if self.torch_pools_exactly_at_every_size():
            return True
        if self.kernel is None or any(2 * p > k for p, k in zip(self.pad, self.kernel)):
            return False
        return self.window(in_hw).out == tuple(
            torch_pool_output_size(in_hw[a], self.kernel[a], self.pad[a], self.stride[a], self.ceil) for a in (0, 1))

    def check_output(self, in_hw: Sequence[Size]) -> None:
        """Refuse a size whose output Caffe cannot make: an output size <= 0.

        Caffe's PoolingLayer::Reshape takes ceil((in + 2 pad - kernel) / stride) + 1 (then the pad > 0 clip),
        so a kernel larger than the (padded) input is accepted while that stays positive: 2x2 stride 2 on
        1x1 gives 1x1, one window clipped to the input (OpenPose's 1x1 placeholder input). A negative
        size fails in Blob::Reshape, a zero one at the first access of its data."""
        if not is_static(*in_hw):
            return
        window = self.window(in_hw)
        if min(window.out) <= 0:
            kernel = window.kernel
            fail(f"pooling kernel {kernel[0]}x{kernel[1]} (pad {self.pad[0]}x{self.pad[1]}, stride "
                 f"{self.stride[0]}x{self.stride[1]}) on a {in_hw[0]}x{in_hw[1]} input gives output size "
                 f"{window.out[0]}x{window.out[1]}; Caffe refuses an output size that is not positive")

    def smallest_input(self, axis: int) -> int:
        """The smallest input size with a positive output on `axis` (see `check_output`): with ceil
        rounding a kernel may exceed the padded input by up to stride - 1."""
        if self.kernel is None:
            return 1
        slack = self.stride[axis] - 1 if self.ceil else 0
        return max(1, self.kernel[axis] - 2 * self.pad[axis] - slack)

    def right_pad_bound(self, axis: int) -> int:
        """How far past the input's end the windows can reach at ANY input size (for a traced, symbolic
        size): floor rounding keeps them within `pad`; ceil rounding within pad + stride - 1, and with
        padding (on either axis) Caffe drops a last window starting at or past in + pad, so within
        pad + kernel - 1 - pad = kernel - 1 too."""
        k, p, s = self.kernel[axis], self.pad[axis], self.stride[axis]
        if not self.ceil:
            return p
        return min(k - 1, p + s - 1) if any(self.pad) else s - 1


class PoolWindow(NamedTuple):
    """Pooling windows at one input size. Window i on an axis starts at i * stride - pad."""

    kernel: tuple[Size, Size]
    pad: tuple[int, int]
    stride: tuple[int, int]
    out: tuple[Size, Size]
    size: tuple[Size, Size]

    def extent(self, axis: int) -> Size:
        """How far (from -pad) the windows reach: (out - 1) * stride + kernel."""
        return (self.out[axis] - 1) * self.stride[axis] + self.kernel[axis]

    def right_pad(self, axis: int) -> Size:
        """Past the input's end, how far the windows reach (negative: rows no window touches)."""
        return self.extent(axis) - self.pad[axis] - self.size[axis]

    def ave_divisor(self, axis: int, start):
        """Caffe's AVE divisor along an axis for windows starting at `start` (int, array or tensor):
        the window clipped to [-pad, in + pad), i.e. min(start + kernel, in + pad) - start. It counts
        padding, and is zero or negative for a window starting at or past in + pad, as in Caffe
        (pad 0, stride > kernel); the caller keeps Caffe's 0/0 and 0/negative there."""
        overhang = start + (self.kernel[axis] - self.size[axis] - self.pad[axis])
        return self.kernel[axis] - _clip_low(overhang)


def _clip_low(value):
    """max(value, 0) for an int, or elementwise for an array/tensor (anything with .clip)."""
    if isinstance(value, int):
        return value if value > 0 else 0
    return value.clip(min=0)


def pool_params(p) -> PoolParams:
    """The checked size-independent parameters of a PoolingParameter (or an SPP level's)."""
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h"):
            fail("global_pooling given together with a kernel size")
        kernel, pad, stride = None, (0, 0), (1, 1)
    else:
        if p.HasField("kernel_h") != p.HasField("kernel_w"):
            fail("kernel_h and kernel_w must be given together")
        if p.HasField("kernel_h"):
            kernel = (int(p.kernel_h), int(p.kernel_w))
        elif p.HasField("kernel_size"):
            kernel = (int(p.kernel_size), int(p.kernel_size))
        else:
            fail("pooling needs kernel_size, kernel_h/kernel_w or global_pooling")
        pad = (p.pad_h, p.pad_w) if (p.HasField("pad_h") or p.HasField("pad_w")) else (p.pad, p.pad)
        has_hw = p.HasField("stride_h") or p.HasField("stride_w")
        stride = (p.stride_h, p.stride_w) if has_hw else (p.stride, p.stride)
        pad, stride = (int(pad[0]), int(pad[1])), (int(stride[0]), int(stride[1]))
        if min(kernel) <= 0 or min(stride) <= 0 or min(pad) < 0 or max(kernel + pad + stride) > INT32_MAX:
            fail(f"invalid pooling geometry kernel {kernel} pad {pad} stride {stride}")
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            fail(f"pad {pad} must be smaller than kernel {kernel} (Caffe's rule)")
    ceil = not (p.HasField("round_mode") and p.round_mode == pb2.PoolingParameter.FLOOR)
    if p.HasField("ceil_mode"):  # the DenseNet/ResNeXt forks (BVLC PR 3057): false means floor rounding
        if p.HasField("round_mode") and p.ceil_mode != ceil:
            fail("ceil_mode and round_mode disagree")
        ceil = bool(p.ceil_mode)
    mode = "max" if p.pool == pb2.PoolingParameter.MAX else "ave"
    return PoolParams(kernel, pad, stride, ceil, mode)


def pool_geometry(p, in_hw: Sequence[int]) -> PoolWindow:
    """The checked windows of a PoolingParameter at an input size (build time: ints)."""
    params = pool_params(p)
    params.check_output(in_hw)
    return params.window(in_hw)


# --- SPP -------------------------------------------------------------------------------------------


class SPPLevel(NamedTuple):
    """One pyramid level at one input size: `bins` windows a side of `kernel` (= stride), `pad` before.

    Caffe's SPPLayer gives level i 2^i bins: kernel = ceil(in / bins), pad = (kernel bins - in + 1) / 2,
    stride = kernel, through an ordinary Pooling layer, which refuses pad >= kernel. Whenever it
    accepts the size, its ceil-and-clip rule yields exactly `bins` windows, which tile
    [-pad, kernel bins - pad) with no overlap and lie inside [-pad, in + pad): AVE divides by kernel^2
    everywhere. (Checked for every size up to 600 and bins up to 32 in tests/caffe/test_geometry.py.)
    """

    bins: int
    kernel: tuple[Size, Size]
    pad: tuple[Size, Size]
    size: tuple[Size, Size]

    def right_pad(self, axis: int) -> Size:
        return self.kernel[axis] * self.bins - self.pad[axis] - self.size[axis]

    def accepted(self, axis: int):
        """Caffe's Pooling check pad < kernel (a bool, or a SymBool while tracing)."""
        return self.pad[axis] < self.kernel[axis]


def spp_level(level: int, in_hw: Sequence[Size]) -> SPPLevel:
    bins = 2 ** level
    kernel = tuple(ceil_div(size, bins) for size in in_hw)
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, in_hw))
    return SPPLevel(bins, kernel, pad, tuple(in_hw))


def spp_levels(p, in_hw: Sequence[Size]) -> list[SPPLevel]:
    """The pyramid of an SPPParameter at an input size; GeometryError for a size Caffe refuses
    (only checked for int sizes)."""
    if p.pyramid_height < 1:
        fail(f"pyramid_height must be at least 1, got {p.pyramid_height}")
    levels = [spp_level(i, in_hw) for i in range(p.pyramid_height)]
    if is_static(*in_hw):
        for i, lv in enumerate(levels):
            if not (lv.accepted(0) and lv.accepted(1)):
                fail(f"pyramid level {i} ({lv.bins}x{lv.bins} bins) of a {in_hw[0]}x{in_hw[1]} input needs "
                     f"kernel {lv.kernel[0]}x{lv.kernel[1]} with pad {lv.pad[0]}x{lv.pad[1]}, and Caffe's "
                     "Pooling refuses a pad that is not smaller than the kernel")
    return levels


def spp_pooling_param(level: SPPLevel, pool: int):
    """The PoolingParameter Caffe's SPPLayer builds for a level (int sizes)."""
    return pb2.PoolingParameter(pool=pool, kernel_h=level.kernel[0], kernel_w=level.kernel[1],
                                pad_h=level.pad[0], pad_w=level.pad[1],
                                stride_h=level.kernel[0], stride_w=level.kernel[1])


def spp_output_features(channels: int, pyramid_height: int) -> int:
    """Features per item of a multi-level SPP top: channels x (1 + 4 + 16 + ...)."""
    return channels * sum(4 ** i for i in range(pyramid_height))


# --- Crop, Reshape, InnerProduct, Scale/Bias ------------------------------------------------------


def crop_offsets(p, ndim: int) -> tuple[int, list[int]]:
    """Caffe's Crop: the first cropped axis and one offset per axis from there (one value repeats)."""
    axis = canonical_axis(p.axis, ndim)
    n_crop = ndim - axis
    offsets = [int(o) for o in p.offset]
    if len(offsets) > 1 and len(offsets) != n_crop:
        fail(f"{len(offsets)} offsets for {n_crop} cropped axes")
    if len(offsets) <= 1:
        offsets = [offsets[0] if offsets else 0] * n_crop
    return axis, offsets


def crop_fits(axis: int, offsets: Sequence[int], shape: Sequence[Size], ref: Sequence[Size]) -> list:
    """Per cropped axis, whether the reference's size at its offset lies inside the bottom
    (bools, or SymBools while tracing)."""
    return [off >= 0 and off + ref[axis + i] <= shape[axis + i] for i, off in enumerate(offsets)]


def check_crop(p, shape: Sequence[int], ref: Sequence[int]) -> tuple[int, list[int]]:
    """Axis and offsets of a Crop whose bottoms have int shapes; GeometryError when out of range."""
    if len(shape) != len(ref):
        fail(f"bottoms have different ranks {list(shape)} and {list(ref)}")
    axis, offsets = crop_offsets(p, len(shape))
    for i, fits in enumerate(crop_fits(axis, offsets, shape, ref)):
        if not fits:
            a = axis + i
            fail(f"crop of size {ref[a]} at offset {offsets[i]} does not fit axis {a} of size {shape[a]}")
    return axis, offsets


def reshape_axes(p, ndim: int) -> tuple[int, int]:
    """Caffe's Reshape replaces the bottom's axes [axis, end) (negative axis counts from ndim + 1)."""
    axis = p.axis if p.axis >= 0 else ndim + 1 + p.axis
    if not 0 <= axis <= ndim:
        fail(f"reshape axis {p.axis} out of range for {ndim}-D bottom")
    num_axes = p.num_axes
    end = ndim if num_axes == -1 else axis + num_axes
    if num_axes < -1 or end > ndim:
        fail(f"reshape num_axes {num_axes} out of range")
    return axis, end


def reshape_output(p, shape: Sequence[int]) -> tuple[int, ...]:
    """Caffe's Reshape: 0 copies the bottom's dim, -1 is inferred, over axes [axis, end)."""
    ndim = len(shape)
    axis, end = reshape_axes(p, ndim)
    new: list[int] = []
    infer_at = None
    for i, d in enumerate(p.shape.dim):
        if d == 0:
            if axis + i >= ndim:
                fail(f"dim {i} is 0 (copy) but the bottom has no axis {axis + i}")
            new.append(shape[axis + i])
        elif d == -1:
            if infer_at is not None:
                fail("more than one -1 in reshape_param.shape")
            infer_at = len(new)
            new.append(1)
        elif d < 0:
            fail(f"invalid reshape dim {d}")
        else:
            new.append(int(d))
    top = list(shape[:axis]) + new + list(shape[end:])
    total = math.prod(shape)
    if infer_at is not None:
        known = math.prod(top) or 1
        if total % known:
            fail(f"cannot infer the -1 dim: {total} elements do not divide by {known}")
        top[axis + infer_at] = total // known
    if math.prod(top) != total:
        fail(f"reshape from {list(shape)} to {top} changes the element count")
    return tuple(top)


def inner_product_k(shape: Sequence[int], axis: int) -> int:
    """InnerProduct's K: the bottom flattened from `axis` on."""
    return math.prod(shape[canonical_axis(axis, len(shape)):])


def scale_param_shape(shape: Sequence[int], axis: int, num_axes: int) -> tuple[int, ...]:
    """The learned blob's shape of Scale/Bias: the bottom's axes [axis, axis + num_axes)."""
    axis = canonical_axis(axis, len(shape)) if shape else 0
    if num_axes < -1:
        fail(f"num_axes must be >= -1, got {num_axes}")
    end = len(shape) if num_axes == -1 else axis + num_axes
    if end > len(shape):
        fail(f"axis {axis} + num_axes {num_axes} exceeds the bottom's {len(shape)} axes")
    return tuple(shape[axis:end])


def broadcast_view(ndim: int, axis: int, param_shape: Sequence[int]) -> list[int]:
    """The shape that broadcasts a Scale/Bias blob (or second bottom) over an ndim bottom at `axis`."""
    axis = canonical_axis(axis, ndim)
    return [1] * axis + list(param_shape) + [1] * (ndim - axis - len(param_shape))
