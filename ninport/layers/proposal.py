"""Faster R-CNN's region proposal layer: py-faster-rcnn's Python layer and OpenCV's `Proposal` type.

The original is py-faster-rcnn's `type: "Python"` layer `rpn.proposal_layer.ProposalLayer`
(rbgirshick/py-faster-rcnn, lib/rpn/proposal_layer.py, with generate_anchors.py, bbox_transform.py and
nms/py_cpu_nms.py, at 781a917b), run in Caffe's TEST phase: pre-NMS top 6000, post-NMS top 300, NMS
threshold 0.7, minimum box side 16 pixels at the input scale (lib/fast_rcnn/config.py); `param_str` gives
`feat_stride` and optionally `scales` (and `ratios`, which forks read). OpenCV's `type: "Proposal"` is the
same layer with its numbers in `proposal_param` (feat_stride, base_size, min_size, ratio, scale,
pre_nms_topn, post_nms_topn, nms_thresh; OpenCV's opencv-caffe.proto defaults). Both compute the original's
algorithm here. Where OpenCV's own implementation (proposal_layer.cpp) differs, ninport follows the
original: OpenCV skips the minimum-size filter, centres its anchors half a pixel off, keeps only scores
above 0, orders exact score ties its own way, and always gives post_nms_topn rows (the rest unset).

Bottoms: scores (1, 2A, H, W) (the second A channels are the object scores), box deltas (1, 4A, H, W),
im_info (1, 3): image height, width and scale. Tops: rois (R, 5) [0, x1, y1, x2, y2] and optionally their
scores (R, 1); R depends on the data, so the selection is one custom op, `ninport::rpn_proposals`, with an
ONNX translation in standard operators (TopK, NonZero, Gather and a Loop running the greedy NMS, since
NonMaxSuppression's overlap has no +1 pixel sides).

Exact ties: the original sorts with numpy's default argsort, reversed; for more than 16 values that sort is
not stable and its order of equal scores depends on numpy's version and the CPU. ninport gives the order a
stable sort gives (numpy's own for up to 16 values): the pre-NMS cut keeps the later box of two equal
scores; NMS, which sorts the survivors again, takes the earlier one first.
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
from ninport.errors import safe_text, shape_text
from ninport.layers.python_layer import python_params
from ninport.layers.rules import MAX_BLOB_ELEMENTS
from ninport.registry import LayerShapes, builtin_layer, builtin_python_layer

PY_FASTER_RCNN = "py-faster-rcnn (rbgirshick/py-faster-rcnn, lib/rpn/proposal_layer.py)"
OPENCV = "OpenCV (dnn/src/layers/proposal_layer.cpp; py-faster-rcnn's algorithm)"
# py-faster-rcnn's lib/fast_rcnn/config.py, TEST phase, and generate_anchors' defaults
TEST_PRE_NMS_TOP_N, TEST_POST_NMS_TOP_N, TEST_NMS_THRESH, TEST_MIN_SIZE = 6000, 300, 0.7, 16
DEFAULT_RATIOS, DEFAULT_SCALES, BASE_SIZE = (0.5, 1.0, 2.0), (8.0, 16.0, 32.0), 16
MAX_ANCHORS = 10_000

# --- shape rules (torch-free): the parameters, checked; the sizes the layer takes ----------------------


@dataclass(frozen=True)
class ProposalSettings:
    """The layer's numbers: base anchors (x1, y1, x2, y2 in float64, generate_anchors' order: ratio-major),
    the feature stride, the pre- and post-NMS counts (<= 0: no cut), the NMS threshold (a float32) and the
    minimum box side at input scale."""

    anchors: tuple[tuple[float, float, float, float], ...]
    feat_stride: float
    pre_nms_top_n: int
    post_nms_top_n: int
    nms_thresh: float
    min_size: float

    def text(self) -> str:
        return (f"stride {_number(self.feat_stride)}, {len(self.anchors)} anchors, pre {self.pre_nms_top_n}, "
                f"post {self.post_nms_top_n}, nms {_number(self.nms_thresh)}, min {_number(self.min_size)}")


def _number(value: float) -> str:
    return f"{value:g}"


def _f32(value: float) -> float:
    """`value` rounded to float32 (a proto float field; the float32 comparison numpy makes with a Python float)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def generate_anchors(base_size: float, ratios, scales) -> tuple[tuple[float, float, float, float], ...]:
    """py-faster-rcnn's generate_anchors in float64: for each ratio (a rounded width and height of the
    base_size square, same centre), for each scale, that box scaled about its centre."""
    side = float(base_size)
    center = 0.5 * (side - 1)  # the base box is (0, 0, base_size - 1, base_size - 1)
    anchors = []
    for ratio in ratios:
        width = float(round(math.sqrt(side * side / ratio)))  # numpy's round: half to even, as Python's
        height = float(round(width * ratio))
        x1, y1 = center - 0.5 * (width - 1), center - 0.5 * (height - 1)
        x2, y2 = center + 0.5 * (width - 1), center + 0.5 * (height - 1)
        w, h = x2 - x1 + 1, y2 - y1 + 1
        cx, cy = x1 + 0.5 * (w - 1), y1 + 0.5 * (h - 1)
        for scale in scales:
            ws, hs = w * scale, h * scale
            anchors.append((cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)))
    return tuple(anchors)


def _positive_numbers(values, what: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, (list, tuple)) or not values:
        fail(f"{what} must be a non-empty list of numbers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            fail(f"{what} {safe_text(repr(list(values)), 80)} must hold positive finite numbers")
    return tuple(float(v) for v in values)


def _settings(feat_stride, base_size, ratios, scales, pre, post, nms_thresh, min_size) -> ProposalSettings:
    for what, value in (("feat_stride", feat_stride), ("base_size", base_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            fail(f"{what} must be a positive number, got {safe_text(repr(value), 40)}")
    if len(ratios) * len(scales) > MAX_ANCHORS:
        fail(f"{len(ratios)} ratios x {len(scales)} scales is more than the {MAX_ANCHORS:,} anchors ninport accepts")
    if not (math.isfinite(nms_thresh) and min_size >= 0 and math.isfinite(min_size)):
        fail(f"nms threshold {nms_thresh} and min size {min_size} must be finite, min size >= 0")
    return ProposalSettings(generate_anchors(base_size, ratios, scales), float(feat_stride), int(pre), int(post),
                            _f32(nms_thresh), float(min_size))


PARAM_STR_KEYS = {"feat_stride", "scales", "ratios"}


def python_proposal_settings(layer) -> ProposalSettings:
    """py-faster-rcnn's ProposalLayer.setup from param_str, with the TEST-phase configuration."""
    params = python_params(layer)
    unknown = sorted(set(params) - PARAM_STR_KEYS)
    if unknown:
        fail(f"param_str gives {', '.join(safe_text(k, 40) for k in unknown)}, which "
             "rpn.proposal_layer.ProposalLayer does not read (it reads feat_stride, scales, ratios)")
    if "feat_stride" not in params:
        fail("param_str must give 'feat_stride' (rpn.proposal_layer.ProposalLayer reads it)")
    ratios = _positive_numbers(params.get("ratios", DEFAULT_RATIOS), "param_str ratios")
    scales = _positive_numbers(params.get("scales", DEFAULT_SCALES), "param_str scales")
    return _settings(params["feat_stride"], BASE_SIZE, ratios, scales, TEST_PRE_NMS_TOP_N, TEST_POST_NMS_TOP_N,
                     TEST_NMS_THRESH, TEST_MIN_SIZE)


# OpenCV's ProposalParameter (opencv-caffe.proto): field -> (kind, default); ratio and scale are repeated and
# required (OpenCV's ProposalLayer reads them without a default).
PROPOSAL_FIELDS = {"feat_stride": ("uint", 16), "base_size": ("uint", 16), "min_size": ("uint", 16),
                   "ratio": ("floats", None), "scale": ("floats", None), "pre_nms_topn": ("uint", 6000),
                   "post_nms_topn": ("uint", 300), "nms_thresh": ("float", 0.7)}


def _proposal_fields(layer) -> dict[str, list]:
    """The proposal_param fields as the reader kept them (ninport's schema does not type OpenCV's message):
    every value of each field, over every proposal_param block (protobuf merges repeated blocks)."""
    fields: dict[str, list] = {}
    for key, values in (getattr(layer, "unknown_fields", None) or {}).items():
        if key == "proposal_param":
            for block in values:
                if not isinstance(block, dict):
                    fail("proposal_param must be a message")
                for name, items in block.items():
                    fields.setdefault(name, []).extend(items)
        elif key.startswith("proposal_param."):
            fields.setdefault(key[len("proposal_param."):], []).extend(values)
        else:
            fail(f"fields this layer type does not read: {safe_text(key, 60)}")
    return fields


def opencv_proposal_settings(layer) -> ProposalSettings:
    """OpenCV's ProposalParameter, checked as its proto types it."""
    fields = _proposal_fields(layer)
    unknown = sorted(set(fields) - set(PROPOSAL_FIELDS))
    if unknown:
        fail(f"proposal_param fields OpenCV's Proposal does not have: {', '.join(safe_text(k, 40) for k in unknown)}")
    values = {}
    for name, (kind, default) in PROPOSAL_FIELDS.items():
        given = fields.get(name, [])
        if kind == "floats":
            if not given:
                fail(f"proposal_param needs {name} values (OpenCV's Proposal has no default)")
            values[name] = _positive_numbers(given, f"proposal_param {name}")
            continue
        value = given[-1] if given else default  # an optional field given twice: the last wins
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"proposal_param {name} must be a number, got {safe_text(repr(value), 40)}")
        if kind == "uint" and (not isinstance(value, int) or not 0 <= value < 2 ** 32):
            fail(f"proposal_param {name} must be an unsigned integer, got {safe_text(repr(value), 40)}")
        values[name] = _f32(value) if kind == "float" else value
    return _settings(values["feat_stride"], values["base_size"], values["ratio"], values["scale"],
                     values["pre_nms_topn"], values["post_nms_topn"], values["nms_thresh"], values["min_size"])


def proposal_shapes(settings: ProposalSettings, shapes, tops: int, score_shape) -> LayerShapes:
    """Checks the bottoms as the original reads them; tops (1, 5) and the scores' shape, as Caffe has them
    before the first forward pass (the row count depends on the data)."""
    if len(shapes) != 3:
        fail(f"takes 3 bottoms (scores, box deltas, im_info), got {len(shapes)}")
    if not 1 <= tops <= 2:
        fail(f"gives 1 or 2 tops (rois, and optionally their scores), got {tops}")
    scores, deltas, info = (tuple(s) for s in shapes)
    anchors = len(settings.anchors)
    if len(scores) != 4 or scores[0] != 1 or scores[1] != 2 * anchors:
        fail(f"the scores bottom must be (1, 2 x {anchors} anchors, H, W) (background then object scores, "
             f"a batch of one image), got {shape_text(scores)}")
    if len(deltas) != 4 or deltas[0] != 1 or deltas[1] != 4 * anchors or deltas[2:] != scores[2:]:
        fail(f"the box-delta bottom must be (1, 4 x {anchors} anchors, {scores[2]}, {scores[3]}), "
             f"got {shape_text(deltas)}")
    if len(info) != 2 or info[1] < 3:
        fail(f"im_info must be (1, 3): image height, width and scale, got {shape_text(info)}")
    boxes = anchors * scores[2] * scores[3]
    if boxes * 8 > MAX_BLOB_ELEMENTS:
        fail(f"{boxes:,} anchor boxes is implausibly many")
    return LayerShapes(tops=[(1, 5), score_shape][:tops], macs=boxes * 40, scratch=boxes * 8, parsed=settings)


@builtin_python_layer("rpn.proposal_layer", "ProposalLayer", converter="proposal:proposal", bottoms=3, tops=(1, 2),
                      origin=PY_FASTER_RCNN, settings=lambda layer: python_proposal_settings(layer).text(),
                      onnx_translations="proposal:onnx_translations")
def _python_proposal(layer, shapes):
    # ProposalLayer.setup reshapes rois to (1, 5) and scores to (1, 1, 1, 1); forward gives (R, 5), (R, 1)
    return proposal_shapes(python_proposal_settings(layer), shapes, len(layer.tops), (1, 1, 1, 1))


@builtin_layer("Proposal", converter="proposal:proposal", bottoms=3, tops=(1, 2), origin=OPENCV,
               reads_unknown_fields=True, settings=lambda layer: opencv_proposal_settings(layer).text(),
               onnx_translations="proposal:onnx_translations")
def _opencv_proposal(layer, shapes):
    return proposal_shapes(opencv_proposal_settings(layer), shapes, len(layer.tops), (1, 1))


# --- torch module and converter -------------------------------------------------------------------------


def rpn_nms(boxes: torch.Tensor, nms_thresh: float, limit: int) -> torch.Tensor:
    """py_cpu_nms on boxes (K, 4) already in its order: the ranks it keeps, in order, at most `limit` (<= 0:
    all). Greedy: the first box left is kept and every later box whose overlap with it (pixel sides, +1)
    is not <= the threshold is dropped; float32 as numpy computes it."""
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    removed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    kept: list[int] = []
    start = 0
    while limit <= 0 or len(kept) < limit:
        left = (~removed[start:]).nonzero()
        if left.numel() == 0:
            break
        i = start + int(left[0, 0])
        kept.append(i)
        rest = slice(i + 1, None)
        width = torch.clamp(torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1, min=0.0)
        height = torch.clamp(torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1, min=0.0)
        inter = width * height
        overlap = inter / (areas[i] + areas[rest] - inter)
        removed[rest] |= ~(overlap <= nms_thresh)
        start = i + 1
    return torch.tensor(kept, dtype=torch.long, device=boxes.device)


def select_proposals(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, pre_nms_top_n: int,
                     post_nms_top_n: int, nms_thresh: float) -> torch.Tensor:
    """The indices of the boxes the original keeps, in its output order: of the `valid` boxes (the
    minimum-size filter), the pre_nms_top_n best scores (ties: the later box), then NMS in score order
    (ties: the earlier box), then the first post_nms_top_n kept."""
    candidates = valid.nonzero()[:, 0]
    candidate_scores = scores[candidates]
    count = candidates.shape[0]
    # argsort()[::-1]: descending, equal scores in descending position
    ranked = count - 1 - torch.sort(candidate_scores.flip(0), descending=True, stable=True).indices
    if pre_nms_top_n > 0:
        ranked = ranked[:pre_nms_top_n]
    ranked = torch.sort(ranked).values  # NMS sorts again: descending, equal scores in ascending position
    order = ranked[torch.sort(candidate_scores[ranked], descending=True, stable=True).indices]
    kept = rpn_nms(boxes[candidates[order]], nms_thresh, post_nms_top_n)
    return candidates[order[kept]]


@torch.library.custom_op("ninport::rpn_proposals", mutates_args=())
def rpn_proposals(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, pre_nms_top_n: int,
                  post_nms_top_n: int, nms_thresh: float) -> torch.Tensor:
    """`select_proposals` as one op whose row count depends on the data: torch.export keeps it whole and
    the ONNX exporter translates it (`onnx_translations`)."""
    return select_proposals(boxes, scores, valid, pre_nms_top_n, post_nms_top_n, nms_thresh)


@rpn_proposals.register_fake
def _rpn_proposals_fake(boxes, scores, valid, pre_nms_top_n, post_nms_top_n, nms_thresh):
    rows = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((rows,), dtype=torch.long)


@records_args
class Proposal(nn.Module):
    """Faster R-CNN's region proposals: (scores (1, 2A, H, W), deltas (1, 4A, H, W), im_info (1, 3)) ->
    rois (R, 5) [0, x1, y1, x2, y2] (and their scores (R, 1) when `score_top`). Plain torch (the generated
    .py copies it); ninport's module is `CaffeProposal`.

    `anchors`: the A base anchors (x1, y1, x2, y2) in float64, as py-faster-rcnn's generate_anchors makes
    them; they are shifted by the stride over the H x W cells at run time, in float64, then made float32."""

    def __init__(self, anchors: list, feat_stride: float, pre_nms_top_n: int, post_nms_top_n: int,
                 nms_thresh: float, min_size: float, score_top: bool):
        super().__init__()
        self.anchors = [tuple(float(v) for v in anchor) for anchor in anchors]
        self.feat_stride = float(feat_stride)
        self.selection = (int(pre_nms_top_n), int(post_nms_top_n), float(nms_thresh))
        self.min_size = float(min_size)
        self.score_top = bool(score_top)

    def select(self, boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return select_proposals(boxes, scores, valid, *self.selection)

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):
        count = len(self.anchors)
        height, width = scores.shape[2], scores.shape[3]
        device = scores.device
        base = torch.tensor(self.anchors, dtype=torch.float64, device=device).view(1, count, 4)
        shift_x = (torch.arange(width, dtype=torch.float64, device=device) * self.feat_stride).view(1, -1, 1)
        shift_y = (torch.arange(height, dtype=torch.float64, device=device) * self.feat_stride).view(-1, 1, 1)
        shift_x, shift_y = shift_x.expand(height, width, 1), shift_y.expand(height, width, 1)
        shifts = torch.cat([shift_x, shift_y, shift_x, shift_y], dim=2).reshape(-1, 1, 4)  # cells in (h, w) order
        anchors = (base + shifts).reshape(-1, 4).to(torch.float32)  # (h, w, a) order, as the deltas below
        deltas = deltas[0].permute(1, 2, 0).reshape(-1, 4)  # a batch of one image (the shape rule checks it)
        object_scores = scores[0, count:].permute(1, 2, 0).reshape(-1)
        # bbox_transform_inv, float32
        widths = anchors[:, 2] - anchors[:, 0] + 1.0
        heights = anchors[:, 3] - anchors[:, 1] + 1.0
        center_x = anchors[:, 0] + 0.5 * widths
        center_y = anchors[:, 1] + 0.5 * heights
        pred_x = deltas[:, 0] * widths + center_x
        pred_y = deltas[:, 1] * heights + center_y
        pred_w = torch.exp(deltas[:, 2]) * widths
        pred_h = torch.exp(deltas[:, 3]) * heights
        # clip_boxes: max(min(v, size - 1), 0)
        info = im_info[0]
        last_x, last_y, zero = info[1] - 1, info[0] - 1, torch.zeros((), dtype=torch.float32, device=device)
        x1 = torch.maximum(torch.minimum(pred_x - 0.5 * pred_w, last_x), zero)
        y1 = torch.maximum(torch.minimum(pred_y - 0.5 * pred_h, last_y), zero)
        x2 = torch.maximum(torch.minimum(pred_x + 0.5 * pred_w, last_x), zero)
        y2 = torch.maximum(torch.minimum(pred_y + 0.5 * pred_h, last_y), zero)
        boxes = torch.stack([x1, y1, x2, y2], dim=1)
        # _filter_boxes: both sides (+1) at least min_size at the input scale
        smallest = self.min_size * info[2]
        valid = (x2 - x1 + 1 >= smallest) & (y2 - y1 + 1 >= smallest)
        keep = self.select(boxes, object_scores, valid)
        chosen = boxes[keep]
        rois = torch.cat([torch.zeros_like(chosen[:, :1]), chosen], dim=1)
        if not self.score_top:
            return rois
        return rois, object_scores[keep].unsqueeze(1)


class CaffeProposal(Proposal):
    """Proposal built from the checked settings, whose selection is the `ninport::rpn_proposals` op:
    torch.export keeps it whole and ONNX export translates it."""

    def __init__(self, settings: ProposalSettings, score_top: bool):
        s = settings
        super().__init__([list(a) for a in s.anchors], s.feat_stride, s.pre_nms_top_n, s.post_nms_top_n,
                         s.nms_thresh, s.min_size, score_top)
        self.settings = settings

    def select(self, boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.ops.ninport.rpn_proposals(boxes, scores, valid, *self.selection)


def proposal(ctx: LayerContext) -> nn.Module:
    return CaffeProposal(ctx.parsed, len(ctx.layer.tops) == 2)


# --- ONNX ----------------------------------------------------------------------------------------


def _rpn_proposals_onnx(boxes, scores, valid, pre_nms_top_n: int, post_nms_top_n: int, nms_thresh: float):
    """`rpn_proposals` in standard ONNX operators: TopK (ties: the lower index first, as ONNX specifies it)
    in the original's two orders, then the greedy NMS as a Loop."""
    from onnxscript import opset18 as op

    def ints(*values):
        return op.Constant(value_ints=list(values))

    candidates = op.Reshape(op.NonZero(valid), ints(-1))  # ascending
    candidate_scores = op.Gather(scores, candidates, axis=0)
    count = op.Shape(candidate_scores)
    take = count if pre_nms_top_n <= 0 else op.Min(count, ints(pre_nms_top_n))
    flipped = op.Slice(candidate_scores, ints(-1), ints(-(2 ** 63)), ints(0), ints(-1))
    _, flipped_rank = op.TopK(flipped, take, axis=0, largest=1, sorted=1)  # ties: the later box
    ranked = op.Sub(op.Sub(count, ints(1)), flipped_rank)
    ranked, _ = op.TopK(ranked, take, axis=0, largest=0, sorted=1)  # ascending positions
    _, by_score = op.TopK(op.Gather(candidate_scores, ranked, axis=0), take, axis=0, largest=1, sorted=1)
    order = op.Gather(ranked, by_score, axis=0)  # ties: the earlier box
    chosen = op.Gather(boxes, op.Gather(candidates, order, axis=0), axis=0)
    limit = take if post_nms_top_n <= 0 else op.Min(take, ints(post_nms_top_n))
    kept = _rpn_nms_function()(chosen, op.Constant(value_float=nms_thresh), op.Squeeze(limit, ints(0)))
    kept_ranks = op.Reshape(op.NonZero(kept), ints(-1))
    return op.Gather(candidates, op.Gather(order, kept_ranks, axis=0), axis=0)


@functools.cache
def _rpn_nms_function():
    """`rpn_nms` as an onnxscript function holding one ONNX Loop (standard operators; the exporter's
    function call is inlined by ninport's ONNX optimization). One step per kept box: the first box not
    yet kept or dropped is kept, and every later box overlapping it by more than the threshold (pixel
    sides, +1, as py_cpu_nms computes them in float32) is dropped; it stops at `limit` kept boxes or when
    none is left. Returns kept (K,)."""
    import onnxscript
    from onnxscript import BOOL, FLOAT, INT64
    from onnxscript import opset18 as op

    @onnxscript.script(default_opset=op)
    def rpn_nms(boxes, nms_thresh, limit):
        x1 = op.Gather(boxes, op.Constant(value_int=0), axis=1)  # (K,)
        y1 = op.Gather(boxes, op.Constant(value_int=1), axis=1)
        x2 = op.Gather(boxes, op.Constant(value_int=2), axis=1)
        y2 = op.Gather(boxes, op.Constant(value_int=3), axis=1)
        one = op.Constant(value_float=1.0)
        zero = op.Constant(value_float=0.0)
        areas = op.Mul(op.Add(op.Sub(x2, x1), one), op.Add(op.Sub(y2, y1), one))
        size = op.Shape(x1)
        rank = op.Range(op.Constant(value_int=0), op.Squeeze(size), op.Constant(value_int=1))
        removed = op.Cast(op.ConstantOfShape(size), to=9)  # all False
        kept = op.Cast(op.ConstantOfShape(size), to=9)
        found = op.Constant(value_int=0)
        for _step in range(limit):
            left = op.And(op.Not(removed), op.Not(kept))
            i = op.ArgMax(op.Cast(left, to=6), axis=0, keepdims=0)  # the first box left
            kept = op.Or(kept, op.Equal(rank, i))
            width = op.Max(op.Add(op.Sub(op.Min(op.Gather(x2, i), x2), op.Max(op.Gather(x1, i), x1)), one), zero)
            height = op.Max(op.Add(op.Sub(op.Min(op.Gather(y2, i), y2), op.Max(op.Gather(y1, i), y1)), one), zero)
            inter = op.Mul(width, height)
            overlap = op.Div(inter, op.Sub(op.Add(op.Gather(areas, i), areas), inter))
            dropped = op.And(op.Greater(rank, i), op.Not(op.LessOrEqual(overlap, nms_thresh)))
            removed = op.Or(removed, dropped)
            found = op.Add(found, op.Constant(value_int=1))
            still = op.ReduceMax(op.Cast(op.And(op.Not(removed), op.Not(kept)), to=7), keepdims=0)
            stop = op.Or(op.Equal(found, limit), op.Equal(still, op.Constant(value_int=0)))
            if stop:
                break
        return kept

    # torch's exporter reads the function's outputs from its type hints (see ssd._adaptive_nms_function)
    rpn_nms.__annotations__ = {"boxes": FLOAT, "nms_thresh": FLOAT, "limit": INT64, "return": BOOL}
    return rpn_nms


def onnx_translations() -> dict:
    """Translations of ninport's custom ops into standard ONNX, for torch.onnx.export(custom_translation_table=)."""
    return {torch.ops.ninport.rpn_proposals.default: _rpn_proposals_onnx}
