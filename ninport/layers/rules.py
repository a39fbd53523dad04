"""What every shape rule uses: the bottom-count and rank checks, the broadcast check, the readers of
fields a fork added (typed when ninport's schema knows them, else from the layer's unknown fields), and the
plausibility limits. Torch-free: `inspect` and the builder's size guard both run the rules."""
from __future__ import annotations

from ninport.caffe.geometry import INT32_MAX, canonical_axis, fail
from ninport.caffe.spec import LayerSpec
from ninport.errors import safe_text, shape_text
from ninport.registry import LayerShapes, Shape, layer_param

# A single blob (activation or weight) above this many elements is refused as implausible.
MAX_BLOB_ELEMENTS = 2 ** 31 - 1
# All weights together above this many elements (4 GiB of float32, 7x VGG16) are refused.
MAX_TOTAL_PARAMS = 2 ** 30
# All activations and converter intermediates of one forward pass at the reference input size above this
# many elements (16 GiB of float32) are refused.
MAX_TOTAL_ACTIVATIONS = 2 ** 32


def one_bottom(layer: LayerSpec, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        fail(f"expects 1 bottom, got {len(shapes)}")
    return shapes[0]


def same_as_bottom(layer: LayerSpec, shapes: list[Shape]) -> LayerShapes:
    return LayerShapes(tops=[one_bottom(layer, shapes)])


def spatial_4d(layer: LayerSpec, shape: Shape) -> Shape:
    if len(shape) != 4:
        fail(f"expects a 4-D (N, C, H, W) bottom, got shape {shape_text(shape)}")
    return shape


def check_broadcast(shape: Shape, other: Shape, axis: int):
    axis = canonical_axis(axis, len(shape))
    if shape[axis:axis + len(other)] != tuple(other):
        fail(f"second bottom {shape_text(other)} does not match bottom {shape_text(shape)} at axis {axis}")


def fork_int(layer: LayerSpec, path: str, default: int | None = None) -> int | None:
    """An integer parameter (typed or unknown field), checked to be an int32; `default` if absent."""
    value = layer_param(layer, path)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{path} must be an integer, got {safe_text(repr(value), 40)}")
    if not -INT32_MAX - 1 <= value <= INT32_MAX:
        fail(f"{path} {value} is out of Caffe's int32 range")
    return value


def fork_float(layer: LayerSpec, path: str, default: float) -> float:
    value = layer_param(layer, path)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{path} must be a number, got {safe_text(repr(value), 40)}")
    return float(value)


def fork_name(layer: LayerSpec, path: str, default: str) -> str:
    """An enum parameter by its name ("INFERENCE"); a number stays as its text."""
    value = layer_param(layer, path)
    return default if value is None else str(value)


def check_unknown_fields(layer: LayerSpec, *messages: str) -> None:
    """Refuse unknown fields outside the fork messages this type reads: silently ignoring a field
    could compute something other than the fork did."""
    stray = sorted(key for key in (getattr(layer, "unknown_fields", None) or {})
                   if key.split(".")[0] not in messages)
    if stray:
        fail(f"fields this layer type does not read: {', '.join(safe_text(k, 60) for k in stray[:10])}")
