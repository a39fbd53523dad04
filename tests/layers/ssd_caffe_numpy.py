"""Plain numpy/Python transcriptions of SSD Caffe's layers (weiliu89/caffe, branch ssd), written from
prior_box_layer.cpp, normalize_layer.cpp, permute_layer.cpp, detection_output_layer.cpp and
util/bbox_util.cpp, loop for loop, as a test oracle independent of ninport's vectorized torch code.

float32 is emulated with np.float32 where Caffe stores a float; Python floats (double) where the
C++ expression promotes to double. Validated against the real-Caffe fixtures in test_ssd.py first.

`normalized_bbox=False` is OpenCV's extension (modules/dnn/src/layers/detection_output_layer.cpp, the only
implementation of that field), transcribed the same way: boxes in pixels, sides (xmax - xmin) + 1 in prior
decoding, sizes and overlaps, boxes that touch overlap, clip to the image's [0, W - 1] x [0, H - 1].
"""
from __future__ import annotations

import math

import numpy as np

f32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)


def prior_box(feature_hw, image_hw, *, min_size, max_size=(), aspect_ratio=(), flip=True, clip=False,
              variance=(), img_size=None, img_hw=None, step=None, step_hw=None, offset=0.5) -> np.ndarray:
    """PriorBoxLayer::LayerSetUp + Forward_cpu."""
    min_sizes = [f32(v) for v in min_size]
    ratios = [f32(1.0)]
    for ar in aspect_ratio:
        ar = f32(ar)
        if any(abs(float(ar) - float(r)) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if flip:
            ratios.append(f32(1.0 / float(ar)))
    max_sizes = [f32(v) for v in max_size]
    num_priors = len(ratios) * len(min_sizes) + len(max_sizes)
    layer_h, layer_w = feature_hw
    if img_hw is not None:
        img_h, img_w = img_hw
    elif img_size is not None:
        img_h = img_w = img_size
    else:
        img_h, img_w = image_hw
    if step_hw is not None:
        step_h, step_w = f32(step_hw[0]), f32(step_hw[1])
    elif step is not None:
        step_h = step_w = f32(step)
    else:
        step_w = f32(f32(img_w) / f32(layer_w))
        step_h = f32(f32(img_h) / f32(layer_h))
    off = f32(offset)
    dim = layer_h * layer_w * num_priors * 4
    top = np.zeros((1, 2, dim), dtype=np.float32)
    data = top[0, 0]
    idx = 0

    def put(cx, cy, bw, bh):
        nonlocal idx
        bw, bh = float(f32(bw)), float(f32(bh))
        data[idx:idx + 4] = [(float(cx) - bw / 2.0) / img_w, (float(cy) - bh / 2.0) / img_h,
                             (float(cx) + bw / 2.0) / img_w, (float(cy) + bh / 2.0) / img_h]
        idx += 4

    for h in range(layer_h):
        for w in range(layer_w):
            center_x = f32(f32(f32(w) + off) * step_w)
            center_y = f32(f32(f32(h) + off) * step_h)
            for s in range(len(min_sizes)):
                low = int(min_sizes[s])
                put(center_x, center_y, low, low)
                if max_sizes:
                    high = int(max_sizes[s])
                    side = math.sqrt(low * high)
                    put(center_x, center_y, side, side)
                for ar in ratios:
                    if abs(float(ar) - 1.0) < 1e-6:
                        continue
                    put(center_x, center_y, low * math.sqrt(float(ar)), low / math.sqrt(float(ar)))
    if clip:
        np.clip(data, 0.0, 1.0, out=data)
    variances = [f32(v) for v in variance] or [f32(0.1)]
    if len(variances) == 1:
        top[0, 1] = variances[0]
    else:
        top[0, 1] = np.tile(np.array(variances, dtype=np.float32), dim // 4)
    return top


def normalize(x: np.ndarray, scale: np.ndarray, *, across_spatial=True, channel_shared=True, eps=1e-10):
    """NormalizeLayer::Forward_cpu for an (N, C, H, W) blob."""
    x = x.astype(np.float32)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    out = np.empty_like(flat)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    for i in range(n):
        squares = flat[i] * flat[i]
        if across_spatial:
            norm = math.sqrt(float(np.sum(squares, dtype=np.float64)) + float(f32(eps)))
            out[i] = flat[i] * f32(1.0 / norm)
        else:
            norm = np.sqrt(np.sum(squares, axis=0, dtype=np.float64) + float(f32(eps))).astype(np.float32)
            out[i] = flat[i] / norm[None, :]
        out[i] = out[i] * (scale[0] if channel_shared else scale[:, None])
    return out.reshape(x.shape)


def permute(x: np.ndarray, order) -> np.ndarray:
    """PermuteLayer: the given axes, then the missing ones in increasing order; element by element."""
    full = list(order) + [a for a in range(x.ndim) if a not in order]
    top_shape = [x.shape[a] for a in full]
    old_steps = [int(np.prod(x.shape[i + 1:])) for i in range(x.ndim)]
    new_steps = [int(np.prod(top_shape[i + 1:])) for i in range(x.ndim)]
    flat_in = x.reshape(-1)
    flat_out = np.empty(flat_in.size, dtype=x.dtype)
    for i in range(flat_in.size):
        old, rest = 0, i
        for j in range(x.ndim):
            old += (rest // new_steps[j]) * old_steps[full[j]]
            rest %= new_steps[j]
        flat_out[i] = flat_in[old]
    return flat_out.reshape(top_shape)


# --- DetectionOutput (bbox_util.cpp) ------------------------------------------------------------


def _size(b, normalized=True):
    if b[2] < b[0] or b[3] < b[1]:
        return f32(0)
    if not normalized:  # OpenCV's BBoxSize: "If bbox is not within range [0, 1]"
        return f32(f32(f32(b[2] - b[0]) + f32(1)) * f32(f32(b[3] - b[1]) + f32(1)))
    return f32(f32(b[2] - b[0]) * f32(b[3] - b[1]))


def _decode(prior, var, code, in_target, clip, loc, normalized=True, bounds=None):
    px0, py0, px1, py1 = prior
    if in_target:
        var = [None] * 4
    if not normalized:
        return _decode_pixels(prior, var, code, clip, loc, bounds)

    def v(i):
        return loc[i] if var[i] is None else f32(var[i] * loc[i])
    if code == "CORNER":
        out = [f32(px0 + v(0)), f32(py0 + v(1)), f32(px1 + v(2)), f32(py1 + v(3))]
    elif code == "CENTER_SIZE":
        pw, ph = f32(px1 - px0), f32(py1 - py0)
        pcx, pcy = f32(f32(px0 + px1) / 2.0), f32(f32(py0 + py1) / 2.0)
        cx = f32(f32(v(0) * pw) + pcx)
        cy = f32(f32(v(1) * ph) + pcy)
        w = f32(f32(np.exp(v(2))) * pw)
        h = f32(f32(np.exp(v(3))) * ph)
        out = [f32(float(cx) - float(w) / 2.0), f32(float(cy) - float(h) / 2.0),
               f32(float(cx) + float(w) / 2.0), f32(float(cy) + float(h) / 2.0)]
    else:  # CORNER_SIZE
        pw, ph = f32(px1 - px0), f32(py1 - py0)
        out = [f32(px0 + f32(v(0) * pw)), f32(py0 + f32(v(1) * ph)),
               f32(px1 + f32(v(2) * pw)), f32(py1 + f32(v(3) * ph))]
    if clip:
        out = [f32(min(max(c, f32(0)), f32(1))) for c in out]
    return out


def _decode_pixels(prior, var, code, clip, loc, bounds):
    """OpenCV's DecodeBBox with normalized_bbox false (CORNER or CENTER_SIZE); `bounds` (W - 1, H - 1)."""
    px0, py0, px1, py1 = prior

    def v(i):
        return loc[i] if var[i] is None else f32(var[i] * loc[i])
    if code == "CORNER":
        out = [f32(px0 + v(0)), f32(py0 + v(1)), f32(px1 + v(2)), f32(py1 + v(3))]
    else:  # CENTER_SIZE
        pw, ph = f32(f32(px1 - px0) + f32(1)), f32(f32(py1 - py0) + f32(1))
        pcx, pcy = f32(float(px0) + float(pw) * 0.5), f32(float(py0) + float(ph) * 0.5)
        cx, cy = f32(f32(v(0) * pw) + pcx), f32(f32(v(1) * ph) + pcy)
        w, h = f32(f32(np.exp(v(2))) * pw), f32(f32(np.exp(v(3))) * ph)
        out = [f32(float(cx) - float(w) * 0.5), f32(float(cy) - float(h) * 0.5),
               f32(float(cx) + float(w) * 0.5), f32(float(cy) + float(h) * 0.5)]
    if clip:
        last_x, last_y = f32(bounds[0]), f32(bounds[1])
        out = [f32(max(min(out[0], last_x), f32(0))), f32(max(min(out[1], last_y), f32(0))),
               f32(max(min(out[2], last_x), f32(0))), f32(max(min(out[3], last_y), f32(0)))]
    return out


def _jaccard_pixels(b1, b2):
    """OpenCV's JaccardOverlap<false>: the intersection box's BBoxSize (sides + 1; 0 if inverted)."""
    inter_box = [max(b1[0], b2[0]), max(b1[1], b2[1]), min(b1[2], b2[2]), min(b1[3], b2[3])]
    inter = _size(inter_box, False)
    if inter > 0:
        return f32(inter / f32(f32(_size(b1, False) + _size(b2, False)) - inter))
    return f32(0)


def _jaccard(b1, b2, normalized=True):
    if not normalized:
        return _jaccard_pixels(b1, b2)
    if b2[0] > b1[2] or b2[2] < b1[0] or b2[1] > b1[3] or b2[3] < b1[1]:
        return f32(0)
    iw = f32(min(b1[2], b2[2]) - max(b1[0], b2[0]))
    ih = f32(min(b1[3], b2[3]) - max(b1[1], b2[1]))
    if iw > 0 and ih > 0:
        inter = f32(iw * ih)
        return f32(inter / f32(f32(_size(b1) + _size(b2)) - inter))
    return f32(0)


def _nms_fast(boxes, scores, score_threshold, nms_threshold, eta, top_k, normalized=True):
    order = [(s, i) for i, s in enumerate(scores) if s > score_threshold]
    order.sort(key=lambda pair: -pair[0])  # std::stable_sort, descending
    if -1 < top_k < len(order):
        order = order[:top_k]
    adaptive = f32(nms_threshold)
    kept: list[int] = []
    for _, idx in order:
        keep = all(_jaccard(boxes[idx], boxes[k], normalized) <= adaptive for k in kept)
        if keep:
            kept.append(idx)
            if eta < 1 and adaptive > 0.5:
                adaptive = f32(adaptive * f32(eta))
    return kept


def detection_output(loc, conf, prior, *, num_classes, share_location=True, background_label_id=0,
                     code_type="CORNER", variance_encoded_in_target=False, keep_top_k=-1,
                     confidence_threshold=None, nms_threshold=0.3, top_k=-1, eta=1.0, clip=False,
                     normalized_bbox=True, image_hw=None) -> np.ndarray:
    """DetectionOutputLayer::Forward_cpu: rows (1, 1, R, 7); `normalized_bbox`, `image_hw`: OpenCV's (module
    docstring)."""
    num = loc.shape[0]
    num_priors = prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    threshold = f32(-FLT_MAX if confidence_threshold is None else confidence_threshold)
    priors = prior[0, 0].reshape(num_priors, 4)
    variances = prior[0, 1].reshape(num_priors, 4) if prior.shape[1] > 1 else [None] * num_priors
    bounds = None if image_hw is None else (image_hw[1] - 1, image_hw[0] - 1)
    loc = loc.reshape(num, num_priors, loc_classes, 4)
    conf = conf.reshape(num, num_priors, num_classes)
    all_boxes, all_indices = [], []
    for i in range(num):
        decoded = {}
        for c in range(loc_classes):
            label = -1 if share_location else c
            if label == background_label_id:
                continue
            decoded[label] = [_decode(priors[p], variances[p], code_type, variance_encoded_in_target, clip,
                                      loc[i, p, c], normalized_bbox, bounds) for p in range(num_priors)]
        indices = {}
        num_det = 0
        for c in range(num_classes):
            if c == background_label_id:
                continue
            boxes = decoded[-1 if share_location else c]
            indices[c] = _nms_fast(boxes, list(conf[i, :, c]), threshold, nms_threshold, eta, top_k, normalized_bbox)
            num_det += len(indices[c])
        if -1 < keep_top_k < num_det:
            pairs = [(conf[i, idx, c], c, idx) for c in sorted(indices) for idx in indices[c]]
            pairs.sort(key=lambda t: -t[0])  # Caffe: std::sort (ties unspecified); stable here
            new = {}
            for _, c, idx in pairs[:keep_top_k]:
                new.setdefault(c, []).append(idx)
            indices = new
        all_boxes.append(decoded)
        all_indices.append(indices)
    rows = []
    for i in range(num):
        for c in sorted(all_indices[i]):
            boxes = all_boxes[i][-1 if share_location else c]
            for idx in all_indices[i][c]:
                rows.append([i, c, conf[i, idx, c], *boxes[idx]])
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(num)]
    return np.array(rows, dtype=np.float32).reshape(1, 1, -1, 7)
