"""Spatial pyramid pooling: Caffe's SPP layer is a Pooling layer per pyramid level (2^i bins a side,
geometry from `spp_pooling_params`), each flattened, concatenated along axis 1; with one level the
pooled blob is the top as it is. Each level is the Pooling converter's own module."""
from __future__ import annotations

import torch
from torch import nn

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.shapes import pool_geometry, spp_pooling_params
from ninport.caffe.spec import LayerSpec
from ninport.convert.layers.pooling import pooling
from ninport.convert.registry import LayerContext


class SpatialPyramidPool(nn.Module):
    def __init__(self, levels: list[nn.Module]):
        super().__init__()
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([torch.flatten(level(x), 1) for level in self.levels], dim=1)


def spp(ctx: LayerContext) -> nn.Module:
    shape = ctx.bottom_shapes[0]
    n, c, h, w = shape
    modules = []
    for i, pp in enumerate(spp_pooling_params(ctx.proto.spp_param, (h, w))):
        out = pool_geometry(pp, (h, w)).out
        proto = pb2.LayerParameter(name=f"{ctx.layer.name}/level{i}", type="Pooling", pooling_param=pp)
        level = LayerSpec(name=proto.name, type="Pooling", bottoms=list(ctx.layer.bottoms),
                          tops=[proto.name], proto=proto)
        modules.append(pooling(LayerContext(layer=level, bottom_shapes=[shape],
                                            top_shapes=[(n, c, *out)], weights=[])))
    return SpatialPyramidPool(modules)
