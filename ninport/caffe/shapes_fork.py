"""Shape rules of layers that only Caffe forks have, each from its fork's own source.

A fork's parameters may reach us typed (when ninport's schema has the fork's message) or as the
unknown fields the reader kept; `registry.layer_param` reads either, and the helpers here check
the value's type, because it is data from a stranger's file. Where two forks gave one type name
different meanings (Upsample, BN), the fields and bottoms tell them apart and the variant ninport
does not convert is refused by name.

Nothing here imports torch.
"""
from __future__ import annotations

import copy
import dataclasses
import math

from ninport.caffe.shapes import fail, one_bottom, same_as_bottom, spatial_4d
from ninport.caffe.spec import LayerSpec
from ninport.errors import UnsupportedLayerError, safe_text, shape_text
from ninport.registry import (
    LayerShapes,
    Shape,
    builtin_layer,
    layer_fields,
    layer_param,
    layer_type,
)

INT32_MAX = 2 ** 31 - 1


# --- reading a fork's parameters -----------------------------------------------------------------


def fork_int(layer: LayerSpec, path: str, default: int | None = None) -> int | None:
    """An integer parameter (typed or unknown field), checked to be an int32; `default` if absent."""
    value = layer_param(layer, path)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{path} must be an integer, got {safe_text(repr(value), 40)}")
    if not -INT32_MAX - 1 <= value <= INT32_MAX:
        fail(f"{path} {value} is out of Caffe's int32 range")
    return value


def fork_float(layer: LayerSpec, path: str, default: float) -> float:
    value = layer_param(layer, path)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{path} must be a number, got {safe_text(repr(value), 40)}")
    return float(value)


def fork_name(layer: LayerSpec, path: str, default: str) -> str:
    """An enum parameter by its name ("INFERENCE"); a number stays as its text."""
    value = layer_param(layer, path)
    return default if value is None else str(value)


def check_unknown_fields(layer: LayerSpec, *messages: str) -> None:
    """Refuse unknown fields outside the fork messages this type reads: silently ignoring a field
    could compute something other than the fork did."""
    stray = sorted(key for key in (getattr(layer, "unknown_fields", None) or {})
                   if key.split(".")[0] not in messages)
    if stray:
        fail(f"fields this layer type does not read: {', '.join(safe_text(k, 60) for k in stray[:10])}")


# --- ReLU6 ---------------------------------------------------------------------------------------


# A NeuronLayer in the ports that define it (e.g. eric612/MobileNet-YOLO relu6_layer.hpp): one bottom, one top.
builtin_layer("ReLU6", converter="fork:relu6", bottoms=1, tops=1,
              origin="MobileNetV2 Caffe ports (ReLU6 layer)")(same_as_bottom)


# --- depthwise convolutions ------------------------------------------------------------------------


def depthwise_as_convolution(layer: LayerSpec, channels: int) -> LayerSpec:
    """The layer as the grouped Convolution it computes (group = input channels), so Convolution's
    own shape rule and converter do the geometry and the weights.

    `DepthwiseConvolution` (yonghenglh6/DepthwiseConvolution, a BaseConvolutionLayer) keeps num_output:
    any multiple of the channels, weights (num_output, 1, kh, kw); `group` may be left out, and if
    given must be the channel count. `ConvolutionDepthwise` (farmingyard/caffe-mobilenet,
    conv_dw_layer.cpp) ignores num_output: top and weights have the bottom's channels (C, 1, kh, kw).
    """
    proto = copy.deepcopy(layer.proto)
    p = proto.convolution_param
    if layer.proto.convolution_param.HasField("group") and p.group != channels:
        fail(f"group {p.group} must equal the {channels} input channels (a depthwise convolution); "
              "leave group out or use a Convolution layer")
    p.group = channels
    if layer.type == "ConvolutionDepthwise":
        p.num_output = channels
    elif p.num_output <= 0 or p.num_output % channels:
        fail(f"num_output {p.num_output} must be a positive multiple of the {channels} input channels")
    return dataclasses.replace(layer, proto=proto)


# DepthwiseConvolutionLayer is a BaseConvolutionLayer (one top per bottom); farmingyard's
# ConvolutionDepthwiseLayer (conv_dw_layer.hpp) takes exactly one bottom and one top.
@builtin_layer("DepthwiseConvolution", converter="fork:depthwise_convolution", bottoms=(1, None), tops=(1, None),
               one_top_per_bottom=True, origin="DepthwiseConvolution fork (yonghenglh6)")
@builtin_layer("ConvolutionDepthwise", converter="fork:depthwise_convolution", bottoms=1, tops=1,
               origin="MobileNet Caffe fork (farmingyard/caffe-mobilenet)")
def _depthwise(layer, shapes):
    shape = spatial_4d(layer, one_bottom(layer, shapes))
    as_convolution = depthwise_as_convolution(layer, shape[1])
    result = layer_type("Convolution").shapes(as_convolution, shapes)
    return dataclasses.replace(result, parsed=as_convolution)  # the converter builds this Convolution


# --- Axpy (SENet) --------------------------------------------------------------------------------


@builtin_layer("Axpy", converter="fork:axpy", bottoms=3, tops=1, origin="SENet Caffe (hujie-frank)")
def _axpy(layer, shapes):
    """top = a * x + y, bottoms (a, x, y); a holds one factor per (n, c): N x C or N x C x 1 x 1."""
    if len(shapes) != 3:
        fail(f"expects 3 bottoms (scale a, x, y: top = a * x + y), got {len(shapes)}")
    a, x, y = shapes
    if len(x) < 2:
        fail(f"x {shape_text(x)} needs a channel axis")
    if tuple(a[:2]) != tuple(x[:2]) or math.prod(a) != x[0] * x[1] or (len(a) == 4 and a[2:] != (1, 1)):
        fail(f"scale a {shape_text(a)} must be N x C x 1 x 1 (or N x C) for x {shape_text(x)}")
    if tuple(x) != tuple(y):
        fail(f"x {shape_text(x)} and y {shape_text(y)} must have the same shape")
    return LayerShapes(tops=[tuple(x)])


# --- ShuffleChannel (ShuffleNet) -----------------------------------------------------------------


def shuffle_groups(layer: LayerSpec, channels: int) -> int:
    groups = fork_int(layer, "shuffle_channel_param.group", 1)
    if groups <= 0:
        fail(f"group {groups} must be positive")
    if channels % groups:
        fail(f"group {groups} does not divide the {channels} channels")
    return groups


# shuffle_channel_layer.hpp declares no counts, so Caffe checks none; the shape rule takes one bottom and
# the driver one top.
@builtin_layer("ShuffleChannel", converter="fork:shuffle_channel", bottoms=None, tops=None,
               origin="ShuffleNet Caffe (farmingyard/ShuffleNet)", reads_unknown_fields=True)
def _shuffle_channel(layer, shapes):
    check_unknown_fields(layer, "shuffle_channel_param")
    shape = spatial_4d(layer, one_bottom(layer, shapes))
    return LayerShapes(tops=[shape], parsed=shuffle_groups(layer, shape[1]))


# --- Interp (DeepLab v2 / PSPNet) -------------------------------------------------------------


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


# --- Upsample: YOLO ports' nearest neighbour, not SegNet's unpooling -------------------------


SEGNET_UPSAMPLE_FIELDS = {"scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w"}


def upsample_scale(layer: LayerSpec, bottoms: int) -> int:
    """The integer factor of the YOLO ports' nearest-neighbour Upsample (darknet2caffe,
    upsample_param { scale }, default 1); SegNet's max-unpooling Upsample is refused by name."""
    fields = layer_fields(layer, "upsample_param")
    segnet = sorted(fields & SEGNET_UPSAMPLE_FIELDS)
    if bottoms > 1 or segnet:
        why = f"{bottoms} bottoms (data and the pooling mask)" if bottoms > 1 else f"fields {', '.join(segnet)}"
        raise UnsupportedLayerError(
            f"this is SegNet's unpooling Upsample ({why}): it scatters values to the argmax positions of a MAX "
            "pooling mask, which ninport does not convert; only the YOLO ports' nearest-neighbour Upsample "
            "(one bottom, upsample_param { scale }) is supported")
    other = sorted(fields - {"scale"})
    if other:
        raise UnsupportedLayerError(f"Upsample with upsample_param fields {', '.join(safe_text(f, 40) for f in other)} "
                                    "is not supported (only the YOLO ports' nearest-neighbour form, scale only)")
    scale = fork_int(layer, "upsample_param.scale", 1)
    if scale < 1:
        fail(f"scale {scale} must be a positive integer")
    return scale


# The YOLO ports' UpsampleLayer takes exactly 1 bottom, SegNet's exactly 2 (data and pooling mask); both
# produce 1 top. The type name covers both: 1 or 2 bottoms here, and the shape rule names SegNet's variant.
@builtin_layer("Upsample", converter="resize:upsample", bottoms=(1, 2), tops=1,
               origin="YOLO Caffe ports (darknet2caffe), nearest", reads_unknown_fields=True)
def _upsample(layer, shapes):
    check_unknown_fields(layer, "upsample_param")
    scale = upsample_scale(layer, len(shapes))
    n, c, height, width = spatial_4d(layer, one_bottom(layer, shapes))
    return LayerShapes(tops=[(n, c, height * scale, width * scale)], parsed=scale)


# --- BN: the one-layer batch norm of PSPNet (yjxiong's BN) and SegNet ----------------------------


SEGNET_BN_FIELDS = {"bn_mode", "scale_filler", "shift_filler"}
PSPNET_BN_FIELDS = {"slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine"}


def bn_variant(layer: LayerSpec) -> str:
    """"pspnet" (blobs slope, bias, mean, variance; y = slope (x - mean) / sqrt(var + eps) + bias at test
    time) or "segnet" (bn_mode INFERENCE: blobs scale, shift; y = scale x + shift). SegNet's LEARN mode,
    which normalizes with the batch's own statistics even at test time, is refused by name."""
    fields = layer_fields(layer, "bn_param")
    if fields & SEGNET_BN_FIELDS and fields & PSPNET_BN_FIELDS:
        fail(f"bn_param mixes SegNet's fields ({', '.join(sorted(fields & SEGNET_BN_FIELDS))}) and PSPNet's "
              f"({', '.join(sorted(fields & PSPNET_BN_FIELDS))}); which fork wrote it?")
    if fields & SEGNET_BN_FIELDS:
        mode = fork_name(layer, "bn_param.bn_mode", "LEARN")
        if mode not in ("INFERENCE", "1"):
            raise UnsupportedLayerError(
                f"SegNet's BN in {safe_text(mode, 20)} mode normalizes with the statistics of the batch itself; "
                "run SegNet's compute_bn_statistics.py to get the bn_mode: INFERENCE weights and convert those")
        return "segnet"
    return "pspnet"


@dataclasses.dataclass(frozen=True)
class BNParams:
    """A BN layer as its shape rule read it: which fork's BN (`bn_variant`) and PSPNet's eps."""

    variant: str  # "pspnet" or "segnet"
    eps: float = 1e-5


def _bn_max_tops(layer: LayerSpec) -> int:
    """PSPNet's BNLayer: exactly one top; SegNet's: up to 3 in LEARN mode (the batch statistics), else 1."""
    if layer_fields(layer, "bn_param") & SEGNET_BN_FIELDS and fork_name(layer, "bn_param.bn_mode", "LEARN") == "LEARN":
        return 3
    return 1


def _bn_statistics(layer: LayerSpec) -> tuple[int, ...]:
    """PSPNet's blobs 2 and 3 are the running mean and variance; SegNet's INFERENCE blobs (scale, shift) are
    what compute_bn_statistics.py folded the statistics into: learned values only."""
    return () if bn_variant(layer) == "segnet" else (2, 3)


def _bn_settings(layer: LayerSpec) -> str:
    if bn_variant(layer) == "segnet":
        return "SegNet, INFERENCE: scale, shift"
    return f"PSPNet, eps {fork_float(layer, 'bn_param.eps', 1e-5):g}; statistics: mean, variance"


@builtin_layer("BN", converter="fork:bn", bottoms=1, tops=(1, _bn_max_tops), origin="PSPNet / SegNet Caffe (BN layer)",
               reads_unknown_fields=True, statistics=_bn_statistics, settings=_bn_settings)
def _bn(layer, shapes):
    check_unknown_fields(layer, "bn_param")
    shape = one_bottom(layer, shapes)
    if not 2 <= len(shape) <= 4:
        fail(f"expects a bottom of 2 to 4 axes (N, C, H, W), got {shape_text(shape)}")
    blob = (1, shape[1], 1, 1)
    if bn_variant(layer) == "segnet":
        return LayerShapes(tops=[shape], params=[blob, blob], parsed=BNParams("segnet"))
    eps = fork_float(layer, "bn_param.eps", 1e-5)
    if not eps >= 0:
        fail(f"eps {eps} must be non-negative")
    return LayerShapes(tops=[shape], params=[blob] * 4, parsed=BNParams("pspnet", eps))
