"""The public Python API: load a Caffe net as a torch module."""
from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from ninport.caffe import io
from ninport.caffe.shapes import infer_shapes
from ninport.caffe.spec import NetSpec, check_unknown_fields, load_netspec
from ninport.caffe.weights import attach_weights, random_weights
from ninport.errors import ShapeError

if TYPE_CHECKING:  # torch is imported by load() only, so reading and inspecting nets stays light
    from torch import fx


def parse_input_shape(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'1,3,227,227' (or a tuple) -> (1, 3, 227, 227), refusing non-positive values."""
    if isinstance(text, str):
        try:
            dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
        except ValueError:
            raise ShapeError(f"input shape {text!r}: expected comma-separated integers like 1,3,224,224") from None
    else:
        dims = tuple(int(d) for d in text)
    if not dims or any(d <= 0 for d in dims):
        raise ShapeError(f"input shape {text!r}: every dimension must be a positive integer")
    return dims


def input_shapes_for(spec: NetSpec, input_shape) -> dict[str, tuple[int, ...]]:
    """Per-input shapes from what a caller gave: a shape or "1,3,227,227" (the first input), a dict
    {input: shape}, or a list of "name=1,3,227,227" / "1,3,227,227" strings (the CLI's repeated flag)."""
    first = next(iter(spec.inputs))
    if isinstance(input_shape, dict):
        return {name: parse_input_shape(shape) for name, shape in input_shape.items()}
    if isinstance(input_shape, list) and input_shape and all(isinstance(v, str) for v in input_shape):
        shapes: dict[str, tuple[int, ...]] = {}
        for item in input_shape:
            name, _, dims = item.rpartition("=")
            shapes[name.strip() or first] = parse_input_shape(dims)
        return shapes
    return {first: parse_input_shape(input_shape)}


def load_spec(prototxt: str | os.PathLike, input_shape=None) -> NetSpec:
    """The deploy NetSpec of a prototxt, with `input_shape` (see `input_shapes_for`) applied."""
    spec = load_netspec(prototxt)
    if input_shape is not None:
        spec = spec.with_input_shapes(input_shapes_for(spec, input_shape))
    return spec


def load(prototxt: str | os.PathLike, weights: str | os.PathLike | None = None, *,
         input_shape=None, seed: int = 0) -> "fx.GraphModule":
    """Convert a Caffe net to a torch.fx.GraphModule in eval mode.

    `input_shape` (N, C, H, W, or a "1,3,227,227" string, or a dict per input name) overrides the
    net's own input size. Without `weights` the parameters are seeded random and a warning says so.
    Call the module with the input tensors in the net's input order; it returns the output blob,
    or a tuple in Caffe's output order (sorted by blob name) when there are several.
    """
    from ninport.convert.graph import build_graph_module, warn_random_weights

    spec = load_spec(prototxt, input_shape)
    check_unknown_fields(spec, accepts=_reads_unknown_fields)
    table = infer_shapes(spec)
    if weights is None:
        blobs = random_weights(table, spec, seed)
        if blobs:
            warn_random_weights(str(prototxt))
    else:
        blobs = attach_weights(spec, table, io.read_caffemodel(weights), str(weights))
    return build_graph_module(spec, blobs, table, weights_source=str(weights) if weights is not None else None)


def _reads_unknown_fields(layer) -> bool:
    """Whether the layer's registered type interprets fields caffe.proto does not define."""
    from ninport.registry import layer_type

    record = layer_type(layer.type)
    return record is not None and record.reads_unknown_fields


def default_weights_path(prototxt: str | os.PathLike) -> Path | None:
    """`<stem>.caffemodel` beside the prototxt, if it exists."""
    candidate = Path(prototxt).with_suffix(".caffemodel")
    return candidate if candidate.is_file() else None
