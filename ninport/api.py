"""The public Python API: load a Caffe net as a torch module."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from typing import TYPE_CHECKING

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.shapes import infer_shapes
from ninport.caffe.spec import NetSpec, load_netspec
from ninport.caffe.weights import attach_weights, random_weights
from ninport.description import attach, describe
from ninport.errors import NinportError, ShapeError

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
         input_shape=None, seed: int = 0, phase: str = "TEST", freeze: bool = False) -> "fx.GraphModule":
    """Convert a Caffe net to a torch.fx.GraphModule (in eval mode for the TEST phase).

    `input_shape` (N, C, H, W, or a "1,3,227,227" string, or a dict per input name) overrides the
    net's own input size. Without `weights` the parameters are seeded random and a warning says so.
    Call the module with the input tensors in the net's input order; it returns the output blob,
    or a tuple in Caffe's output order (sorted by blob name) when there are several.

    The parameters are trainable (`freeze=True` turns their gradients off). `phase="TRAIN"` builds the
    TRAIN net of a train_val prototxt in train mode: its data layer's other tops (the labels) become
    inputs and its loss and Accuracy layers are kept, with Caffe's semantics.
    """
    from ninport.convert.graph import build_graph_module, warn_random_weights

    if phase not in ("TEST", "TRAIN"):
        raise NinportError(f"phase {phase!r}: choose TEST or TRAIN")
    if phase == "TEST":
        spec = load_spec(prototxt, input_shape)
    else:
        spec = _train_spec(prototxt, input_shape)
    table = infer_shapes(spec)
    if weights is None:
        blobs = random_weights(table, spec, seed)
        if blobs:
            warn_random_weights(str(prototxt))
    else:
        blobs = attach_weights(spec, table, io.read_caffemodel(weights), str(weights))
    module = build_graph_module(spec, blobs, table, weights_source=str(weights) if weights is not None else None)
    if freeze:
        module.requires_grad_(False)
    if phase == "TRAIN":
        attach(module, dataclasses.replace(describe(module), phase="TRAIN"))
        module.train()
    return module


def _train_spec(prototxt: str | os.PathLike, input_shape) -> NetSpec:
    """The TRAIN NetSpec; a label input follows the batch size given for the first input."""
    spec = load_netspec(prototxt, phase=pb2.TRAIN)
    if input_shape is None:
        return spec
    shapes = input_shapes_for(spec, input_shape)
    batch = shapes[next(iter(spec.inputs))][0] if next(iter(spec.inputs)) in shapes else None
    for name, shape in spec.inputs.items():
        if name not in shapes and len(shape) == 1 and batch is not None:
            shapes[name] = (batch,)
    return spec.with_input_shapes(shapes)


def default_weights_path(prototxt: str | os.PathLike) -> Path | None:
    """`<stem>.caffemodel` beside the prototxt, if it exists."""
    candidate = Path(prototxt).with_suffix(".caffemodel")
    return candidate if candidate.is_file() else None
