"""Loading a user's plugin file: their own Python code that teaches ninport layer types.

A plugin file is code the user chose to run (`ninport convert --plugin my_layers.py`), so it is
imported as a module; model files never are. It registers types with `ninport.register_layer` (and
Python layers with `ninport.register_python_layer`).
Whatever goes wrong in it (a syntax error, an exception at import, a type already known, a shape
rule or module that fails later) is reported as one NinportError naming the plugin (and, once a
net is read, the layer), never as a raw traceback; a plugin that failed to import leaves no
registration behind.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from ninport import registry
from ninport.errors import (
    NinportError,
    one_line,
    safe_text,
)

_LOADED: dict[Path, list[tuple[str, str]]] = {}  # plugin file -> the LayerType.keys it added


def load_plugins(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Load every plugin file in `paths`; returns the layer types they registered."""
    names: list[str] = []
    for path in paths:
        names.extend(load_plugin(path))
    return names


def load_plugin(path: str | os.PathLike) -> list[str]:
    """Import the plugin file at `path` once per process; returns the layer types it registered."""
    path = Path(path)
    if not path.is_file():
        raise NinportError(f"plugin {safe_text(path)}: no such file")
    if path.suffix != ".py":
        raise NinportError(f"plugin {safe_text(path)}: expected a Python file (.py)")
    key = path.resolve()
    if key in _LOADED and all(registry.find_record(k) is not None for k in _LOADED[key]):
        return [name for _, name in _LOADED[key]]
    before = {record.key: record for record in registry.all_layer_types()}
    digest = hashlib.sha256(str(key).encode()).hexdigest()[:12]
    module_name = f"ninport_plugin_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, key)
    if spec is None or spec.loader is None:
        raise NinportError(f"plugin {safe_text(path)}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        _restore(before)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise NinportError(f"plugin {safe_text(path)}: {_where_in(exc, key)}{_describe(exc)}") from exc
    added = [record.key for record in registry.all_layer_types() if before.get(record.key) is not record]
    if not added:
        sys.modules.pop(module_name, None)
        raise NinportError(f"plugin {safe_text(path)}: registers no layer type (call ninport.register_layer "
                           "or ninport.register_python_layer in it)")
    for record_key in added:  # name the file in every message about these types
        record = registry.find_record(record_key)
        if record.origin == "plugin":
            registry.add_record(registry.with_origin(record, f"plugin {path.name}"), replace=True)
    _LOADED[key] = added
    return [name for _, name in added]


def _restore(before: dict) -> None:
    """Undo the registrations of a plugin that failed halfway."""
    for record in registry.all_layer_types():
        if before.get(record.key) is not record and record.python_layer is not None:
            registry.unregister_python_layer(*record.python_layer)
        elif before.get(record.key) is not record:
            registry.unregister_layer(record.name, record.dialect)
    for record_key, record in before.items():
        if registry.find_record(record_key) is not record:
            registry.add_record(record, replace=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NinportError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}"
    return f"importing it failed: {one_line(exc)}"


def _where_in(exc: BaseException, path: Path) -> str:
    """'line N: ' of the deepest frame in the plugin file, if any."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"line {exc.lineno}: "
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if Path(frame.filename) == path]
    return f"line {lines[-1]}: " if lines else ""
