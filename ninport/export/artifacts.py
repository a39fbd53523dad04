"""Write a converted net as files: ONNX, a torch.export `.pt2`, a safetensors state dict.

Which to use when:
- `.onnx`: deployment in onnxruntime, TensorRT, OpenVINO, browsers; carries Caffe's preprocessing
  in its metadata.
- `.pt2` (torch.export): a self-contained PyTorch program; `torch.export.load(p).module()` runs it
  without ninport installed (batch dynamic, height and width dynamic as in the ONNX file).
- `.py`: the net as a standalone, readable PyTorch file (`ninport.export.codegen`), with its weights in the
  `.safetensors` file beside it (written with it).
- `.safetensors`: the weights only, keyed `<caffe layer>.<weight|bias|...>`, for fine-tuning or
  loading into your own PyTorch model (rebuild the module with `ninport.load(prototxt)`).

Every file is staged in a private folder beside its target and renamed into place; `write_outputs`
(and `convert_files`) is all-or-nothing, even when a later rename fails (see ninport.fileio).

A `.pt2` file holds no pickle: torch.export.save pickles the program's sample inputs (torch.save
format) unless there are none, so they are dropped before saving (`torch.export.load` does not need
them); the weights and constants are stored as raw bytes with a JSON index.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import fx

from ninport.build.description import describe
from ninport.errors import ExportError, NinportError, one_line
from ninport.export.codegen import write_python
from ninport.export.formats import FORMATS, check_formats  # noqa: F401 - FORMATS re-exported
from ninport.export.safetensors import safetensors_writer, write_safetensors  # noqa: F401 - re-exported
from ninport.fileio import LatchingWriter, write_atomic, write_files
from ninport.export.onnx import (
    dynamic_shapes_for,
    example_inputs_for,
    batch_at_least_2,
    evaluating,
    exporter_failure,
    input_size_for,
    onnx_model_for_file,
    quiet_torch,
    save_onnx_model,
    size_oblivious_tracing,
    strip_ansi,
    trace_with_input_size,
)



def write_pt2(module: fx.GraphModule, path: str | os.PathLike, example_inputs=None, *,
              dynamic_batch: bool = True, dynamic_size: bool | None = None) -> Path:
    """A torch.export program (`torch.export.load(path).module()` runs it without ninport), atomically.

    `dynamic_size` as in `export_onnx`: symbolic height and width when the net runs at other sizes
    (None), always (True) or never (False). The program checks the sizes torch derived (e.g. the
    smallest input the convolutions take) when called; ninport's own per-layer checks are not in it.
    The file holds no pickle (see the module docstring); a full disk is an ExportError."""
    program = export_program(module, path, example_inputs, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size)
    return write_atomic(path, lambda staged: save_pt2(program, staged), "writing .pt2")


def export_program(module: fx.GraphModule, path: str | os.PathLike, example_inputs=None, *,
                   dynamic_batch: bool = True, dynamic_size: bool | None = None) -> torch.export.ExportedProgram:
    """torch.export of `module` (training flags unchanged), its failures named after `path`.

    Height and width as `ninport.export.onnx.input_size_for` says (the same answer as the ONNX export)."""
    meta = describe(module)
    from ninport import memory

    memory.require(memory.export_bytes(module, meta), f"{path}: torch.export {memory.at_input(meta)}",
                   "export at a smaller input shape")
    given = None if example_inputs is None else tuple(example_inputs)

    def trace(dynamic: bool):
        inputs = given if given is not None else example_inputs_for(meta, dynamic_batch, dynamic)
        if dynamic_batch:
            inputs = batch_at_least_2(inputs)
        with evaluating(module), quiet_torch(), torch.no_grad(), size_oblivious_tracing():
            return torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes_for(meta, dynamic_batch, dynamic))

    try:
        size = input_size_for(meta, dynamic_size)
        program, _ = trace_with_input_size(trace, size, dynamic_size, str(path))
    except ExportError as exc:
        raise type(exc)(f"{path}: torch.export failed: {exc}") from exc.__cause__
    except Exception as exc:
        if dynamic_batch and "Constraints violated" in str(exc):
            raise ExportError(f"{path}: torch.export failed: the net fixes its batch size; export with "
                              "dynamic_batch=False") from None
        raise exporter_failure(str(path), "torch.export", exc) from exc
    program.example_inputs = None  # torch.export.save would pickle them
    return program


def save_pt2(program: torch.export.ExportedProgram, path: str | os.PathLike) -> None:
    """torch.export.save into `path` (no staging: callers stage).

    torch's zip writer aborts the process (a C++ exception in a destructor) when a write fails, e.g.
    on a full disk; it writes here through a stream that takes the error and reports it afterwards.
    """
    with open(path, "wb") as fh:
        stream = LatchingWriter(fh)
        with quiet_torch():
            torch.export.save(program, stream)
        stream.flush()
        stream.raise_error(path)


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
    except Exception as exc:
        raise NinportError(f"{path}: onnxruntime failed: {strip_ansi(one_line(exc))}") from exc


def write_outputs(module: fx.GraphModule, out_dir: str | os.PathLike, stem: str, formats: Iterable[str],
                  progress: Callable[[str], None] | None = None,
                  check: Callable[[dict[str, Path]], None] | None = None,
                  dynamic_size: bool | None = None) -> dict[str, Path]:
    """Write `<out_dir>/<stem>.<format>` for each format, all or nothing; returns format -> path.


    Files are staged in a private folder inside `out_dir` and replace their targets only once every
    one is complete and `check` (if given) has accepted them: `check` gets format -> STAGED path
    (e.g. to run the staged ONNX file in onnxruntime) and raises to abandon the write. On any
    failure, including a failed rename after others succeeded, the folder is left as it was (and
    `out_dir` removed if this call created it); see `ninport.fileio.write_files`.
    """
    formats = check_formats(formats)
    if "py" in formats and "safetensors" not in formats:  # the .py file loads its weights from there
        formats.append("safetensors")
    say = progress or (lambda message: None)
    out = Path(out_dir)
    names = {fmt: f"{stem}.{fmt}" for fmt in formats}
    if not stem or any(c in stem for c in ("/", os.sep, "\x00")):
        raise ExportError(f"{stem!r}: not usable as an output file name")

    def writer(fmt: str) -> Callable[[Path], None]:
        target = out / names[fmt]

        def write(staged: Path) -> None:
            say(f"writing {target}")
            try:
                if fmt == "onnx":
                    save_onnx_model(onnx_model_for_file(module, target, dynamic_size=dynamic_size), staged)
                elif fmt == "pt2":
                    save_pt2(export_program(module, target, dynamic_size=dynamic_size), staged)
                elif fmt == "py":
                    write_python(module, staged, weights=False)
                else:
                    safetensors_writer(module, target)(staged)
            except NinportError as exc:  # name the file the user asked for, not the staging file
                raise type(exc)(str(exc).replace(str(staged), str(target))) from exc.__cause__
            except OSError as exc:
                raise ExportError(f"{target}: writing failed: {exc.strerror or exc}") from exc
        return write

    staged_check = None
    if check is not None:
        def staged_check(staged: dict[str, Path]) -> None:
            check({fmt: staged[names[fmt]] for fmt in formats})

    written = write_files(out, {names[fmt]: writer(fmt) for fmt in formats}, staged_check)
    return {fmt: written[names[fmt]] for fmt in formats}
