"""A module's state dict as a safetensors file (keys like `conv1.weight`), with the Caffe layer names in
its metadata; the weights of the `.py` export and a format of their own."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from torch import fx

from ninport.build.description import NetDescription
from ninport.errors import ExportError, one_line
from ninport.fileio import write_atomic


def write_safetensors(module: fx.GraphModule, path: str | os.PathLike) -> Path:
    """The module's state dict (keys like `conv1.weight`) as a safetensors file, atomically."""
    return write_atomic(path, safetensors_writer(module, path), "writing safetensors")


def safetensors_writer(module: fx.GraphModule, path: str | os.PathLike) -> Callable[[Path], None]:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(f"{path}: writing safetensors needs the `safetensors` package "
                          "(pip install safetensors)") from None
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
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
