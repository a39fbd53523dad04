"""Shape rules and settings of the SSD fork's layers (weiliu89/caffe, branch ssd): PriorBox, Normalize,
Permute, DetectionOutput.

Everything a converter needs from these layers' parameters is read and checked here, once, without
torch: `prior_box_layout` (the prior boxes one feature-map cell gets, in Caffe's order, with Caffe's
int truncation of min/max sizes and its de-duplication of aspect ratios), `permute_order`,
`detection_settings`. The converters (`ninport.layers.ssd`) consume these; they never
re-read the proto. Semantics are pinned by tests/fixtures/caffe-golden-ssd (computed by SSD Caffe).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ninport.caffe.shapes import fail
from ninport.errors import shape_text
from ninport.registry import LayerShapes, Shape, builtin_layer

ORIGIN = "SSD fork (weiliu89/caffe ssd)"
FLT_MAX = 3.4028234663852886e38
# PriorBoxParameter.CodeType in the fork's caffe.proto.
CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}


def _legacy_hw(shape: Shape, what: str) -> tuple[int, int]:
    """Caffe's height()/width() legacy accessors: axes 2 and 3, 1 where the blob has fewer axes."""
    if not 2 <= len(shape) <= 4:
        fail(f"{what} must have 2 to 4 axes (Caffe's num/channels/height/width), got {shape_text(shape)}")
    return (shape[2] if len(shape) > 2 else 1, shape[3] if len(shape) > 3 else 1)


# --- PriorBox ------------------------------------------------------------------------------------


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
    height, width = _legacy_hw(shapes[0], "the feature-map bottom")
    _legacy_hw(shapes[1], "the image bottom")
    count = height * width * layout.num_priors * 4
    return LayerShapes(tops=[(1, 2, count)])


# --- Normalize -----------------------------------------------------------------------------------


@builtin_layer("Normalize", converter="ssd:normalize", bottoms=1, tops=1, origin=ORIGIN)
def _normalize(layer, shapes):
    if len(shapes) != 1:
        fail(f"expects 1 bottom, got {len(shapes)}")
    shape = shapes[0]
    _legacy_hw(shape, "the bottom")
    p = layer.proto.norm_param
    if not p.eps >= 0:
        fail(f"eps {p.eps} must be non-negative")
    # The scale: one value (channel_shared) or one per channel.
    return LayerShapes(tops=[shape], params=[(1,) if p.channel_shared else (shape[1],)])


# --- Permute -------------------------------------------------------------------------------------


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


# --- DetectionOutput -----------------------------------------------------------------------------


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

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c != self.background_label_id)


def detection_settings(p) -> DetectionSettings:
    """The DetectionOutputParameter `p`, checked as Caffe's LayerSetUp checks it."""
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
    return DetectionSettings(int(p.num_classes), bool(p.share_location), int(p.background_label_id),
                             CODE_TYPES[p.code_type], bool(p.variance_encoded_in_target), int(p.keep_top_k),
                             threshold, float(nms.nms_threshold), top_k, float(nms.eta), clip)


def detection_prior_count(settings: DetectionSettings, shapes: list[Shape]) -> int:
    """The number of priors, checked against the location and confidence bottoms as Caffe's Reshape does."""
    if len(shapes) != 3:
        fail(f"expects 3 bottoms (location, confidence, priors), got {len(shapes)}")
    loc, conf, prior = shapes
    if len(prior) != 3 or prior[1] != 2 or prior[2] % 4:
        fail(f"the prior bottom must be (1, 2, 4 x priors) as PriorBox makes it, got {shape_text(prior)}")
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
               onnx_translations="ssd:onnx_translations")
def _detection_output(layer, shapes):
    settings = detection_settings(layer.proto.detection_output_param)
    priors = detection_prior_count(settings, shapes)
    batch = shapes[0][0]
    candidates = priors if settings.top_k < 0 else min(priors, settings.top_k)
    classes = len(settings.foreground_labels)
    # The row count is data-dependent; Caffe's Reshape says (1, 1, 1, 7) until the forward pass.
    return LayerShapes(tops=[(1, 1, 1, 7)], scratch=batch * classes * (priors + candidates * 6))
