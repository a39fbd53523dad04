"""The output formats `convert` writes and the packages each needs; torch-free, so the CLI checks them
before anything slow loads."""
from __future__ import annotations

from collections.abc import Iterable

from ninport.errors import ExportError

FORMATS = ("onnx", "pt2", "safetensors", "py")
# Output formats -> the package each needs beyond ninport's core dependencies (.py loads a .safetensors).
FORMAT_PACKAGES = {"safetensors": "safetensors", "py": "safetensors"}


def check_formats(formats: Iterable[str]) -> list[str]:
    """The formats asked for, each once, in order; ExportError for an unknown one or none."""
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if not formats:
        raise ExportError(f"no output format given; choose from {', '.join(FORMATS)}")
    return formats
