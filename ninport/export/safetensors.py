"""A module's state dict as a safetensors file (keys like `conv1.weight`), with the Caffe layer names in
its metadata; the weights of the `.py` export and a format of their own."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import fx

from ninport.build.description import NetDescription
from ninport.errors import ExportError, one_line
from ninport.fileio import write_atomic


def write_safetensors(module: fx.GraphModule, path: str | os.PathLike) -> Path:
    """The module's state dict (keys like `conv1.weight`) as a safetensors file, atomically."""
    return write_atomic(path, safetensors_writer(module, path), "writing safetensors")


def safetensors_writer(module: fx.GraphModule, path: str | os.PathLike) -> Callable[[Path], None]:
    """What writes the module's state dict to a staged path; the file is written from the module's own memory
    (safetensors streams each tensor from its pointer): no copy of the weights."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(f"{path}: writing safetensors needs the `safetensors` package "
                          "(pip install safetensors)") from None
    tensors = _unshared(module.state_dict())
    info = {"format": "pt", "producer": "ninport"}
    meta = getattr(module, "meta", {}).get("ninport")
    if isinstance(meta, NetDescription):
        info["source"] = Path(meta.source).name
        # the module's attribute names are identifiers made from Caffe's layer names: keep the mapping
        info["caffe_layers"] = json.dumps(meta.module_layers)

    def write(staged: Path) -> None:
        try:
            save_file(tensors, os.fspath(staged), metadata=info)
        except Exception as exc:  # safetensors reports I/O errors (a full disk) as SafetensorError
            raise ExportError(f"{path}: writing safetensors failed: {one_line(exc)}") from exc
    return write


def _unshared(state: dict[str, Any]) -> dict[str, Any]:
    """The state dict's tensors as safetensors saves them: contiguous, and no two of them sharing memory
    (safetensors refuses that; a tied weight is copied); the others are the module's own tensors, not copies."""
    seen: set[int] = set()
    tensors = {}
    for key, value in state.items():
        tensor = value.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if tensor.numel() and pointer in seen:
            tensor = tensor.clone()
        elif tensor.numel():
            seen.add(pointer)
        tensors[key] = tensor
    return tensors
