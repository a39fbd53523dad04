"""Check every written file against the torch module it came from, on the same seeded input.

- `.onnx`: run in onnxruntime. Every output is compared, and for an output written by a Softmax layer
  also the blob that Softmax reads (the logits): with random weights a softmax output is nearly
  one-hot, and agreeing on a one-hot vector proves next to nothing.
- `.pt2`: loaded with `torch.export.load` and run; `.py`: run in a fresh Python process in which
  ninport cannot be imported (as a user without ninport runs it), with its `.safetensors` beside it.
  Every output is compared, and for a Softmax output also its logarithm (the logits up to a constant,
  which the file does not expose), for the same reason.
- `.safetensors`: every tensor equals the module's state dict, bit for bit, under the same names.

The seeded input is uniform in [-128, 128) (pixels minus a
mean), except that an input a layer reads as row indices (Embed: its type's record says `index_input`) gets
integers in [0, rows).

NaN or inf in the outputs that the two sides do not place alike, or a mismatch among values whose square
exceeds float32's range (random weights can overflow an Exp or a Power), make the check inconclusive,
said plainly, rather than a mismatch to report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ninport.build.description import NetDescription, describe
from ninport.check.parity import BlobComparison, overflow_note, relative_error
from ninport.errors import NinportError, counted, one_line, safe_text

DEFAULT_TOLERANCE = 1e-4
NONFINITE = "non-finite"
CheckStatus = Literal["passed", "failed", "inconclusive", "skipped"]


@dataclass(frozen=True)
class SelfCheck:
    """The outcome: status is "passed", "failed", "inconclusive" (NaN/inf, bad Embed index) or "skipped";
    `format` is the file's kind (onnx, pt2, py, safetensors)."""

    path: str
    status: CheckStatus
    tolerance: float
    blobs: tuple[BlobComparison, ...] = ()
    message: str = ""
    format: str = "onnx"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def worst(self) -> float:
        return max((b.relative for b in self.blobs), default=0.0)

    @property
    def compared(self) -> str:
        """Which blobs were compared, for messages: `prob (output), fc8 (logits of Softmax layer prob)`."""
        return ", ".join(f"{safe_text(b.name, 60)} ({safe_text(b.role, 100)})" for b in self.blobs)


def reference_inputs(module: Any, seed: int = 0, description: NetDescription | None = None,
                     batch: int | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs at the reference shapes (with `batch`, that batch instead of every input's first dimension):
    uniform in [-128, 128), integers in range for Embed inputs."""
    description = description or describe(module)
    rng = np.random.default_rng(seed)
    embed_rows = embed_input_rows(module, description)
    inputs = {}
    for name, shape in description.inputs.items():
        if batch is not None and len(shape):
            shape = (batch, *shape[1:])
        if name in embed_rows:
            inputs[name] = rng.integers(0, embed_rows[name], shape).astype(np.float32)
        else:
            inputs[name] = (rng.random(shape, dtype=np.float32) * 256 - 128).astype(np.float32)
    return inputs


def _reads_indices(layer_type_name: str, description: NetDescription) -> bool:
    """Whether the type's record says its first bottom holds row indices (`LayerType.index_input`: Embed)."""
    from ninport.registry import layer_type

    record = layer_type(layer_type_name, description.dialect)
    return record is not None and record.index_input


def embed_input_rows(module: Any, description: NetDescription) -> dict[str, int]:
    """Net inputs that a layer reads directly as row indices (Embed) -> the rows of its table (weight blob 0,
    the submodule's first parameter or buffer)."""
    rows: dict[str, int] = {}
    for record in description.layers:
        if record.bottoms and record.bottoms[0] in description.inputs and _reads_indices(record.type, description):
            submodule = module.get_submodule(record.module)
            table = next(iter([*submodule.parameters(), *submodule.buffers()]), None)
            if table is not None and table.dim() >= 1:
                name = record.bottoms[0]
                rows[name] = min(rows.get(name, int(table.shape[0])), int(table.shape[0]))
    return rows


def _softmax_logits(module: Any, description: NetDescription) -> dict[str, tuple[str, str, str, str]]:
    """For each output written by a Softmax layer: output -> (fx node of the logits, logits blob, layer,
    the layer's submodule identifier, which is what the exported ONNX nodes are named after)."""
    found = {}
    for output in description.outputs:
        layer = description.blobs[output].layer
        record = next((r for r in description.layers if r.name == layer), None)
        if record is None or record.type != "Softmax" or not record.bottoms:
            continue
        call = next((n for n in module.graph.nodes if n.op == "call_module" and n.target == record.module), None)
        if call is not None and call.args and hasattr(call.args[0], "name"):
            found[output] = (call.args[0].name, record.bottoms[0], record.name, record.module)
    return found


def forward_values(module: Any, inputs: dict[str, np.ndarray], description: NetDescription,
                   nodes: set[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One forward pass: the value of every fx node named in `nodes` (all when None), and the nodes computed
    from an overflow: node -> where it happened (`layer 'x' (exp turned finite values into inf/NaN)`).

    An overflow is a torch operation that turns finite inputs into NaN or inf (an Exp of random weights'
    activations, an SSD's box decoding); every node that reads an overflowed node has overflowed too. A
    comparison that fails there proves nothing either way (see `compare_one`)."""
    import torch
    from torch import fx
    from torch.overrides import TorchFunctionMode

    layers = description.module_layers
    values: dict[str, np.ndarray] = {}
    overflowed: dict[str, str] = {}

    def tensors_in(items) -> list:
        found = []
        for item in items:
            if isinstance(item, torch.Tensor):
                found.append(item)
            elif isinstance(item, (tuple, list)):
                found.extend(tensors_in(item))
            elif isinstance(item, dict):
                found.extend(tensors_in(item.values()))
        return found

    def finite(tensor) -> bool:
        return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())

    class Watch(TorchFunctionMode):
        op: str | None = None

        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if self.op is None and not all(finite(t) for t in tensors_in([result])) and \
                    all(finite(t) for t in tensors_in([args, kwargs or {}])):
                self.op = getattr(func, "__name__", None) or str(func)
            return result

    watch = Watch()

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            watch.op = None
            result = super().run_node(n)
            if watch.op is not None:
                layer = layers.get(n.target) if n.op == "call_module" else None
                place = f"layer {safe_text(layer, 80)!r}" if layer else f"node {n.name}"
                overflowed[n.name] = f"{place} ({watch.op} turned finite values into inf/NaN)"
            else:
                origin = next((overflowed[i.name] for i in n.all_input_nodes if i.name in overflowed), None)
                if origin is not None:
                    overflowed[n.name] = origin
            if (nodes is None or n.name in nodes) and isinstance(result, torch.Tensor):
                values[n.name] = result.detach().numpy().copy()
            return result

    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in description.inputs]
    with torch.no_grad(), watch:
        Recorder(module).run(*tensors)
    return values, overflowed


@dataclass(frozen=True)
class SeededReference:
    """The torch module's side of the checks, computed once for every file of a conversion: the seeded input,
    the values of the fx nodes of the outputs and of the logits each Softmax output reads, the nodes computed
    from an overflow (`forward_values`), the Softmax outputs' logits (`_softmax_logits`), and `error`: the
    module's failure on that input (an Embed index out of range), which makes each check inconclusive."""

    inputs: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    overflowed: dict[str, str]
    logits: dict[str, tuple[str, str, str, str]]
    error: Exception | None = None

    def outputs(self, description: NetDescription) -> tuple[list[np.ndarray], list[str]]:
        """The outputs in Caffe's order, and where each overflowed ('' if not)."""
        nodes = [description.blobs[o].node for o in description.outputs]
        return [self.values[n] for n in nodes], [self.overflowed.get(n, "") for n in nodes]


def seeded_reference(module: Any, description: NetDescription | None = None, *, seed: int = 0,
                     batch: int | None = None) -> SeededReference:
    """One forward pass of `module` on the seeded input (`reference_inputs`, at `batch` if given): what every
    check compares the files with. The module's weights are not needed after it (`convert_files` frees them
    before onnxruntime and torch.export.load load the files' own)."""
    description = description or describe(module)
    inputs = reference_inputs(module, seed, description, batch)
    logits = _softmax_logits(module, description)
    wanted = {description.blobs[o].node for o in description.outputs} | {node for node, *_ in logits.values()}
    try:
        values, overflowed = forward_values(module, inputs, description, wanted)
    except (IndexError, RuntimeError) as exc:
        return SeededReference(inputs, {}, {}, logits, exc)
    return SeededReference(inputs, values, overflowed, logits)


def _softmax_node(model: Any, output: str, identifier: str) -> Any:
    """The ONNX Softmax node of a Softmax layer: the one that computes the graph output `output` (through
    Identity nodes), else the one Softmax among the nodes named after the layer's submodule `identifier`
    (`identifier`, or `identifier/<op>` when the layer became several nodes); None if neither is found."""
    producers = {value: node for node in model.graph.node for value in node.output}
    node = producers.get(output)
    while node is not None and node.op_type == "Identity" and node.input:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Softmax":
        return node
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"
               and (n.name == identifier or n.name.startswith(identifier + "/"))]
    return softmax[0] if len(softmax) == 1 else None


def _onnx_values(path: Path, inputs: dict[str, np.ndarray], layers: dict[str, tuple[str, str]]
                 ) -> tuple[dict, dict]:
    """onnxruntime's outputs by name, and the values that feed the Softmax nodes of `layers` (logits blob ->
    (ONNX output of the Softmax, its submodule identifier)); a logits value not located is left out.
    The file is opened with `onnx_session.open_session`: its weights are mapped, not copied."""
    from ninport.check.onnx_session import model_without_weights, open_session

    model = model_without_weights(path)
    outputs = [o.name for o in model.graph.output]
    extra: dict[str, str] = {}  # logits blob -> ONNX value name
    for blob, (output, identifier) in layers.items():
        softmax = _softmax_node(model, output, identifier)
        if softmax is not None and softmax.input:
            extra[blob] = softmax.input[0]
    try:
        session = open_session(path, model, extra.values())
        feed = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in inputs.items()}
        names = [o.name for o in session.get_outputs()]
        results = dict(zip(names, session.run(None, feed)))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NinportError(f"{path}: onnxruntime failed: {first}") from exc
    return ({name: np.asarray(results[name]) for name in outputs},
            {blob: np.asarray(results[value]) for blob, value in extra.items() if value in results})


def _nonfinite_pattern_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.isposinf(a), np.isposinf(b))
                and np.array_equal(np.isneginf(a), np.isneginf(b)))


def compare_one(blob: str, role: str, got: np.ndarray, expected: np.ndarray, tolerance: float,
                overflow: str = "") -> BlobComparison:
    """Compare one blob; non-finite values must sit in the same places (then the rest is compared). A
    mismatch on a blob computed from an overflow (`overflow` says where, see `forward_values`) or among
    values whose square overflows float32 is inconclusive (note NONFINITE), not a failure."""
    got, expected = np.asarray(got), np.asarray(expected)  # in their own dtype: no float64 copies of a blob
    shape = tuple(expected.shape)
    if got.shape != expected.shape:
        return BlobComparison(blob, shape, float("inf"), float("inf"), False,
                              f"shape {list(got.shape)} in the file, {list(expected.shape)} in torch", role=role)
    finite = np.isfinite(got) & np.isfinite(expected)
    note = ""
    if not finite.all():
        if not finite.any() or not _nonfinite_pattern_equal(got, expected):
            return BlobComparison(blob, shape, float("nan"), float("nan"), False, NONFINITE, True, role, overflow)
        note = f"{int((~finite).sum()):,} NaN/inf values, the same in both; the rest compared"
        got, expected = np.where(finite, got, 0), np.where(finite, expected, 0)  # the same zeros on both sides
    max_abs, rel = relative_error(got, expected)
    if rel > tolerance and (overflow or overflow_note(got, expected)):  # proves nothing
        return BlobComparison(blob, shape, max_abs, rel, False, NONFINITE, True, role, overflow)
    return BlobComparison(blob, shape, max_abs, rel, bool(rel <= tolerance), note, role=role)


def check_onnx(module: Any, path: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
               description: NetDescription | None = None, reference: SeededReference | None = None) -> SelfCheck:
    """Compare onnxruntime on `path` with `module` on one seeded input: every output, and the logits
    before each Softmax output. Returns a SelfCheck; raises NinportError only when onnxruntime fails.
    `reference`: the module's side, computed before (`seeded_reference`; `seed` is then its own)."""
    path = Path(path)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return SelfCheck(str(path), "skipped", tolerance, message="onnxruntime is not installed "
                                                                  "(pip install onnxruntime, or ninport[all])")
    description = description or describe(module)
    from ninport import memory

    batch = next((len(x) for x in reference.inputs.values() if x.ndim), None) if reference is not None else None
    memory.require(memory.check_bytes(module, description, batch),
                   f"{path}: checking in onnxruntime {memory.at_input(description)}", "check at a smaller input shape")
    reference = reference or seeded_reference(module, description, seed=seed)
    if reference.error is not None:
        return _embed_index_problem(reference.error, path, "onnx", description, tolerance)
    inputs, expected, overflowed, logits = reference.inputs, reference.values, reference.overflowed, reference.logits
    from ninport.export.onnx import onnx_output_names

    onnx_names = dict(zip(description.outputs, onnx_output_names(description)))
    got_outputs, got_logits = _onnx_values(path, inputs, {blob: (onnx_names[output], identifier)
                                                          for output, (_, blob, _, identifier) in logits.items()})
    checks = []
    for output, onnx_name in onnx_names.items():
        node = description.blobs[output].node
        checks.append(compare_one(output, "output", got_outputs[onnx_name], expected[node], tolerance,
                                  overflowed.get(node, "")))
    for node, blob, layer, _ in logits.values():
        if blob in got_logits and got_logits[blob].shape == expected[node].shape:
            checks.append(compare_one(blob, f"logits of Softmax layer {layer}", got_logits[blob], expected[node],
                                      tolerance, overflowed.get(node, "")))
    missing = [f"{safe_text(blob, 60)} (logits of Softmax layer {safe_text(layer, 60)})"
               for node, blob, layer, _ in logits.values()
               if blob not in got_logits or got_logits[blob].shape != expected[node].shape]
    message = f"could not locate {', '.join(missing)} in the ONNX graph; outputs only" if missing else ""
    return _outcome(path, "onnx", checks, tolerance, message, "the two runtimes")


def _embed_index_problem(exc: Exception, path: Path, fmt: str, description: NetDescription,
                         tolerance: float) -> SelfCheck:
    """The torch module failed on the seeded input: inconclusive if an Embed layer got an index out of
    range (it reads another layer's output), else the exception again (a bug)."""
    if any(_reads_indices(r.type, description) for r in description.layers) and "index" in str(exc).lower():
        return SelfCheck(str(path), "inconclusive", tolerance, format=fmt, message=(
            "an Embed layer got an index outside [0, input_dim) from the seeded check input (an Embed "
            "reads another layer's output here); run `ninport verify` with real inputs"))
    raise exc


def _outcome(path: Path, fmt: str, checks: list[BlobComparison], tolerance: float, message: str = "",
             sides: str = "the two") -> SelfCheck:
    """The SelfCheck of compared blobs: inconclusive when NaN/inf values sit in different places."""
    nonfinite = [c for c in checks if c.inconclusive]
    if nonfinite and all(c.passed or c.inconclusive for c in checks):  # a real mismatch still fails
        names = ", ".join(safe_text(c.name, 60) + (f" (from {c.overflow})" if c.overflow else "") for c in nonfinite)
        return SelfCheck(str(path), "inconclusive", tolerance, tuple(checks), format=fmt, message=(
            f"on the seeded check input, {names} overflowed (NaN/inf, or values beyond float range when squared: "
            f"random weights, or inputs outside the net's range) and {sides} disagree there; this proves "
            "nothing either way: run `ninport verify` with real weights and inputs"))
    status = "passed" if all(c.passed for c in checks) else "failed"
    return SelfCheck(str(path), status, tolerance, tuple(checks), message=message, format=fmt)


def _seeded_reference(module: Any, path: Path, fmt: str, seed: int, description: NetDescription,
                      tolerance: float, reference: SeededReference | None
                      ) -> tuple[dict[str, np.ndarray], tuple] | SelfCheck:
    """The seeded check input and the torch module's outputs on it (`SeededReference.outputs`), or the
    inconclusive SelfCheck when an Embed layer cannot take that input."""
    reference = reference or seeded_reference(module, description, seed=seed)
    if reference.error is not None:
        return _embed_index_problem(reference.error, path, fmt, description, tolerance)
    return reference.inputs, reference.outputs(description)


def _softmax_outputs(description: NetDescription) -> dict[str, str]:
    """Output blob -> the Softmax layer that writes it."""
    found = {}
    for output in description.outputs:
        layer = description.blobs[output].layer
        record = next((r for r in description.layers if r.name == layer), None)
        if record is not None and record.type == "Softmax":
            found[output] = record.name
    return found


def _compare_outputs(path: Path, fmt: str, got: list[np.ndarray], expected: tuple[list[np.ndarray], list[str]],
                     description: NetDescription, tolerance: float, sides: str) -> SelfCheck:
    """Every output, and the log of each Softmax output (its logits up to a constant)."""
    expected, overflows = expected
    if len(got) != len(expected):
        return SelfCheck(str(path), "failed", tolerance, format=fmt,
                         message=f"{len(got)} outputs, the torch model has {len(expected)}")
    rows = list(zip(description.outputs, got, expected, overflows))
    checks = [compare_one(name, "output", g, e, tolerance, o) for name, g, e, o in rows]
    softmax = _softmax_outputs(description)
    for name, g, e, o in rows:
        if name in softmax and np.shape(g) == np.shape(e):
            checks.append(compare_one(name, f"log of Softmax layer {softmax[name]}", _log_probability(g),
                                      _log_probability(e), tolerance, o))
    return _outcome(path, fmt, checks, tolerance, sides=sides)


def _log_probability(p: np.ndarray) -> np.ndarray:
    """log p, with p floored at float32's smallest normal (an underflowed 0 and a denormal are alike)."""
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(np.asarray(p, np.float64), float(np.finfo(np.float32).tiny)))


def check_pt2(module: Any, path: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
              description: NetDescription | None = None, reference: SeededReference | None = None) -> SelfCheck:
    """Load the .pt2 file with `torch.export.load`, run it on the seeded input, compare with `module`."""
    import torch

    path, description = Path(path), description or describe(module)
    reference = _seeded_reference(module, path, "pt2", seed, description, tolerance, reference)
    if isinstance(reference, SelfCheck):
        return reference
    inputs, expected = reference
    try:
        program = torch.export.load(str(path)).module()
        with torch.no_grad():
            out = program(*[torch.from_numpy(inputs[name]) for name in description.inputs])
    except Exception as exc:  # noqa: BLE001 - the file does not load or run: the check fails, saying why
        return SelfCheck(str(path), "failed", tolerance, format="pt2",
                         message=f"torch.export.load and run failed: {safe_text(one_line(exc), 300)}")
    got = [o.detach().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
    return _compare_outputs(path, "pt2", got, expected, description, tolerance, "the program and the module")


# Runs a generated .py file as a user without ninport would: `ninport` cannot be imported in it.
_PYTHON_RUNNER = """
import importlib.util, sys
sys.modules["ninport"] = None
import numpy as np
import torch
source, inputs_file, outputs_file = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("generated_net", source)
net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(net)
model = net.load()
with np.load(inputs_file, allow_pickle=False) as arrays:
    inputs = [torch.from_numpy(arrays[f"input{i}"]) for i in range(len(arrays.files))]
with torch.no_grad():
    out = model(*inputs)
outs = out if isinstance(out, (tuple, list)) else (out,)
np.savez(outputs_file, **{f"output{i}": o.detach().numpy() for i, o in enumerate(outs)})
"""
PYTHON_CHECK_TIMEOUT = 900


def check_python(module: Any, path: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                 description: NetDescription | None = None, reference: SeededReference | None = None) -> SelfCheck:
    """Run the generated .py file (its `load()` reads the .safetensors beside it) in a fresh Python process
    where ninport cannot be imported, on the seeded input; compare with `module`."""
    import subprocess
    import sys
    import tempfile

    from ninport.fileio import load_npz

    path, description = Path(path), description or describe(module)
    reference = _seeded_reference(module, path, "py", seed, description, tolerance, reference)
    if isinstance(reference, SelfCheck):
        return reference
    inputs, expected = reference
    with tempfile.TemporaryDirectory(prefix="ninport-pycheck-") as tmp:
        inputs_file, outputs_file = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inputs_file, **{f"input{i}": inputs[name] for i, name in enumerate(description.inputs)})
        try:
            run = subprocess.run([sys.executable, "-c", _PYTHON_RUNNER, str(path.resolve()), str(inputs_file),
                                  str(outputs_file)], cwd=tmp, capture_output=True, text=True,
                                 timeout=PYTHON_CHECK_TIMEOUT)
        except subprocess.TimeoutExpired:
            return SelfCheck(str(path), "failed", tolerance, format="py",
                             message=f"running it took more than {PYTHON_CHECK_TIMEOUT} s")
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines() or [f"exit code {run.returncode}"]
            return SelfCheck(str(path), "failed", tolerance, format="py",
                             message=f"running it without ninport failed: {safe_text(lines[-1], 300)}")
        arrays = load_npz(outputs_file)
    got = [arrays[f"output{i}"] for i in range(len(arrays))]
    return _compare_outputs(path, "py", got, expected, description, tolerance, "the file and the module")


# The bytes of a tensor compared at a time: the file is read in pieces, never whole (VGG16's fc6 is 392 MiB).
COMPARE_CHUNK_BYTES = 1 << 24


def check_safetensors(module: Any, path: str | os.PathLike) -> SelfCheck:
    """Every tensor of the file equals the module's state dict entry of its name, bit for bit (and no
    tensor is missing or extra, and each has the entry's dtype and shape).

    The safetensors library reads the file's header (and refuses a malformed one); the tensors' bytes are then
    read from the file piece by piece and compared with the module's memory as bytes, so the check needs no
    second copy of the weights."""
    import json
    import struct

    from safetensors import safe_open

    path = Path(path)
    state = {k: v.detach() for k, v in module.state_dict().items()}

    def failed(message: str) -> SelfCheck:
        return SelfCheck(str(path), "failed", 0.0, format="safetensors", message=message)

    try:
        with safe_open(str(path), framework="numpy") as stored:
            found = {k: (stored.get_slice(k).get_dtype(), tuple(stored.get_slice(k).get_shape()))
                     for k in stored.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
        with open(path, "rb") as fh:
            (header_size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_size))
            problems = [f"{safe_text(k, 60)} missing" for k in state if k not in found]
            problems += [f"{safe_text(k, 60)} not in the module" for k in found if k not in state]
            for key, tensor in state.items():
                if key in found and not _same_bytes(fh, 8 + header_size, header[key], found[key], tensor):
                    problems.append(f"{safe_text(key, 60)} differs")
    except Exception as exc:  # noqa: BLE001 - safetensors reports a bad file as SafetensorError
        return failed(f"cannot read it back: {safe_text(one_line(exc), 300)}")
    if problems:
        return failed(", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return SelfCheck(str(path), "passed", 0.0, format="safetensors",
                     message=f"{counted(len(state), 'tensor')} of the module's state dict, bit for bit")


# safetensors' dtype names for torch's (what the file must say for each tensor of the module)
SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def _same_bytes(fh, data_start: int, entry: dict, found: tuple[str, tuple[int, ...]], tensor: Any) -> bool:
    """Whether the file's tensor (`entry`: its header entry, `found`: its dtype and shape as the safetensors
    library read them) has `tensor`'s dtype, shape and bytes, read and compared a piece at a time."""
    import torch

    dtype, shape = found
    if dtype != SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch.")) or shape != tuple(tensor.shape):
        return False
    own = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
    begin, end = entry["data_offsets"]
    if end - begin != own.size:
        return False
    fh.seek(data_start + begin)
    for start in range(0, own.size, COMPARE_CHUNK_BYTES):
        piece = fh.read(min(COMPARE_CHUNK_BYTES, own.size - start))
        if not piece or memoryview(own[start:start + len(piece)]) != memoryview(piece):
            return False
    return True


def check_file(fmt: str, module: Any, path: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE,
               seed: int = 0, description: NetDescription | None = None,
               reference: SeededReference | None = None) -> SelfCheck:
    """The check of a written file of format `fmt` (onnx, pt2, py, safetensors) against `module` (or, but for
    safetensors, against `reference`, the module's outputs computed before: `seeded_reference`)."""
    if fmt == "safetensors":
        return check_safetensors(module, path)
    check = {"onnx": check_onnx, "pt2": check_pt2, "py": check_python}[fmt]
    return check(module, path, tolerance=tolerance, seed=seed, description=description, reference=reference)
