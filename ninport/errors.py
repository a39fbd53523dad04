"""One exception family, so callers (and the CLI) can tell bad input from bugs.

Messages carry text from model files (layer and blob names, field values) that strangers wrote. Every
message is made safe where the exception is created: control characters (newline, carriage return,
ESC, bidi overrides, ...) are shown escaped, never acted on by a terminal, and an overlong message is
cut in the middle, so an error stays one readable line whatever the file holds. `escape_unsafe` is the
one escaping function: every display of file text (messages, `inspect`, comments of generated files)
goes through it, via `safe_text` or `safe_message`.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

# The Unicode categories never shown raw: controls (Cc: newline, ESC, DEL, C1), format characters (Cf: bidi
# marks and overrides such as U+061C and U+202E, zero-width characters, U+2060-2064, tags U+E0000-E007F),
# line and paragraph separators (Zl, Zp: U+2028/2029 end a line in editors), private use (Co), unassigned
# code points (Cn) and lone surrogates (Cs, which cannot even be written as UTF-8).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"})
_BEYOND_PRINTABLE_ASCII = re.compile("[^\x20-\x7e]+")
MAX_MESSAGE_CHARS = 2000


def _escape_char(char: str) -> str:
    code = ord(char)
    if code in (0x0A, 0x0D, 0x09):
        return {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}[code]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape_run(match: re.Match) -> str:
    return "".join(_escape_char(c) if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in match.group())


def escape_unsafe(text: str) -> str:
    """`text` with every character of an UNSAFE_CATEGORIES category written as a Python escape (\\x1b,
    \\u2028, \\U000e0041); other text, accented and CJK letters included, unchanged. The result is made of
    safe characters only, so escaping it again changes nothing."""
    if text.isprintable():  # no Cc, Cf, Cs, Co, Cn, Zl, Zp (nor Zs besides the space): the common case, fast
        return text
    return _BEYOND_PRINTABLE_ASCII.sub(_escape_run, text)


def safe_text(text: object, limit: int = 200) -> str:
    """`text` with unsafe characters escaped (`escape_unsafe`), cut to `limit` characters: safe to print or log."""
    value = escape_unsafe(str(text))
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
    value = escape_unsafe(str(text))
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


class MemoryLimitError(NinportError):
    """The work would need more memory than the limit (ninport.memory: NINPORT_MEMORY_LIMIT, else the
    memory available), estimated before anything was allocated."""


class NinportWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. random weights). Its message is made
    safe on construction, as an error's is: Python shows library warnings on stderr as they are."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(safe_message(str(message)), *args)


def one_line(exc: BaseException) -> str:
    """An unexpected exception as 'Type: first line', for messages that must stay on one line."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
