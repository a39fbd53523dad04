"""What tests/test_memory.py's peak-RSS checks run in a child process (`tests/peak_rss.py`), on a folder holding
`net.prototxt` and `weights.caffemodel`. Importing this module imports everything `convert` uses (torch, its
exporter, onnxruntime, safetensors), so that the growth measured is the conversion's own memory, not code."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime  # noqa: F401
import safetensors.torch  # noqa: F401
import torch.export  # noqa: F401
import torch.onnx  # noqa: F401

import ninport
from ninport.check import onnx_session, selfcheck  # noqa: F401
from ninport.export import artifacts, conversion  # noqa: F401

try:  # the dynamo exporter's own modules, which torch.onnx imports on first use (a private path: best effort)
    from torch.onnx._internal.exporter import _core  # noqa: F401
except ImportError:
    pass

FORMATS = ("onnx", "safetensors")


def convert_folder(folder: str) -> None:
    """`ninport convert` of the folder's net to ONNX and safetensors, self-check on; raises if a check fails."""
    folder_path = Path(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ninport.NinportWarning)
        result = ninport.convert_files(folder_path / "net.prototxt", folder_path / "weights.caffemodel",
                                       folder_path / "out", formats=FORMATS)
    if not result.passed or set(result.checks) != set(FORMATS):
        raise RuntimeError(f"the self-check did not pass: {result.checks}")


def load_folder(folder: str) -> None:
    """`ninport.load` of the folder's net and weights."""
    module = ninport.load(Path(folder) / "net.prototxt", Path(folder) / "weights.caffemodel")
    assert sum(p.numel() for p in module.parameters()) > 0
