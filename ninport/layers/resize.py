"""Resizing layers of the forks: Interp (DeepLab v2 / PSPNet, align-corners bilinear), the YOLO
ports' nearest-neighbour Upsample (one bottom) and SegNet's unpooling Upsample (two bottoms: data and the
argmax mask of a MAX Pooling layer). Output sizes are computed from the bottoms' shapes at run time
with the fork's own rules (`interp_size`), so the module is right at any input size."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    fail,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import UnsupportedLayerError, safe_text, shape_text
from ninport.layers.rules import (
    check_unknown_fields,
    fork_int,
    fork_name,
    one_bottom,
    spatial_4d,
)
from ninport.registry import LayerShapes, Shape, builtin_layer, layer_fields, layer_param

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


@dataclasses.dataclass(frozen=True)
class InterpRule:
    """How an Interp layer sizes its top, from the fork's interp_layer.cpp (Reshape).

    The input is first cropped by pad_beg (top and left) and pad_end (bottom and right), both <= 0;
    then, by the first rule that applies: a second bottom gives the size; shrink only:
    (in - 1) / shrink + 1; zoom only: in + (in - 1)(zoom - 1); height and width: as given;
    shrink and zoom: shrink first, then zoom. Sizes follow the bottom at run time.
    """

    pad_beg: int
    pad_end: int
    shrink: int | None
    zoom: int | None
    height: int | None
    width: int | None
    size_from_second_bottom: bool

    def cropped(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return in_hw[0] + self.pad_beg + self.pad_end, in_hw[1] + self.pad_beg + self.pad_end

    def output_size(self, in_hw: tuple[int, int], reference_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        return interp_size(self.cropped(in_hw), reference_hw if self.size_from_second_bottom else None,
                                  self.shrink, self.zoom, self.height, self.width)


def interp_size(cropped_hw, reference_hw, shrink, zoom, height, width) -> tuple[int, int]:
    """Interp's output (h, w) from the cropped input size (`InterpRule`'s rules; plain Python, so the
    generated .py file copies it): the second bottom's size when there is one (`reference_hw`)."""
    if reference_hw is not None:
        return int(reference_hw[0]), int(reference_hw[1])
    if shrink is not None and zoom is None:
        return (cropped_hw[0] - 1) // shrink + 1, (cropped_hw[1] - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return cropped_hw[0] + (cropped_hw[0] - 1) * (zoom - 1), cropped_hw[1] + (cropped_hw[1] - 1) * (zoom - 1)
    if height is not None and width is not None:
        return height, width
    shrunk = [(d - 1) // shrink + 1 for d in cropped_hw]
    return shrunk[0] + (shrunk[0] - 1) * (zoom - 1), shrunk[1] + (shrunk[1] - 1) * (zoom - 1)


def interp_rule(layer: LayerSpec, bottoms: int) -> InterpRule:
    """The Interp parameters, checked as the fork checks them (every LOG(FATAL) / CHECK an error)."""
    pad_beg = fork_int(layer, "interp_param.pad_beg", 0)
    pad_end = fork_int(layer, "interp_param.pad_end", 0)
    if pad_beg > 0 or pad_end > 0:
        fail(f"pad_beg {pad_beg} / pad_end {pad_end}: only non-positive padding (cropping) is supported, "
              "as in the fork")
    kind = fork_name(layer, "interp_param.type", "Bilinear")
    if kind != "Bilinear":
        raise UnsupportedLayerError(f"Interp type {safe_text(kind, 40)} is not supported (only the bilinear, "
                                    "align-corners Interp of DeepLab / PSPNet)")
    shrink = fork_int(layer, "interp_param.shrink_factor")
    zoom = fork_int(layer, "interp_param.zoom_factor")
    height = fork_int(layer, "interp_param.height")
    width = fork_int(layer, "interp_param.width")
    if bottoms == 2:
        if any(v is not None for v in (shrink, zoom, height, width)):
            fail("a second bottom gives the output size, so shrink_factor, zoom_factor, height and width "
                  "must not be given too (ambiguous; the fork refuses it)")
        return InterpRule(pad_beg, pad_end, None, None, None, None, True)
    if bottoms != 1:
        fail(f"expects 1 bottom (or 2: the second gives the output size), got {bottoms}")
    if shrink is not None and shrink < 1:
        fail(f"shrink_factor {shrink} must be at least 1")
    if zoom is not None and zoom < 1:
        fail(f"zoom_factor {zoom} must be at least 1")
    if shrink is None and zoom is None:
        if height is None or width is None:
            fail("needs zoom_factor, shrink_factor, or both height and width (the fork's Interp refuses "
                  "a layer without them)")
        if height <= 0 or width <= 0:
            fail(f"target size {height}x{width} must be positive")
    return InterpRule(pad_beg, pad_end, shrink, zoom, height, width, False)


def _checked_interp_size(rule: InterpRule, shapes: list[Shape]) -> tuple[int, int]:
    in_hw = tuple(shapes[0][2:])
    eff = rule.cropped(in_hw)
    if min(eff) <= 0:
        fail(f"cropping pad_beg {rule.pad_beg}, pad_end {rule.pad_end} leaves nothing of the "
              f"{in_hw[0]}x{in_hw[1]} input")
    out = rule.output_size(in_hw, tuple(shapes[1][2:]) if rule.size_from_second_bottom else None)
    if min(out) <= 0:
        fail(f"output size {out[0]}x{out[1]} must be positive")
    return out


# interp_layer.hpp: exactly one top; the bottom count is left to Reshape (1, or 2 with the size reference).
@builtin_layer("Interp", converter="resize:interp", bottoms=None, tops=1,
               origin="DeepLab v2 / PSPNet Caffe (interp_layer.cpp)", reads_unknown_fields=True)
def _interp(layer, shapes):
    check_unknown_fields(layer, "interp_param")
    rule = interp_rule(layer, len(shapes))
    n, c = spatial_4d(layer, shapes[0])[:2]
    if rule.size_from_second_bottom:
        other = shapes[1]
        if len(other) != 4 or other[0] != n:
            fail(f"the second bottom {shape_text(other)} must be 4-D with the batch of the first "
                  f"{shape_text(shapes[0])}")
    out = _checked_interp_size(rule, shapes)
    return LayerShapes(tops=[(n, c, *out)], macs=4 * n * c * out[0] * out[1], parsed=rule)


SEGNET_UPSAMPLE_FIELDS = {"scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w"}


def upsample_scale(layer: LayerSpec) -> int:
    """The integer factor of the YOLO ports' nearest-neighbour Upsample (darknet2caffe, one bottom,
    upsample_param { scale }, default 1). SegNet's fields with one bottom are refused by name: SegNet's
    Upsample takes the pooling mask as its second bottom."""
    fields = layer_fields(layer, "upsample_param")
    segnet = sorted(fields & SEGNET_UPSAMPLE_FIELDS)
    if segnet:
        raise UnsupportedLayerError(
            f"fields {', '.join(segnet)} are SegNet's unpooling Upsample, which takes 2 bottoms (data and the "
            "argmax mask of a MAX Pooling layer's second top), but this layer has 1; with one bottom an "
            "Upsample is the YOLO ports' nearest-neighbour form (upsample_param { scale } only)")
    other = sorted(fields - {"scale"})
    if other:
        raise UnsupportedLayerError(f"Upsample with upsample_param fields {', '.join(safe_text(f, 40) for f in other)} "
                                    "is not supported (only the YOLO ports' nearest-neighbour form, scale only)")
    scale = fork_int(layer, "upsample_param.scale", 1)
    if scale < 1:
        fail(f"scale {scale} must be a positive integer")
    return scale


@dataclasses.dataclass(frozen=True)
class SegNetUpsampleRule:
    """How SegNet's Upsample sizes its top (alexgkendall/caffe-segnet upsample_layer.cpp, LayerSetUp and
    Reshape): upsample_h x upsample_w when both are given (scale and pad_out are then ignored), else the
    data's size times scale_h x scale_w (or scale, default 2), minus 1 where pad_out_h / pad_out_w is set."""

    size: tuple[int, int] | None
    scale: tuple[int, int]
    pad_out: tuple[bool, bool]


def segnet_upsample_size(in_hw, size, scale, pad_out) -> tuple[int, int]:
    """The top's (h, w) for data of size `in_hw` (`SegNetUpsampleRule`; plain Python, so the generated .py
    file copies it)."""
    if size is not None:
        return size[0], size[1]
    return in_hw[0] * scale[0] - int(pad_out[0]), in_hw[1] * scale[1] - int(pad_out[1])


def _uint32(layer: LayerSpec, name: str, default: int | None = None) -> int | None:
    """A uint32 field of the fork's UpsampleParameter; the fork keeps it in an int."""
    value = fork_int(layer, f"upsample_param.{name}", default)
    if value is not None and value < 0:
        fail(f"{name} {value} must not be negative (a uint32 in the fork's caffe.proto)")
    return value


_BOOL_TEXT = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}


def _bool(layer: LayerSpec, name: str) -> bool:
    """A bool field as protobuf's text format writes it (true/false/t/f/True/False/1/0); default false."""
    value = layer_param(layer, f"upsample_param.{name}", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in _BOOL_TEXT:
        return _BOOL_TEXT[value]
    fail(f"{name} must be true or false, got {safe_text(repr(value), 40)}")


def segnet_upsample_rule(layer: LayerSpec) -> SegNetUpsampleRule:
    """SegNet's Upsample parameters, checked as the fork's LayerSetUp checks them (every CHECK an error)."""
    fields = layer_fields(layer, "upsample_param")
    other = sorted(fields - SEGNET_UPSAMPLE_FIELDS - {"scale"})
    if other:
        fail(f"upsample_param fields {', '.join(safe_text(f, 40) for f in other)} are not SegNet's (scale, "
             "scale_h, scale_w, pad_out_h, pad_out_w, upsample_h, upsample_w)")
    values = {name: _uint32(layer, name) for name in ("scale", "scale_h", "scale_w", "upsample_h", "upsample_w")}
    pad_out = (_bool(layer, "pad_out_h"), _bool(layer, "pad_out_w"))
    given = {name for name, value in values.items() if value is not None}
    if {"upsample_h", "upsample_w"} <= given:
        size = (values["upsample_h"], values["upsample_w"])
        if min(size) <= 1:
            fail(f"upsample_h {size[0]} and upsample_w {size[1]} must both be greater than 1 (the fork's CHECK)")
        return SegNetUpsampleRule(size, (1, 1), (False, False))  # the fork ignores scale and pad_out here
    if "scale_h" in given or "scale_w" in given:
        if "scale" in given or not {"scale_h", "scale_w"} <= given:
            fail("give upsample_h and upsample_w, or scale, or both scale_h and scale_w without scale; the fork "
                 f"refuses what is given: {', '.join(sorted(given))}")
        scale = (values["scale_h"], values["scale_w"])
    else:
        scale = (values["scale"] if "scale" in given else 2,) * 2  # the fork's default scale is 2
    if min(scale) <= 1:
        fail(f"scale {scale[0]}x{scale[1]} must be greater than 1 (the fork's CHECK)")
    for axis, name in enumerate("hw"):
        if pad_out[axis] and scale[axis] != 2:
            fail(f"pad_out_{name} needs scale_{name} 2 (the fork's CHECK: otherwise the output size is ill-defined)")
    return SegNetUpsampleRule(None, scale, pad_out)


def _segnet_upsample_shapes(layer: LayerSpec, shapes: list[Shape]) -> LayerShapes:
    rule = segnet_upsample_rule(layer)
    data, mask = shapes
    if len(data) != 4 or len(mask) != 4:
        fail(f"data {shape_text(data)} and mask {shape_text(mask)} must both be 4-D (N, C, H, W)")
    if tuple(data) != tuple(mask):
        fail(f"the mask {shape_text(mask)} must have the data's shape {shape_text(data)} (the argmax mask of "
             "the MAX Pooling layer whose output the data has the size of)")
    n, c, h, w = data
    out = segnet_upsample_size((h, w), rule.size, rule.scale, rule.pad_out)
    return LayerShapes(tops=[(n, c, *out)], scratch=n * c * (out[0] * out[1] + 1), parsed=rule)


def _upsample_settings(layer: LayerSpec) -> str:
    """'nearest, scale 2'; SegNet's: 'unpool by mask, 45x60', 'unpool by mask, scale 2x2, pad_out h'."""
    if len(layer.bottoms) != 2:
        return f"nearest, scale {upsample_scale(layer)}"
    rule = segnet_upsample_rule(layer)
    if rule.size is not None:
        return f"unpool by mask, {rule.size[0]}x{rule.size[1]}"
    pad_out = " ".join(axis for axis, on in zip("hw", rule.pad_out) if on)
    return f"unpool by mask, scale {rule.scale[0]}x{rule.scale[1]}" + (f", pad_out {pad_out}" if pad_out else "")


# The YOLO ports' UpsampleLayer takes exactly 1 bottom, SegNet's exactly 2 (data and pooling mask); both
# produce 1 top. The type name covers both: the bottom count says which one a layer is.
@builtin_layer("Upsample", converter="resize:upsample", bottoms=(1, 2), tops=1,
               origin="YOLO Caffe ports (darknet2caffe), nearest; SegNet Caffe (caffe-segnet), unpooling by a "
                      "pooling mask", reads_unknown_fields=True, settings=_upsample_settings)
def _upsample(layer, shapes):
    check_unknown_fields(layer, "upsample_param")
    if len(shapes) == 2:
        return _segnet_upsample_shapes(layer, shapes)
    scale = upsample_scale(layer)
    n, c, height, width = spatial_4d(layer, one_bottom(layer, shapes))
    return LayerShapes(tops=[(n, c, height * scale, width * scale)], parsed=scale)


# --- torch modules and their converters ------------------------------------------------------


@records_args
class Interp(nn.Module):
    """Crop by pad_beg / pad_end, then bilinear with aligned corners (caffe_cpu_interp2: source
    position = out index * (in - 1) / (out - 1)). The output size follows `interp_size`: from the
    second bottom when there is one, else from shrink_factor, zoom_factor, height and width."""

    def __init__(self, pad_beg: int = 0, pad_end: int = 0, shrink: int | None = None, zoom: int | None = None,
                 height: int | None = None, width: int | None = None):
        super().__init__()
        self.pad_beg, self.pad_end = pad_beg, pad_end
        self.shrink, self.zoom, self.height, self.width = shrink, zoom, height, width

    def extra_repr(self) -> str:
        given = {"pad_beg": self.pad_beg, "pad_end": self.pad_end, "shrink": self.shrink, "zoom": self.zoom,
                 "height": self.height, "width": self.width}
        return ", ".join(f"{k}={v}" for k, v in given.items() if v) or "size of the second bottom"

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        in_hw = (int(x.shape[2]), int(x.shape[3]))
        eff_h, eff_w = in_hw[0] + self.pad_beg + self.pad_end, in_hw[1] + self.pad_beg + self.pad_end
        reference_hw = (int(reference.shape[2]), int(reference.shape[3])) if reference is not None else None
        out_hw = interp_size((eff_h, eff_w), reference_hw, self.shrink, self.zoom, self.height, self.width)
        begin = -self.pad_beg
        if (eff_h, eff_w) != in_hw:
            x = x[:, :, begin:begin + eff_h, begin:begin + eff_w]
        if (eff_h, eff_w) == tuple(out_hw):  # the fork copies: no interpolation
            return x
        return F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=True)


def interp(ctx: LayerContext) -> nn.Module:
    rule: InterpRule = ctx.parsed  # read and checked once, by the shape rule
    return Interp(rule.pad_beg, rule.pad_end, rule.shrink, rule.zoom, rule.height, rule.width)


@records_args
class NearestUpsample(nn.Module):
    """Every pixel repeated scale x scale times: top[h, w] = bottom[h / scale, w / scale]."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.scale
        return x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


def upsample(ctx: LayerContext) -> nn.Module:
    if isinstance(ctx.parsed, SegNetUpsampleRule):  # two bottoms: SegNet's
        rule = ctx.parsed
        return SegNetUpsample(rule.size, rule.scale, rule.pad_out)
    return NearestUpsample(ctx.parsed)  # the scale its shape rule checked


@records_args
class SegNetUpsample(nn.Module):
    """SegNet's unpooling (caffe-segnet UpsampleLayer::Forward_cpu): a zero top, and data value i of each
    (n, c) plane written at the flat index int(mask[i]) of the top's plane, in order of i, so where two
    mask entries name the same place (overlapping pooling windows) the later one stays.

    That order is kept exactly: a max-scatter of the source positions (counted from 1; 0 is "none") gives,
    for each top place, the last one writing it, and a gather reads its value from the data behind a 0 (a
    plain scatter leaves the order of repeated indices undefined, in torch and in ONNX's ScatterElements
    alike). Mask entries outside the top's plane cannot come from a MAX Pooling layer whose input had the
    top's size (the fork aborts on an index past the plane; -1, a pooling window with nothing above
    -FLT_MAX, writes outside it): they write nothing here.
    """

    def __init__(self, size: tuple[int, int] | None, scale: tuple[int, int], pad_out: tuple[bool, bool]):
        super().__init__()
        self.size, self.scale, self.pad_out = size, scale, pad_out

    def extra_repr(self) -> str:
        if self.size is not None:
            return f"size={self.size}"
        return f"scale={self.scale}, pad_out={self.pad_out}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out_h, out_w = segnet_upsample_size((h, w), self.size, self.scale, self.pad_out)
        plane = out_h * out_w
        index = mask.reshape(n, c, h * w).to(torch.int64)  # static_cast<int>: toward zero
        index = torch.where((index >= 0) & (index < plane), index, plane)  # outside: the extra, dropped place
        source = torch.arange(1, h * w + 1, device=x.device).expand(n, c, h * w)
        last = torch.zeros((n, c, plane + 1), dtype=torch.int64, device=x.device)
        last = last.scatter_reduce(2, index, source, reduce="amax")[:, :, :plane]
        values = torch.cat([x.new_zeros(n, c, 1), x.reshape(n, c, h * w)], dim=2)
        return values.gather(2, last).reshape(n, c, out_h, out_w)
