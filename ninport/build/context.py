"""What a converter receives: `LayerContext`.

The record of each Caffe type (shape rule, converter and the other facts about it) lives in `ninport.registry`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ninport.caffe.spec import LayerSpec

Shape = tuple[int, ...]


@dataclass
class LayerContext:
    """What a converter gets: the layer, its bottom/top shapes, its weights (Caffe layout) and the
    parameters its shape rule parsed and checked (`LayerShapes.parsed`, None if the rule gives none)."""

    layer: LayerSpec
    bottom_shapes: list[Shape]
    top_shapes: list[Shape]
    weights: list[np.ndarray]
    parsed: Any = None
    # The layer is in place in Caffe (its one top is its bottom) and its bottom is a fresh tensor that
    # nothing else reads (a convolution's, say): inference may overwrite it instead of allocating a new one.
    may_overwrite_bottom: bool = False
    _adopted: set[int] = field(default_factory=set, repr=False)  # blobs already made parameters

    @property
    def proto(self):
        return self.layer.proto

    def parameter(self, index: int, shape: Shape | None = None) -> nn.Parameter:
        """Weight blob `index` as a trainable float32 parameter (optionally reshaped);
        `ninport.load(..., freeze=True)` turns gradients off for the whole net.

        The parameter shares memory with `weights[index]` when that array can be adopted as it is (float32,
        contiguous, aligned, writable: what `read_caffemodel` gives), so a 500 MB caffemodel is in memory
        once, not twice; otherwise, or when the same blob is asked for again, it is a copy."""
        array = self.weights[index]
        if shape is not None:
            array = array.reshape(shape)
        flags = array.flags
        adopt = (array.dtype == np.float32 and flags.c_contiguous and flags.aligned and flags.writeable
                 and index not in self._adopted)
        if adopt:
            self._adopted.add(index)
            return nn.Parameter(torch.from_numpy(array))
        return nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32, copy=True)))
