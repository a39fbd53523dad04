"""Open a written ONNX file in onnxruntime without holding its weights twice, with extra values as outputs.

onnxruntime opening a file parses it whole (a copy of every weight in the protobuf) and then copies each
initializer into a tensor of its own, and the check's extra outputs (the logits a Softmax reads) meant one more
parse and serialization in Python: VGG16's 528 MiB file took 2.1 s and 929 MiB to open. Here the file's model
is read with protobuf except for the bytes of its large initializers, and each of those is handed to
onnxruntime as external data at its offset in the same file, which onnxruntime maps instead of copying (0.4 s,
and the only memory is the file's own pages). What runs is the file's graph with the file's bytes: every
field of the file but those bytes goes through protobuf, and the offsets come from a strict walk of its
protobuf framing, so a file protobuf could not read fails here too.
"""
from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ninport.errors import NinportError
from ninport.wire import Truncated, fields, spans

# onnx.proto field numbers: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data, .data_location
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA, _TENSOR_DATA_LOCATION = 7, 5, 9, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# Initializers with at least this many bytes of raw_data are left in the file and mapped by onnxruntime.
MAPPED_BYTES = 1024


def model_without_weights(path: str | os.PathLike):
    """The file's onnx.ModelProto, except that every initializer with at least MAPPED_BYTES of raw_data refers
    to its bytes in the file itself (ONNX external data: location the file's name, offset, length) instead of
    holding a copy of them. NinportError naming the file if it is not a readable ONNX model."""
    import onnx

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise NinportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        model_fields, graph_fields, mapped, graphs = bytearray(), bytearray(), [], 0
        for number, wire, value, start, end in spans(buf, 0, len(buf)):
            if number != _MODEL_GRAPH or wire != 2:
                model_fields += buf[start:end]
                continue
            graphs += 1
            for number2, wire2, value2, start2, end2 in spans(buf, *value):
                raw = _raw_data(buf, value2) if number2 == _GRAPH_INITIALIZER and wire2 == 2 else None
                if raw is None or raw[1] - raw[0] < MAPPED_BYTES:
                    graph_fields += buf[start2:end2]
                else:  # the TensorProto without its raw_data: name, dims, data_type, ...
                    header = b"".join(buf[a:b] for n, _, _, a, b in spans(buf, *value2) if n != _TENSOR_RAW_DATA)
                    mapped.append((header, raw))
    except (Truncated, ValueError, IndexError) as exc:
        raise NinportError(f"{path}: not a valid ONNX file ({type(exc).__name__} in its protobuf framing)") from None
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    if not graphs:
        raise NinportError(f"{path}: not a valid ONNX file (it has no graph)")
    try:
        model = onnx.ModelProto.FromString(bytes(model_fields))
        model.graph.ParseFromString(bytes(graph_fields))
        for header, (start, end) in mapped:
            tensor = model.graph.initializer.add()
            tensor.ParseFromString(header)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", path.name), ("offset", start), ("length", end - start)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError
        raise NinportError(f"{path}: not a valid ONNX file ({exc})") from None
    return model


def _raw_data(buf, span: tuple[int, int]) -> tuple[int, int] | None:
    """Where a TensorProto's raw_data lies (the last one, as protobuf reads it); None when it has none or is
    already external data."""
    found = None
    for number, wire, value in fields(buf, *span):
        if number == _TENSOR_RAW_DATA and wire == 2:
            found = value
        elif number == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL:
            return None
    return found


def maps_external_data() -> bool:
    """Whether this onnxruntime takes a model from memory with its external data in a folder we name
    (`session.model_external_initializers_file_folder_path`, onnxruntime 1.21 and later)."""
    import onnxruntime as ort

    version = tuple(int(part) for part in re.findall(r"\d+", ort.__version__)[:2])
    return version >= (1, 21)


def open_session(path: str | os.PathLike, model=None, extra_outputs: Iterable[str] = ()):
    """An onnxruntime CPU InferenceSession of the file, opened from `model` (the file's `model_without_weights`,
    read here if not given; its graph outputs are extended) with `extra_outputs` (names of values inside the
    graph) added to the outputs. Prepacking and the layout transformation are off: they would copy the large
    weights again into onnxruntime's own layouts (the results are the same); so is the memory arena, which only
    pays over many runs.

    An onnxruntime older than 1.21 cannot be told where a model from memory keeps its external data: it opens
    the file itself, or, for extra outputs, the whole model read with onnx (the weights in memory twice more)."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    extra = list(dict.fromkeys(extra_outputs))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # one run: no arena kept around (VGG16 at batch 2: 43 MiB less)
    options.add_session_config_entry("session.disable_prepacking", "1")
    # Graph optimizations up to EXTENDED: ALL adds only the CPU layout transformation (NCHWc), which copies
    # every convolution's weights into onnxruntime's blocked layout (VGG16: 58 MiB, and it pushed `convert`'s
    # peak past 2x the weights) and changes nothing about what the file computes.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if maps_external_data():
        model = model if model is not None else model_without_weights(path)
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(path.resolve().parent))
    elif extra:
        model = onnx.load(str(path))
    else:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra if name not in outputs)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
