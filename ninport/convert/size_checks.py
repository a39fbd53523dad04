"""Refusing, at call time, an input size a Caffe layer cannot take.

A converted module runs at every input size the net allows (Caffe reshapes a net to its input); the
layer modules whose geometry depends on the size check the actual bottoms in `forward` and raise one
ShapeError naming the Caffe layer (kept as data at build time), the bottoms it got and the bottoms it
was built for. While torch.export traces a module the sizes are symbolic and these checks are skipped
(see `ninport.caffe.geometry.runtime_check`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ninport.caffe.geometry import GeometryError, is_static
from ninport.caffe.spec import LayerSpec
from ninport.errors import ShapeError, safe_text, shape_text


class SizeCheckedLayer(nn.Module):
    """Base of layer modules that check their bottoms' sizes: knows its Caffe layer and reference bottoms."""

    def __init__(self, layer: LayerSpec | None = None, reference: Sequence[Sequence[int]] = ()):
        super().__init__()
        self.label(layer, reference)

    def label(self, layer: LayerSpec | None, reference: Sequence[Sequence[int]]) -> None:
        """Keep the Caffe layer's name and type, and its bottoms at the reference size, as data."""
        self.caffe_layer = str(layer.name) if layer is not None else "?"
        self.caffe_type = str(layer.type) if layer is not None else "?"
        self.reference_shapes = [tuple(int(d) for d in s) for s in reference]

    def refuse(self, bottoms: Sequence[Sequence[int]], reason: str) -> ShapeError:
        got = ", ".join(shape_text(s) for s in bottoms)
        ref = ", ".join(shape_text(s) for s in self.reference_shapes) or "?"
        return ShapeError(f"layer {safe_text(self.caffe_layer)!r} ({safe_text(self.caffe_type)}) cannot take "
                          f"bottom {got} (it was built for {ref}): {reason}")

    def check(self, bottoms: Sequence[Sequence[int]], condition, reason: Callable[[], str]) -> None:
        """Raise `refuse` when `condition` is False; skipped when it is symbolic (tracing)."""
        if isinstance(condition, bool) and not condition:
            raise self.refuse(bottoms, reason())

    def geometry(self, bottoms: Sequence[Sequence[int]], compute: Callable[[], object]):
        """Run a geometry computation, turning its GeometryError into `refuse`."""
        try:
            return compute()
        except GeometryError as exc:
            raise self.refuse(bottoms, str(exc)) from None


def static_shape(shape) -> bool:
    return is_static(*shape)
