"""A numpy transcription of the two Caffe layers SegNet's unpooling runs on, the reference where no
real-Caffe fixture says otherwise:

- BVLC Pooling, MAX with a second top (the argmax mask): BVLC/caffe 9b891540183ddc834a02b2bd81b31afae71b2153,
  src/caffe/layers/pooling_layer.cpp (LayerSetUp's checks are ninport's `pool_params`; Reshape's output
  size and Forward_cpu's MAX loop are transcribed here, loop for loop);
- SegNet's Upsample: alexgkendall/caffe-segnet 344c113bf1832886f1cbe9f33ffe28a3beeaf412,
  src/caffe/layers/upsample_layer.cpp (LayerSetUp, Reshape, Forward_cpu) and the UpsampleParameter
  of its src/caffe/proto/caffe.proto (scale defaults to 2).

Plain Python loops in float32, slow but literal; no ninport import. On real Caffe's own bottoms it gives
real Caffe's tops bit for bit (tests/fixtures/caffe-golden-fork: test_segnet.test_the_transcription_is_real_caffe).
"""
from __future__ import annotations

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


class CaffeCheckFailed(Exception):
    """A CHECK or LOG(FATAL) of the C++ code: Caffe aborts."""


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool = True, padded: bool | None = None) -> int:
    """PoolingLayer::Reshape on one axis: ceil (or floor) of a float division, + 1; when the layer pads
    (`if (pad_h_ || pad_w_)`: on EITHER axis, so `padded` is given by the caller), a last window starting at
    or past size + pad is dropped."""
    rounding = math.ceil if ceil else math.floor
    out = int(rounding(np.float32(size + 2 * pad - kernel) / np.float32(stride))) + 1
    if (pad > 0 if padded is None else padded) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def max_pool_with_mask(x: np.ndarray, kernel=None, pad=(0, 0), stride=(1, 1), ceil: bool = True):
    """PoolingLayer::Forward_cpu, MAX with use_top_mask; `kernel` None is global pooling.
    Returns (top, mask), both float32."""
    num, channels, height, width = x.shape
    if kernel is None:
        kernel, pad, stride = (height, width), (0, 0), (1, 1)
    kernel_h, kernel_w = kernel
    pad_h, pad_w = pad
    stride_h, stride_w = stride
    padded = bool(pad_h or pad_w)
    pooled_h = pooled_size(height, kernel_h, pad_h, stride_h, ceil, padded)
    pooled_w = pooled_size(width, kernel_w, pad_w, stride_w, ceil, padded)
    top = np.full((num, channels, pooled_h, pooled_w), -FLT_MAX, dtype=np.float32)
    top_mask = np.full((num, channels, pooled_h, pooled_w), -1, dtype=np.float32)
    for n in range(num):
        for c in range(channels):
            bottom = x[n, c].reshape(-1)
            top_data = top[n, c].reshape(-1)
            mask = top_mask[n, c].reshape(-1)
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hstart = ph * stride_h - pad_h
                    wstart = pw * stride_w - pad_w
                    hend = min(hstart + kernel_h, height)
                    wend = min(wstart + kernel_w, width)
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    pool_index = ph * pooled_w + pw
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            index = h * width + w
                            if bottom[index] > top_data[pool_index]:
                                top_data[pool_index] = bottom[index]
                                mask[pool_index] = np.float32(index)
    return top, top_mask


def upsample_setup(param: dict) -> dict:
    """UpsampleLayer::LayerSetUp on an upsample_param given as {field: value} (a field present = has_field).
    Returns the layer's state: upsample_h/_w (-1: computed in Reshape), scale_h/_w, pad_out_h/_w."""
    has = param.__contains__
    if not ((has("upsample_h") and has("upsample_w"))
            or (not has("scale") and has("scale_h") and has("scale_w"))
            or (not has("scale_h") and not has("scale_w"))):
        raise CaffeCheckFailed("upsample_h & upsample_w are required, else (DEPRECATED) scale OR scale_h & "
                               "scale_w are required.")
    state = {"scale_h": 0, "scale_w": 0, "pad_out_h": False, "pad_out_w": False}
    if has("upsample_h") and has("upsample_w"):
        state["upsample_h"], state["upsample_w"] = int(param["upsample_h"]), int(param["upsample_w"])
        if not (state["upsample_h"] > 1 and state["upsample_w"] > 1):
            raise CaffeCheckFailed("CHECK_GT(upsample_h_, 1) / CHECK_GT(upsample_w_, 1)")
        return state
    if not has("scale_h"):
        state["scale_h"] = state["scale_w"] = int(param.get("scale", 2))
        if not state["scale_h"] > 1:
            raise CaffeCheckFailed("CHECK_GT(scale_h_, 1)")
    else:
        state["scale_h"], state["scale_w"] = int(param["scale_h"]), int(param["scale_w"])
        if not (state["scale_h"] > 1 and state["scale_w"] > 1):
            raise CaffeCheckFailed("CHECK_GT(scale_h_, 1) / CHECK_GT(scale_w_, 1)")
    state["pad_out_h"], state["pad_out_w"] = bool(param.get("pad_out_h", False)), bool(param.get("pad_out_w", False))
    if state["pad_out_h"] and state["scale_h"] != 2:
        raise CaffeCheckFailed("Output height padding compensation requires scale_h == 2")
    if state["pad_out_w"] and state["scale_w"] != 2:
        raise CaffeCheckFailed("Output width padding compensation requires scale_w == 2")
    state["upsample_h"] = state["upsample_w"] = -1  # flag to calculate in Reshape
    return state


def upsample_reshape(state: dict, data_shape, mask_shape) -> tuple[int, int, int, int]:
    """UpsampleLayer::Reshape: the top's shape. (The fork computes upsample_h/_w from the scale in the FIRST
    Reshape only and keeps them; this transcription, like a net set up at each size, starts from `state`.)"""
    if len(data_shape) != 4 or len(mask_shape) != 4:
        raise CaffeCheckFailed("Input and mask must have 4 axes")
    if tuple(data_shape) != tuple(mask_shape):
        raise CaffeCheckFailed("CHECK_EQ num / channels / height / width of data and mask")
    num, channels, height, width = data_shape
    upsample_h, upsample_w = state["upsample_h"], state["upsample_w"]
    if upsample_h <= 0 or upsample_w <= 0:
        upsample_h = height * state["scale_h"] - int(state["pad_out_h"])
        upsample_w = width * state["scale_w"] - int(state["pad_out_w"])
    return num, channels, upsample_h, upsample_w


def upsample_forward(param: dict, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """UpsampleLayer::Forward_cpu: a zero top, top[int(mask[i])] = data[i] for each (n, c) plane in order of i.
    An index past the plane is the fork's LOG(FATAL); a negative one writes outside the plane (undefined):
    both raise here."""
    num, channels, upsample_h, upsample_w = upsample_reshape(upsample_setup(param), data.shape, mask.shape)
    top = np.zeros((num, channels, upsample_h, upsample_w), dtype=np.float32)
    for n in range(num):
        for c in range(channels):
            bottom = data[n, c].reshape(-1)
            bottom_mask = mask[n, c].reshape(-1)
            top_data = top[n, c].reshape(-1)
            for i in range(bottom.size):
                idx = int(bottom_mask[i])  # static_cast<int>: toward zero
                if idx >= upsample_h * upsample_w:
                    raise CaffeCheckFailed(f"upsample top index {idx} out of range")
                if idx < 0:
                    raise CaffeCheckFailed(f"upsample top index {idx}: the fork writes outside the plane")
                top_data[idx] = bottom[i]
    return top
