"""Plain numpy/Python transcriptions of the two-stage detectors' pooling layers, statement for statement, as a
test oracle independent of ninport's vectorized torch code:

- `roi_pooling`: rbgirshick/caffe-fast-rcnn (branch faster-rcnn, 4115385d; the same code on branch fast-rcnn and in
  daijifeng001/caffe-rfcn) `ROIPoolingLayer<float>::Forward_cpu`, src/caffe/layers/roi_pooling_layer.cpp.
- `psroi_pooling`: daijifeng001/caffe-rfcn (543f8f6a) `PSROIPoolingForward`, the CUDA kernel in
  src/caffe/layers/psroi_pooling_layer.cu (the fork's Forward_cpu is NOT_IMPLEMENTED: R-FCN ran on GPUs only).

float32 is emulated with np.float32 where the C++ stores a float and Python floats (double) where it promotes
to double; C's round() (half away from zero) and the float-to-int conversion (truncation) are written out.
The kernel's `ph * bin_size_h + roi_start_h` is a float multiply then a float add, rounded separately (as an
x86-64 build computes it; nvcc may fuse it into one multiply-add, see ninport/layers/roi.py).
"""
from __future__ import annotations

import math

import numpy as np

f32 = np.float32
FLT_MAX = f32(np.finfo(np.float32).max)


def c_round(value) -> float:
    """C's round(): half away from zero. Exact for a float32 argument (|v| + 0.5 is exact in double)."""
    v = float(value)
    if not math.isfinite(v):
        return v
    return math.copysign(math.floor(abs(v) + 0.5), v)


def roi_pooling(features: np.ndarray, rois: np.ndarray, pooled_h: int, pooled_w: int,
                spatial_scale: float) -> np.ndarray:
    """ROIPoolingLayer::Reshape + Forward_cpu: top (R, C, pooled_h, pooled_w).

    `rois` is the rois blob, R rows of [batch index, x1, y1, x2, y2] (Caffe reads the first 5 values of each
    row). A batch index outside [0, N) fails Caffe's CHECK: AssertionError here.
    """
    bottom_data = np.asarray(features, dtype=np.float32)
    bottom_rois = np.asarray(rois, dtype=np.float32).reshape(len(rois), -1)
    batch_size, channels, height, width = bottom_data.shape
    spatial_scale = f32(spatial_scale)
    num_rois = bottom_rois.shape[0]
    top_data = np.full((num_rois, channels, pooled_h, pooled_w), -FLT_MAX, dtype=np.float32)
    for n in range(num_rois):
        roi = bottom_rois[n]
        roi_batch_ind = int(roi[0])  # float -> int: truncation toward zero
        roi_start_w = int(c_round(roi[1] * spatial_scale))  # a float product, then round()
        roi_start_h = int(c_round(roi[2] * spatial_scale))
        roi_end_w = int(c_round(roi[3] * spatial_scale))
        roi_end_h = int(c_round(roi[4] * spatial_scale))
        assert roi_batch_ind >= 0, "CHECK_GE(roi_batch_ind, 0)"
        assert roi_batch_ind < batch_size, "CHECK_LT(roi_batch_ind, batch_size)"

        roi_height = max(roi_end_h - roi_start_h + 1, 1)
        roi_width = max(roi_end_w - roi_start_w + 1, 1)
        bin_size_h = f32(roi_height) / f32(pooled_h)
        bin_size_w = f32(roi_width) / f32(pooled_w)

        batch_data = bottom_data[roi_batch_ind]  # (C, H, W): every channel at once below
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hstart = int(math.floor(f32(ph) * bin_size_h))
                wstart = int(math.floor(f32(pw) * bin_size_w))
                hend = int(math.ceil(f32(ph + 1) * bin_size_h))
                wend = int(math.ceil(f32(pw + 1) * bin_size_w))

                hstart = min(max(hstart + roi_start_h, 0), height)
                hend = min(max(hend + roi_start_h, 0), height)
                wstart = min(max(wstart + roi_start_w, 0), width)
                wend = min(max(wend + roi_start_w, 0), width)

                is_empty = (hend <= hstart) or (wend <= wstart)
                if is_empty:
                    top_data[n, :, ph, pw] = 0
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        value = batch_data[:, h, w]
                        current = top_data[n, :, ph, pw]
                        top_data[n, :, ph, pw] = np.where(value > current, value, current)
    return top_data


def psroi_pooling(features: np.ndarray, rois: np.ndarray, spatial_scale: float, output_dim: int,
                  group_size: int) -> np.ndarray:
    """PSROIPoolingLayer::Reshape + the PSROIPoolingForward kernel: top (R, output_dim, group_size, group_size).

    One kernel thread per top element; here the threads of one (roi, ph, pw) run together over ctop. The
    kernel does not check the batch index (it reads outside the blob): AssertionError here.
    """
    bottom_data = np.asarray(features, dtype=np.float32)
    bottom_rois = np.asarray(rois, dtype=np.float32).reshape(len(rois), -1)
    batch, channels, height, width = bottom_data.shape
    assert channels == output_dim * group_size * group_size, "CHECK_EQ(channels_, output_dim_*group_size_^2)"
    spatial_scale = f32(spatial_scale)
    pooled_height = pooled_width = group_size
    num_rois = bottom_rois.shape[0]
    top_data = np.zeros((num_rois, output_dim, pooled_height, pooled_width), dtype=np.float32)
    ctop = np.arange(output_dim)
    for n in range(num_rois):
        roi = bottom_rois[n]
        roi_batch_ind = int(roi[0])
        assert 0 <= roi_batch_ind < batch, "the kernel would read outside the bottom"
        # static_cast<Dtype>(round(x)) * spatial_scale, a float product; round(x) + 1. is a double sum
        roi_start_w = f32(c_round(roi[1])) * spatial_scale
        roi_start_h = f32(c_round(roi[2])) * spatial_scale
        roi_end_w = f32(c_round(roi[3]) + 1.0) * spatial_scale
        roi_end_h = f32(c_round(roi[4]) + 1.0) * spatial_scale

        # CUDA's max(float, double) is fmax in double; the result is stored in a float
        roi_width = f32(max(float(roi_end_w - roi_start_w), 0.1))
        roi_height = f32(max(float(roi_end_h - roi_start_h), 0.1))

        bin_size_h = roi_height / f32(pooled_height)
        bin_size_w = roi_width / f32(pooled_width)

        for ph in range(pooled_height):
            for pw in range(pooled_width):
                hstart = int(math.floor(f32(ph) * bin_size_h + roi_start_h))
                wstart = int(math.floor(f32(pw) * bin_size_w + roi_start_w))
                hend = int(math.ceil(f32(ph + 1) * bin_size_h + roi_start_h))
                wend = int(math.ceil(f32(pw + 1) * bin_size_w + roi_start_w))
                hstart = min(max(hstart, 0), height)
                hend = min(max(hend, 0), height)
                wstart = min(max(wstart, 0), width)
                wend = min(max(wend, 0), width)
                is_empty = (hend <= hstart) or (wend <= wstart)

                gw = pw
                gh = ph
                c = (ctop * group_size + gh) * group_size + gw  # one channel per ctop

                out_sum = np.zeros(output_dim, dtype=np.float32)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        out_sum = out_sum + bottom_data[roi_batch_ind, c, h, w]  # float += float

                bin_area = f32((hend - hstart) * (wend - wstart))
                top_data[n, :, ph, pw] = 0 if is_empty else out_sum / bin_area
    return top_data
