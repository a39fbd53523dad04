"""One exception family, so callers (and the CLI) can tell bad input from bugs."""
from __future__ import annotations


class NinportError(Exception):
    """Base of every error ninport raises on purpose: bad input, unsupported feature, failed export.

    The message is one line that names the file and, where known, the layer and line:column.
    """


class ParseError(NinportError):
    """A prototxt or caffemodel could not be read."""


class WeightsError(NinportError):
    """A caffemodel does not fit the net (missing layer, wrong blob count or shape)."""


class UnsupportedLayerError(NinportError):
    """A layer type, or an option of a layer, that ninport cannot convert faithfully."""


class ShapeError(NinportError):
    """Shapes that Caffe itself would refuse: bad dimensions, kernels bigger than inputs, ..."""


class ExportError(NinportError):
    """Writing an output (ONNX, .pt2, safetensors) failed."""


class PreprocessError(NinportError):
    """An image or a transform_param that Caffe's DataTransformer would refuse."""


class NinportWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. random weights)."""


def one_line(exc: BaseException) -> str:
    """An unexpected exception as 'Type: first line', for messages that must stay on one line."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
