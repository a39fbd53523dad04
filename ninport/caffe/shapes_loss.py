"""Shape rules of the TRAIN-phase layers: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, Accuracy.

They exist only in nets loaded with `phase="TRAIN"` (a TEST net leaves them out, see
`ninport.caffe.spec.is_training_only`). Each checks what Caffe's Reshape checks, so a label blob of the
wrong size is refused before anything runs. A loss top is a scalar (a blob with no axes), as in Caffe.

Nothing here imports torch.
"""
from __future__ import annotations

import math

from ninport.caffe.shapes import canonical_axis, fail
from ninport.caffe.spec import LayerSpec
from ninport.errors import shape_text
from ninport.registry import LayerShapes, Shape, builtin_layer

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
