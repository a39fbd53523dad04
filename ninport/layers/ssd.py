"""The SSD fork's layers (weiliu89/caffe, branch ssd): PriorBox, Normalize, Permute, DetectionOutput.

Their parameters are read and checked once, by the shape rules at the top of this file; below, they
become torch modules that compute what SSD Caffe computes, in float32 where Caffe uses float and in float64 where
Caffe's C++ promotes to double (the prior box corners).

DetectionOutput is a box decoder (plain torch ops) followed by one custom op,
`ninport::ssd_detections`, whose row count depends on the data. Its eager implementation is SSD
Caffe's selection; `onnx_translations()` gives torch's ONNX exporter a translation of it into
standard operators only (TopK, NonMaxSuppression, ScatterND, NonZero, GatherND, ...), so the file runs
in onnxruntime, TensorRT and OpenVINO. The translation reproduces Caffe exactly:
- candidates are the scores strictly above confidence_threshold, in a stable descending order
  (ONNX TopK breaks ties by the lower index, as Caffe's std::stable_sort keeps prior order);
- top_k is applied BEFORE NMS (TopK), not after as NonMaxSuppression's max_output_boxes_per_class;
- NonMaxSuppression sees the candidates already in Caffe's order with distinct synthetic scores,
  so ties never reach its own ordering; a box with xmax < xmin or ymax < ymin (zero area for Caffe,
  which never suppresses nor is suppressed) is given as an all-zero box, because NonMaxSuppression
  would reorder its corners;
- keep_top_k keeps the best rows of each image over all classes; rows come out image, then label,
  then score order.
Adaptive NMS (eta < 1) changes the threshold after every kept box, which NonMaxSuppression cannot do:
there the translation runs Caffe's greedy loop itself, an ONNX Loop over the candidate ranks (all images
and classes at once) with Caffe's overlap formula and the threshold carried per class; eta == 1 keeps
the NonMaxSuppression path.
Exact score ties straddling the keep_top_k cut are ordered by Caffe's std::sort, which leaves them
unspecified; ninport keeps the lower (label, rank) first, in torch and in ONNX alike.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    fail,
)
from ninport.errors import safe_text, shape_text
from ninport.registry import LayerShapes, Shape, builtin_layer, layer_param

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


ORIGIN = "SSD fork (weiliu89/caffe ssd)"


FLT_MAX = 3.4028234663852886e38


# PriorBoxParameter.CodeType in the fork's caffe.proto.
CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}


def _checked_legacy_hw(shape: Shape, what: str) -> tuple[int, int]:
    """Caffe's height()/width() legacy accessors: axes 2 and 3, 1 where the blob has fewer axes."""
    if not 2 <= len(shape) <= 4:
        fail(f"{what} must have 2 to 4 axes (Caffe's num/channels/height/width), got {shape_text(shape)}")
    return (shape[2] if len(shape) > 2 else 1, shape[3] if len(shape) > 3 else 1)


@dataclass(frozen=True)
class PriorBoxLayout:
    """The priors of one feature-map cell and how cells map to the image.

    `box_sizes` are (width, height) in image pixels, in Caffe's order (per min_size: the min square,
    sqrt(min*max) if max_size is given, then one box per aspect ratio != 1). `image_size` and `step`
    are (h, w), or None where Caffe takes them from the bottoms at run time.
    """

    box_sizes: tuple[tuple[float, float], ...]
    image_size: tuple[int, int] | None
    step: tuple[float, float] | None
    offset: float
    clip: bool
    variance: tuple[float, ...]  # 1 value (broadcast) or 4

    @property
    def num_priors(self) -> int:
        return len(self.box_sizes)


def _f32(value: float) -> float:
    """`value` rounded to float32, as Caffe stores it in a float variable."""
    import struct
    return struct.unpack("f", struct.pack("f", value))[0]


_RATIO_TOLERANCE = 1e-6


def aspect_ratios(given, flip: bool) -> list[float]:
    """SSD Caffe's aspect ratios: 1, then each given ratio (positive, finite) unless it lies within
    1e-6 of one already kept (1, an earlier ratio or its flip), followed by its flip 1/ar if `flip`.

    Caffe compares each ratio with every kept one (quadratic: 10,000 ratios took 9.5 s). Here kept
    values are filed in buckets of width 1e-6 (floor(v / 1e-6), monotone in v) that remember only
    their smallest and largest value. A value within 1e-6 of `ar` lies in one of the 5 buckets
    around ar's own; in a bucket wholly below (above) ar the largest (smallest) value is the
    nearest, and in ar's own bucket (its float32 values span less than 2e-6) one of the two ends is
    within 1e-6 of ar whenever the bucket holds values on both sides of ar. So every answer is the
    one comparing with all kept values gives, in constant time per ratio.
    """
    ratios: list[float] = []
    ends: dict[int, tuple[float, float]] = {}

    def keep(value: float) -> None:
        ratios.append(value)
        if math.isinf(value):  # the flip of a ratio below float's range: near no finite ratio
            return
        bucket = math.floor(value / _RATIO_TOLERANCE)
        low, high = ends.get(bucket, (value, value))
        ends[bucket] = (min(low, value), max(high, value))

    def near_kept(ar: float) -> bool:
        own = math.floor(ar / _RATIO_TOLERANCE)
        for bucket in range(own - 2, own + 3):
            if bucket in ends and any(abs(ar - end) < _RATIO_TOLERANCE for end in ends[bucket]):
                return True
        return False

    keep(1.0)
    for ar in given:
        if near_kept(ar):
            continue
        keep(_f32(ar))
        if flip:
            keep(_f32(1.0 / ar))
    return ratios


def prior_box_layout(p) -> PriorBoxLayout:
    """The PriorBoxParameter `p` checked and laid out as SSD Caffe's PriorBoxLayer::LayerSetUp does."""
    if not len(p.min_size):
        fail("PriorBox needs min_size (prior_box_param.min_size)")
    if any(not v > 0 for v in p.min_size):
        fail(f"min_size {list(p.min_size)} must be positive")
    for ar in p.aspect_ratio:
        if not (ar > 0 and math.isfinite(ar)):
            fail(f"aspect_ratio {ar} must be a positive number")
    ratios = aspect_ratios(p.aspect_ratio, p.flip)
    if len(p.max_size):
        if len(p.max_size) != len(p.min_size):
            fail(f"{len(p.max_size)} max_size values for {len(p.min_size)} min_size values (must be equal)")
        for lo, hi in zip(p.min_size, p.max_size):
            if not hi > lo:
                fail(f"max_size {hi} must be greater than min_size {lo}")
    sizes: list[tuple[float, float]] = []
    for s, min_value in enumerate(p.min_size):
        low = int(min_value)  # the forward keeps sizes in ints: 10.5 acts as 10
        sizes.append((float(low), float(low)))
        high = int(p.max_size[s]) if len(p.max_size) else None
        if high is not None:
            side = _f32(math.sqrt(low * high))
            sizes.append((side, side))
        for ar in ratios:  # aspect-ratio boxes scale min_size (not sqrt(min*max))
            if abs(ar - 1.0) < 1e-6:
                continue
            sizes.append((_f32(low * math.sqrt(ar)), _f32(low / math.sqrt(ar))))
    if len(p.variance) not in (0, 1, 4):
        fail(f"variance has {len(p.variance)} values; give 1 or 4 (or none for 0.1)")
    if any(not v > 0 for v in p.variance):
        fail(f"variance {list(p.variance)} must be positive")
    variance = tuple(_f32(v) for v in p.variance) or (_f32(0.1),)
    image_size = None
    if p.HasField("img_h") or p.HasField("img_w"):
        if p.HasField("img_size"):
            fail("give either img_size or img_h/img_w, not both")
        if p.img_h <= 0 or p.img_w <= 0:
            fail(f"img_h {p.img_h} and img_w {p.img_w} must both be positive")
        image_size = (int(p.img_h), int(p.img_w))
    elif p.HasField("img_size"):
        if p.img_size <= 0:
            fail(f"img_size {p.img_size} must be positive")
        image_size = (int(p.img_size), int(p.img_size))
    step = None
    if p.HasField("step_h") or p.HasField("step_w"):
        if p.HasField("step"):
            fail("give either step or step_h/step_w, not both")
        if not (p.step_h > 0 and p.step_w > 0):
            fail(f"step_h {p.step_h} and step_w {p.step_w} must both be positive")
        step = (_f32(p.step_h), _f32(p.step_w))
    elif p.HasField("step"):
        if not p.step > 0:
            fail(f"step {p.step} must be positive")
        step = (_f32(p.step), _f32(p.step))
    if not math.isfinite(p.offset):
        fail(f"offset {p.offset} must be a finite number")
    return PriorBoxLayout(tuple(sizes), image_size, step, _f32(p.offset), bool(p.clip), variance)


# prior_box_layer.hpp declares ExactNumTopBlobs 1 and `ExactBottomBlobs` 2, a misspelling that overrides
# nothing: SSD Caffe checks no bottom count (with one bottom it reads past the vector). The shape rule takes 2.
@builtin_layer("PriorBox", converter="ssd:prior_box", bottoms=None, tops=1, origin=ORIGIN)
def _prior_box(layer, shapes):
    if len(shapes) != 2:
        fail(f"expects 2 bottoms (the feature map and the image), got {len(shapes)}")
    layout = prior_box_layout(layer.proto.prior_box_param)
    height, width = _checked_legacy_hw(shapes[0], "the feature-map bottom")
    _checked_legacy_hw(shapes[1], "the image bottom")
    count = height * width * layout.num_priors * 4
    return LayerShapes(tops=[(1, 2, count)])


@builtin_layer("Normalize", converter="ssd:normalize", bottoms=1, tops=1, origin=ORIGIN)
def _normalize(layer, shapes):
    if len(shapes) != 1:
        fail(f"expects 1 bottom, got {len(shapes)}")
    shape = shapes[0]
    _checked_legacy_hw(shape, "the bottom")
    p = layer.proto.norm_param
    if not p.eps >= 0:
        fail(f"eps {p.eps} must be non-negative")
    # The scale: one value (channel_shared) or one per channel.
    return LayerShapes(tops=[shape], params=[(1,) if p.channel_shared else (shape[1],)])


def permute_order(p, ndim: int) -> tuple[int, ...]:
    """The full axis order: the given axes, then the missing ones in increasing order (Caffe's rule)."""
    given = [int(v) for v in p.order]
    if any(not 0 <= v < ndim for v in given):
        fail(f"order {given} is not a permutation of the bottom's {ndim} axes (each axis must be in 0..{ndim - 1})")
    if len(set(given)) != len(given):
        fail(f"order {given} is not a permutation: an axis appears twice")
    return tuple(given + [a for a in range(ndim) if a not in given])


@builtin_layer("Permute", converter="ssd:permute", bottoms=1, tops=1, origin=ORIGIN)
def _permute(layer, shapes):
    if len(shapes) != 1:
        fail(f"expects 1 bottom, got {len(shapes)}")
    shape = shapes[0]
    order = permute_order(layer.proto.permute_param, len(shape))
    return LayerShapes(tops=[tuple(shape[a] for a in order)])


@dataclass(frozen=True)
class DetectionSettings:
    """DetectionOutputParameter as SSD Caffe's DetectionOutputLayer reads it (plus OpenCV's `clip`)."""

    num_classes: int
    share_location: bool
    background_label_id: int
    code_type: str  # CORNER, CENTER_SIZE or CORNER_SIZE
    variance_encoded_in_target: bool
    keep_top_k: int  # -1: keep all
    confidence_threshold: float  # scores strictly above are candidates
    nms_threshold: float
    top_k: int  # -1: no limit before NMS
    eta: float
    clip: bool  # OpenCV's extension: decoded boxes clipped to [0, 1] before NMS
    normalized: bool = True  # OpenCV's normalized_bbox: false: boxes in pixels, sides + 1 (see pixel_box_rules)

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c != self.background_label_id)


def detection_settings(p, normalized: bool = True) -> DetectionSettings:
    """The DetectionOutputParameter `p`, checked as Caffe's LayerSetUp checks it; `normalized`: OpenCV's
    normalized_bbox (the schema does not type it: its number is SSD's `visualize`)."""
    if not p.HasField("num_classes") or p.num_classes < 1:
        fail("DetectionOutput needs num_classes >= 1 (detection_output_param.num_classes)")
    nms = p.nms_param
    if not nms.nms_threshold >= 0:
        fail(f"nms_threshold {nms.nms_threshold} must be non-negative")
    if not 0 < nms.eta <= 1:
        fail(f"eta {nms.eta} must be in (0, 1]")
    top_k = int(nms.top_k) if nms.HasField("top_k") else -1
    if top_k < -1:
        fail(f"top_k {top_k} must be -1 (no limit) or at least 0")
    if p.keep_top_k < -1:
        fail(f"keep_top_k {p.keep_top_k} must be -1 (keep all) or at least 0")
    if p.code_type not in CODE_TYPES:
        fail(f"code_type {p.code_type} is not one of CORNER, CENTER_SIZE, CORNER_SIZE")
    if p.share_location and p.background_label_id == -1:
        # DecodeBBoxesAll skips the shared location label -1 as 'background': SSD Caffe aborts here.
        fail("share_location with background_label_id -1 is refused by SSD Caffe (it skips the shared boxes as "
              "background); use share_location: false or a background class")
    if not -1 <= p.background_label_id < p.num_classes:
        fail(f"background_label_id {p.background_label_id} is not -1 or a class below num_classes {p.num_classes}")
    threshold = float(p.confidence_threshold) if p.HasField("confidence_threshold") else -FLT_MAX
    clip = bool(getattr(p, "clip", False))
    if not normalized and CODE_TYPES[p.code_type] == "CORNER_SIZE":
        fail("normalized_bbox: false with code_type CORNER_SIZE: OpenCV, whose field normalized_bbox is, decodes "
             "CORNER_SIZE as CORNER; give CORNER or CENTER_SIZE")
    if not normalized and nms.eta != 1:
        fail(f"normalized_bbox: false with eta {nms.eta}: OpenCV, whose field normalized_bbox is, ignores eta; "
             "leave eta out")
    return DetectionSettings(int(p.num_classes), bool(p.share_location), int(p.background_label_id),
                             CODE_TYPES[p.code_type], bool(p.variance_encoded_in_target), int(p.keep_top_k),
                             threshold, float(nms.nms_threshold), top_k, float(nms.eta), clip, normalized)


def normalized_bbox(layer) -> bool:
    """OpenCV's detection_output_param.normalized_bbox (default true), kept by the reader as an unknown field;
    any other unknown field of the layer is refused."""
    stray = sorted(key for key in (getattr(layer, "unknown_fields", None) or {})
                   if key != "detection_output_param.normalized_bbox")
    if stray:
        fail(f"fields this layer type does not read: {', '.join(safe_text(k, 60) for k in stray[:10])}")
    value = layer_param(layer, "detection_output_param.normalized_bbox", True)
    if not isinstance(value, bool):
        fail(f"normalized_bbox must be true or false, got {safe_text(repr(value), 40)}")
    return value


def detection_prior_count(settings: DetectionSettings, shapes: list[Shape]) -> int:
    """The number of priors, checked against the location and confidence bottoms as Caffe's Reshape does."""
    if len(shapes) not in (3, 4):
        fail(f"expects 3 bottoms (location, confidence, priors) and optionally the image, got {len(shapes)}")
    if not settings.normalized and settings.clip and (len(shapes) < 4 or len(shapes[3]) != 4):
        fail("normalized_bbox: false with clip clips to the image: give the image (N, C, H, W) as the fourth "
             "bottom, as OpenCV requires")
    loc, conf, prior = shapes[:3]
    variances = 1 if settings.variance_encoded_in_target else 2  # OpenCV's prior layout without variances
    if len(prior) != 3 or prior[1] not in (variances, 2) or prior[2] % 4:
        fail(f"the prior bottom must be (1, 2, 4 x priors) as PriorBox makes it"
             f"{' (or (1, 1, 4 x priors): the variances are in the target)' if variances == 1 else ''}, "
             f"got {shape_text(prior)}")
    priors = prior[2] // 4
    for what, shape, per_prior in (("location", loc, settings.num_loc_classes * 4),
                                   ("confidence", conf, settings.num_classes)):
        if len(shape) < 2 or math.prod(shape[2:]) != 1:
            fail(f"the {what} bottom must be (N, values) as a Flatten/Concat head makes it, got {shape_text(shape)}")
        if shape[1] != priors * per_prior:
            detail = (f"{settings.num_loc_classes} location class(es) x 4" if what == "location"
                      else f"num_classes {settings.num_classes}")
            fail(f"the {what} bottom {shape_text(shape)} does not fit {priors} priors x {detail} "
                  f"= {priors * per_prior} values per image")
    if loc[0] != conf[0]:
        fail(f"the location bottom {shape_text(loc)} and confidence bottom {shape_text(conf)} disagree on the batch")
    return priors


@builtin_layer("DetectionOutput", converter="ssd:detection_output", bottoms=(3, 4), tops=1, origin=ORIGIN,
               reads_unknown_fields=True, onnx_translations="ssd:onnx_translations")
def _detection_output(layer, shapes):
    settings = detection_settings(layer.proto.detection_output_param, normalized_bbox(layer))
    priors = detection_prior_count(settings, shapes)
    batch = shapes[0][0]
    candidates = priors if settings.top_k < 0 else min(priors, settings.top_k)
    classes = len(settings.foreground_labels)
    # The row count is data-dependent; Caffe's Reshape says (1, 1, 1, 7) until the forward pass.
    return LayerShapes(tops=[(1, 1, 1, 7)], scratch=batch * classes * (priors + candidates * 6), parsed=settings)


# --- torch modules and their converters ------------------------------------------------------


# --- PriorBox ------------------------------------------------------------------------------------


def _legacy_hw(shape) -> tuple:
    """Caffe's height()/width(): axes 2 and 3, 1 where the blob has fewer axes."""
    return (shape[2] if len(shape) > 2 else 1, shape[3] if len(shape) > 3 else 1)


@records_args
class PriorBox(nn.Module):
    """SSD prior boxes for the feature map's and the image's run-time sizes: (1, 2, H*W*P*4).

    Channel 0 holds (xmin, ymin, xmax, ymax) normalised by the image size, channel 1 the variances.
    The arguments are `PriorBoxLayout`'s fields as plain numbers (so the generated .py copies this class):
    `box_sizes` (width, height) pairs in pixels, `variance` 1 or 4 values, `step` and `image_size` (h, w)
    or None for Caffe's run-time values.
    """

    def __init__(self, box_sizes, variance, offset: float, clip: bool, step=None, image_size=None):
        super().__init__()
        self.box_sizes = tuple((float(w), float(h)) for w, h in box_sizes)
        self.variance = tuple(float(v) for v in variance)
        self.offset = float(offset)
        self.clip = bool(clip)
        self.step = None if step is None else (float(step[0]), float(step[1]))
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        height, width = _legacy_hw(feature.shape)
        img_h, img_w = self.image_size if self.image_size is not None else _legacy_hw(image.shape)
        device = feature.device
        if self.step is not None:
            step_h = torch.tensor(self.step[0], dtype=torch.float32, device=device)
            step_w = torch.tensor(self.step[1], dtype=torch.float32, device=device)
        else:  # float(image size) / feature size, in float as Caffe computes it
            step_h = torch.full((), img_h, dtype=torch.float32, device=device) / height
            step_w = torch.full((), img_w, dtype=torch.float32, device=device) / width
        offset = torch.tensor(self.offset, dtype=torch.float32, device=device)
        # the corners in double, as Caffe's C++ promotes them, from float centers
        center_x = ((torch.arange(width, dtype=torch.float32, device=device) + offset) * step_w).double()
        center_y = ((torch.arange(height, dtype=torch.float32, device=device) + offset) * step_h).double()
        center_x = center_x.view(1, -1, 1)
        center_y = center_y.view(-1, 1, 1)
        half = torch.tensor(self.box_sizes, dtype=torch.float64, device=device) / 2.0
        half_width, half_height = half[:, 0], half[:, 1]
        shape = (height, width, len(self.box_sizes))
        corners = torch.stack([((center_x - half_width) / img_w).expand(shape),
                               ((center_y - half_height) / img_h).expand(shape),
                               ((center_x + half_width) / img_w).expand(shape),
                               ((center_y + half_height) / img_h).expand(shape)], dim=-1).float()
        if self.clip:
            corners = corners.clamp(0.0, 1.0)
        boxes = corners.reshape(1, 1, -1)
        variance = torch.tensor(self.variance, dtype=torch.float32, device=device)  # 4 values, or 1 for all
        variances = variance.expand(shape + (4,)) if len(self.variance) == 4 else variance.reshape(()).expand(
            shape + (4,))
        return torch.cat([boxes, variances.reshape(1, 1, -1)], dim=1)


def prior_box_module(layout: PriorBoxLayout) -> PriorBox:
    return PriorBox(layout.box_sizes, layout.variance, layout.offset, layout.clip, layout.step, layout.image_size)


def prior_box(ctx: LayerContext) -> nn.Module:
    return prior_box_module(prior_box_layout(ctx.proto.prior_box_param))


# --- Normalize -----------------------------------------------------------------------------------


@records_args
class Normalize(nn.Module):
    """x / sqrt(sum x^2 + eps) over C*H*W (across_spatial) or over C at each position, times a scale."""

    def __init__(self, scale: nn.Parameter, across_spatial: bool, channel_shared: bool, eps: float):
        super().__init__()
        self.scale = scale  # (1,) when channel_shared, else (C,)
        self.channel_shared = channel_shared
        self.across_spatial = across_spatial
        self.eps = float(eps)  # Caffe's float: the converter rounds it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        squares = flat * flat
        if self.across_spatial:
            norm = torch.sqrt(squares.sum(dim=(1, 2), keepdim=True) + self.eps)
            out = flat * torch.reciprocal(norm)  # Caffe scales by 1 / norm
        else:
            out = flat / torch.sqrt(squares.sum(dim=1, keepdim=True) + self.eps)
        scale = self.scale.reshape(()) if self.channel_shared else self.scale.view(1, -1, 1)
        return (out * scale).reshape(x.shape)


def normalize(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.norm_param
    return Normalize(ctx.parameter(0), bool(p.across_spatial), bool(p.channel_shared), float(np.float32(p.eps)))


# --- Permute -------------------------------------------------------------------------------------


@records_args
class Permute(nn.Module):
    def __init__(self, order: tuple[int, ...]):
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == tuple(range(len(self.order))):
            return x  # Caffe shares the bottom's data
        return x.permute(self.order)


def permute(ctx: LayerContext) -> nn.Module:
    return Permute(permute_order(ctx.proto.permute_param, len(ctx.bottom_shapes[0])))


# --- DetectionOutput -----------------------------------------------------------------------------


def decode_boxes(loc: torch.Tensor, prior: torch.Tensor, num_loc_classes: int, code_type: str,
                 variance_encoded_in_target: bool, clip: bool, normalized: bool = True,
                 image: torch.Tensor | None = None) -> torch.Tensor:
    """SSD Caffe's DecodeBBox for every image, prior and location class: (N, P, L, 4) corners in float32.

    `normalized=False` (OpenCV's normalized_bbox: false): priors and boxes in pixels, a prior's sides are
    (xmax - xmin) + 1 and its centre xmin + side / 2 for CENTER_SIZE, and `clip` clips x to [0, W - 1] and y
    to [0, H - 1] of `image` (N, C, H, W), as OpenCV's detection_output_layer.cpp does."""
    batch = loc.shape[0]
    boxes = loc.reshape(batch, -1, num_loc_classes, 4)
    priors = prior[0, 0].reshape(1, -1, 1, 4)
    p_xmin, p_ymin, p_xmax, p_ymax = priors.unbind(-1)
    l0, l1, l2, l3 = boxes.unbind(-1)
    if variance_encoded_in_target:  # the prior blob may then hold no variances (OpenCV's 1 x 1 x 4P priors)
        scaled = [l0, l1, l2, l3]
    else:
        v0, v1, v2, v3 = prior[0, 1].reshape(1, -1, 1, 4).unbind(-1)
        scaled = [v0 * l0, v1 * l1, v2 * l2, v3 * l3]
    if code_type == "CORNER":
        corners = [p_xmin + scaled[0], p_ymin + scaled[1], p_xmax + scaled[2], p_ymax + scaled[3]]
    else:
        p_width = p_xmax - p_xmin
        p_height = p_ymax - p_ymin
        if code_type == "CORNER_SIZE":
            corners = [p_xmin + scaled[0] * p_width, p_ymin + scaled[1] * p_height,
                       p_xmax + scaled[2] * p_width, p_ymax + scaled[3] * p_height]
        else:  # CENTER_SIZE
            if normalized:
                prior_x, prior_y = (p_xmin + p_xmax) / 2, (p_ymin + p_ymax) / 2
            else:
                p_width, p_height = p_width + 1, p_height + 1
                prior_x, prior_y = p_xmin + p_width * 0.5, p_ymin + p_height * 0.5
            center_x = scaled[0] * p_width + prior_x
            center_y = scaled[1] * p_height + prior_y
            half_width = torch.exp(scaled[2]) * p_width / 2
            half_height = torch.exp(scaled[3]) * p_height / 2
            corners = [center_x - half_width, center_y - half_height, center_x + half_width, center_y + half_height]
    decoded = torch.stack(corners, dim=-1)
    if clip and normalized:
        decoded = decoded.clamp(0.0, 1.0)
    elif clip:  # OpenCV: max(min(v, size - 1), 0)
        zero = torch.zeros((), dtype=decoded.dtype, device=decoded.device)
        last_x = torch.full((), image.shape[3] - 1, dtype=decoded.dtype, device=decoded.device)
        last_y = torch.full((), image.shape[2] - 1, dtype=decoded.dtype, device=decoded.device)
        x_min, y_min, x_max, y_max = decoded.unbind(-1)
        decoded = torch.stack([torch.maximum(torch.minimum(x_min, last_x), zero),
                               torch.maximum(torch.minimum(y_min, last_y), zero),
                               torch.maximum(torch.minimum(x_max, last_x), zero),
                               torch.maximum(torch.minimum(y_max, last_y), zero)], dim=-1)
    return decoded


def caffe_overlap(box: torch.Tensor, others: torch.Tensor, box_area: torch.Tensor,
                  other_areas: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """SSD Caffe's JaccardOverlap of `box` (..., 4) with each of `others` (..., k, 4), in float32; with
    `normalized=False` OpenCV's pixel form: the intersection's sides + 1, boxes that touch overlap."""
    box = box.unsqueeze(-2)
    xmin, ymin, xmax, ymax = box.unbind(-1)
    o_xmin, o_ymin, o_xmax, o_ymax = others.unbind(-1)
    width = torch.minimum(xmax, o_xmax) - torch.maximum(xmin, o_xmin)
    height = torch.minimum(ymax, o_ymax) - torch.maximum(ymin, o_ymin)
    if normalized:
        apart = (o_xmin > xmax) | (o_xmax < xmin) | (o_ymin > ymax) | (o_ymax < ymin)
        inter = width * height
        overlaps = ~apart & (width > 0) & (height > 0)
    else:
        inter = (width + 1) * (height + 1)
        overlaps = (width >= 0) & (height >= 0)
    overlap = inter / (box_area.unsqueeze(-1) + other_areas - inter)
    return torch.where(overlaps, overlap, torch.zeros_like(overlap))


def box_areas(boxes: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Caffe's BBoxSize: width * height (OpenCV's pixel form: (width + 1) * (height + 1)), 0 for a box with
    xmax < xmin or ymax < ymin."""
    xmin, ymin, xmax, ymax = boxes.unbind(-1)
    area = (xmax - xmin) * (ymax - ymin) if normalized else (xmax - xmin + 1) * (ymax - ymin + 1)
    return torch.where((xmax < xmin) | (ymax < ymin), torch.zeros_like(area), area)


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, nms_threshold: float, eta: float,
               normalized: bool = True) -> torch.Tensor:
    """SSD Caffe's ApplyNMSFast on candidates already in score order: (G, K, 4), (G, K) -> kept (G, K).

    A candidate is kept when its overlap with every kept box is <= the threshold; with eta < 1 the
    threshold of a group is multiplied by eta after each kept box while it is > 0.5.
    """
    groups, count = valid.shape
    last = int(valid.sum(dim=1).max()) if groups and count else 0
    if eta >= 1 and last > 1 and normalized:  # the matrix form has SSD's overlaps only, not OpenCV's pixel ones
        return _greedy_nms_fixed_threshold(boxes, valid, nms_threshold, last)
    kept = torch.zeros_like(valid)
    areas = box_areas(boxes, normalized)
    threshold = torch.full((groups,), nms_threshold, dtype=torch.float32, device=boxes.device)
    eta_value = torch.tensor(eta, dtype=torch.float32, device=boxes.device)
    for k in range(last):
        overlap = caffe_overlap(boxes[:, k], boxes[:, :k], areas[:, k], areas[:, :k], normalized)
        suppressed = ((overlap > threshold.unsqueeze(1)) & kept[:, :k]).any(dim=1)
        keep = valid[:, k] & ~suppressed
        kept[:, k] = keep
        if eta < 1:
            threshold = torch.where(keep & (threshold > 0.5), threshold * eta_value, threshold)
    return kept


NMS_CHUNK_ELEMENTS = 1 << 21  # candidate pairs whose overlaps one step of the matrix NMS holds


def _greedy_nms_fixed_threshold(boxes: torch.Tensor, valid: torch.Tensor, nms_threshold: float,
                                last: int) -> torch.Tensor:
    """`greedy_nms` for a threshold that stays fixed (eta >= 1), from the matrix of every pair's overlap
    (the same float32 expressions as the candidate-by-candidate loop, so the same values) instead of one
    small step per candidate. Candidate k is kept iff it is valid and no kept candidate j < k overlaps it
    by more than the threshold: iterating `kept = valid & ~(any kept j < k suppressing k)` from
    `kept = valid` fixes candidates 0..t-1 by step t, so it reaches the greedy answer, and stops there,
    within `last` + 1 steps (in practice a few)."""
    groups, count = valid.shape
    kept = torch.zeros_like(valid)
    threshold = torch.tensor(nms_threshold, dtype=torch.float32, device=boxes.device)
    earlier = torch.ones(last, last, dtype=torch.bool, device=boxes.device).tril(-1)  # [k, j]: j < k
    chunk = max(1, NMS_CHUNK_ELEMENTS // (last * last))
    for start in range(0, groups, chunk):
        candidates = boxes[start:start + chunk, :last]
        suppresses = _overlaps_above(candidates, threshold) & earlier  # [g, k, j]
        valid_part = valid[start:start + chunk, :last]
        keep = valid_part
        while True:
            blocked = (suppresses & keep.unsqueeze(1)).any(dim=2)
            new_keep = valid_part & ~blocked
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        kept[start:start + chunk, :last] = keep
    return kept


def _overlaps_above(boxes: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """[..., k, j]: `caffe_overlap` of box k with box j > threshold (>= 0, as the shape rule checks), for
    every pair: the same float32 expressions, without the zeros caffe_overlap writes where the boxes do not
    intersect (boxes apart have a width or height <= 0, and 0 > threshold is false anyway)."""
    xmin, ymin, xmax, ymax = (c.unsqueeze(-1) for c in boxes.unbind(-1))
    o_xmin, o_ymin, o_xmax, o_ymax = (c.unsqueeze(-2) for c in boxes.unbind(-1))
    areas = box_areas(boxes)
    width = torch.minimum(xmax, o_xmax) - torch.maximum(xmin, o_xmin)
    height = torch.minimum(ymax, o_ymax) - torch.maximum(ymin, o_ymin)
    inter = width * height
    overlap = inter / (areas.unsqueeze(-1) + areas.unsqueeze(-2) - inter)
    return (overlap > threshold) & (width > 0) & (height > 0)


def empty_detection_rows(batch: int, device) -> torch.Tensor:
    """Caffe's rows when the whole batch has no detection: [i, -1, -1, -1, -1, -1, -1] per image."""
    rows = torch.full((batch, 7), -1.0, dtype=torch.float32, device=device)
    rows[:, 0] = torch.arange(batch, dtype=torch.float32, device=device)
    return rows.reshape(1, 1, batch, 7)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: list[int], confidence_threshold: float,
                      nms_threshold: float, top_k: int, eta: float, keep_top_k: int,
                      normalized: bool = True) -> torch.Tensor:
    """SSD Caffe's per-class selection, NMS and keep_top_k: decoded boxes (N, P, L, 4) and scores
    (N, P, C) -> rows (1, 1, R, 7) of [image, label, score, xmin, ymin, xmax, ymax]; `normalized=False`:
    OpenCV's pixel overlaps (see caffe_overlap)."""
    batch, priors = scores.shape[0], scores.shape[1]
    if not labels or top_k == 0:  # no class, or no candidate kept before NMS
        return empty_detection_rows(batch, scores.device)
    label_index = torch.tensor(labels, dtype=torch.long, device=scores.device)
    class_scores = scores.index_select(2, label_index).permute(0, 2, 1)  # (N, C', P)
    class_boxes = boxes.permute(0, 2, 1, 3)  # (N, L, P, 4)
    if class_boxes.shape[1] == 1:
        class_boxes = class_boxes.expand(batch, len(labels), priors, 4)
    else:
        class_boxes = class_boxes.index_select(1, label_index)
    threshold = torch.tensor(confidence_threshold, dtype=torch.float32, device=scores.device)
    candidate = class_scores > threshold
    masked = torch.where(candidate, class_scores, torch.full_like(class_scores, -math.inf))
    count = priors if top_k < 0 else min(top_k, priors)
    values, order = torch.sort(masked, dim=2, descending=True, stable=True)
    values, order = values[:, :, :count], order[:, :, :count]
    valid = values > threshold
    chosen = torch.gather(class_boxes, 2, order.unsqueeze(-1).expand(-1, -1, -1, 4))
    kept = greedy_nms(chosen.reshape(-1, count, 4), valid.reshape(-1, count), nms_threshold, eta, normalized)
    kept = kept.reshape(valid.shape)
    if keep_top_k > -1:
        ranked = torch.where(kept, values, torch.full_like(values, -math.inf)).reshape(batch, -1)
        best = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :keep_top_k]
        top = torch.zeros_like(ranked, dtype=torch.bool).scatter_(1, best, True)
        kept = kept & top.reshape(kept.shape)
    image, klass, rank = kept.nonzero(as_tuple=True)  # row-major: image, then label, then score
    if image.numel() == 0:
        return empty_detection_rows(batch, scores.device)
    rows = torch.cat([image.to(torch.float32).unsqueeze(1), label_index[klass].to(torch.float32).unsqueeze(1),
                      values[image, klass, rank].unsqueeze(1), chosen[image, klass, rank]], dim=1)
    return rows.reshape(1, 1, -1, 7)


@torch.library.custom_op("ninport::ssd_detections", mutates_args=())
def ssd_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: list[int], confidence_threshold: float,
                   nms_threshold: float, top_k: int, eta: float, keep_top_k: int, normalized: bool) -> torch.Tensor:
    """`select_detections` as one op whose row count depends on the data: torch.export keeps it whole and
    the ONNX exporter translates it (`onnx_translations`)."""
    return select_detections(boxes, scores, labels, confidence_threshold, nms_threshold, top_k, eta, keep_top_k,
                             normalized)


@ssd_detections.register_fake
def _ssd_detections_fake(boxes, scores, labels, confidence_threshold, nms_threshold, top_k, eta, keep_top_k,
                         normalized):
    rows = torch.library.get_ctx().new_dynamic_size()
    return scores.new_empty((1, 1, rows, 7))


@records_args
class DetectionOutput(nn.Module):
    """SSD Caffe's DetectionOutput: rows (1, 1, R, 7) of [image, label, score, xmin, ymin, xmax, ymax],
    [image, -1, -1, -1, -1, -1, -1] per image when the batch has no detection. Plain torch (the
    generated .py copies it); ninport's module is `CaffeDetectionOutput`. `normalized=False`: OpenCV's
    normalized_bbox: false (boxes in pixels; `clip` clips to the optional fourth input, the image)."""

    def __init__(self, num_classes: int, labels: list[int], share_location: bool, code_type: str,
                 variance_encoded_in_target: bool, clip: bool, confidence_threshold: float, nms_threshold: float,
                 top_k: int, eta: float, keep_top_k: int, normalized: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.labels = labels  # the classes other than the background
        self.share_location = share_location  # one box per prior for all classes, else one per class
        self.code_type = code_type
        self.variance_encoded_in_target = variance_encoded_in_target
        self.clip = clip
        self.normalized = normalized
        self.selection = (confidence_threshold, nms_threshold, top_k, eta, keep_top_k, normalized)

    def select(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return select_detections(boxes, scores, self.labels, *self.selection)

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        boxes = decode_boxes(loc, prior, 1 if self.share_location else self.num_classes, self.code_type,
                             self.variance_encoded_in_target, self.clip, self.normalized, image)
        scores = conf.reshape(conf.shape[0], -1, self.num_classes)
        return self.select(boxes, scores)


class CaffeDetectionOutput(DetectionOutput):
    """DetectionOutput built from the checked DetectionOutputParameter, whose selection is the
    `ninport::ssd_detections` op: torch.export keeps it whole and ONNX export translates it."""

    def __init__(self, settings: DetectionSettings):
        s = settings
        super().__init__(s.num_classes, list(s.foreground_labels), s.share_location, s.code_type,
                         s.variance_encoded_in_target, s.clip, s.confidence_threshold, s.nms_threshold, s.top_k,
                         s.eta, s.keep_top_k, s.normalized)
        self.settings = settings

    def select(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.ops.ninport.ssd_detections(boxes, scores, self.labels, *self.selection)


def detection_output(ctx: LayerContext) -> nn.Module:
    return CaffeDetectionOutput(ctx.parsed)


# --- ONNX ----------------------------------------------------------------------------------------


def _ssd_detections_onnx(boxes, scores, labels, confidence_threshold: float, nms_threshold: float, top_k: int,
                         eta: float, keep_top_k: int, normalized: bool = True):
    """`ssd_detections` in standard ONNX operators (see the module docstring for why each step is exact)."""
    from onnxscript import opset18 as op

    def ints(*values):
        return op.Constant(value_ints=list(values))

    batch = op.Shape(scores, start=0, end=1)
    fake_rows = op.Concat(
        op.Unsqueeze(op.Cast(op.Range(op.Constant(value_int=0), op.Squeeze(batch, ints(0)),
                                      op.Constant(value_int=1)), to=1), ints(1)),
        op.Expand(op.Constant(value_floats=[-1.0] * 6), op.Concat(batch, ints(6), axis=0)), axis=1)
    if not labels or top_k == 0:
        return op.Reshape(fake_rows, ints(1, 1, -1, 7))
    label_index = ints(*labels)
    class_scores = op.Transpose(op.Gather(scores, label_index, axis=2), perm=[0, 2, 1])  # (N, C', P)
    class_boxes = op.Transpose(boxes, perm=[0, 2, 1, 3])  # (N, L, P, 4)
    if _loc_classes_is_one(boxes):
        class_boxes = op.Expand(class_boxes, op.Concat(op.Shape(class_scores), ints(4), axis=0))
    else:
        class_boxes = op.Gather(class_boxes, label_index, axis=1)
    threshold = op.Constant(value_float=confidence_threshold)
    masked = op.Where(op.Greater(class_scores, threshold), class_scores, op.Constant(value_float=-math.inf))
    priors = op.Shape(class_scores, start=2, end=3)
    count = priors if top_k < 0 else op.Min(priors, ints(top_k))
    values, order = op.TopK(masked, count, axis=2, largest=1, sorted=1)  # ties: lower index first
    valid = op.Greater(values, threshold)
    gather_index = op.Expand(op.Unsqueeze(order, ints(3)), op.Concat(op.Shape(order), ints(4), axis=0))
    chosen = op.GatherElements(class_boxes, gather_index, axis=2)  # (N, C', K, 4) in Caffe's order
    group_shape = op.Concat(ints(-1), count, axis=0)
    if eta < 1:  # Caffe's greedy loop with the adaptive threshold, all groups at once
        kept = op.Reshape(_adaptive_nms_function()(op.Reshape(chosen, op.Concat(ints(-1), count, ints(4), axis=0)),
                                                   op.Reshape(valid, group_shape),
                                                   op.Constant(value_float=nms_threshold),
                                                   op.Constant(value_float=eta)), op.Shape(values))
    elif not normalized:  # OpenCV's pixel overlaps: NonMaxSuppression's differ, so the greedy loop itself
        kept = op.Reshape(_pixel_nms_function()(op.Reshape(chosen, op.Concat(ints(-1), count, ints(4), axis=0)),
                                                op.Reshape(valid, group_shape),
                                                op.Constant(value_float=nms_threshold)), op.Shape(values))
    else:
        xmin, ymin, xmax, ymax = op.Split(chosen, axis=3, num_outputs=4)
        proper = op.And(op.GreaterOrEqual(xmax, xmin), op.GreaterOrEqual(ymax, ymin))
        nms_boxes = op.Where(proper, chosen, op.Constant(value_float=0.0))
        rank = op.Cast(op.Range(op.Constant(value_int=0), op.Squeeze(count, ints(0)), op.Constant(value_int=1)),
                       to=1)
        synthetic = op.Where(valid, op.Sub(op.Cast(count, to=1), rank), op.Constant(value_float=-1.0))
        selected = op.NonMaxSuppression(
            op.Reshape(nms_boxes, op.Concat(ints(-1), count, ints(4), axis=0)),
            op.Reshape(synthetic, op.Concat(ints(-1, 1), count, axis=0)),
            count, op.Constant(value_floats=[nms_threshold]), op.Constant(value_floats=[0.0]))
        group_rank = op.Gather(selected, ints(0, 2), axis=1)
        zeros = op.ConstantOfShape(op.Shape(op.Reshape(values, group_shape)))
        ones = op.ConstantOfShape(op.Shape(selected, start=0, end=1), value=_float_tensor(1.0))
        kept = op.Reshape(op.Greater(op.ScatterND(zeros, group_rank, ones), op.Constant(value_float=0.5)),
                          op.Shape(values))
    if keep_top_k > -1:
        ranked = op.Reshape(op.Where(kept, values, op.Constant(value_float=-math.inf)), op.Concat(batch, ints(-1),
                                                                                                  axis=0))
        best_count = op.Min(op.Shape(ranked, start=1, end=2), ints(keep_top_k))
        _, best = op.TopK(ranked, best_count, axis=1, largest=1, sorted=1)
        marks = op.ScatterElements(op.ConstantOfShape(op.Shape(ranked)), best,
                                   op.ConstantOfShape(op.Shape(best), value=_float_tensor(1.0)), axis=1)
        kept = op.And(kept, op.Reshape(op.Greater(marks, op.Constant(value_float=0.5)), op.Shape(values)))
    where = op.NonZero(kept)  # (3, R): image, label, rank in row-major order
    coordinates = op.Transpose(where, perm=[1, 0])
    image = op.Cast(op.Gather(where, op.Constant(value_int=0), axis=0), to=1)
    label = op.Gather(op.Constant(value_floats=[float(v) for v in labels]),
                      op.Gather(where, op.Constant(value_int=1), axis=0), axis=0)
    rows = op.Concat(op.Unsqueeze(image, ints(1)), op.Unsqueeze(label, ints(1)),
                     op.Unsqueeze(op.GatherND(values, coordinates), ints(1)), op.GatherND(chosen, coordinates), axis=1)
    found = op.Shape(rows, start=0, end=1)
    fake_count = op.Where(op.Equal(found, ints(0)), batch, ints(0))
    rows = op.Concat(rows, op.Slice(fake_rows, ints(0), fake_count, ints(0)), axis=0)
    return op.Reshape(rows, ints(1, 1, -1, 7))


@functools.cache
def _adaptive_nms_function():
    """`greedy_nms` with eta < 1 as an onnxscript function holding one ONNX Loop (standard operators only;
    the exporter's function call is inlined by ninport's ONNX optimization). Built on first use so that
    loading a detector does not import onnxscript.

    boxes (G, K, 4) and valid (G, K) are the candidates of each group (image, class) in Caffe's order,
    valid a prefix; step k keeps candidate k when its Caffe overlap with every kept box is <= the group's
    threshold, then multiplies that threshold by eta while it is > 0.5. Returns kept (G, K).
    """
    import onnxscript
    from onnxscript import BOOL, FLOAT
    from onnxscript import opset18 as op

    @onnxscript.script(default_opset=op)
    def ssd_adaptive_nms(boxes, valid, nms_threshold, eta):
        axis1 = op.Constant(value_ints=[1])
        xmin = op.Gather(boxes, op.Constant(value_int=0), axis=2)  # (G, K)
        ymin = op.Gather(boxes, op.Constant(value_int=1), axis=2)
        xmax = op.Gather(boxes, op.Constant(value_int=2), axis=2)
        ymax = op.Gather(boxes, op.Constant(value_int=3), axis=2)
        zero = op.Constant(value_float=0.0)
        areas = op.Where(op.Or(op.Less(xmax, xmin), op.Less(ymax, ymin)), zero,
                         op.Mul(op.Sub(xmax, xmin), op.Sub(ymax, ymin)))  # Caffe's BBoxSize
        kept = op.Cast(op.ConstantOfShape(op.Shape(valid)), to=9)  # all False
        threshold = op.Expand(nms_threshold, op.Shape(valid, start=0, end=1))  # (G,)
        half = op.Constant(value_float=0.5)
        rank = op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(valid, start=1, end=2)),
                        op.Constant(value_int=1))
        trips = op.ReduceMax(op.ReduceSum(op.Cast(valid, to=7), axis1, keepdims=0), keepdims=0)
        for k in range(trips):
            b_xmin = op.Gather(xmin, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)  # (G, 1)
            b_ymin = op.Gather(ymin, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_xmax = op.Gather(xmax, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_ymax = op.Gather(ymax, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_area = op.Gather(areas, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            apart = op.Or(op.Or(op.Greater(xmin, b_xmax), op.Less(xmax, b_xmin)),
                          op.Or(op.Greater(ymin, b_ymax), op.Less(ymax, b_ymin)))
            width = op.Sub(op.Min(b_xmax, xmax), op.Max(b_xmin, xmin))
            height = op.Sub(op.Min(b_ymax, ymax), op.Max(b_ymin, ymin))
            inter = op.Mul(width, height)
            overlap = op.Div(inter, op.Sub(op.Add(b_area, areas), inter))
            overlaps = op.And(op.Not(apart), op.And(op.Greater(width, zero), op.Greater(height, zero)))
            overlap = op.Where(overlaps, overlap, zero)  # Caffe's JaccardOverlap with every candidate
            too_close = op.And(kept, op.Greater(overlap, op.Unsqueeze(threshold, axis1)))
            suppressed = op.Greater(op.ReduceMax(op.Cast(too_close, to=1), axis1, keepdims=0), zero)
            keep = op.And(op.Gather(valid, k, axis=1), op.Not(suppressed))  # (G,)
            kept = op.Or(kept, op.And(op.Unsqueeze(keep, axis1), op.Equal(rank, k)))
            threshold = op.Where(op.And(keep, op.Greater(threshold, half)), op.Mul(threshold, eta), threshold)
        return kept

    # torch's exporter reads the function's outputs from its type hints; written here because string
    # annotations (this module's `from __future__ import annotations`) would not resolve in this scope
    ssd_adaptive_nms.__annotations__ = {"boxes": FLOAT, "valid": BOOL, "nms_threshold": FLOAT, "eta": FLOAT,
                                        "return": BOOL}
    return ssd_adaptive_nms


@functools.cache
def _pixel_nms_function():
    """`greedy_nms` with OpenCV's pixel overlaps (normalized_bbox: false) as an onnxscript function holding one
    ONNX Loop, as `_adaptive_nms_function` (a fixed threshold: OpenCV ignores eta). boxes (G, K, 4) and
    valid (G, K) are the candidates of each group in Caffe's order; returns kept (G, K)."""
    import onnxscript
    from onnxscript import BOOL, FLOAT
    from onnxscript import opset18 as op

    @onnxscript.script(default_opset=op)
    def ssd_pixel_nms(boxes, valid, nms_threshold):
        axis1 = op.Constant(value_ints=[1])
        xmin = op.Gather(boxes, op.Constant(value_int=0), axis=2)  # (G, K)
        ymin = op.Gather(boxes, op.Constant(value_int=1), axis=2)
        xmax = op.Gather(boxes, op.Constant(value_int=2), axis=2)
        ymax = op.Gather(boxes, op.Constant(value_int=3), axis=2)
        zero = op.Constant(value_float=0.0)
        one = op.Constant(value_float=1.0)
        areas = op.Where(op.Or(op.Less(xmax, xmin), op.Less(ymax, ymin)), zero,
                         op.Mul(op.Add(op.Sub(xmax, xmin), one), op.Add(op.Sub(ymax, ymin), one)))
        kept = op.Cast(op.ConstantOfShape(op.Shape(valid)), to=9)  # all False
        rank = op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(valid, start=1, end=2)),
                        op.Constant(value_int=1))
        trips = op.ReduceMax(op.ReduceSum(op.Cast(valid, to=7), axis1, keepdims=0), keepdims=0)
        for k in range(trips):
            b_xmin = op.Gather(xmin, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)  # (G, 1)
            b_ymin = op.Gather(ymin, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_xmax = op.Gather(xmax, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_ymax = op.Gather(ymax, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            b_area = op.Gather(areas, op.Unsqueeze(k, op.Constant(value_ints=[0])), axis=1)
            width = op.Sub(op.Min(b_xmax, xmax), op.Max(b_xmin, xmin))
            height = op.Sub(op.Min(b_ymax, ymax), op.Max(b_ymin, ymin))
            inter = op.Mul(op.Add(width, one), op.Add(height, one))
            overlap = op.Div(inter, op.Sub(op.Add(b_area, areas), inter))
            overlaps = op.And(op.GreaterOrEqual(width, zero), op.GreaterOrEqual(height, zero))
            overlap = op.Where(overlaps, overlap, zero)  # OpenCV's JaccardOverlap<false> with every candidate
            too_close = op.And(kept, op.Greater(overlap, nms_threshold))
            suppressed = op.Greater(op.ReduceMax(op.Cast(too_close, to=1), axis1, keepdims=0), zero)
            keep = op.And(op.Gather(valid, k, axis=1), op.Not(suppressed))  # (G,)
            kept = op.Or(kept, op.And(op.Unsqueeze(keep, axis1), op.Equal(rank, k)))
        return kept

    ssd_pixel_nms.__annotations__ = {"boxes": FLOAT, "valid": BOOL, "nms_threshold": FLOAT, "return": BOOL}
    return ssd_pixel_nms


def _float_tensor(value: float):
    import onnx
    return onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [value])


def _loc_classes_is_one(boxes) -> bool:
    shape = getattr(boxes, "shape", None)
    return shape is not None and len(shape) == 4 and shape[2] == 1


def onnx_translations() -> dict:
    """Translations of ninport's custom ops into standard ONNX, for torch.onnx.export(custom_translation_table=)."""
    return {torch.ops.ninport.ssd_detections.default: _ssd_detections_onnx}
