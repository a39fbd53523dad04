"""py-faster-rcnn's region proposal layer as plain numpy: a test oracle independent of ninport's torch code.

A Python 3 copy of the original algorithm, statement for statement, from rbgirshick/py-faster-rcnn at
781a917b378dbfdedb45b6a56189a31982da1b43: `lib/rpn/proposal_layer.py` (ProposalLayer.setup/forward,
_filter_boxes), `lib/rpn/generate_anchors.py`, `lib/fast_rcnn/bbox_transform.py` (bbox_transform_inv,
clip_boxes) and `lib/nms/py_cpu_nms.py`; the TEST values of `lib/fast_rcnn/config.py` are the defaults.
Changes: Python 3 (`range`, no print), the cfg values and the anchor parameters are arguments, and
`sort_kind` picks numpy's argsort algorithm (None: numpy's default, as the original calls it).

Where scores tie exactly, the original's order is whatever numpy's default (unstable) argsort gives, which
depends on the numpy version and the CPU for more than 16 values; `sort_kind="stable"` gives the order a
stable sort gives (what numpy's default gives for 16 values or fewer), the order ninport reproduces.
"""
from __future__ import annotations

import numpy as np

TEST_PRE_NMS_TOP_N = 6000
TEST_POST_NMS_TOP_N = 300
TEST_NMS_THRESH = 0.7
TEST_MIN_SIZE = 16


# --- generate_anchors.py ---------------------------------------------------------------------------------


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    base_anchor = np.array([1, 1, base_size, base_size]) - 1
    ratio_anchors = _ratio_enum(base_anchor, np.asarray(ratios))
    anchors = np.vstack([_scale_enum(ratio_anchors[i, :], np.asarray(scales))
                         for i in range(ratio_anchors.shape[0])])
    return anchors


def _whctrs(anchor):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    x_ctr = anchor[0] + 0.5 * (w - 1)
    y_ctr = anchor[1] + 0.5 * (h - 1)
    return w, h, x_ctr, y_ctr


def _mkanchors(ws, hs, x_ctr, y_ctr):
    ws = ws[:, np.newaxis]
    hs = hs[:, np.newaxis]
    anchors = np.hstack((x_ctr - 0.5 * (ws - 1),
                         y_ctr - 0.5 * (hs - 1),
                         x_ctr + 0.5 * (ws - 1),
                         y_ctr + 0.5 * (hs - 1)))
    return anchors


def _ratio_enum(anchor, ratios):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    size = w * h
    size_ratios = size / ratios
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * ratios)
    anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
    return anchors


def _scale_enum(anchor, scales):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    ws = w * scales
    hs = h * scales
    anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
    return anchors


# --- bbox_transform.py ---------------------------------------------------------------------------------


def bbox_transform_inv(boxes, deltas):
    if boxes.shape[0] == 0:
        return np.zeros((0, deltas.shape[1]), dtype=deltas.dtype)
    boxes = boxes.astype(deltas.dtype, copy=False)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = deltas[:, 0::4]
    dy = deltas[:, 1::4]
    dw = deltas[:, 2::4]
    dh = deltas[:, 3::4]
    pred_ctr_x = dx * widths[:, np.newaxis] + ctr_x[:, np.newaxis]
    pred_ctr_y = dy * heights[:, np.newaxis] + ctr_y[:, np.newaxis]
    pred_w = np.exp(dw) * widths[:, np.newaxis]
    pred_h = np.exp(dh) * heights[:, np.newaxis]
    pred_boxes = np.zeros(deltas.shape, dtype=deltas.dtype)
    pred_boxes[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    pred_boxes[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    pred_boxes[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    pred_boxes[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return pred_boxes


def clip_boxes(boxes, im_shape):
    boxes[:, 0::4] = np.maximum(np.minimum(boxes[:, 0::4], im_shape[1] - 1), 0)
    boxes[:, 1::4] = np.maximum(np.minimum(boxes[:, 1::4], im_shape[0] - 1), 0)
    boxes[:, 2::4] = np.maximum(np.minimum(boxes[:, 2::4], im_shape[1] - 1), 0)
    boxes[:, 3::4] = np.maximum(np.minimum(boxes[:, 3::4], im_shape[0] - 1), 0)
    return boxes


# --- py_cpu_nms.py -------------------------------------------------------------------------------------


def py_cpu_nms(dets, thresh, sort_kind=None):
    x1 = dets[:, 0]
    y1 = dets[:, 1]
    x2 = dets[:, 2]
    y2 = dets[:, 3]
    scores = dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort(kind=sort_kind)[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]
    return keep


def nms(dets, thresh, sort_kind=None):
    """fast_rcnn/nms_wrapper.nms with the pure-Python NMS."""
    if dets.shape[0] == 0:
        return []
    return py_cpu_nms(dets, thresh, sort_kind)


# --- proposal_layer.py ---------------------------------------------------------------------------------


def _filter_boxes(boxes, min_size):
    ws = boxes[:, 2] - boxes[:, 0] + 1
    hs = boxes[:, 3] - boxes[:, 1] + 1
    keep = np.where((ws >= min_size) & (hs >= min_size))[0]
    return keep


def proposal_layer(rpn_cls_prob_reshape, rpn_bbox_pred, im_info_blob, *, feat_stride=16, scales=(8, 16, 32),
                   ratios=(0.5, 1, 2), pre_nms_topN=TEST_PRE_NMS_TOP_N, post_nms_topN=TEST_POST_NMS_TOP_N,
                   nms_thresh=TEST_NMS_THRESH, min_size=TEST_MIN_SIZE, sort_kind=None):
    """ProposalLayer.setup + forward in the TEST phase: (rois (R, 5), scores (R, 1))."""
    _feat_stride = feat_stride
    _anchors = generate_anchors(scales=np.array(scales), ratios=ratios)
    _num_anchors = _anchors.shape[0]

    assert rpn_cls_prob_reshape.shape[0] == 1, 'Only single item batches are supported'
    scores = rpn_cls_prob_reshape[:, _num_anchors:, :, :]
    bbox_deltas = rpn_bbox_pred
    im_info = im_info_blob[0, :]

    height, width = scores.shape[-2:]
    shift_x = np.arange(0, width) * _feat_stride
    shift_y = np.arange(0, height) * _feat_stride
    shift_x, shift_y = np.meshgrid(shift_x, shift_y)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).transpose()
    A = _num_anchors
    K = shifts.shape[0]
    anchors = _anchors.reshape((1, A, 4)) + shifts.reshape((1, K, 4)).transpose((1, 0, 2))
    anchors = anchors.reshape((K * A, 4))

    bbox_deltas = bbox_deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
    scores = scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
    proposals = bbox_transform_inv(anchors, bbox_deltas)
    proposals = clip_boxes(proposals, im_info[:2])
    keep = _filter_boxes(proposals, min_size * im_info[2])
    proposals = proposals[keep, :]
    scores = scores[keep]

    order = scores.ravel().argsort(kind=sort_kind)[::-1]
    if pre_nms_topN > 0:
        order = order[:pre_nms_topN]
    proposals = proposals[order, :]
    scores = scores[order]

    keep = nms(np.hstack((proposals, scores)), nms_thresh, sort_kind)
    if post_nms_topN > 0:
        keep = keep[:post_nms_topN]
    proposals = proposals[keep, :]
    scores = scores[keep]

    batch_inds = np.zeros((proposals.shape[0], 1), dtype=np.float32)
    blob = np.hstack((batch_inds, proposals.astype(np.float32, copy=False)))
    return blob, scores
