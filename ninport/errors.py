"""One exception family, so callers (and the CLI) can tell bad input from bugs.

Messages carry text from model files (layer and blob names, field values) that strangers wrote. Every
message is made safe where the exception is created: control characters (newline, carriage return,
ESC, bidi overrides, ...) are shown escaped, never acted on by a terminal, and an overlong message is
cut in the middle, so an error stays one readable line whatever the file holds.
"""
from __future__ import annotations

import re
from typing import Iterable

# C0/C1 controls, DEL, and Unicode format characters that reorder or hide text (bidi, zero width).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
MAX_MESSAGE_CHARS = 2000


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(code) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_text(text: object, limit: int = 200) -> str:
    """`text` with control characters escaped, cut to `limit` characters: safe to print or log."""
    value = _UNSAFE.sub(_escape, str(text))
    if len(value) > limit:
        keep = max(limit - 40, 10)
        value = f"{value[:keep]}...({len(value) - keep:,} more characters)"
    return value


def shape_text(shape: Iterable[int], limit: int = 8) -> str:
    """A shape as [1, 3, 224, 224]; a shape with implausibly many axes is abbreviated."""
    dims = list(shape)
    if len(dims) <= limit:
        return "[" + ", ".join(str(int(d)) for d in dims) + "]"
    return "[" + ", ".join(str(int(d)) for d in dims[:limit]) + f", ... ({len(dims):,} axes)]"


def counted(n: int, noun: str) -> str:
    """`1 blob`, `2 blobs`, `1,234 layers`: a count with its noun in the right number."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def safe_message(text: str) -> str:
    """A whole error message made safe: escaped, and cut in the middle past MAX_MESSAGE_CHARS."""
    value = _UNSAFE.sub(_escape, str(text))
    if len(value) > MAX_MESSAGE_CHARS:
        head, tail = value[: MAX_MESSAGE_CHARS - 300], value[-250:]
        value = f"{head} ...({len(value) - len(head) - len(tail):,} characters cut)... {tail}"
    return value


class NinportError(Exception):
    """Base of every error ninport raises on purpose: bad input, unsupported feature, failed export.

    The message is one line that names the file and, where known, the layer and line:column; it is
    made safe on construction (see `safe_message`).
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(safe_message(str(message)), *args)


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
