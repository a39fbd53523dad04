"""The public Python API: load a Caffe net as a torch module, and check what callers pass in.

Arguments are checked here, before any file is read, so a wrong type is a NinportError naming the
argument (`ninport.load(123)`), never a TypeError from deep inside protobuf or numpy.
"""
from __future__ import annotations

import numbers
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ninport.build.description import Phase
from ninport.build.shapes import infer_shapes
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.spec import NetSpec, load_netspec
from ninport.caffe.weights import attach_weights, random_weights, unreachable_layers
from ninport.errors import NinportError, ShapeError, safe_text

if TYPE_CHECKING:  # torch is imported by load() only, so reading and inspecting nets stays light
    from torch import fx

PathLike = str | os.PathLike
Shape = tuple[int, ...]
# One shape (the first input's), "1,3,227,227" text, or {input name: shape}; None keeps the net's own.
InputShape = str | Sequence[int] | Mapping[str, str | Sequence[int]] | None


def check_path(value: Any, argument: str, *, optional: bool = False) -> Path | None:
    """`value` as a Path, or NinportError naming `argument` when it is not a str / os.PathLike."""
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return Path(text)
    raise NinportError(f"{argument} must be a file path (str or os.PathLike), got "
                       f"{'an empty string' if value == '' else type(value).__name__}")


def check_int(value: Any, argument: str, *, minimum: int | None = None) -> int:
    """An integer argument (a bool or a float is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NinportError(f"{argument} must be an integer, got {type(value).__name__} {safe_text(repr(value), 40)}")
    if minimum is not None and value < minimum:
        raise NinportError(f"{argument} must be at least {minimum}, got {value}")
    return int(value)


def parse_input_shape(text: str | Sequence[int]) -> Shape:
    """'1,3,227,227' / '1x3x227x227' (or a sequence of integers) -> (1, 3, 227, 227).

    Every dimension must be a positive integer: a float such as 2.5 is an error, never truncated.
    """
    if isinstance(text, str):
        try:
            dims = tuple(int(part) for part in re.split(r"[,x]", text))  # int() allows the spaces around
        except ValueError:
            raise ShapeError(f"input shape {safe_text(repr(text), 60)}: expected comma-separated integers "
                             "like 1,3,224,224") from None
    elif isinstance(text, Sequence) or _is_array(text):
        dims = tuple(text)
        bad = next((d for d in dims if isinstance(d, bool) or not isinstance(d, numbers.Integral)), None)
        if bad is not None:
            raise ShapeError(f"input shape {safe_text(repr(text), 60)}: dimensions must be integers, got "
                             f"{type(bad).__name__} {safe_text(repr(bad), 20)}")
        dims = tuple(int(d) for d in dims)
    else:
        raise ShapeError(f"input_shape must be a string like '1,3,224,224', a sequence of integers or a dict "
                         f"per input name, got {type(text).__name__}")
    if not dims or any(d <= 0 for d in dims):
        raise ShapeError(f"input shape {safe_text(repr(text), 60)}: every dimension must be a positive integer")
    return dims


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "tolist") and getattr(value, "ndim", None) == 1


def input_shapes_for(spec: NetSpec, input_shape: InputShape) -> dict[str, Shape]:
    """Per-input shapes from what a caller gave: a shape or "1,3,227,227" (the first input), or a dict
    {input: shape}."""
    first = next(iter(spec.inputs))
    if isinstance(input_shape, Mapping):
        shapes = {}
        for name, shape in input_shape.items():
            if not isinstance(name, str):
                raise ShapeError(f"input_shape: keys must be input names (str), got {type(name).__name__}")
            shapes[name] = parse_input_shape(shape)
        return shapes
    return {first: parse_input_shape(input_shape)}


def load_spec(prototxt: PathLike, input_shape: InputShape = None, dialect: str | None = None) -> NetSpec:
    """The deploy NetSpec of a prototxt, with `input_shape` (see `input_shapes_for`) applied, read in
    `dialect` (see `load`)."""
    spec = load_netspec(check_path(prototxt, "prototxt"), dialect=dialect)
    if input_shape is not None:
        spec = spec.with_input_shapes(input_shapes_for(spec, input_shape))
    return spec


def check_net_files(prototxt: PathLike, weights: PathLike | None = None, input_shape: InputShape = None,
                    dialect: str | None = None) -> NetSpec:
    """What can be checked about a net's files before anything slow, checked: the prototxt parses, the
    weights, if given, are a regular file (read later: reading a caffemodel takes seconds), both without
    torch, so a typo fails in milliseconds; then its shapes infer (at `input_shape`), which loads the layer
    families and torch with them. Commands call it first."""
    from ninport.fileio import check_regular_file

    spec = load_spec(prototxt, input_shape, dialect)
    if weights is not None:
        check_regular_file(check_path(weights, "weights"), "caffemodel")
    infer_shapes(spec)
    return spec


def load(prototxt: PathLike, weights: PathLike | None = None, *, input_shape: InputShape = None, seed: int = 0,
         phase: Phase = "TEST", freeze: bool = False, dialect: str | None = None) -> fx.GraphModule:
    """Convert a Caffe net to a torch.fx.GraphModule (in eval mode for the TEST phase).

    `input_shape` (N, C, H, W, or a "1,3,227,227" string, or a dict per input name) overrides the
    net's own input size. Without `weights` the parameters are seeded random and a warning says so.
    Call the module with the input tensors in the net's input order; it returns the output blob,
    or a tuple in Caffe's output order (sorted by blob name) when there are several.

    The parameters are trainable (`freeze=True` turns their gradients off). `phase="TRAIN"` builds the
    TRAIN net of a train_val prototxt in train mode: its data layer's other tops (the labels) become
    inputs and its loss and Accuracy layers are kept, with Caffe's semantics.

    `dialect` reads the net as a Caffe fork that gave standard types other semantics: `"hed"` gives
    `Crop` the semantics of HED's Caffe (s9xie/hed). Without it every type is BVLC Caffe's (or a
    fork's type BVLC lacks). `ninport.registry.dialects()` lists the dialects; plugins can add some.
    """
    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    seed = check_int(seed, "seed", minimum=0)
    from ninport.build.graph import build_graph_module, warn_random_weights

    if phase not in ("TEST", "TRAIN"):
        raise NinportError(f"phase {phase!r}: choose TEST or TRAIN")
    if phase == "TEST":
        spec = load_spec(prototxt, input_shape, dialect)
    else:
        spec = _train_spec(prototxt, input_shape, dialect)
    table = infer_shapes(spec)
    if weights is None:
        blobs = random_weights(table, spec, seed)
        if blobs:
            warn_random_weights(str(prototxt))
    else:
        blobs = attach_weights(spec, table, io.read_caffemodel(weights), str(weights))
        # a layer repeating an earlier layer's name gets no caffemodel weights (attach_weights warned)
        blobs.update(random_weights(table, spec, seed, only={layer.key for layer in unreachable_layers(spec, table)}))
    module = build_graph_module(spec, blobs, table, weights_source=str(weights) if weights is not None else None,
                                phase=phase)
    if freeze:
        module.requires_grad_(False)
    if phase == "TRAIN":
        module.train()
    return module


def _train_spec(prototxt: PathLike, input_shape: InputShape, dialect: str | None = None) -> NetSpec:
    """The TRAIN NetSpec; a label input follows the batch size given for the first input."""
    spec = load_netspec(prototxt, phase=pb2.TRAIN, dialect=dialect)
    if input_shape is None:
        return spec
    shapes = input_shapes_for(spec, input_shape)
    batch = shapes[next(iter(spec.inputs))][0] if next(iter(spec.inputs)) in shapes else None
    for name, shape in spec.inputs.items():
        if name not in shapes and len(shape) == 1 and batch is not None:
            shapes[name] = (batch,)
    return spec.with_input_shapes(shapes)


def default_weights_path(prototxt: PathLike) -> Path | None:
    """`<stem>.caffemodel` beside the prototxt, if it exists."""
    candidate = Path(prototxt).with_suffix(".caffemodel")
    return candidate if candidate.is_file() else None
