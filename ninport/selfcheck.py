"""Run an exported ONNX file in onnxruntime and the torch module on the same seeded input; compare.

Every output is compared, and for an output written by a Softmax layer also the blob that Softmax
reads (the logits): with random weights a softmax output is nearly one-hot, and agreeing on a
one-hot vector proves next to nothing. The seeded input is uniform in [-128, 128) (pixels minus a
mean), except that an input an Embed layer reads gets integers in [0, input_dim).

NaN or inf in the outputs (random weights can overflow an Exp or a Power) make the check
inconclusive, said plainly, rather than a mismatch to report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ninport.description import NetDescription, describe
from ninport.errors import NinportError, safe_text
from ninport.parity import relative_error

DEFAULT_TOLERANCE = 1e-4
NONFINITE = "non-finite"


@dataclass(frozen=True)
class BlobCheck:
    """One compared blob: `role` is "output" or "logits of Softmax layer <name>"."""

    blob: str
    role: str
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class SelfCheck:
    """The outcome: status is "passed", "failed", "inconclusive" (NaN/inf, bad Embed index) or "skipped"."""

    path: str
    status: str
    tolerance: float
    blobs: tuple[BlobCheck, ...] = ()
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def worst(self) -> float:
        return max((b.relative for b in self.blobs), default=0.0)

    @property
    def compared(self) -> str:
        """Which blobs were compared, for messages: `prob (output), fc8 (logits of Softmax layer prob)`."""
        return ", ".join(f"{safe_text(b.blob, 60)} ({safe_text(b.role, 100)})" for b in self.blobs)


def reference_inputs(module: Any, seed: int = 0, description: NetDescription | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs at the reference shapes: uniform in [-128, 128), integers in range for Embed inputs."""
    description = description or describe(module)
    rng = np.random.default_rng(seed)
    embed_rows = embed_input_rows(module, description)
    inputs = {}
    for name, shape in description.inputs.items():
        if name in embed_rows:
            inputs[name] = rng.integers(0, embed_rows[name], shape).astype(np.float32)
        else:
            inputs[name] = (rng.random(shape, dtype=np.float32) * 256 - 128).astype(np.float32)
    return inputs


def embed_input_rows(module: Any, description: NetDescription) -> dict[str, int]:
    """Net inputs that an Embed layer reads directly -> the number of rows (input_dim) it holds."""
    rows: dict[str, int] = {}
    for record in description.layers:
        if record.type == "Embed" and record.bottoms and record.bottoms[0] in description.inputs:
            weight = getattr(module.get_submodule(record.module), "weight", None)
            if weight is not None:
                name = record.bottoms[0]
                rows[name] = min(rows.get(name, int(weight.shape[0])), int(weight.shape[0]))
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


def _torch_values(module: Any, inputs: dict[str, np.ndarray], description: NetDescription,
                  nodes: set[str]) -> dict[str, np.ndarray]:
    """Every fx node named in `nodes`, from one forward pass."""
    import torch
    from torch import fx

    values: dict[str, np.ndarray] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n.name in nodes and isinstance(result, torch.Tensor):
                values[n.name] = result.detach().numpy().copy()
            return result

    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in description.inputs]
    with torch.no_grad():
        Recorder(module).run(*tensors)
    return values


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
    (ONNX output of the Softmax, its submodule identifier)); a logits value not located is left out."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    outputs = [o.name for o in model.graph.output]
    extra: dict[str, str] = {}  # logits blob -> ONNX value name
    for blob, (output, identifier) in layers.items():
        softmax = _softmax_node(model, output, identifier)
        if softmax is not None and softmax.input:
            extra[blob] = softmax.input[0]
    if extra:
        for value in dict.fromkeys(extra.values()):
            if value not in outputs:
                model.graph.output.append(onnx.ValueInfoProto(name=value))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString() if extra else str(path), options,
                                       providers=["CPUExecutionProvider"])
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


def compare_one(blob: str, role: str, got: np.ndarray, expected: np.ndarray, tolerance: float) -> BlobCheck:
    """Compare one blob; non-finite values must sit in the same places (then the rest is compared)."""
    got, expected = np.asarray(got), np.asarray(expected)  # in their own dtype: no float64 copies of a blob
    if got.shape != expected.shape:
        return BlobCheck(blob, role, tuple(expected.shape), float("inf"), float("inf"), False,
                         f"shape {list(got.shape)} in onnxruntime, {list(expected.shape)} in torch")
    finite = np.isfinite(got) & np.isfinite(expected)
    note = ""
    if not finite.all():
        if not finite.any() or not _nonfinite_pattern_equal(got, expected):
            return BlobCheck(blob, role, tuple(expected.shape), float("nan"), float("nan"), False, NONFINITE)
        note = f"{int((~finite).sum()):,} NaN/inf values, the same in both; the rest compared"
        got, expected = np.where(finite, got, 0), np.where(finite, expected, 0)  # the same zeros on both sides
    max_abs, rel = relative_error(got, expected)
    return BlobCheck(blob, role, tuple(expected.shape), max_abs, rel, bool(rel <= tolerance), note)


def check_onnx(module: Any, path: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
               description: NetDescription | None = None) -> SelfCheck:
    """Compare onnxruntime on `path` with `module` on one seeded input: every output, and the logits
    before each Softmax output. Returns a SelfCheck; raises NinportError only when onnxruntime fails."""
    path = Path(path)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return SelfCheck(str(path), "skipped", tolerance, message="onnxruntime is not installed "
                                                                  "(pip install onnxruntime, or ninport[all])")
    description = description or describe(module)
    from ninport import memory

    memory.require(memory.check_bytes(module, description),
                   f"{path}: checking in onnxruntime {memory.at_input(description)}", "check at a smaller input shape")
    inputs = reference_inputs(module, seed, description)
    logits = _softmax_logits(module, description)
    wanted = {description.blobs[o].node for o in description.outputs} | {node for node, *_ in logits.values()}
    try:
        expected = _torch_values(module, inputs, description, wanted)
    except (IndexError, RuntimeError) as exc:
        if any(r.type == "Embed" for r in description.layers) and "index" in str(exc).lower():
            return SelfCheck(str(path), "inconclusive", tolerance, message=(
                "an Embed layer got an index outside [0, input_dim) from the seeded check input (an Embed "
                "reads another layer's output here); run `ninport verify` with real inputs"))
        raise
    from ninport.onnx import onnx_output_names

    onnx_names = dict(zip(description.outputs, onnx_output_names(description)))
    got_outputs, got_logits = _onnx_values(path, inputs, {blob: (onnx_names[output], identifier)
                                                          for output, (_, blob, _, identifier) in logits.items()})
    checks = []
    for output, onnx_name in onnx_names.items():
        checks.append(compare_one(output, "output", got_outputs[onnx_name],
                                  expected[description.blobs[output].node], tolerance))
    for node, blob, layer, _ in logits.values():
        if blob in got_logits and got_logits[blob].shape == expected[node].shape:
            checks.append(compare_one(blob, f"logits of Softmax layer {layer}", got_logits[blob], expected[node],
                                      tolerance))
    nonfinite = [c for c in checks if c.note == NONFINITE]
    if nonfinite:
        names = ", ".join(safe_text(c.blob, 60) for c in nonfinite)
        return SelfCheck(str(path), "inconclusive", tolerance, tuple(checks), message=(
            f"on the seeded check input, {names} holds NaN/inf values (an overflow: random weights, or inputs "
            "outside the net's range) that the two runtimes do not place alike; this proves nothing either "
            "way: run `ninport verify` with real weights and inputs"))
    missing = [f"{safe_text(blob, 60)} (logits of Softmax layer {safe_text(layer, 60)})"
               for node, blob, layer, _ in logits.values()
               if blob not in got_logits or got_logits[blob].shape != expected[node].shape]
    message = f"could not locate {', '.join(missing)} in the ONNX graph; outputs only" if missing else ""
    status = "passed" if all(c.passed for c in checks) else "failed"
    return SelfCheck(str(path), status, tolerance, tuple(checks), message=message)
