"""Refusing, at call time, an input size a Caffe layer cannot take, by the layer's own shape rule.

A converted module runs at every input size the net allows (Caffe reshapes a net to its input). The
graph builder gives each layer's module a `SizeGuard` (a forward pre-hook, so the module itself stays
plain PyTorch): when the module sees bottoms of a size it has not seen, the guard runs the layer's
torch-free shape rule on their actual shapes (`ninport.build.shapes.layer_shapes`, what `infer_shapes`
ran at the reference size) and compares the weight shapes it asks for with the weights the layer has.
A refusal is one ShapeError naming the Caffe layer, the bottoms it got and the bottoms it was built
for, with the shape rule's own reason. The answer is kept per distinct bottom shapes, so a second call
at a size costs one dictionary look-up (about 1 us with the hook call, ~1% of GoogLeNet's forward at batch 1).
A layer whose rule takes every shape (`same_as_bottom`: ReLU, Dropout, the other element-wise layers) gets
no guard at all. While torch.export (or torch.compile) traces the module nothing is checked: even looking a
symbolic size up would make the exporter specialize the dynamic dimension; nor under torch.fx's symbolic
trace (its proxies have no sizes).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.compiler import is_compiling
from torch.fx import Proxy

from ninport.build.shapes import layer_shapes, weights_mismatch
from ninport.caffe.geometry import GeometryError, is_static
from ninport.caffe.spec import LayerSpec
from ninport.errors import NinportError, ShapeError, safe_text, shape_text
from ninport.registry import LayerShapes, LayerType

MAX_REMEMBERED_SIZES = 64  # distinct bottom shapes a guard remembers before it starts over


class SizeGuard:
    """The forward pre-hook deciding, once per distinct bottom shapes, whether a layer takes them."""

    def __init__(self, record: LayerType, layer: LayerSpec, reference_bottoms: Sequence[Sequence[int]],
                 reference: LayerShapes | None):
        self.record = record
        self.layer = layer
        self.reference_bottoms = [tuple(int(d) for d in s) for s in reference_bottoms]
        self.reference = reference
        self.rule_runs = 0  # how often the shape rule ran (tests check that a size is decided once)
        self.decided: dict[tuple, str | None] = {tuple(self.reference_bottoms): None}  # shapes -> refusal or None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if is_compiling():  # torch.export / torch.compile tracing: even hashing a symbolic size specializes it
            return
        if args and isinstance(args[0], Proxy):  # torch.fx.symbolic_trace: no size to look at
            return
        try:  # a size decided before: one dictionary look-up
            key = (args[0].shape,) if len(args) == 1 else tuple(x.shape for x in args)
            reason = self.decided[key]
        except KeyError:
            reason = self.decide(key)
        except (TypeError, AttributeError, IndexError):  # an argument that is not a tensor, or none
            return
        if reason is not None:
            raise self.refusal(key, reason)

    def decide(self, key: tuple) -> str | None:
        """Run the shape rule on `key`'s bottom shapes: None when the layer takes them, else why not."""
        shapes = [tuple(s) for s in key]
        if not all(is_static(*s) for s in shapes):
            return None
        self.rule_runs += 1
        try:
            reason = weights_mismatch(layer_shapes(self.record, self.layer, shapes), self.reference)
        except (GeometryError, NinportError) as exc:
            reason = str(exc)
        if len(self.decided) >= MAX_REMEMBERED_SIZES:
            self.decided = {tuple(self.reference_bottoms): None}
        self.decided[key] = reason
        return reason

    def refusal(self, bottoms: Sequence[Sequence[int]], reason: str) -> ShapeError:
        got = ", ".join(shape_text(tuple(s)) for s in bottoms)
        ref = ", ".join(shape_text(s) for s in self.reference_bottoms) or "?"
        return ShapeError(f"layer {safe_text(self.layer.name)!r} ({safe_text(self.layer.type)}) cannot take "
                          f"bottom {got} (it was built for {ref}): {safe_text(reason, 1000)}")


def guard_sizes(module: nn.Module, guard: SizeGuard) -> nn.Module:
    """Give `module` its layer's size guard (see the module docstring); returns `module`."""
    module.register_forward_pre_hook(guard)
    return module


def size_guard(module: nn.Module) -> SizeGuard | None:
    """The size guard of a layer's module, or None."""
    return next((hook for hook in module._forward_pre_hooks.values() if isinstance(hook, SizeGuard)), None)


def carry_size_guard(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give `new` (a module replacing `old` in a graph, e.g. a fused one) the size guard of `old`."""
    guard = size_guard(old)
    return guard_sizes(new, guard) if guard is not None else new
