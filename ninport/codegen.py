"""A converted net as a standalone, readable PyTorch file: `ninport convert --format py`, `write_python`.

The file defines one nn.Module class named after the net, in the style of torchvision's model code: an
`__init__` that builds one attribute per Caffe layer (named as in `ninport.describe(module).layers`, the
same identifiers as the fx module, so the state_dict keys match), and a `forward` with one line per layer.
Plain torch modules are used where they are exact at every input size (nn.Conv2d, nn.Linear, nn.ReLU,
nn.MaxPool2d when Caffe's rounding changes nothing, ...); Caffe's own semantics come as small helper
classes copied into the same file (`inspect.getsource`): ninport's converter modules where they are
self-contained, else the plain versions defined below (pooling, SPP, Eltwise, Reshape, Crop: the same
computation without ninport's size checks), so the file computes what the fx module computes, at any
input size the net takes. It imports only torch (and the standard library) and loads its weights from the
`.safetensors` file written beside it, with a small reader of its own.

Names from the Caffe files are data: code uses only the generated identifiers; the Caffe names appear in
comments only, escaped (`safe_text`: no newline or other control character survives).

Each module class has an emitter (`EMITTERS`): a function from the module instance to a `Block` (the
constructor expression and the forward expression). A plugin's module class can be taught with
`register_emitter`; anything else is refused with the layer named.

SSD's DetectionOutput is `ninport.convert.layers.ssd.DetectionOutput` with its box decoding and selection
functions, copied into the file: plain torch, the eager computation behind the `ninport::ssd_detections`
op that ninport's `CaffeDetectionOutput` calls for export, so the file reproduces SSD Caffe's rows without
the custom op.
"""
from __future__ import annotations

import inspect
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ninport.caffe import shapes_fork
from ninport.convert.graph import _class_name, python_identifier
from ninport.convert.layers import (
    activation,
    fork,
    indexing,
    inner_product,
    loss,
    normalization,
    pooling,
    reduction,
    resize,
    spp,
    ssd,
    structure,
)
from ninport.description import NetDescription, describe
from ninport.errors import ExportError, NinportError, safe_text, shape_text
from ninport.fileio import write_atomic

COMMENT_CHARS = 100


@dataclass
class Block:
    """How one layer appears in the file.

    `init`: the constructor expression assigned to `self.<attr>` in __init__, or None for an op written
    inline in forward. `call`: the forward expression, with {attr} (the attribute), {args} (the bottoms,
    comma-separated) and {x} (the first bottom) filled in.
    """

    init: str | None
    call: str = "self.{attr}({args})"


class Emitter:
    """What an emitter function gets besides the module: a way to pull helper classes into the file."""

    def __init__(self) -> None:
        self.helpers: dict[str, str] = {}

    def copy_class(self, cls: type | Callable, preamble: str = "") -> str:
        """Copy a ninport helper class or function (self-contained: torch, F, nn, math only) into the file;
        its name."""
        if cls.__name__ not in self.helpers:
            source = textwrap.dedent(inspect.getsource(cls))
            self.helpers[cls.__name__] = (preamble + "\n\n\n" if preamble else "") + source
        return cls.__name__

    def child(self, module: nn.Module) -> str:
        """The constructor expression of a nested module (e.g. a pyramid level)."""
        block = _emitter_for(module)(module, self)
        if block.init is None:
            raise NinportError(f"{type(module).__name__} inside another module has no constructor form")
        return block.init


EmitFn = Callable[[nn.Module, Emitter], Block]
EMITTERS: dict[type, EmitFn] = {}


def register_emitter(module_class: type, emit: EmitFn) -> None:
    """Teach code generation a module class (a plugin's converter output): `emit(module, emitter) -> Block`."""
    EMITTERS[module_class] = emit


def _emitter_for(module: nn.Module) -> EmitFn:
    for cls in type(module).__mro__:
        if cls in EMITTERS:
            return EMITTERS[cls]
    raise NinportError(f"no Python source form for {type(module).__name__} modules")


# --- literals: only numbers, booleans, None, tuples and lists of them, and ninport's own mode words -----------


def lit(value: Any) -> str:
    """A Python literal for a constructor argument; refuses anything that is not plain data."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(float(value))
    if isinstance(value, str) and value.isidentifier():
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(lit(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    raise NinportError(f"cannot write {type(value).__name__} as a Python literal")


def empty(shape) -> str:
    """A placeholder tensor the weights file fills (load_state_dict)."""
    return f"torch.empty({lit([int(d) for d in shape])})"


def param(tensor: torch.Tensor | None) -> str:
    return "None" if tensor is None else f"nn.Parameter({empty(tensor.shape)})"


def buffer(tensor: torch.Tensor | None) -> str:
    return "None" if tensor is None else empty(tensor.shape)


# --- helper classes written into the file (copied with inspect.getsource: torch, F, nn, math only) ----------
# ninport's own layer modules check sizes and name Caffe layers through ninport's geometry; these are the
# same computations as plain model code, at whatever size the input has.

_FLT_MAX_LINE = "FLT_MAX = float(torch.finfo(torch.float32).max)"
FLT_MAX = float(torch.finfo(torch.float32).max)


class CaffePool2d(nn.Module):
    """Caffe's MAX or AVE pooling at the input's size.

    Caffe rounds the output size up (down with round_mode FLOOR) and, with padding, drops a last window
    that would start at or past in + pad. MAX pads with -FLT_MAX; AVE pads with zeros and divides by the
    window clipped to [-pad, in + pad): edge windows count the padding, not what lies past it.
    """

    def __init__(self, mode: str, kernel, stride=(1, 1), pad=(0, 0), ceil: bool = True):
        super().__init__()
        self.mode, self.ceil = mode, ceil
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)

    def output_size(self, size: int, axis: int) -> int:
        k, s, p = self.kernel[axis], self.stride[axis], self.pad[axis]
        out = (-(-(size + 2 * p - k) // s) if self.ceil else (size + 2 * p - k) // s) + 1
        if p > 0 and (out - 1) * s >= size + p:
            out -= 1
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        out = [self.output_size(size[a], a) for a in (0, 1)]
        # pad before by `pad`, after up to the end of the last window; then every window is a full kernel
        after = [max(0, (out[a] - 1) * self.stride[a] + self.kernel[a] - self.pad[a] - size[a]) for a in (0, 1)]
        fill = -FLT_MAX if self.mode == "max" else 0.0
        x = F.pad(x, (self.pad[1], after[1], self.pad[0], after[0]), value=fill)
        pool = F.max_pool2d if self.mode == "max" else F.avg_pool2d
        y = pool(x, self.kernel, self.stride)[:, :, : out[0], : out[1]]
        if self.mode == "ave":  # avg_pool2d divided by the whole kernel; Caffe divides by the clipped window
            counts = []
            for a in (0, 1):
                start = torch.arange(out[a], device=x.device) * self.stride[a] - self.pad[a]
                counts.append(torch.clamp(start + self.kernel[a], max=size[a] + self.pad[a]) - start)
            count = (counts[0].unsqueeze(1) * counts[1].unsqueeze(0)).to(y.dtype)
            y = y * ((self.kernel[0] * self.kernel[1]) / count)
        return y


class SpatialPyramidPool(nn.Module):
    """Caffe's SPP: level i pools into 2^i x 2^i bins with kernel = stride = ceil(in / bins) and
    (kernel * bins - in + 1) // 2 padding before; the levels are flattened and concatenated (a single
    level stays as it is). A level's windows tile the padded input, so it is a reshape and a reduction."""

    def __init__(self, mode: str, pyramid_height: int):
        super().__init__()
        self.mode, self.pyramid_height = mode, pyramid_height

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pooled = []
        for level in range(self.pyramid_height):
            bins = 2 ** level
            kh, kw = -(-h // bins), -(-w // bins)
            ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
            if ph >= kh or pw >= kw:
                raise ValueError(f"SPP level {level} of a {h}x{w} input needs pad {ph}x{pw} with kernel "
                                 f"{kh}x{kw}, and Caffe refuses a pad that is not smaller than the kernel")
            fill = -FLT_MAX if self.mode == "max" else 0.0
            tiles = F.pad(x, (pw, kw * bins - pw - w, ph, kh * bins - ph - h), value=fill)
            tiles = tiles.reshape(n, c, bins, kh, bins, kw)
            pooled.append(torch.amax(tiles, dim=(3, 5)) if self.mode == "max" else torch.mean(tiles, dim=(3, 5)))
        if len(pooled) == 1:
            return pooled[0]
        return torch.cat([torch.flatten(y, 1) for y in pooled], dim=1)


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


class Reshape(nn.Module):
    """Caffe's Reshape: axes [axis, end) become `spec`, where 0 copies the input's size on that axis and
    -1 is inferred."""

    def __init__(self, axis: int, end: int, spec: list[int]):
        super().__init__()
        self.axis, self.end, self.spec = axis, end, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = [x.shape[self.axis + i] if d == 0 else d for i, d in enumerate(self.spec)]
        return torch.reshape(x, [*x.shape[: self.axis], *middle, *x.shape[self.end:]])


class Crop(nn.Module):
    """Caffe's Crop: from `axis` on, the reference input's sizes, cut from x at fixed offsets."""

    def __init__(self, axis: int, offsets: list[int]):
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * self.axis
        for i, offset in enumerate(self.offsets):
            a = self.axis + i
            if offset + reference.shape[a] > x.shape[a]:
                raise ValueError(f"a crop of size {reference.shape[a]} at offset {offset} does not fit axis {a} "
                                 f"of size {x.shape[a]}")
            index.append(slice(offset, offset + reference.shape[a]))
        return x[tuple(index)]


# --- emitters -------------------------------------------------------------------------------------------------


def _emits(*classes: type):
    def register(fn: EmitFn) -> EmitFn:
        for cls in classes:
            EMITTERS[cls] = fn
        return fn
    return register


def _pair(value) -> str:
    """(3, 3) -> 3, as torchvision writes it; (3, 5) stays a tuple."""
    value = tuple(int(v) for v in value)
    return lit(value[0]) if len(set(value)) == 1 else lit(value)


@_emits(nn.Conv2d, nn.ConvTranspose2d)
def _conv(m, e: Emitter) -> Block:
    """ninport's CaffeConv2d / CaffeConvTranspose2d only add size checks: the torch class is exact."""
    torch_class = nn.ConvTranspose2d if isinstance(m, nn.ConvTranspose2d) else nn.Conv2d
    options = [f"kernel_size={_pair(m.kernel_size)}"]
    for name, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1)):
        value = getattr(m, name, (default,))
        if any(int(v) != default for v in value):
            options.append(f"{name}={_pair(value)}")
    if m.groups != 1:
        options.append(f"groups={m.groups}")
    if m.bias is None:
        options.append("bias=False")
    return Block(f"nn.{torch_class.__name__}({m.in_channels}, {m.out_channels}, {', '.join(options)})")


@_emits(inner_product.InnerProduct)
def _inner_product(m, e: Emitter) -> Block:
    out_features, in_features = m.weight.shape
    return Block(f"nn.Linear({in_features}, {out_features}, bias={m.bias is not None})",
                 f"self.{{attr}}(torch.flatten({{x}}, {m.axis}))")


_PLAIN_ELEMENTWISE = {"relu": lambda m: "nn.ReLU()",
                      "leaky_relu": lambda m: f"nn.LeakyReLU({lit(m.negative_slope)})",
                      "elu": lambda m: f"nn.ELU({lit(m.alpha)})",
                      "sigmoid": lambda m: "nn.Sigmoid()", "tanh": lambda m: "nn.Tanh()",
                      "identity": lambda m: "nn.Identity()"}


def _power_call(m) -> str:
    y = "{x}" if (m.scale == 1 and m.shift == 0) else f"({{x}} * {lit(m.scale)} + {lit(m.shift)})"
    return y if m.power == 1 else f"torch.pow({y}, {lit(m.power)})"


def _log_call(m) -> str:
    y = f"torch.log({{x}} * {lit(m.scale)} + {lit(m.shift)})"
    return y if m.inv_log_base == 1 else f"{y} * {lit(m.inv_log_base)}"


_INLINE_ELEMENTWISE = {
    "abs": lambda m: "torch.abs({x})",
    "power": _power_call,
    "exp": lambda m: f"torch.exp(({{x}} * {lit(m.scale)} + {lit(m.shift)}) * {lit(m.log_base)})",
    "log": _log_call,
    "threshold": lambda m: f"({{x}} > {lit(m.threshold)}).to({{x}}.dtype)",
    "clip": lambda m: f"torch.clamp({{x}}, {lit(m.min)}, {lit(m.max)})",
    "swish": lambda m: f"{{x}} * torch.sigmoid({{x}} * {lit(m.beta)})",
}


@_emits(activation.Elementwise)
def _elementwise(m, e: Emitter) -> Block:
    if m.kind in _PLAIN_ELEMENTWISE:
        return Block(_PLAIN_ELEMENTWISE[m.kind](m))
    if m.kind in _INLINE_ELEMENTWISE:
        return Block(None, _INLINE_ELEMENTWISE[m.kind](m))
    if m.kind == "bnll":  # log(1 + e^x), computed stably as Caffe does
        return Block(None, "torch.where({x} > 0, {x} + torch.log1p(torch.exp(-{x})), torch.log1p(torch.exp({x})))")
    raise NinportError(f"no Python source form for the element-wise op {m.kind!r}")


@_emits(nn.PReLU)
def _prelu(m, e: Emitter) -> Block:
    return Block(f"nn.PReLU(num_parameters={m.num_parameters})")


@_emits(nn.Dropout)
def _dropout(m, e: Emitter) -> Block:
    return Block(f"nn.Dropout(p={lit(float(m.p))})")


@_emits(activation.CaffeDropoutUnscaled)
def _dropout_unscaled(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({lit(m.ratio)})")


@_emits(normalization.LRNAcrossChannels)
def _lrn_across(m, e: Emitter) -> Block:
    return Block(f"nn.LocalResponseNorm({m.size}, alpha={lit(m.alpha)}, beta={lit(m.beta)}, k={lit(m.k)})")


@_emits(normalization.LRNWithinChannel)
def _lrn_within(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({m.size}, alpha={lit(m.alpha)}, beta={lit(m.beta)})")


@_emits(normalization.CaffeBatchNorm)
def _batch_norm(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({buffer(m.running_mean)}, {buffer(m.running_var)}, "
                 f"{buffer(m.scale_factor)}, eps={lit(m.eps)}, "
                 f"moving_average_fraction={lit(m.moving_average_fraction)}, "
                 f"use_global_stats={lit(m.use_global_stats)})")


@_emits(normalization.ScaleBias)
def _scale_bias(m, e: Emitter) -> Block:
    e.copy_class(normalization.broadcast_from)
    return Block(f"{e.copy_class(normalization.ScaleBias)}({int(m.axis)}, {lit(list(m.param_shape))}, "
                 f"{param(m.weight)}, {param(m.bias)})")


@_emits(normalization.AddSecondBottom)
def _add_second_bottom(m, e: Emitter) -> Block:
    e.copy_class(normalization.broadcast_from)
    return Block(f"{e.copy_class(normalization.AddSecondBottom)}({int(m.axis)})")


@_emits(pooling.CaffePool2d)
def _pool(m, e: Emitter) -> Block:
    p = m.params
    if p.kernel is None:  # global pooling: one window over the whole plane
        reduce = "torch.amax" if p.mode == "max" else "torch.mean"
        return Block(None, f"{reduce}({{x}}, dim=(2, 3), keepdim=True)")
    kind = "MaxPool2d" if p.mode == "max" else "AvgPool2d"
    if not any(p.pad) and (not p.ceil or p.stride == (1, 1)):  # floor rounding, no padding: torch's pool
        return Block(f"nn.{kind}({_pair(p.kernel)}, stride={_pair(p.stride)})")
    if p.mode == "max" and not any(p.pad) and all(s <= k for s, k in zip(p.stride, p.kernel)):
        # ceil rounding without padding, and no window can start past the input: torch's ceil_mode is Caffe's
        return Block(f"nn.MaxPool2d({_pair(p.kernel)}, stride={_pair(p.stride)}, ceil_mode=True)")
    name = e.copy_class(CaffePool2d, preamble=_FLT_MAX_LINE)
    return Block(f"{name}({lit(p.mode)}, {lit(tuple(p.kernel))}, stride={lit(tuple(p.stride))}, "
                 f"pad={lit(tuple(p.pad))}, ceil={lit(bool(p.ceil))})")


@_emits(spp.SpatialPyramidPool)
def _spp(m, e: Emitter) -> Block:
    name = e.copy_class(SpatialPyramidPool, preamble=_FLT_MAX_LINE)
    return Block(f"{name}({lit(m.mode)}, pyramid_height={int(m.pyramid.pyramid_height)})")


@_emits(structure.EltwiseSum)
def _eltwise_sum(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(EltwiseSum)}({lit([float(c) for c in m.coeffs])})")


@_emits(structure.EltwiseProd)
def _eltwise_prod(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(EltwiseProd)}()")


@_emits(structure.EltwiseMax)
def _eltwise_max(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(EltwiseMax)}()")


@_emits(structure.Concat)
def _concat(m, e: Emitter) -> Block:
    return Block(None, f"torch.cat([{{args}}], dim={m.axis})")


@_emits(structure.Slice)
def _slice(m, e: Emitter) -> Block:
    if len(m.sizes) == 1:
        return Block(None, "{x}")
    return Block(None, f"torch.split({{x}}, {lit(list(m.sizes))}, dim={m.axis})")


@_emits(structure.Split)
def _split(m, e: Emitter) -> Block:
    return Block(None, ", ".join(["{x}"] * m.count))


@_emits(structure.Flatten)
def _flatten(m, e: Emitter) -> Block:
    return Block(None, f"torch.flatten({{x}}, {m.start}, {m.end})")


@_emits(structure.Reshape)
def _reshape(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(Reshape)}({m.axis}, {m.end}, {lit([int(d) for d in m.spec])})")


@_emits(structure.Crop)
def _crop(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(Crop)}({m.axis}, {lit([int(o) for o in m.offsets])})")


@_emits(structure.Softmax)
def _softmax(m, e: Emitter) -> Block:
    return Block(None, f"torch.softmax({{x}}, dim={m.axis})")


@_emits(reduction.CaffeReduction)
def _reduction(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({lit(m.op)}, {m.axis}, {lit(float(m.coeff))})")


@_emits(reduction.CaffeArgMax)
def _argmax(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({lit(m.axis)}, {m.top_k}, {lit(bool(m.out_max_val))}, "
                 f"{lit(list(m.top_shape))})")


@_emits(reduction.CaffeMVN)
def _mvn(m, e: Emitter) -> Block:
    top_shape = None if m.top_shape is None else list(m.top_shape)
    return Block(f"{e.copy_class(type(m))}({lit(bool(m.normalize_variance))}, {lit(m.dims == [1, 2, 3])}, "
                 f"{lit(float(m.eps))}, {lit(top_shape)})")


@_emits(indexing.CaffeEmbed)
def _embed(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({param(m.weight)}, {param(m.bias)})")


@_emits(indexing.Tile)
def _tile(m, e: Emitter) -> Block:
    return Block(None, f"{{x}}.repeat({lit(list(m.repeats))})")


@_emits(indexing.Parameter)
def _parameter(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(type(m))}({param(m.weight)})")


@_emits(ssd.PriorBox)
def _prior_box(m, e: Emitter) -> Block:
    e.copy_class(ssd._legacy_hw)
    return Block(f"{e.copy_class(ssd.PriorBox)}({lit(m.box_sizes)}, variance={lit(m.variance)}, "
                 f"offset={lit(m.offset)}, clip={lit(m.clip)}, step={lit(m.step)}, image_size={lit(m.image_size)})")


@_emits(ssd.Normalize)
def _normalize(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(ssd.Normalize)}({param(m.scale)}, across_spatial={lit(m.across_spatial)}, "
                 f"channel_shared={lit(m.channel_shared)}, eps={lit(m.eps)})")


@_emits(ssd.Permute)
def _permute(m, e: Emitter) -> Block:
    order = tuple(int(v) for v in m.order)
    return Block(None, "{x}" if order == tuple(range(len(order))) else f"{{x}}.permute({lit(order)})")


@_emits(ssd.DetectionOutput)
def _detection_output(m, e: Emitter) -> Block:
    for function in (ssd.decode_boxes, ssd.select_detections, ssd.greedy_nms, ssd.caffe_overlap, ssd.box_areas,
                     ssd.empty_detection_rows):
        e.copy_class(function)
    confidence_threshold, nms_threshold, top_k, eta, keep_top_k = m.selection
    return Block(f"{e.copy_class(ssd.DetectionOutput)}({int(m.num_classes)}, {lit([int(v) for v in m.labels])}, "
                 f"share_location={lit(bool(m.share_location))}, code_type={lit(m.code_type)}, "
                 f"variance_encoded_in_target={lit(bool(m.variance_encoded_in_target))}, clip={lit(bool(m.clip))}, "
                 f"confidence_threshold={lit(float(confidence_threshold))}, "
                 f"nms_threshold={lit(float(nms_threshold))}, top_k={int(top_k)}, eta={lit(float(eta))}, "
                 f"keep_top_k={int(keep_top_k)})")


@_emits(fork.Axpy)
def _axpy(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(fork.Axpy)}()")


@_emits(fork.ShuffleChannel)
def _shuffle_channel(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(fork.ShuffleChannel)}({int(m.groups)})")


@_emits(fork.ChannelAffine)
def _channel_affine(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(fork.ChannelAffine)}({buffer(m.scale)}, {buffer(m.shift)}, {buffer(m.mean)}, "
                 f"{buffer(m.inv_std)})")


@_emits(resize.Interp)
def _interp(m, e: Emitter) -> Block:
    e.copy_class(shapes_fork.interp_size)
    return Block(f"{e.copy_class(resize.Interp)}({int(m.pad_beg)}, {int(m.pad_end)}, shrink={lit(m.shrink)}, "
                 f"zoom={lit(m.zoom)}, height={lit(m.height)}, width={lit(m.width)})")


@_emits(resize.NearestUpsample)
def _nearest_upsample(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(resize.NearestUpsample)}({int(m.scale)})")


# TRAIN-phase layers: ninport's loss modules are plain torch; they and their two helpers are copied
_FLT_MIN_LINE = "FLT_MIN = float(torch.finfo(torch.float32).tiny)"


def _loss_helpers(e: Emitter) -> None:
    e.copy_class(loss.loss_normalizer)
    e.copy_class(loss.integer_labels)


@_emits(loss.SoftmaxWithLoss)
def _softmax_with_loss(m, e: Emitter) -> Block:
    _loss_helpers(e)
    name = e.copy_class(loss.SoftmaxWithLoss, preamble=_FLT_MIN_LINE)
    return Block(f"{name}({int(m.axis)}, {lit(m.ignore_label)}, {lit(m.normalization)}, "
                 f"{lit(float(m.loss_weight))}, {lit(bool(m.with_prob))})")


@_emits(loss.EuclideanLoss)
def _euclidean_loss(m, e: Emitter) -> Block:
    return Block(f"{e.copy_class(loss.EuclideanLoss)}({lit(float(m.loss_weight))})")


@_emits(loss.SigmoidCrossEntropyLoss)
def _sigmoid_cross_entropy_loss(m, e: Emitter) -> Block:
    _loss_helpers(e)
    return Block(f"{e.copy_class(loss.SigmoidCrossEntropyLoss)}({lit(m.ignore_label)}, {lit(m.normalization)}, "
                 f"{lit(float(m.loss_weight))})")


@_emits(loss.Accuracy)
def _accuracy(m, e: Emitter) -> Block:
    _loss_helpers(e)
    return Block(f"{e.copy_class(loss.Accuracy)}({int(m.axis)}, {int(m.top_k)}, {lit(m.ignore_label)}, "
                 f"{lit(bool(m.per_class))})")


# --- the file -------------------------------------------------------------------------------------------------


def comment(text: object) -> str:
    """File text made safe for a `#` comment: escaped, one line, bounded."""
    return safe_text(text, COMMENT_CHARS)


_FORWARD_NAMES = {"self", "torch", "nn", "F", "math"}
# the file's own module-level names besides the helpers: the net's class must not shadow them
_MODULE_NAMES = {"annotations", "json", "math", "os", "struct", "sys", "Path", "torch", "F", "nn", "FLT_MAX",
                 "FLT_MIN", "SAFETENSORS_DTYPES", "read_safetensors", "load"}

_READER = '''
SAFETENSORS_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header naming
    each tensor's dtype, shape and byte range, then the raw little-endian data. No code runs."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        if end > start:
            tensor = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
            if sys.byteorder != "little":
                tensor = tensor.view(torch.uint8).view(-1, tensor.element_size()).flip(1).view(dtype)
        else:
            tensor = torch.empty(0, dtype=dtype)
        tensors[name] = tensor.reshape(info["shape"])
    return tensors
'''


def python_source(module: nn.Module, description: NetDescription | None = None) -> str:
    """The standalone Python source of a module built by `ninport.load` (see the module docstring)."""
    meta = description or describe(module)
    emitter = Emitter()
    init_lines: list[str] = []
    forward_lines: list[str] = []
    names: set[str] = set(_FORWARD_NAMES)

    def variable(blob: str) -> str:
        """The local name of a blob in forward: an identifier made from the blob name, as fx does."""
        return python_identifier(blob, names, "blob")

    variables: dict[str, str] = {}
    for blob in meta.inputs:
        variables[blob] = variable(blob)
    submodules = dict(module.named_children())
    for record in meta.layers:
        label = f"{comment(record.name)} ({comment(record.type)})"
        sub = submodules.get(record.module)
        if sub is None:
            raise ExportError(f'layer "{safe_text(record.name)}": the module has no submodule {record.module!r}')
        try:
            block = _emitter_for(sub)(sub, emitter)
        except NinportError as exc:
            raise ExportError(f'{meta.source}: layer "{safe_text(record.name)}" ({safe_text(record.type)}): '
                              f"cannot write it as Python: {exc}") from None
        args = [variables[b] for b in record.bottoms]
        for top in record.tops:
            if top not in variables:
                variables[top] = variable(top)
        call = (block.call.replace("{attr}", record.module).replace("{args}", ", ".join(args))
                .replace("{x}", args[0] if args else ""))
        targets = ", ".join(variables[t] for t in record.tops)
        if block.init is not None:
            init_lines += [f"        # {label}", f"        self.{record.module} = {block.init}"]
            forward_lines.append(f"        {targets} = {call}")
        else:
            forward_lines.append(f"        {targets} = {call}  # {label}")
    class_name = _class_name(meta.title)  # never a keyword, soft keyword or builtin
    while class_name in emitter.helpers or class_name in _MODULE_NAMES:  # nor a name of the file: "f", "priorbox"
        class_name += "Net"
    outputs = [variables[b] for b in meta.outputs]
    forward_lines.append(f"        return {outputs[0] if len(outputs) == 1 else '(' + ', '.join(outputs) + ')'}")
    inputs = ", ".join(variables[b] for b in meta.inputs)
    shapes = ", ".join(f"{comment(name)} {shape_text(shape)}" for name, shape in meta.inputs.items())
    output_names = ", ".join(comment(b) for b in meta.outputs)

    import ninport

    returns = "its output" if len(outputs) == 1 else "a tuple of its outputs in Caffe's order"
    parts = [
        f'"""A Caffe net as plain PyTorch, written by ninport {ninport.__version__}.\n\n'
        "`load()` builds the model with the weights of the .safetensors file beside this file, in eval\n"
        "mode; `model.train()` gives Caffe's TRAIN-phase behaviour (Dropout, BatchNorm statistics).\n"
        "Needs only torch.\n"
        '"""',
        f"# Caffe net: {comment(meta.title)}" + ("" if meta.name else " (the prototxt has no name: the file's stem)")
        + f"\n# From: {comment(Path(meta.source).name)}"
        + (f" with weights {comment(Path(meta.weights).name)}" if meta.weights else " (random weights)")
        + f"\n# Inputs (reference shapes): {shapes}\n# Outputs: {output_names}",
        "from __future__ import annotations\n\nimport json\nimport math  # noqa: F401 - used by some helpers\n"
        "import os\nimport struct\nimport sys\nfrom pathlib import Path\n\nimport torch\n"
        "import torch.nn.functional as F  # noqa: F401 - used by some helpers\nfrom torch import nn",
        *emitter.helpers.values(),
        f"class {class_name}(nn.Module):\n"
        f'    """forward takes the inputs in the net\'s order and returns {returns}."""\n\n'
        "    def __init__(self) -> None:\n        super().__init__()\n" + "\n".join(init_lines)
        + ("\n" if init_lines else "")
        + f"\n    def forward(self, {inputs}):\n" + "\n".join(forward_lines),
        _READER.strip(),
        f"def load(weights: str | os.PathLike | None = None) -> {class_name}:\n"
        '    """The model with its weights (default: the .safetensors file beside this file), in eval mode."""\n'
        '    path = Path(weights) if weights is not None else Path(__file__).with_suffix(".safetensors")\n'
        '    with torch.device("meta"):  # no random init: every tensor comes from the file\n'
        f"        model = {class_name}()\n"
        "    model.load_state_dict(read_safetensors(path), assign=True)\n"
        "    return model.eval()",
    ]
    source = "\n\n\n".join(part.strip("\n") for part in parts) + "\n"
    _check_compiles(source, meta.source)
    return source


def _check_compiles(source: str, net_source: str) -> None:
    """Refuse to hand out a file Python cannot compile (an ExportError, so no broken file is written)."""
    try:
        compile(source, "<generated>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        where = f" (line {exc.lineno}: {exc.msg})" if isinstance(exc, SyntaxError) else f" ({type(exc).__name__})"
        raise ExportError(f"{net_source}: the generated Python source does not compile{where}; nothing was written. "
                          "Please report this") from None


def write_python(module: nn.Module, path: str | os.PathLike, *, description: NetDescription | None = None,
                 weights: bool = True) -> Path:
    """Write the module as a standalone Python file (atomically) and, with `weights`, its state dict as
    `<path stem>.safetensors` beside it (what the file's `load()` reads)."""
    from ninport.artifacts import write_safetensors

    source = python_source(module, description)
    target = Path(path)
    if weights:
        write_safetensors(module, target.with_suffix(".safetensors"))
    return write_atomic(target, lambda tmp: Path(tmp).write_text(source, encoding="utf-8"), "writing Python")
