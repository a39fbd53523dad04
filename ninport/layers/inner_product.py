"""InnerProduct: flatten from `axis`, then a linear map (Caffe's `transpose` flips the stored weight).

Its weights fix K, the bottom's size from `axis` on: a net with an InnerProduct after spatial layers
runs only at the sizes that keep K (e.g. any size after SPP, one size after a plain Pooling); any
other size is refused by the shape rule naming the layer and both shapes (`ninport.build.size_checks`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    canonical_axis,
    fail,
    inner_product_k,
)
from ninport.layers.rules import (
    one_bottom,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


@builtin_layer("InnerProduct", converter="inner_product:inner_product", bottoms=1, tops=1,
               settings=lambda layer: f"{layer.proto.inner_product_param.num_output}")
def _inner_product(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.inner_product_param
    axis = canonical_axis(p.axis, len(shape))
    k = inner_product_k(shape, axis)
    if p.num_output <= 0:
        fail(f"num_output must be positive, got {p.num_output}")
    weight = (k, p.num_output) if p.transpose else (p.num_output, k)
    params = [weight] + ([(p.num_output,)] if p.bias_term else [])
    m = math.prod(shape[:axis])
    return LayerShapes(tops=[shape[:axis] + (p.num_output,)], params=params, macs=m * k * p.num_output)


# --- torch modules and their converters ------------------------------------------------------


@records_args
class InnerProduct(nn.Module):
    def __init__(self, axis: int, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.axis = axis
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(x, self.axis), self.weight, self.bias)


def inner_product(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.inner_product_param
    axis = canonical_axis(p.axis, len(ctx.bottom_shapes[0]))
    weight = ctx.parameter(0)
    if p.transpose:  # stored as [K, N]; keep torch's [N, K] so state_dicts look alike
        weight = nn.Parameter(weight.detach().t().contiguous())
    bias = ctx.parameter(1) if p.bias_term else None
    return InnerProduct(axis, weight, bias)
