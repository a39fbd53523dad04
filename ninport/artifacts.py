"""Write a converted net as files: ONNX, a torch.export `.pt2`, a safetensors state dict.

Which to use when:
- `.onnx`: deployment in onnxruntime, TensorRT, OpenVINO, browsers; carries Caffe's preprocessing
  in its metadata.
- `.pt2` (torch.export): a self-contained PyTorch program; `torch.export.load(p).module()` runs it
  without ninport installed (batch dynamic, height and width dynamic as in the ONNX file).
- `.py`: the net as a standalone, readable PyTorch file (`ninport.codegen`), with its weights in the
  `.safetensors` file beside it (written with it).
- `.safetensors`: the weights only, keyed `<caffe layer>.<weight|bias|...>`, for fine-tuning or
  loading into your own PyTorch model (rebuild the module with `ninport.load(prototxt)`).

Every file is written to a temporary name and renamed; `convert_files` is all-or-nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import fx

from ninport.errors import ExportError, NinportError, one_line
from ninport.fileio import write_atomic
from ninport.description import NetDescription, describe
from ninport.onnx import (_dynamic_shapes, _example_inputs, batch_at_least_2, export_onnx, quiet_torch,
                          runs_at_other_sizes, size_oblivious_tracing)

FORMATS = ("onnx", "pt2", "safetensors", "py")


def write_safetensors(module: fx.GraphModule, path: str | os.PathLike) -> Path:
    """The module's state dict (keys like `conv1.weight`) as a safetensors file, atomically."""
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
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=info), "writing safetensors")


def write_pt2(module: fx.GraphModule, path: str | os.PathLike, example_inputs=None, *,
              dynamic_batch: bool = True, dynamic_size: bool | None = None) -> Path:
    """A torch.export program (`torch.export.load(path).module()` runs it without ninport), atomically.

    `dynamic_size` as in `export_onnx`: symbolic height and width when the net runs at other sizes
    (None), always (True) or never (False). The program checks the sizes torch derived (e.g. the
    smallest input the convolutions take) when called; ninport's own per-layer checks are not in it.
    """
    meta = describe(module)
    asked = dynamic_size
    if dynamic_size is None:
        dynamic_size = runs_at_other_sizes(module, meta)
    if example_inputs is None:
        example_inputs = _example_inputs(meta, dynamic_batch)
    example_inputs = tuple(example_inputs)
    if dynamic_batch:
        example_inputs = batch_at_least_2(example_inputs)
    module.eval()
    def trace(dynamic: bool):
        with quiet_torch(), torch.no_grad(), size_oblivious_tracing():
            return torch.export.export(module, example_inputs,
                                       dynamic_shapes=_dynamic_shapes(meta, dynamic_batch, dynamic))

    try:
        try:
            program = trace(bool(dynamic_size))
        except Exception:
            if not (dynamic_size and asked is None):
                raise
            program = trace(False)  # torch could not keep the sizes symbolic: fixed sizes
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: torch.export failed: {one_line(exc)}") from exc
    return write_atomic(path, lambda tmp: torch.export.save(program, tmp), "writing .pt2")


def verify_onnx(path: str | os.PathLike, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the ONNX file in onnxruntime (CPU) and return its outputs in the graph's output order."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise NinportError("verifying ONNX needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in inputs.items()}
        return [np.asarray(out) for out in session.run(None, feed)]
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NinportError(f"{path}: onnxruntime failed: {first}") from exc


def convert_files(prototxt: str | os.PathLike, weights: str | os.PathLike | None = None,
                  out_dir: str | os.PathLike = ".", *, input_shape=None,
                  formats: Iterable[str] = ("onnx",),
                  progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Load a Caffe net and write `<out_dir>/<prototxt stem>.<format>` for each format.

    `weights=None` uses `<stem>.caffemodel` beside the prototxt when it exists, else seeded random
    weights (ninport.load warns). All-or-nothing: see `write_outputs`.
    """
    import ninport
    from ninport.api import default_weights_path

    formats = check_formats(formats)
    prototxt = Path(prototxt)
    if weights is None:
        weights = default_weights_path(prototxt)
    say = progress or (lambda message: None)
    say(f"loading {prototxt}" + (f" with {weights}" if weights else ""))
    module = ninport.load(prototxt, weights, input_shape=input_shape)
    return write_outputs(module, out_dir, prototxt.stem, formats, progress=say)


def check_formats(formats: Iterable[str]) -> list[str]:
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if not formats:
        raise ExportError(f"no output format given; choose from {', '.join(FORMATS)}")
    return formats


def write_outputs(module: fx.GraphModule, out_dir: str | os.PathLike, stem: str, formats: Iterable[str],
                  progress: Callable[[str], None] | None = None, dynamic_size: bool | None = None) -> dict[str, Path]:
    """Write `<out_dir>/<stem>.<format>` for each format, all or nothing.

    Files go to staging names first and replace their targets only once every one is complete;
    on failure the staging files are removed (and `out_dir`, if this call created it), so the
    folder is left as it was, and the error propagates.
    """
    formats = check_formats(formats)
    if "py" in formats and "safetensors" not in formats:  # the .py file loads its weights from there
        formats.append("safetensors")
    say = progress or (lambda message: None)
    out = Path(out_dir)
    created: list[Path] = []
    parent = out
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    staged: dict[str, tuple[Path, Path]] = {}  # format -> (staging file, final target)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            target = out / f"{stem}.{fmt}"
            staging = out / f".{stem}.{fmt}.staging-{os.getpid()}"
            staged[fmt] = (staging, target)
            say(f"writing {target}")
            try:
                if fmt == "onnx":
                    export_onnx(module, staging, dynamic_size=dynamic_size)
                elif fmt == "pt2":
                    write_pt2(module, staging, dynamic_size=dynamic_size)
                elif fmt == "py":
                    from ninport.codegen import write_python
                    write_python(module, staging, weights=False)
                else:
                    write_safetensors(module, staging)
            except ExportError as exc:  # name the file the user asked for, not the staging file
                raise ExportError(str(exc).replace(str(staging), str(target))) from exc.__cause__
        # Every file is complete: only now do they replace what the folder held.
        for staging, target in staged.values():
            os.replace(staging, target)
    except BaseException as exc:
        for staging, _ in staged.values():
            try:
                staging.unlink()
            except OSError:
                pass
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise ExportError(f"{out}: writing outputs failed: {exc}") from exc
        raise
    return {fmt: target for fmt, (_, target) in staged.items()}
