"""Spatial pyramid pooling, with the bins recomputed from the input's size in every forward.

Caffe's SPP layer is a Pooling layer per pyramid level (2^i bins a side; kernel, stride and pad from
`geometry.spp_level` at the actual size), each flattened and concatenated along axis 1; with one
level the pooled blob is the top as it is. Whenever Caffe accepts the size, a level's windows tile the
padded input exactly (see `geometry.SPPLevel`), so a level is: pad to kernel x bins, view it as
(bins, kernel) per axis and reduce over the kernel axes. No pooling op has a kernel that depends on
the input, so this exports with symbolic height and width (ONNX: Pad, Reshape, ReduceMax/ReduceMean).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (
    fail,
    pool_geometry,
    spp_level,
    spp_levels,
    spp_output_features,
    spp_pooling_param,
)
from ninport.errors import UnsupportedLayerError
from ninport.layers.rules import (
    one_bottom,
    spatial_4d,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


def spp_pooling_params(p, in_hw: tuple[int, int]) -> list:
    """The PoolingParameter of each SPP pyramid level, as Caffe's SPPLayer builds them at `in_hw`."""
    if p.pool == pb2.SPPParameter.STOCHASTIC:
        raise UnsupportedLayerError("STOCHASTIC pooling is not supported (its TEST-phase weighted "
                                    "average has no exact torch twin); use AVE or MAX")
    pool = pb2.PoolingParameter.MAX if p.pool == pb2.SPPParameter.MAX else pb2.PoolingParameter.AVE
    return [spp_pooling_param(level, pool) for level in spp_levels(p, in_hw)]


@builtin_layer("SPP", converter="spp:spp", bottoms=1, tops=1)
def _spp(layer, shapes):
    n, c, h, w = spatial_4d(layer, one_bottom(layer, shapes))
    p = layer.proto.spp_param
    levels = spp_pooling_params(p, (h, w))
    outs = [pool_geometry(pp, (h, w)).out for pp in levels]
    if any(out != (2 ** i, 2 ** i) for i, out in enumerate(outs)):  # geometry.SPPLevel says this cannot happen
        fail(f"pyramid levels give {outs} windows at {h}x{w}")
    if len(levels) == 1:  # Caffe runs the single pooling layer straight into the top: no flatten
        return LayerShapes(tops=[(n, c, *outs[0])])
    return LayerShapes(tops=[(n, spp_output_features(c, p.pyramid_height))])


# --- torch modules and their converters ------------------------------------------------------


FLT_MAX = float(np.finfo(np.float32).max)


@records_args
class SpatialPyramidPool(nn.Module):
    def __init__(self, pyramid_height: int, mode: str):
        super().__init__()
        self.pyramid_height, self.mode = pyramid_height, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pooled = []
        for level in range(self.pyramid_height):
            lv = spp_level(level, (h, w))
            padding = (lv.pad[1], lv.right_pad(1), lv.pad[0], lv.right_pad(0))
            fill = -FLT_MAX if self.mode == "max" else 0.0
            tiles = F.pad(x, padding, mode="constant", value=fill)
            tiles = tiles.reshape(n, c, lv.bins, lv.kernel[0], lv.bins, lv.kernel[1])
            if self.mode == "max":
                y = torch.amax(tiles, dim=(3, 5))
            else:  # every window lies inside [-pad, in + pad): Caffe divides by the whole kernel
                y = torch.mean(tiles, dim=(3, 5))
            pooled.append(y)
        if len(pooled) == 1:
            return pooled[0]
        return torch.cat([torch.flatten(y, 1) for y in pooled], dim=1)


def spp(ctx: LayerContext) -> SpatialPyramidPool:
    p = ctx.proto.spp_param
    return SpatialPyramidPool(int(p.pyramid_height), "max" if p.pool == pb2.SPPParameter.MAX else "ave")
