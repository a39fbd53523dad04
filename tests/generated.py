"""A module's generated .py twin (ninport.export.codegen), so layer tests can check the fx module and the file."""
from __future__ import annotations

import importlib.util
import itertools
import tempfile
from pathlib import Path

from torch import nn

from ninport.export.codegen import write_python

_NAMES = itertools.count()


def generated_twin(module: nn.Module) -> nn.Module:
    """The module written as a .py file plus its safetensors, imported, and built by the file's own
    `load()`; in the module's train/eval mode."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_python(module, Path(folder) / "net.py")
        spec = importlib.util.spec_from_file_location(f"ninport_generated_{next(_NAMES)}", path)
        code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(code)
        twin = code.load()
    return twin.train(module.training)
