"""HED's Caffe fork (s9xie/hed at a2ad4103) Crop layer, transcribed to numpy: the reference the `hed`
dialect is tested against on many small nets (real HED Caffe, tests/fixtures/caffe-golden-fork/hed_500, checks the
published net); it follows the fork's C++ line by line: src/caffe/layers/crop_layer.cpp (LayerSetUp, Reshape,
Forward_cpu), include/caffe/util/coords.hpp
(DiagonalAffineMap, FilterMap) and the coord_map() of each layer class (vision_layers.hpp, common_layers.hpp,
neuron_layers.hpp). Dtype is float, so the maps are computed in float32. The net is read from the prototxt
with protobuf's own text parser (not ninport's), and walked as the fork's Net holds it: top_vecs and
bottom_vecs per layer in order (Caffe's automatic Split layers are left out: their coord_map is the
identity and their tops share their bottom's data, so the walk ends at the same blob).
"""
from __future__ import annotations

import math

import numpy as np
from google.protobuf import text_format

from ninport.caffe import caffe_pb2

F = np.float32
NEURON = {"AbsVal", "BNLL", "Dropout", "Exp", "Log", "Power", "ReLU", "Sigmoid", "TanH", "Threshold", "PReLU"}
IDENTITY = NEURON | {"LRN", "Concat", "Eltwise", "MVN", "Softmax", "Split", "Slice"}


class NotImplementedInFork(Exception):
    """Layer::coord_map's NOT_IMPLEMENTED: the fork aborts."""


class CheckFailed(Exception):
    """A CHECK in CropLayer::LayerSetUp failed: the fork aborts."""


# --- include/caffe/util/coords.hpp -------------------------------------------------------------------
def compose(left, right):
    return [(F(l1 * r1), F(F(l1 * r2) + l2)) for (l1, l2), (r1, r2) in zip(left, right)]


def inv(coefs):
    return [(F(F(1) / a), F(-b / a)) for a, b in coefs]


def identity():
    return [(F(1), F(0)), (F(1), F(0))]


def filter_map(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    return [(F(stride_h), F(F(kernel_h - 1) / F(2)) - F(pad_h)), (F(stride_w), F(F(kernel_w - 1) / F(2)) - F(pad_w))]


# --- the layers' kernel/stride/pad members, as BaseConvolutionLayer / PoolingLayer::LayerSetUp set them ------
def _conv_khw(p):
    k = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size[0],) * 2
    s = (p.stride_h, p.stride_w) if p.HasField("stride_h") else ((p.stride[0],) * 2 if len(p.stride) else (1, 1))
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else ((p.pad[0],) * 2 if len(p.pad) else (0, 0))
    return k, s, pad


def _pool_khw(p):
    k = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
    s = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
    return k, s, pad


class Net:
    """The fork's view of a net: layers in order, their bottom and top blob names."""

    def __init__(self, prototxt_text: str):
        net = text_format.Parse(prototxt_text, caffe_pb2.NetParameter())
        self.layers = [layer for layer in net.layer if layer.type != "Input"]
        self.bottom_vecs = [list(layer.bottom) for layer in self.layers]
        self.top_vecs = [list(layer.top) for layer in self.layers]
        self.crop = {}  # layer index -> (crop_h_, crop_w_), set by its LayerSetUp in net order
        for i, layer in enumerate(self.layers):
            if layer.type == "Crop":
                self.crop[i] = self.crop_layer_setup(i)

    def coord_map(self, i):
        layer = self.layers[i]
        if layer.type == "Convolution":
            (kh, kw), (sh, sw), (ph, pw) = _conv_khw(layer.convolution_param)
            return inv(filter_map(kh, kw, sh, sw, ph, pw))
        if layer.type == "Deconvolution":
            (kh, kw), (sh, sw), (ph, pw) = _conv_khw(layer.convolution_param)
            return filter_map(kh, kw, sh, sw, ph, pw)
        if layer.type == "Pooling":
            (kh, kw), (sh, sw), (ph, pw) = _pool_khw(layer.pooling_param)
            return inv(filter_map(kh, kw, sh, sw, ph, pw))
        if layer.type == "Crop":
            crop_h, crop_w = self.crop[i]
            return [(F(1), F(-crop_h)), (F(1), F(-crop_w))]
        if layer.type in IDENTITY:
            return identity()
        raise NotImplementedInFork(layer.type)

    # --- src/caffe/layers/crop_layer.cpp: CropLayer::LayerSetUp ------------------------------------
    def crop_layer_setup(self, index):
        bottom = self.bottom_vecs[index]
        down_map = {}
        for layer_ind in range(len(self.top_vecs)):
            for top in self.top_vecs[layer_ind]:
                if top not in down_map:
                    down_map[top] = layer_ind
        path_blobs = set()
        blob = bottom[0]
        path_blobs.add(blob)
        while blob in down_map:
            layer_ind = down_map[blob]
            if len(self.bottom_vecs[layer_ind]) == 0:
                break
            blob = self.bottom_vecs[layer_ind][0]
            path_blobs.add(blob)
        inter_blob = bottom[1]
        while inter_blob not in path_blobs:
            if inter_blob not in down_map:
                raise CheckFailed("Cannot align apparently disconnected blobs.")
            layer_ind = down_map[inter_blob]
            if len(self.bottom_vecs[layer_ind]) <= 0:
                raise CheckFailed("Cannot align apparently disconnected blobs.")
            inter_blob = self.bottom_vecs[layer_ind][0]
        coord_maps = [identity(), identity()]
        for i in range(2):
            blob = bottom[i]
            while blob != inter_blob:
                coord_maps[i] = compose(coord_maps[i], self.coord_map(down_map[blob]))
                blob = self.bottom_vecs[down_map[blob]][0]
        crop_map = compose(coord_maps[1], inv(coord_maps[0]))
        for i in range(2):
            scale, offset = crop_map[i]
            if abs(float(scale) - 1) > 1e-15:  # CHECK_DOUBLE_EQ(coefs()[i].first, 1)
                raise CheckFailed(f"scale {scale}")
            if not offset <= 0:
                raise CheckFailed("Negative crop width.")
            if abs(float(offset) - c_round(offset)) > 1e-15:
                raise CheckFailed(f"offset {offset} not an integer")
        return int(-c_round(crop_map[0][1])), int(-c_round(crop_map[1][1]))


def c_round(x) -> float:
    return math.copysign(math.floor(abs(float(x)) + 0.5), float(x))


# --- CropLayer::Reshape and Forward_cpu --------------------------------------------------------------
def crop_forward(bottom0: np.ndarray, bottom1_shape, crop_h: int, crop_w: int) -> np.ndarray:
    num, channels = bottom0.shape[:2]
    height, width = bottom1_shape[2], bottom1_shape[3]
    # the fork does not check this (caffe_copy would read past the row); ninport refuses it instead
    assert crop_h + height <= bottom0.shape[2] and crop_w + width <= bottom0.shape[3]
    top = np.empty((num, channels, height, width), bottom0.dtype)
    for n in range(num):
        for c in range(channels):
            for h in range(height):
                top[n, c, h, :] = bottom0[n, c, crop_h + h, crop_w:crop_w + width]
    return top
