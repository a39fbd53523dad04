"""Two-stage detectors (Faster R-CNN, R-FCN): their input scaling and their boxes, as py-faster-rcnn's
`lib/fast_rcnn/test.py` computes them (rbgirshick/py-faster-rcnn 781a917b).

A two-stage net takes the image at a scale chosen per image (shorter side 600 pixels, longer side at most
1000) and a second input, `im_info` = [[height, width, scale]] of the scaled image. Its region proposal layer
gives `rois` ([batch index, x1, y1, x2, y2] in the scaled image's pixels), its heads give class scores
(`cls_prob`, R x classes) and box deltas (`bbox_pred`, R x 4 per class, or 8 class-agnostic for R-FCN).
`im_detect` turns these into boxes in the original image: rois / scale, the deltas applied
(`bbox_transform_inv`, Fast R-CNN's +1 pixel widths), clipped to [0, width - 1] x [0, height - 1]; then per
class (background, class 0, skipped) the boxes scoring at least the threshold, greedy NMS at IoU 0.3
(`py_cpu_nms`, +1 pixel areas, a box is suppressed when its IoU with a kept one exceeds 0.3).

Nets whose prototxt ends in a `DetectionOutput` with `normalized_bbox: false` (OpenCV's Faster R-CNN and
R-FCN prototxts) do that in the net: their rows are in the scaled image's pixels and are divided by the scale.
Torch-free: numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ninport.apps.detect import Detection, DetectionSelection, Labels, best_first, label_name, select_rows
from ninport.apps.preprocess import resize_image
from ninport.errors import PreprocessError
from ninport.registry import layer_param

# py-faster-rcnn's lib/fast_rcnn/config.py, TEST settings
SHORTER_SIDE = 600
MAX_SIDE = 1000
PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)
NMS_THRESHOLD = 0.3


@dataclass(frozen=True)
class TwoStageBlobs:
    """Where a two-stage net's results are: the proposals feeding its ROI pooling, its class scores and box
    deltas; or, for a net that decodes in-net, its DetectionOutput rows (in pixels of the scaled image)."""

    image_input: str
    info_input: str
    rois: str | None = None
    scores: str | None = None
    deltas: str | None = None
    rows: str | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.rows,) if self.rows else (self.rois, self.scores, self.deltas)


ROI_POOLING_TYPES = ("ROIPooling", "PSROIPooling")


def two_stage_blobs(spec) -> TwoStageBlobs | None:
    """Where a `ninport.caffe.spec.NetSpec`'s two-stage results are, or None when it is not a two-stage
    detector: two inputs, one of them `im_info` (or the one with 3 values), and either a DetectionOutput
    output with `normalized_bbox: false`, or an ROI pooling layer (its second bottom: the proposals) and two
    outputs, a Softmax's (the class scores) and the box deltas."""
    if len(spec.inputs) != 2:
        return None
    names = list(spec.inputs)
    info = "im_info" if "im_info" in names else next((n for n in names if int(np.prod(spec.inputs[n])) == 3), None)
    if info is None:
        return None
    image = next(n for n in names if n != info)
    for layer in spec.layers:
        if layer.type == "DetectionOutput" and set(layer.tops) & set(spec.outputs):
            if layer_param(layer, "detection_output_param.normalized_bbox", True) is False:
                return TwoStageBlobs(image, info, rows=layer.tops[0])
            return None
    pooling = [layer for layer in spec.layers if layer.type in ROI_POOLING_TYPES and len(layer.bottoms) == 2]
    softmax_tops = {top for layer in spec.layers if layer.type == "Softmax" for top in layer.tops}
    scores = [o for o in spec.outputs if o in softmax_tops]
    others = [o for o in spec.outputs if o not in softmax_tops]
    if not pooling or len(scores) != 1 or len(others) != 1:
        return None
    return TwoStageBlobs(image, info, rois=pooling[0].bottoms[1], scores=scores[0], deltas=others[0])


def image_scale(height: int, width: int, shorter_side: int = SHORTER_SIDE, max_side: int = MAX_SIDE) -> float:
    """py-faster-rcnn's `_get_image_blob` scale: the shorter side to `shorter_side`, unless that makes the
    longer side exceed `max_side` (after rounding), then the longer side to `max_side`."""
    scale = float(shorter_side) / float(min(height, width))
    if np.round(scale * max(height, width)) > max_side:
        scale = float(max_side) / float(max(height, width))
    return scale


def image_blob(image: np.ndarray, means: Sequence[float] = PIXEL_MEANS_BGR) -> tuple[np.ndarray, np.ndarray, float]:
    """(data (1, 3, h, w) float32, im_info (1, 3) float32, scale) for a BGR HxWx3 image, as `_get_image_blob`
    builds them: the means subtracted, then an OpenCV bilinear resize by the scale (Pillow when OpenCV is
    not installed: within a few 1e-3 of it)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise PreprocessError(f"a two-stage detector takes a 3-channel image, got shape {list(image.shape)}")
    height, width = image.shape[:2]
    scale = image_scale(height, width)
    shifted = image.astype(np.float32) - np.asarray(means, np.float32)
    try:
        import cv2
    except ImportError:
        resized = resize_image(shifted, int(round(height * scale)), int(round(width * scale)))
    else:
        resized = cv2.resize(shifted, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    data = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
    info = np.array([[data.shape[2], data.shape[3], scale]], dtype=np.float32)
    return data, info, scale


def bbox_transform_inv(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Fast R-CNN's box regression: each box (x1, y1, x2, y2) moved by each 4-column group of `deltas`."""
    if boxes.shape[0] == 0:
        return np.zeros((0, deltas.shape[1]), dtype=deltas.dtype)
    boxes = boxes.astype(deltas.dtype, copy=False)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas[:, 0::4], deltas[:, 1::4], deltas[:, 2::4], deltas[:, 3::4]
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = np.exp(dw) * widths[:, None]
    pred_h = np.exp(dh) * heights[:, None]
    pred = np.zeros(deltas.shape, dtype=deltas.dtype)
    pred[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    pred[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    pred[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    pred[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return pred


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Every 4-column group clipped to the image: x to [0, width - 1], y to [0, height - 1]."""
    height, width = image_size
    boxes[:, 0::4] = np.maximum(np.minimum(boxes[:, 0::4], width - 1), 0)
    boxes[:, 1::4] = np.maximum(np.minimum(boxes[:, 1::4], height - 1), 0)
    boxes[:, 2::4] = np.maximum(np.minimum(boxes[:, 2::4], width - 1), 0)
    boxes[:, 3::4] = np.maximum(np.minimum(boxes[:, 3::4], height - 1), 0)
    return boxes


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """py_cpu_nms: greedy, best score first (numpy's argsort order, as the original), +1 pixel areas; a box
    is dropped when its IoU with a kept box exceeds `threshold`."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def detections_from_heads(rois: np.ndarray, scores: np.ndarray, deltas: np.ndarray, scale: float,
                          image_size: tuple[int, int], *, threshold: float, top: int | None = None,
                          labels: Labels | None = None, nms_threshold: float = NMS_THRESHOLD) -> DetectionSelection:
    """What `ninport predict` shows for a two-stage net's heads on one image (see the module's docstring):
    per foreground class, the boxes scoring at least `threshold` after NMS, best first over all classes (ties
    keep class order), at most `top`."""
    rois, scores, deltas = (np.asarray(a, dtype=np.float32) for a in (rois, scores, deltas))
    scores = scores.reshape(scores.shape[0], -1)
    deltas = deltas.reshape(deltas.shape[0], -1)
    if rois.ndim != 2 or rois.shape[1] != 5 or not rois.shape[0] == scores.shape[0] == deltas.shape[0]:
        raise PreprocessError(f"two-stage outputs do not agree: rois {list(rois.shape)}, scores "
                              f"{list(scores.shape)}, box deltas {list(deltas.shape)}")
    classes = scores.shape[1]
    if deltas.shape[1] == 8 and classes > 2:  # R-FCN's class-agnostic regression: background, object
        deltas = np.tile(deltas[:, 4:8], (1, classes))
    if deltas.shape[1] != 4 * classes:
        raise PreprocessError(f"{deltas.shape[1]} box deltas per roi for {classes} classes (need {4 * classes})")
    boxes = clip_boxes(bbox_transform_inv(rois[:, 1:5] / scale, deltas), image_size)
    kept: list[Detection] = []
    below = int((scores[:, 1:].max(axis=1, initial=-np.inf) < threshold).sum())  # rois no class keeps
    for label in range(1, classes):
        class_scores = scores[:, label]
        chosen = np.where(class_scores >= threshold)[0]
        class_boxes = boxes[chosen, 4 * label:4 * label + 4]
        for i in nms(class_boxes, class_scores[chosen], nms_threshold):
            x1, y1, x2, y2 = (float(v) for v in class_boxes[i])
            kept.append(Detection(0, label, float(class_scores[chosen[i]]), x1, y1, x2, y2,
                                  label_name(labels, label)))
    kept.sort(key=lambda d: -d.score)
    rows = np.array([[0, d.label, d.score, d.xmin, d.ymin, d.xmax, d.ymax] for d in kept], np.float32).reshape(-1, 7)
    return best_first(kept, threshold, below, 0, top, rows)


def detections_from_pixel_rows(rows: np.ndarray, scale: float, image_size: tuple[int, int], *, threshold: float,
                               top: int | None = None, labels: Labels | None = None) -> DetectionSelection:
    """A DetectionOutput's rows with `normalized_bbox: false` (corners in the scaled image's pixels), as boxes in
    the original image: divided by the scale, clipped to it, scoring at least `threshold`, best first."""
    height, width = image_size

    def box(*corners: float) -> tuple[float, float, float, float] | None:
        x1, y1, x2, y2 = (float(v) / scale for v in corners)
        x1, x2 = (min(max(v, 0.0), width - 1.0) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), height - 1.0) for v in (y1, y2))
        return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None

    array = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return select_rows(array, box, image=0, threshold=threshold, top=top, labels=labels)


def two_stage_selection(blobs: TwoStageBlobs, outputs, image: np.ndarray, *, threshold: float,
                        top: int | None = None, labels: Labels | None = None) -> DetectionSelection:
    """The detections of one original `image` from the outputs of the net `ninport predict` runs
    (`blobs.outputs`, in that order), for the im_info `image_blob` gave it."""
    values = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    arrays = [v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for v in values]
    height, width = image.shape[:2]
    scale = image_scale(height, width)
    if blobs.rows is not None:
        return detections_from_pixel_rows(arrays[0], scale, (height, width), threshold=threshold, top=top,
                                          labels=labels)
    rois, scores, deltas = arrays
    return detections_from_heads(rois, scores, deltas, scale, (height, width), threshold=threshold, top=top,
                                 labels=labels)
