"""TRAIN-phase layers with Caffe's semantics: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, Accuracy.

A loss module returns loss_weight x Caffe's loss, so the sum of a TRAIN net's loss outputs is the
objective Caffe's solver minimises, and its gradients are Caffe's (a top's diff is its loss_weight).
With the default weight 1 the value is exactly Caffe's top blob. Labels are cast to int as Caffe's
static_cast does (truncation toward zero) and never receive gradients.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (
    canonical_axis,
    fail,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import shape_text
from ninport.registry import LayerShapes, Shape, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


SCALAR: Shape = ()


def loss_weights(layer: LayerSpec) -> list[float]:
    """Caffe's loss_weight per top: a loss layer's first top weighs 1 unless the prototxt says otherwise."""
    weights = [float(w) for w in layer.proto.loss_weight]
    if not weights and layer.type.endswith("Loss"):
        weights = [1.0]
    return weights + [0.0] * (len(layer.tops) - len(weights))


def _bottoms(layer: LayerSpec, shapes: list[Shape], count: int) -> list[Shape]:
    if len(shapes) != count:
        fail(f"expects {count} bottoms, got {len(shapes)}")
    if len(layer.tops) > len(loss_weights(layer)):
        fail(f"has {len(layer.tops)} tops but {len(layer.proto.loss_weight)} loss_weight values")
    return shapes


def _same_first_axis(a: Shape, b: Shape) -> None:
    if not a or not b or a[0] != b[0]:
        fail(f"the data and label should have the same first dimension: {shape_text(a)} vs {shape_text(b)}")


def label_layout(shape: Shape, axis: int, labels: Shape) -> tuple[int, int, int]:
    """(axis, outer, inner) for a prediction blob classified along `axis`; the label count must be outer * inner."""
    axis = canonical_axis(axis, len(shape))
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    if outer * inner != math.prod(labels):
        fail(f"the number of labels must match the number of predictions: {shape_text(shape)} classified along "
              f"axis {axis} needs {outer * inner} labels, the label blob {shape_text(labels)} has {math.prod(labels)}")
    return axis, outer, inner


# LossLayer: exactly 2 bottoms and 1 top (SoftmaxWithLoss: 1 or 2 tops). Caffe also gives a loss layer without
# a top an anonymous one (AutoTopBlobs); ninport's reader refuses a layer without a top before this.
@builtin_layer("SoftmaxWithLoss", converter="loss:softmax_with_loss", bottoms=2, tops=(1, 2))
def _softmax_with_loss(layer, shapes):
    scores, labels = _bottoms(layer, shapes, 2)
    _same_first_axis(scores, labels)
    label_layout(scores, layer.proto.softmax_param.axis, labels)
    if len(layer.tops) > 2:
        fail(f"has {len(layer.tops)} tops; SoftmaxWithLoss gives the loss and optionally the probabilities")
    if len(layer.tops) == 2 and loss_weights(layer)[1] != 0:
        fail("a loss_weight on the probability top is not supported")
    tops = [SCALAR, scores][: max(1, len(layer.tops))]
    return LayerShapes(tops=tops, macs=3 * math.prod(scores))


@builtin_layer("EuclideanLoss", converter="loss:euclidean_loss", bottoms=2, tops=1)
def _euclidean_loss(layer, shapes):
    a, b = _bottoms(layer, shapes, 2)
    _same_first_axis(a, b)
    if math.prod(a[1:]) != math.prod(b[1:]):
        fail(f"inputs must have the same dimension: {shape_text(a)} vs {shape_text(b)}")
    return LayerShapes(tops=[SCALAR], macs=2 * math.prod(a))


@builtin_layer("SigmoidCrossEntropyLoss", converter="loss:sigmoid_cross_entropy_loss", bottoms=2, tops=1)
def _sigmoid_cross_entropy_loss(layer, shapes):
    scores, targets = _bottoms(layer, shapes, 2)
    _same_first_axis(scores, targets)
    if math.prod(scores) != math.prod(targets):
        fail(f"inputs must have the same count: {shape_text(scores)} vs {shape_text(targets)}")
    return LayerShapes(tops=[SCALAR], macs=4 * math.prod(scores))


@builtin_layer("Accuracy", converter="loss:accuracy", bottoms=2, tops=(1, 2))
def _accuracy(layer, shapes):
    if len(shapes) != 2:
        fail(f"expects 2 bottoms, got {len(shapes)}")
    scores, labels = shapes
    p = layer.proto.accuracy_param
    axis, _, _ = label_layout(scores, p.axis, labels)
    if p.top_k > math.prod(scores) // math.prod(labels):
        fail(f"top_k {p.top_k} is more than the number of classes {scores[axis]}")
    if len(layer.tops) not in (1, 2):
        fail(f"has {len(layer.tops)} tops; Accuracy gives the accuracy and optionally the per-class accuracies")
    return LayerShapes(tops=[SCALAR, (scores[axis],)][: len(layer.tops)], macs=math.prod(scores))


# --- torch modules and their converters ------------------------------------------------------


FLT_MIN = float(torch.finfo(torch.float32).tiny)
NORMALIZATIONS = {pb2.LossParameter.FULL: "full", pb2.LossParameter.VALID: "valid",
                  pb2.LossParameter.BATCH_SIZE: "batch_size", pb2.LossParameter.NONE: "none"}


def loss_normalizer(mode: str, outer: int, inner: int, valid: torch.Tensor) -> torch.Tensor:
    """Caffe's LossLayer::GetNormalizer, never below 1."""
    if mode == "full":
        value = torch.tensor(float(outer * inner))
    elif mode == "valid":
        value = valid.to(torch.float32)
    elif mode == "batch_size":
        value = torch.tensor(float(outer))
    else:
        value = torch.tensor(1.0)
    return torch.clamp(value, min=1.0)


def _normalization(p, default: str) -> str:
    """Caffe's rule: `normalization` if set, else the legacy `normalize` (true: VALID, false: BATCH_SIZE)."""
    if p.HasField("normalization"):
        return NORMALIZATIONS[p.normalization]
    if p.HasField("normalize"):
        return "valid" if p.normalize else "batch_size"
    return default


def integer_labels(label: torch.Tensor, outer: int, inner: int) -> torch.Tensor:
    return label.detach().reshape(outer, inner).to(torch.int64)  # static_cast<int>: toward zero


@records_args
class SoftmaxWithLoss(nn.Module):
    """-log(max(softmax(x)[label], FLT_MIN)) summed over the non-ignored positions, / the normalizer.

    The gradient is Caffe's (softmax - one_hot) even where the FLT_MIN clamp bites: the clamp enters the
    value only.
    """

    def __init__(self, axis: int, ignore_label: int | None, normalization: str, loss_weight: float,
                 with_prob: bool):
        super().__init__()
        self.axis, self.ignore_label, self.normalization = axis, ignore_label, normalization
        self.loss_weight, self.with_prob = loss_weight, with_prob

    def extra_repr(self) -> str:
        return (f"axis={self.axis}, ignore_label={self.ignore_label}, normalization={self.normalization}, "
                f"loss_weight={self.loss_weight}")

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        channels = x.shape[self.axis]
        outer = int(math.prod(x.shape[: self.axis]))
        inner = int(math.prod(x.shape[self.axis + 1:]))
        log_prob = torch.log_softmax(x, dim=self.axis).reshape(outer, channels, inner)
        clamped = log_prob + (torch.clamp(log_prob, min=math.log(FLT_MIN)) - log_prob).detach()
        labels = integer_labels(label, outer, inner)
        valid = torch.ones_like(labels, dtype=torch.bool)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
        picked = torch.gather(clamped, 1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)
        loss = -torch.sum(torch.where(valid, picked, 0.0))
        loss = loss / loss_normalizer(self.normalization, outer, inner, valid.sum()) * self.loss_weight
        if self.with_prob:
            return loss, torch.softmax(x, dim=self.axis)
        return loss


def softmax_with_loss(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.loss_param
    axis = canonical_axis(ctx.proto.softmax_param.axis, len(ctx.bottom_shapes[0]))
    return SoftmaxWithLoss(axis, int(p.ignore_label) if p.HasField("ignore_label") else None,
                           _normalization(p, "valid"), loss_weights(ctx.layer)[0], len(ctx.layer.tops) == 2)


@records_args
class EuclideanLoss(nn.Module):
    """sum((a - b)^2) / (2 N), N the first axis; both bottoms get gradients, as in Caffe."""

    def __init__(self, loss_weight: float):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b.reshape(a.shape)
        return torch.sum(diff * diff) / a.shape[0] / 2.0 * self.loss_weight


def euclidean_loss(ctx: LayerContext) -> nn.Module:
    return EuclideanLoss(loss_weights(ctx.layer)[0])


@records_args
class SigmoidCrossEntropyLoss(nn.Module):
    """Caffe's stable cross-entropy of sigmoid(x) against targets, over non-ignored targets, / the normalizer
    (default BATCH_SIZE: the first axis); the gradient is (sigmoid(x) - target) there."""

    def __init__(self, ignore_label: int | None, normalization: str, loss_weight: float):
        super().__init__()
        self.ignore_label, self.normalization, self.loss_weight = ignore_label, normalization, loss_weight

    def extra_repr(self) -> str:
        return f"ignore_label={self.ignore_label}, normalization={self.normalization}, loss_weight={self.loss_weight}"

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        outer = x.shape[0]
        inner = x.numel() // outer if outer else 0
        target = target.detach().reshape(x.shape)
        positive = (x >= 0).to(x.dtype)
        terms = x * (target - positive) - torch.log1p(torch.exp(x - 2 * x * positive))
        valid = torch.ones_like(x, dtype=torch.bool)
        if self.ignore_label is not None:
            valid = target.to(torch.int64) != self.ignore_label
        loss = -torch.sum(torch.where(valid, terms, 0.0))
        return loss / loss_normalizer(self.normalization, outer, inner, valid.sum()) * self.loss_weight


def sigmoid_cross_entropy_loss(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.loss_param
    return SigmoidCrossEntropyLoss(int(p.ignore_label) if p.HasField("ignore_label") else None,
                                   _normalization(p, "batch_size"), loss_weights(ctx.layer)[0])


@records_args
class Accuracy(nn.Module):
    """The fraction of non-ignored positions whose label scores among the top_k (ties count against it:
    a class scoring >= the true one ranks before it), and optionally the per-class accuracies. No gradient."""

    def __init__(self, axis: int, top_k: int, ignore_label: int | None, per_class: bool):
        super().__init__()
        self.axis, self.top_k, self.ignore_label, self.per_class = axis, top_k, ignore_label, per_class

    def extra_repr(self) -> str:
        return f"axis={self.axis}, top_k={self.top_k}, ignore_label={self.ignore_label}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor, label: torch.Tensor):
        channels = x.shape[self.axis]
        outer = int(math.prod(x.shape[: self.axis]))
        inner = int(math.prod(x.shape[self.axis + 1:]))
        scores = x.reshape(outer, channels, inner)
        labels = integer_labels(label, outer, inner)
        valid = torch.ones_like(labels, dtype=torch.bool)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
        safe = torch.where(valid, labels, 0)
        true_score = torch.gather(scores, 1, safe.unsqueeze(1))
        better = torch.sum((scores >= true_score).to(torch.int64), dim=1) - 1  # the true class counts itself
        hit = (better < self.top_k) & valid
        count = valid.sum()
        accuracy = torch.where(count > 0, hit.sum().to(x.dtype) / count.clamp(min=1).to(x.dtype),
                               torch.zeros((), dtype=x.dtype))
        if not self.per_class:
            return accuracy
        ones = torch.ones_like(safe[valid], dtype=x.dtype)
        seen = torch.zeros(channels, dtype=x.dtype).index_add_(0, safe[valid], ones)
        right = torch.zeros(channels, dtype=x.dtype).index_add_(0, safe[hit], torch.ones_like(safe[hit], dtype=x.dtype))
        return accuracy, torch.where(seen > 0, right / seen.clamp(min=1), torch.zeros_like(seen))


def accuracy(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.accuracy_param
    axis = canonical_axis(p.axis, len(ctx.bottom_shapes[0]))
    return Accuracy(axis, int(p.top_k), int(p.ignore_label) if p.HasField("ignore_label") else None,
                    len(ctx.layer.tops) == 2)
