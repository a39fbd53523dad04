"""Caffe's `type: "Python"` layer: a layer whose code lives outside the Caffe files.

Caffe imports `python_param.module` and runs its class `python_param.layer`, configured by the text
`python_param.param_str`. ninport runs no such code: a Python layer is computed by the record registered for
its module/layer pair (`ninport.register_python_layer`; py-faster-rcnn's `rpn.proposal_layer.ProposalLayer`
is built in, `ninport.layers.proposal`), and any other Python layer is refused, naming its module and layer.
The record of the type "Python" below hands each layer to its pair's record: shape rule, counts, converter,
settings, statistics and ONNX translations.

`param_str` is data: `python_params` parses it as a literal dictionary (the YAML flow form py-faster-rcnn's
layers give `yaml.load`), with `ast.literal_eval` on each value and nothing else, and refuses anything else.
"""
from __future__ import annotations

import ast
import re
from typing import Any

from ninport.caffe.geometry import fail
from ninport.errors import NinportError, UnsupportedLayerError, safe_text
from ninport.registry import LayerType, builtin_layer, python_layer_record, python_layer_records

ORIGIN = "BVLC Caffe's Python layer (python_param), computed by the record of its module and layer"
MAX_PARAM_STR_CHARS = 10_000


def python_pair(layer) -> tuple[str, str]:
    """(module, layer) of a Python layer's python_param."""
    p = layer.proto.python_param
    return p.module, p.layer


def _record(layer) -> LayerType:
    """The record computing this Python layer; UnsupportedLayerError naming its module and layer if none."""
    module, name = python_pair(layer)
    record = python_layer_record(module, name)
    if record is None:
        raise UnsupportedLayerError(
            f"a Python layer runs code that is not in the Caffe files ({safe_text(module or '?', 100)}."
            f"{safe_text(name or '?', 100)}); replace it with standard layers, or register a converter for it "
            "(ninport.register_python_layer)")
    return record


def _known(layer) -> LayerType | None:
    module, name = python_pair(layer)
    return python_layer_record(module, name)


def _bound(which: str):
    """A count bound of the Python layer: its pair's record's (none for an unknown pair: the rule refuses it)."""

    def bound(layer) -> int | None:
        record = _known(layer)
        if record is None:
            return None
        value = getattr(record.counts, which)
        return value(layer) if callable(value) else value
    return bound


def _settings(layer) -> str:
    record = _known(layer)
    module, name = python_pair(layer)
    own = record.settings_text(layer) if record is not None else ""
    return f"{safe_text(module, 60)}.{safe_text(name, 40)}" + (f", {own}" if own else "")


def _statistics(layer) -> tuple[int, ...]:
    record = _known(layer)
    return record.statistics_blobs(layer) if record is not None else ()


@builtin_layer("Python", converter="python_layer:convert", bottoms=(_bound("min_bottoms"), _bound("max_bottoms")),
               tops=(_bound("min_tops"), _bound("max_tops")), origin=ORIGIN, settings=_settings,
               statistics=_statistics, onnx_translations="python_layer:onnx_translations")
def _python(layer, shapes):
    record = _record(layer)
    if not callable(record.converter):
        return record.shapes(layer, shapes)
    try:
        return record.shapes(layer, shapes)
    except NinportError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's shape rule failed: name it, not a traceback
        fail(f"the shape rule of {record.origin} ({safe_text(' '.join(python_pair(layer)), 100)}) failed: "
             f"{type(exc).__name__}: {safe_text(str(exc))}")


def convert(ctx):
    """The module of the record registered for the layer's module/layer pair."""
    record = _record(ctx.layer)
    function = record.convert_function()
    if not callable(record.converter):
        return function(ctx)
    try:
        return function(ctx)
    except NinportError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's converter failed: name the plugin, not a traceback
        raise UnsupportedLayerError(f"the {record.origin} converter failed: {type(exc).__name__}: "
                                    f"{safe_text(str(exc))}") from exc


def onnx_translations() -> dict:
    """Every registered Python layer's translations (the ONNX exporter gets them by type name, "Python")."""
    table: dict = {}
    for record in python_layer_records():
        table.update(record.translations())
    return table


# --- param_str -------------------------------------------------------------------------------------------

_KEY = re.compile(r"""\s*(?:'([^'\\]*)'|"([^"\\]*)"|([A-Za-z_][A-Za-z0-9_]*))\s*:(.*)\Z""", re.DOTALL)
_TUPLE_TAG = "!!python/tuple"


def parse_param_str(text: str) -> dict[str, Any]:
    """A Python layer's param_str as a dict, read as data: `'key': value` entries separated by commas or
    newlines, optionally inside one pair of braces (YAML's flow and block forms py-faster-rcnn writes:
    "'feat_stride': 16", "'feat_stride': 16 \\n'scales': !!python/tuple [4, 8, 16, 32]"). Keys are quoted
    strings or identifiers; each value is a Python literal (number, string, boolean, list or tuple of them),
    read with ast.literal_eval; YAML's `!!python/tuple` tag makes a list a tuple. ValueError says what is
    wrong with anything else."""
    if not isinstance(text, str):
        raise ValueError("param_str must be text")
    if len(text) > MAX_PARAM_STR_CHARS:
        raise ValueError(f"param_str has {len(text):,} characters, more than the {MAX_PARAM_STR_CHARS:,} ninport reads")
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise ValueError("param_str opens a brace it does not close")
        body = body[1:-1]
    result: dict[str, Any] = {}
    for entry in _entries(body):
        found = _KEY.match(entry)
        if found is None:
            raise ValueError(f"param_str entry {safe_text(entry.strip(), 60)!r} is not 'key: value'")
        key = next(group for group in found.groups()[:3] if group is not None)
        if key in result:
            raise ValueError(f"param_str gives {safe_text(key, 40)!r} twice")
        result[key] = _value(found.group(4).strip(), key)
    return result


def _entries(body: str) -> list[str]:
    """The body split at commas and newlines outside brackets and quotes; blank entries dropped."""
    entries, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(body):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
            if depth < 0:
                raise ValueError("param_str closes a bracket it did not open")
        elif char in ",\n" and depth == 0:
            entries.append(body[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError("param_str leaves a quote or a bracket open")
    entries.append(body[start:])
    return [entry for entry in entries if entry.strip()]


def _value(text: str, key: str) -> Any:
    tuple_tag = text.startswith(_TUPLE_TAG)
    if tuple_tag:
        text = text[len(_TUPLE_TAG):].strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"param_str value of {safe_text(key, 40)!r} is not a literal: "
                         f"{safe_text(text, 60)!r}") from None
    if not _plain(value):
        raise ValueError(f"param_str value of {safe_text(key, 40)!r} must be a number, string, boolean or a "
                         f"list of them, got {type(value).__name__}")
    if tuple_tag:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"param_str value of {safe_text(key, 40)!r}: !!python/tuple tags a list")
        value = tuple(value)
    return value


def _plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)) and depth < 2:
        return all(_plain(v, depth + 1) for v in value)
    return False


def python_params(layer) -> dict[str, Any]:
    """A Python layer's param_str as a dict (see `parse_param_str`), for shape rules and converters; a
    param_str it cannot read is refused naming the layer's module and layer."""
    try:
        return parse_param_str(layer.proto.python_param.param_str)
    except ValueError as exc:
        module, name = python_pair(layer)
        fail(f"{safe_text(module, 100)}.{safe_text(name, 100)}: {exc}")
