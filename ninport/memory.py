"""How much memory a forward pass, an export, a check or a verify will need, estimated before anything is
allocated, and a clear refusal when that is more than the machine can give.

A net can stay within every per-blob limit and still need more memory than the machine has: an input of
3.6 GB is legal, and `convert` exports it at a batch of 2 (7.2 GB of example input), then runs it in torch
and in onnxruntime. Without a check the process is killed by the kernel with no message. The estimates
here come from the net's blob shapes (float32) and its weights, with margins measured on real runs (peak
RSS of a 1-channel 4000x4000 convolution, the worst case met: im2col columns 9x its input, and of a
VGG-like net at 1024x1024, which needs about half of its estimate):

- a forward pass: 2 x the float32 bytes of the inputs and of every layer's outputs (`F`), for the
  transient buffers a layer makes (padded inputs, im2col columns, copies);
- an export (ONNX, .pt2): 2 x the example inputs (at a batch of at least 2) plus 2 x the largest weight
  tensor (the ONNX file is written from the module's own tensors, but torch.export.save copies each tensor
  twice on its way into a .pt2 file);
- the self-check after `convert`: a torch forward, an onnxruntime run and the compared outputs: 3.5F + W;
- `verify`: the forward keeping every blob, the golden blobs, and an onnxruntime or OpenCV run: 4F + W;
- `predict`: a forward at a batch of 1;
- and for convert and verify, 256 MiB for the exporter's and onnxruntime's own code and tables.

The limit is NINPORT_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix; `none` turns the check off), else the
memory available now (Linux: MemAvailable, and the cgroup's limit less its usage when one is set); where
neither is known there is no check.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

from ninport.build.description import NetDescription
from ninport.errors import MemoryLimitError

LIMIT_ENV = "NINPORT_MEMORY_LIMIT"
FLOAT_BYTES = 4
FORWARD_FACTOR = 2.0
CHECK_FACTOR = 3.5
VERIFY_FACTOR = 4.0
TOOLS_BYTES = 256 * 2 ** 20  # the ONNX exporter and onnxruntime, loaded and initialized

_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):  # absent, "max", unreadable
        return None


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, bounded by a cgroup (v2 or v1) limit less its usage."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2 ** 60:
            found.append(max(0, limit - usage))
    return min(found) if found else None


def memory_limit() -> tuple[int | None, str]:
    """(the limit in bytes or None for no check, where it comes from)."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        if text.lower() in ("none", "off", "0"):
            return None, f"{LIMIT_ENV}={text}"
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
        if not match:
            raise MemoryLimitError(f"{LIMIT_ENV}={text!r}: expected bytes, e.g. 8G or 8589934592, or none")
        return int(float(match[1]) * _UNITS[match[2].upper()]), f"the {LIMIT_ENV}={text} limit"
    available = available_bytes()
    return available, "the memory available now"


def gib(size: float) -> str:
    return f"{size / 2 ** 30:.1f} GiB" if size >= 2 ** 28 else f"{size / 2 ** 20:.0f} MiB"


def _scale(description: NetDescription, batch: int | None) -> float:
    first = next(iter(description.inputs.values()), ())
    reference = int(first[0]) if first else 1
    return 1.0 if batch is None or reference <= 0 else batch / reference


def output_bytes(description: NetDescription, batch: int | None = None) -> int:
    """`F`: float32 bytes of the inputs and of every layer's outputs (a top computed in place counted once
    per layer that writes it), at the reference shapes or scaled to `batch`."""
    elements = sum(math.prod(shape) for shape in description.inputs.values())
    for layer in description.layers:
        elements += sum(math.prod(description.blobs[top].shape) for top in layer.tops if top in description.blobs)
    return int(elements * FLOAT_BYTES * _scale(description, batch))


def weight_bytes(module: Any) -> int:
    """`W`: the bytes of the module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def export_input_bytes(description: NetDescription) -> int:
    """The example inputs an export makes: every input at a batch of at least 2."""
    return sum(math.prod((max(2, s[0]), *s[1:]) if s else s) * FLOAT_BYTES for s in description.inputs.values())


def at_input(description: NetDescription) -> str:
    """`at input data [1, 3, 224, 224]`, for the messages."""
    from ninport.errors import safe_text, shape_text

    return "at input " + ", ".join(f"{safe_text(name, 60)} {shape_text(shape)}"
                                   for name, shape in description.inputs.items())


def require(needed: float, what: str, advice: str) -> None:
    """MemoryLimitError when `needed` bytes are more than the limit (see the module docstring)."""
    limit, source = memory_limit()
    if limit is not None and needed > limit:
        raise MemoryLimitError(f"{what} needs about {gib(needed)} of memory, more than {source} "
                               f"({gib(limit)}); {advice}, or set {LIMIT_ENV} (bytes, e.g. 64G; none: no check)")


def largest_tensor_bytes(module: Any) -> int:
    """The bytes of the module's largest parameter or buffer."""
    return max((t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())), default=0)


def export_bytes(module: Any, description: NetDescription) -> float:
    """An ONNX or torch.export export: the example inputs twice, the largest weight twice, the exporter."""
    return 2 * export_input_bytes(description) + 2 * largest_tensor_bytes(module) + TOOLS_BYTES


def check_bytes(module: Any, description: NetDescription, batch: int | None = None) -> float:
    """The self-check (`ninport.check_onnx`, at `batch` if given): a torch forward, an onnxruntime run, the
    compared outputs."""
    return CHECK_FACTOR * output_bytes(description, batch) + weight_bytes(module) + TOOLS_BYTES


def convert_bytes(module: Any, description: NetDescription, *, export: bool, check: bool,
                  check_batch: int | None = None) -> float:
    """The most memory one stage of `convert` needs: the export, then the self-check (at `check_batch`)."""
    return max([0.0] + ([export_bytes(module, description)] if export else [])
               + ([check_bytes(module, description, check_batch)] if check else []))


def verify_bytes(module: Any, description: NetDescription) -> float:
    return VERIFY_FACTOR * output_bytes(description) + weight_bytes(module) + TOOLS_BYTES


def forward_bytes(description: NetDescription, batch: int | None = None) -> float:
    return FORWARD_FACTOR * output_bytes(description, batch)
