"""The converter registry: one function per Caffe layer family, found by Caffe type name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ninport.caffe.spec import LayerSpec

Shape = tuple[int, ...]


@dataclass
class LayerContext:
    """What a converter gets: the layer, its bottom/top shapes and its weights (Caffe layout)."""

    layer: LayerSpec
    bottom_shapes: list[Shape]
    top_shapes: list[Shape]
    weights: list[np.ndarray]

    @property
    def proto(self):
        return self.layer.proto

    def parameter(self, index: int, shape: Shape | None = None) -> nn.Parameter:
        array = self.weights[index]
        if shape is not None:
            array = array.reshape(shape)
        return nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32, copy=True)), requires_grad=False)


ConverterFn = Callable[[LayerContext], nn.Module]
CONVERTERS: dict[str, ConverterFn] = {}


def converter(*caffe_types: str):
    """Register `fn` as the converter of the given Caffe layer types.

    The module it returns is called with the layer's bottoms as positional tensors and returns
    one tensor, or a tuple with one tensor per top.
    """
    def register(fn: ConverterFn) -> ConverterFn:
        for t in caffe_types:
            CONVERTERS[t] = fn
        return fn
    return register


def supported_layer_types() -> list[str]:
    _load_all()
    return sorted(CONVERTERS)


def _load_all() -> None:
    # Importing the family modules runs their @converter decorators.
    from ninport.convert.layers import (activation, convolution, indexing,  # noqa: F401
                                        inner_product, normalization, pooling, reduction, spp,
                                        structure)
