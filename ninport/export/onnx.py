"""Export a converted net to ONNX: named after Caffe, checked, with the preprocessing in its metadata.

Exporter: torch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, which needs
`onnxscript`). It records, for every ONNX node, the submodule it came from; ninport's submodules
are the Caffe layers, so nodes are renamed after them: `conv1` for a layer that becomes one node,
`pool1/pad` + `pool1/max_pool2d` for one that becomes several. The TorchScript exporter is
deprecated and gives no such scope information without tracing tricks.

Opset 18, deliberately:
- it is the opset torch's exporter (onnxscript's torchlib) is written against, so nothing goes
  through the ONNX version converter (which is where odd, unchecked graphs come from);
- it is old enough for the runtimes people deploy Caffe models to (onnxruntime >= 1.14,
  TensorRT >= 8.6, OpenVINO 2023+, onnxruntime-web);
- the opset-19 change that matters for Caffe (AveragePool/MaxPool ceil_mode with pads, where
  runtimes disagreed at the overhanging edge) is irrelevant here: the pooling converter emits an
  explicit Pad followed by a floor-mode, unpadded pool and Caffe's divisor computed from the shape, so no
  ceil_mode and no pool padding ever reach the file. Tests run every golden case in onnxruntime
  against real Caffe's numbers.

Graph inputs and outputs carry the Caffe blob names (outputs in Caffe's order); the batch axis is
the symbolic dimension `batch` (or fixed with `dynamic_batch=False`). Height and width are the
symbolic `height` and `width` when the net runs at other sizes than its reference one (the graph
computes Caffe's geometry from the input's shape), fixed otherwise or with `dynamic_size=False`.
Whether it does is the shape rules' answer, the one `inspect` prints (`input_size_for`).

`metadata_props` (all values strings, JSON where structured):
  source, weights, weights_sha256, ninport_version, exporter, net_name, dialect (when the net was read
  in one, e.g. `hed`), input_names, input_layout, input_shapes (symbolic axes by name), output_names (Caffe's; and
  onnx_output_names when an output computed in place over an input had to be renamed `<blob>/output`),
  input_size (`dynamic`: height and width symbolic; `static`: fixed), input_size_reason (why fixed:
  the layer that fixes the size, the caller's choice, or torch's refusal; or why forced symbolic),
  reference_input_shapes,
  and, when the prototxt has a data layer with transform_param:
  channel_order (BGR), value_range (0-255), mean_values, mean_file, scale,
  and mean_file_channel_means (per-channel means, BGR) when the mean file exists (absolute, or
  relative to the prototxt's folder);
  crop_size only when it equals the exported input's height and width (it then says what size to
  crop images to before feeding this file); when the net was exported at another size (e.g.
  `input_shape=227` for a prototxt that crops 224) the metadata must not contradict the graph's
  input, so the prototxt's value is recorded as prototxt_crop_size instead, for reference only.

Errors: ExportError (a NinportError) is for what the user can fix: a missing or unwritable folder,
a net whose batch size is fixed exported with a dynamic batch. Anything else that fails inside
torch's exporter or onnx's checker is a bug in ninport or torch and raises ExporterFailure (not a
NinportError, so the CLI reports an internal error); its message is one line, without the ANSI
colour codes torch puts in some messages.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import fx

from ninport.build.description import NetDescription, describe
from ninport.build.shapes import size_fixing_text
from ninport.errors import (
    ExportError,
    NinportError,
    NinportWarning,
    one_line,
    safe_message,
)
from ninport.fileio import write_atomic
from ninport.wire import encode_key, encode_varint

DEFAULT_OPSET = 18
T = TypeVar("T")
BATCH_DIM = "batch"
_LAYOUTS = {1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}
_TORCH_SCOPE_KEY = "pkg.torch.onnx.name_scopes"
# Terminal escape sequences (CSI colour codes, OSC titles/links) some torch messages carry.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
# onnxscript rewrite rules applied after export (public names in onnxscript.rewriter.rules.common):
# ones that remove no-ops or tidy shape arithmetic, never ones that merge two nodes into one
# (Conv+BatchNorm, Pad+Conv, ReLU+Clip), so every Caffe layer keeps its own node and name.
KEPT_REWRITE_RULES = (
    "mul_by_1_rule", "add_0_rule", "sub_0_rule", "div_by_1_rule", "dropout_zero_rule", "dropout_inference_rule",
    "two_reshapes_matmul_reshape_rule", "one_reshape_matmul_reshape_rule", "cast_constant_of_shape_rule",
    "cast_constant_of_shape_without_value_rule", "collapse_slice_rule", "collapse_slice2_rule",
    "materialize_reshape_shape_rule", "min_min_rule", "max_max_rule", "min_max_rule", "max_min_rule",
    "cast_cast_rule", "no_op_cast_rule", "no_op_expand_rule", "flatten_to_reshape_rule", "reshape_reshape_rule",
    "slice_split_rule", "no_op_transpose_rule", "transpose_transpose_rule", "unsqueeze_unsqueeze_rule",
    "squeeze_reshape_1d_rule", "no_op_dynamic_scatter_nd_rule", "no_op_static_scatter_nd_rule",
    "remove_optional_bias_from_conv_rule", "remove_optional_bias_from_conv_transpose_rule",
    "remove_optional_bias_from_gemm_rule",
)
# Loggers whose chatter quiet_torch lowers to errors, and the packages whose own warnings it hides.
_QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript",
                  "onnx_ir")
# Loggers silenced altogether: the fake-tensor logger reports at ERROR level the exception that a
# symbolic-size export raises, which ninport catches (`trace_with_input_size`).
_SILENT_LOGGERS = ("torch._subclasses.fake_tensor",)
# (torch's pytree deprecations are attributed to copyreg / typing_extensions, which call back into torch.)
_QUIET_WARNING_MODULES = r"(torch|onnx|onnxscript|onnx_ir|copyreg|typing_extensions)(\.|$)"


class ExporterFailure(RuntimeError):
    """torch's exporter or onnx's checker failed on a net ninport built: a bug, not bad input."""


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def exporter_failure(where: str, what: str, exc: BaseException) -> ExporterFailure:
    """An ExporterFailure with one safe line: `where: what failed: Type: first line` (no colour codes)."""
    return ExporterFailure(safe_message(f"{where}: {what} failed: {strip_ansi(one_line(exc))}"))


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` in eval mode for the duration; every submodule's training flag is restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _description(module: fx.GraphModule, description: NetDescription | None = None) -> NetDescription:
    if description is not None:
        return description
    try:
        return describe(module)
    except NinportError as exc:
        raise ExportError(str(exc)) from None


def build_metadata(module: fx.GraphModule, *, dynamic_batch: bool = True, dynamic_size: bool = False,
                   extra: dict[str, str] | None = None, description: NetDescription | None = None,
                   size_reason: str = "") -> dict[str, str]:
    """The metadata_props ninport writes for `module` (see the module docstring)."""
    import ninport

    meta = _description(module, description)
    props: dict[str, str] = {}
    if meta.source:
        props["source"] = Path(meta.source).name
    if meta.name:
        props["net_name"] = str(meta.name)
    weights = meta.weights
    if weights:
        props["weights"] = Path(weights).name
        props["weights_sha256"] = sha256_of(weights)
    else:
        props["weights"] = "(none: seeded random weights)"
    if meta.dialect:
        props["dialect"] = meta.dialect  # the net was read as this Caffe fork (e.g. HED's Crop)
    props["ninport_version"] = ninport.__version__
    props["exporter"] = f"torch {torch.__version__}"
    inputs = meta.inputs
    props["input_names"] = json.dumps(list(inputs))
    props["input_layout"] = json.dumps({k: _LAYOUTS.get(len(v), "N" + "?" * (len(v) - 1))
                                        for k, v in inputs.items()})
    size_names = _size_names(meta) if dynamic_size else {}
    props["input_shapes"] = json.dumps({k: [BATCH_DIM if (dynamic_batch and i == 0) else
                                            size_names.get(k, {}).get(i, int(d))
                                            for i, d in enumerate(v)] for k, v in inputs.items()})
    props["input_size"] = "dynamic" if dynamic_size else "static"
    if size_reason:
        props["input_size_reason"] = size_reason
    props["reference_input_shapes"] = json.dumps({k: [int(d) for d in v] for k, v in inputs.items()})
    props["output_names"] = json.dumps(list(meta.outputs))
    if onnx_output_names(meta) != list(meta.outputs):
        props["onnx_output_names"] = json.dumps(onnx_output_names(meta))
    pre = meta.preprocess
    if pre is not None:
        props["channel_order"] = pre.channel_order
        props["value_range"] = pre.value_range
        if pre.mean_values:
            props["mean_values"] = json.dumps([float(v) for v in pre.mean_values])
        if pre.mean_file:
            props["mean_file"] = pre.mean_file
            means = _mean_file_channel_means(pre.mean_file, meta.source)
            if means is not None:
                props["mean_file_channel_means"] = json.dumps(means)
        props["scale"] = repr(float(pre.scale))
        if pre.crop_size:
            image = next((v for v in inputs.values() if len(v) == 4), None)
            same = image is not None and tuple(image[2:]) == (int(pre.crop_size),) * 2
            props["crop_size" if same else "prototxt_crop_size"] = str(int(pre.crop_size))
    for key, value in (extra or {}).items():
        props[str(key)] = str(value)
    return props


def _mean_file_channel_means(mean_file: str, source: str | None) -> list[float] | None:
    """Per-channel means (file order: BGR) of the mean file, if it exists (absolute, or beside the prototxt)."""
    path = Path(mean_file)
    if not path.is_absolute():
        if not source or not Path(source).is_file():
            return None
        path = Path(source).parent / path
    if not path.is_file():
        return None
    from ninport.caffe.io import read_named_mean_file
    from ninport.errors import NinportError, NinportWarning

    try:
        mean = read_named_mean_file(path, source or path, mean_file)
    except NinportError as exc:
        warnings.warn(f"mean_file_channel_means not recorded: {exc}", NinportWarning, stacklevel=3)
        return None
    return [float(v) for v in mean.reshape(mean.shape[0], -1).mean(axis=1, dtype=np.float64)]


@contextlib.contextmanager
def quiet_torch():
    """Silence torch.onnx / torch.export chatter: their loggers below ERROR and the warnings raised from
    torch, onnx and onnxscript's own modules. Nothing else: the process's stdout, stderr and other
    warnings are left alone."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS + _SILENT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1 if lg.name in _SILENT_LOGGERS else logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_QUIET_WARNING_MODULES)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def example_inputs_for(meta: NetDescription, dynamic_batch: bool = False,
                    dynamic_size: bool = False) -> tuple[torch.Tensor, ...]:
    """Random inputs of the net's shapes; with a dynamic batch, a batch of at least 2, and with dynamic
    sizes an input whose height or width is 1 at twice its size (where `shapes.size_fixing_layers` probes the net
    there): torch.export specializes a dimension it sees as 1 (OpenPose declares a 1x1 input)."""
    gen = torch.Generator().manual_seed(0)
    shapes = [tuple(shape) for shape in meta.inputs.values()]
    if dynamic_batch:
        shapes = [(max(2, s[0]),) + s[1:] if s else s for s in shapes]
    if dynamic_size:
        shapes = [s[:2] + (2 * s[2], 2 * s[3]) if len(s) == 4 and min(s[2:]) == 1 else s for s in shapes]
    return tuple(torch.rand(shape, generator=gen) for shape in shapes)


def batch_at_least_2(inputs) -> tuple[torch.Tensor, ...]:
    """Example inputs with any batch of 1 repeated to 2 (see `example_inputs_for`)."""
    return tuple(torch.cat([x, x]) if x.dim() and x.shape[0] == 1 else x for x in inputs)


def _spatial_axes(meta: NetDescription) -> dict[str, tuple[int, ...]]:
    """Per input, the axes an export makes symbolic besides the batch: H and W of a 4-D input."""
    return {name: (2, 3) if len(shape) == 4 else () for name, shape in meta.inputs.items()}


def _size_names(meta: NetDescription) -> dict[str, dict[int, str]]:
    """The names of the symbolic spatial dimensions: `height`/`width` (`height_<i>` with several inputs)."""
    several = sum(1 for axes in _spatial_axes(meta).values() if axes) > 1
    names = {}
    for i, (name, axes) in enumerate(_spatial_axes(meta).items()):
        suffix = f"_{i}" if several else ""
        names[name] = {a: ("height" if a == 2 else "width") + suffix for a in axes}
    return names


def dynamic_shapes_for(meta: NetDescription, dynamic_batch: bool = True, dynamic_size: bool = False):
    """torch.export's dynamic_shapes: the batch (one `batch` Dim when all inputs share it) and, with
    `dynamic_size`, height and width (Dim.DYNAMIC: torch derives the smallest size the layers take)."""
    shapes = list(meta.inputs.values())
    spatial = list(_spatial_axes(meta).values())
    batches = {s[0] for s in shapes if len(s)}
    shared = torch.export.Dim(BATCH_DIM) if len(batches) <= 1 else None
    result = []
    for i, (shape, axes) in enumerate(zip(shapes, spatial)):
        dims = {}
        if dynamic_batch and len(shape):
            dims[0] = shared if shared is not None else torch.export.Dim(f"{BATCH_DIM}_{i}")
        if dynamic_size:
            dims.update({a: torch.export.Dim.DYNAMIC for a in axes})
        result.append(dims)
    if not any(result):
        return None
    return tuple(result)


@contextlib.contextmanager
def size_oblivious_tracing():
    """Trace sizes as if never 0 or 1, so an intermediate blob of size 1 at the example size (a 1x1
    score map) does not turn into a guard that the size stays 1 (or stays not 1)."""
    try:
        from torch.fx.experimental import _config as shape_config
        patch = shape_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError):  # an older/newer torch without the switch: trace as it is
        patch = contextlib.nullcontext()
    with patch:
        yield


def onnx_output_names(meta: NetDescription) -> list[str]:
    """The graph's output names: the Caffe blob names, except that an output computed in place over a net
    input (`bottom: "data" top: "data"`) is named `<blob>/output`, since ONNX names each value once."""
    return [f"{name}/output" if name in meta.inputs else name for name in meta.outputs]


@dataclass(frozen=True)
class InputSize:
    """How an export treats the inputs' height and width: symbolic (`dynamic`) or fixed, and why fixed.

    `spatial` is False when no input has a height and width that could vary (no 4-D input, or a
    reference size of 1, which torch.export cannot keep symbolic): then only the batch can be dynamic."""

    dynamic: bool
    reason: str = ""      # why fixed: the layer that fixes the size, the caller's choice, or torch's refusal
    spatial: bool = True

    def describe(self) -> str:
        """`batch, height and width dynamic` / `batch dynamic; height and width fixed: <why>` (for a
        dynamic batch; summary lines)."""
        if self.dynamic:
            return "batch, height and width dynamic" + (f" ({self.reason})" if self.reason else "")
        if not self.spatial:
            return "batch dynamic"
        return f"batch dynamic; height and width fixed: {self.reason}" if self.reason else \
            "batch dynamic; height and width fixed"


class SymbolicSizeError(ExportError):
    """torch could not export height and width as symbols for a net whose layers run at other sizes."""


def input_size_for(description: NetDescription, dynamic_size: bool | None = None) -> InputSize:
    """What an export does with height and width: symbolic when the net runs at other sizes (None),
    fixed with False, symbolic with True even where a layer fixes the size (forced: the file then
    takes the sizes that layer allows, e.g. AlexNet's fc6 227 to 230; `reason` names the layer).
    One answer for `inspect` and every export: the shape rules' `size_fixed_by` in the net description."""
    if not any(_spatial_axes(description).values()):
        return InputSize(False, "the inputs have no height and width to vary", spatial=False)
    if dynamic_size is False:
        return InputSize(False, "as asked (dynamic_size=False, `ninport convert --static`)")
    if description.size_fixed_by:
        fixing = size_fixing_text(description.size_fixed_by)
        if dynamic_size:
            return InputSize(True, f"forced, although the net runs only at its input size ({fixing})")
        return InputSize(False, f"the net runs only at its input size ({fixing})")
    return InputSize(True)


def trace_with_input_size(trace: Callable[[bool], T], size: InputSize, asked: bool | None,
                          target: str) -> tuple[T, InputSize]:
    """`trace(dynamic)` as `size` says. When torch cannot keep height and width symbolic: SymbolicSizeError
    if they were asked for (`asked` True), else fixed sizes with a NinportWarning saying why (never silent)."""
    if not size.dynamic:
        return trace(False), size
    try:
        return trace(True), size
    except Exception as exc:  # noqa: BLE001 - torch's exporters raise many types
        root = exc
        while root.__cause__ is not None:  # torch.onnx wraps torch.export's error: the cause says why
            root = root.__cause__
        why = f"torch could not keep them symbolic ({strip_ansi(one_line(root))})"
        if asked:
            raise SymbolicSizeError(f"height and width cannot be dynamic: {why}") from exc
        fixed = InputSize(False, why)
    result = trace(False)  # a failure here is the real error (a fixed batch, a bug): no warning before it
    warnings.warn(safe_message(f"{target}: height and width fixed at the reference size: {fixed.reason}"),
                  NinportWarning, stacklevel=3)
    return result, fixed


def _rename_size_dims(model, meta: NetDescription, dynamic_batch: bool) -> bool:
    """Name the graph inputs' symbolic dims batch/height/width (everywhere the same symbol occurs);
    True when every spatial axis asked for stayed symbolic."""
    import re

    names = _size_names(meta)
    mapping: dict[str, str] = {}
    dynamic = True
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        wanted = dict(names.get(value.name, {}))
        for axis, new in wanted.items():
            if axis < len(dims):
                if dims[axis].HasField("dim_param"):
                    mapping.setdefault(dims[axis].dim_param, new)
                else:
                    dynamic = False
    if not mapping:
        return dynamic and not any(names.values())
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)
    return dynamic


def _scopes(node) -> list[str]:
    """The module path torch recorded for an onnx_ir node: ['', '<layer>', '<aten op>']."""
    text = node.metadata_props.get(_TORCH_SCOPE_KEY)
    if not text:
        return []
    try:  # torch writes a Python list literal
        return [str(s) for s in ast.literal_eval(text)]
    except (ValueError, SyntaxError, TypeError):
        return []


def _optimize(model) -> None:
    """torch's default optimization (constant folding, dead-code removal, CSE) minus the
    rewrite rules that fuse layers (Conv+BatchNorm, ReLU+Clip, Pad+Conv): every Caffe layer keeps
    its own node and name; runtimes fuse at load time anyway."""
    from onnx_ir.passes import common
    from onnxscript import optimizer, rewriter

    common.InlinePass()(model)
    rules = _rewrite_rules()
    for _ in range(2):
        changed = optimizer.fold_constants(model).modified
        if rules:
            changed = rewriter.RewritePass(rules)(model).modified or changed
        changed = common.RemoveUnusedNodesPass()(model).modified or changed
        if not changed:
            break
    for step in (common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                 common.DeduplicateInitializersPass(), common.CommonSubexpressionEliminationPass(),
                 common.RemoveUnusedNodesPass(), common.OutputFixPass(), common.NameFixPass()):
        step(model)


def _rewrite_rules() -> list:
    """The rewrite rules named in KEPT_REWRITE_RULES that this onnxscript has; a NinportWarning if none
    (the export stays correct, only less tidy)."""
    try:
        from onnxscript.rewriter.rules import common
    except ImportError:
        common = None
    rules = []
    for name in KEPT_REWRITE_RULES:
        found = getattr(common, name, None)
        if found is None:
            continue
        rules.extend(getattr(found, "rules", [found]))
    if not rules:
        warnings.warn("none of ninport's onnxscript rewrite rules exist in this onnxscript version; "
                      "the ONNX graph is exported without them", NinportWarning, stacklevel=3)
    return rules


def _op_layers(graph, layer_names: set[str]) -> dict[str, str]:
    """aten op name (unique in the exported program) -> Caffe layer, before optimization."""
    found = {}
    for node in graph:
        scopes = _scopes(node)
        layer = next((s for s in scopes if s in layer_names), None)
        if layer is not None and scopes[-1] != layer:
            found[scopes[-1]] = layer
    return found


def _size_arithmetic(node) -> bool:
    """A node computing sizes from a dynamic shape (int64 outputs): not one of the layer's own ops."""
    outputs = list(node.outputs)
    return bool(outputs) and all(str(getattr(v, "dtype", "")).endswith("INT64") for v in outputs)


def _rename_nodes(graph, layer_names: set[str], op_layers: dict[str, str]) -> None:
    """Name nodes after the Caffe layer (submodule) that produced them; drop torch's node metadata.

    Nodes the optimizer created without metadata (e.g. Split from SplitToSequence) are matched to
    their aten op by their output value names, which start with the op name.
    """
    by_length = sorted(op_layers, key=len, reverse=True)
    groups: dict[str, list] = {}
    hoisted_in_layer: list[tuple[object, str]] = []
    for node in graph:
        scopes = _scopes(node)
        layer = next((s for s in scopes if s in layer_names), None)
        op = scopes[-1] if layer is not None and scopes[-1] != layer else None
        if layer is None:
            outs = [v.name or "" for v in node.outputs]
            op = next((o for o in by_length if outs and all(n.startswith(o) for n in outs)), None)
            layer = op_layers.get(op) if op else None
        if layer is not None and _size_arithmetic(node):
            hoisted_in_layer.append((node, f"{layer}/size/{node.op_type}"))
        elif layer is not None:
            groups.setdefault(layer, []).append((node, op or node.op_type))
        node.metadata_props.clear()
    # Shape arithmetic torch hoists out of the layers (a dynamic size's Shape/Gather/Div feeding a
    # layer's Pad, Slice or Range) belongs to the first layer that uses it.
    layer_of = {id(node): layer for layer, nodes in groups.items() for node, _ in nodes}
    layer_of.update({id(node): name.split("/")[0] for node, name in hoisted_in_layer})
    hoisted: list[tuple[object, str]] = list(hoisted_in_layer)
    for node in reversed(list(graph)):
        if id(node) in layer_of:
            continue
        users = [user for value in node.outputs for user, _ in value.uses()]
        layer = next((layer_of[id(u)] for u in users if id(u) in layer_of), None)
        if layer is not None:
            layer_of[id(node)] = layer
            hoisted.append((node, f"{layer}/size/{node.op_type}"))
    renamed = {id(node) for nodes in groups.values() for node, _ in nodes} | {id(node) for node, _ in hoisted}
    used = {node.name for node in graph if id(node) not in renamed}
    for layer, nodes in groups.items():
        candidates = [layer] if len(nodes) == 1 else [f"{layer}/{op}" for _, op in nodes]
        for (node, _), name in zip(nodes, candidates):
            unique, k = name, 1
            while unique in used:
                unique, k = f"{name}_{k}", k + 1
            node.name = unique
            used.add(unique)
    for node, name in reversed(hoisted):
        unique, k = name, 1
        while unique in used:
            unique, k = f"{name}_{k}", k + 1
        node.name = unique
        used.add(unique)


def onnx_translations(description: NetDescription) -> dict:
    """The translations of custom ops that the net's layer types declare (`LayerType.onnx_translations`)."""
    from ninport.registry import layer_type

    records = {layer.type: layer_type(layer.type, description.dialect) for layer in description.layers}
    table: dict = {}
    for record in records.values():
        if record is not None:
            table.update(record.translations())
    return table


def to_onnx_model(module: fx.GraphModule, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                  dynamic_size: bool | None = None, metadata: dict[str, str] | None = None,
                  description: NetDescription | None = None) -> OnnxModel:
    """The checked ONNX model for `module`, ready to be written (what `export_onnx` writes).

    The exporter traces with torch's fake tensors, so no copy of the weights is made: the large initializers
    stay the module's own tensors until `OnnxModel.write` streams them into the file.

    `dynamic_size`: True gives symbolic height and width (forced even where a layer fixes the size: the
    file takes what that layer allows), False fixed ones, None (default) symbolic when the net runs at
    other sizes (`input_size_for`); should torch fail to keep them symbolic there, they are fixed and a
    NinportWarning says why.
    """
    import onnx

    meta = _description(module, description)
    from ninport import memory

    memory.require(memory.export_bytes(module, meta), f"{meta.source}: exporting to ONNX {memory.at_input(meta)}",
                   "export at a smaller input shape")
    size = input_size_for(meta, dynamic_size)
    input_names = list(meta.inputs)
    output_names = onnx_output_names(meta)
    if len(set(output_names)) != len(output_names):
        raise ExportError("the net lists an output blob twice")
    layer_names = {name for name, _ in module.named_children()}
    translations = onnx_translations(meta)

    def trace(dynamic: bool):
        with evaluating(module), quiet_torch(), torch.no_grad(), size_oblivious_tracing():
            program = torch.onnx.export(
                module, example_inputs_for(meta, dynamic_batch, dynamic), None, dynamo=True, opset_version=opset,
                input_names=input_names, output_names=output_names, custom_translation_table=translations,
                dynamic_shapes=dynamic_shapes_for(meta, dynamic_batch, dynamic),
                verbose=False, report=False, optimize=False)
            op_layers = _op_layers(program.model.graph, layer_names)
            _optimize(program.model)
            # An output that is an input (e.g. a net of Dropout only) shares its value with the input until
            # OutputFixPass adds an Identity; name the boundary values by position, as Caffe does.
            graph = program.model.graph
            for value, name in [*zip(graph.inputs, input_names), *zip(graph.outputs, output_names)]:
                value.name = name
            _rename_nodes(program.model.graph, layer_names, op_layers)
            model, streamed = _skeleton(program.model)
        if dynamic and not _rename_size_dims(model, meta, dynamic_batch):
            raise ExportError("torch specialized height or width to the example's size")
        return model, streamed

    (model, streamed), size = trace_with_input_size(trace, size, dynamic_size, "ONNX export")
    if [i.name for i in model.graph.input] != input_names:
        raise ExportError(f"graph inputs came out as {[i.name for i in model.graph.input]}, expected {input_names}")
    if [o.name for o in model.graph.output] != output_names:
        raise ExportError(f"graph outputs came out as {[o.name for o in model.graph.output]}, "
                          f"expected {output_names}")
    model.producer_name = "ninport"
    import ninport
    model.producer_version = ninport.__version__
    if meta.title:
        model.graph.name = str(meta.title)
    del model.metadata_props[:]
    props = build_metadata(module, dynamic_batch=dynamic_batch, dynamic_size=size.dynamic, extra=metadata,
                           description=meta, size_reason=size.reason if size.spatial else "")
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    result = OnnxModel(model, streamed)
    onnx.checker.check_model(result.checkable(), full_check=True)
    return result


def export_onnx(module: fx.GraphModule, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, dynamic_size: bool | None = None,
                metadata: dict[str, str] | None = None, description: NetDescription | None = None) -> Path:
    """Export `module` (from `ninport.load`) to an ONNX file at `path`; returns the path.

    `dynamic_size`: symbolic height and width (True), fixed at the reference size (False), or symbolic
    when the net runs at other sizes (None, the default); the file's `input_size` metadata says which.
    The model is checked with `onnx.checker.check_model(full_check=True)` before it is written (its
    large initializers as inputs of their type and shape: see `OnnxModel`), and written with no second
    copy of the weights in memory; the file appears atomically or not at all. ExportError for what the
    user can fix (missing folder, unwritable folder, a fixed batch exported as dynamic, a model of 2 GiB
    or more); ExporterFailure when torch's exporter or onnx's checker fails otherwise (a bug). The
    module's training flags are unchanged.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"{path}: ONNX export failed: folder {path.parent} does not exist")
    model = onnx_model_for_file(module, path, opset=opset, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size,
                                metadata=metadata, description=description)
    return write_atomic(path, lambda tmp: save_onnx_model(model, tmp), "writing ONNX")


def onnx_model_for_file(module: fx.GraphModule, path: str | os.PathLike, **options):
    """`to_onnx_model(module, **options)` with its failures named after `path` (see `export_onnx`)."""
    try:
        return to_onnx_model(module, **options)
    except ExportError as exc:
        raise type(exc)(f"{path}: ONNX export failed: {exc}") from None
    except NinportError:
        raise
    except Exception as exc:  # a failure inside torch/onnx: see the module docstring
        if options.get("dynamic_batch", True) and "Constraints violated" in str(exc):
            raise ExportError(f"{path}: ONNX export failed: the net fixes its batch size; export with "
                              "dynamic_batch=False") from None
        raise exporter_failure(str(path), "ONNX export", exc) from exc


def save_onnx_model(model: OnnxModel, path: str | os.PathLike) -> None:
    """Write an exported model (`to_onnx_model`) to `path` (no staging: callers stage)."""
    model.write(path)


# --- writing the file: the weights go from the module's tensors to the file, never copied in memory ----------

# Initializers of at least this many bytes are written straight from their tensors; smaller ones (shapes,
# scalars, small biases) stay in the model proto, where the checker and shape inference see their values.
STREAMED_BYTES = 1024
# A protobuf message (and so a self-contained ONNX file) holds less than 2 GiB.
MAX_ONNX_BYTES = 2 ** 31 - 1


@dataclass
class OnnxModel:
    """A checked ONNX model whose large initializers are kept as tensors (`streamed`: TensorProto headers
    without data, and the tensors) beside the rest of the model (`proto`), so that writing the file needs no
    second copy of the weights: `proto` is the model without them, and `write` appends each one's bytes
    to the graph as it writes the file. The file is an ordinary self-contained ONNX file (protobuf fields
    may come in any order: the graph's streamed initializers simply come after its other fields)."""

    proto: object                               # onnx.ModelProto without the streamed initializers
    streamed: list[tuple[object, object]]       # (onnx.TensorProto header: name, dims, data_type; tensor)

    @property
    def nbytes(self) -> int:
        """The file's size."""
        return sum(len(head) + len(data) for head, data in self._pieces(with_data=False))

    def checkable(self):
        """The model as the ONNX checker takes it in memory: the streamed initializers as graph inputs of their
        type and shape (their bytes are the tensors' own, written as they are)."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        for header, _ in self.streamed:
            model.graph.input.append(onnx.helper.make_tensor_value_info(header.name, header.data_type,
                                                                        list(header.dims)))
        return model

    def model_proto(self):
        """The whole model as one in-memory onnx.ModelProto (a copy of the weights: for small nets and tests)."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        for header, tensor in self.streamed:
            initializer = model.graph.initializer.add()
            initializer.CopyFrom(header)
            initializer.raw_data = bytes(_tensor_bytes(tensor))
        return model

    def write(self, path: str | os.PathLike) -> None:
        """Write the file: the model without the streamed initializers, then each one's bytes from its tensor."""
        size = self.nbytes
        if size > MAX_ONNX_BYTES:
            raise ExportError(f"the model is {size:,} bytes; a single ONNX file holds less than 2 GiB")
        with open(path, "wb") as fh:
            for head, data in self._pieces(with_data=True):
                fh.write(head)
                fh.write(data)

    def _pieces(self, *, with_data: bool):
        """The file as (bytes, data) pieces, `data` a view of a tensor's bytes (or b"" / its length only)."""
        import onnx

        rest = onnx.ModelProto()
        rest.CopyFrom(self.proto)
        rest.ClearField("graph")
        graph = self.proto.graph.SerializeToString()
        records = []
        for header, tensor in self.streamed:
            head = header.SerializeToString()
            data = _tensor_bytes(tensor) if with_data else _Length(_nbytes(tensor))
            head += encode_key(9, 2) + encode_varint(len(data))  # TensorProto.raw_data
            initializer = encode_key(5, 2) + encode_varint(len(head) + len(data))  # GraphProto.initializer
            records.append((initializer + head, data))
        graph_size = len(graph) + sum(len(head) + len(data) for head, data in records)
        yield rest.SerializeToString() + encode_key(7, 2) + encode_varint(graph_size) + graph, b""  # ModelProto.graph
        yield from records


class _Length:
    """Stands for a tensor's bytes when only their number is needed."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _nbytes(tensor) -> int:
    return int(tensor.nbytes)


def _tensor_bytes(tensor) -> memoryview | bytes:
    """The tensor's bytes as ONNX stores them (little-endian, row-major): a view of its memory where it can be
    one (float32 weights, the usual case), else a copy."""
    try:
        array = tensor.numpy()
    except Exception:  # noqa: BLE001 - a dtype numpy lacks: let the tensor serialize itself
        return tensor.tobytes()
    if array.dtype.byteorder == ">" or array.nbytes != _nbytes(tensor) or array.dtype.hasobject:
        return tensor.tobytes()
    return memoryview(np.ascontiguousarray(array)).cast("B")


def _skeleton(model) -> tuple[object, list[tuple[object, object]]]:
    """Serialize an onnx_ir model without its large initializers' bytes: (the ModelProto without them,
    [(TensorProto header, tensor)] for each). The large tensors are taken out of `model`, which is not to be
    used after: onnxscript's rewrite rules keep a reference to the last graph they matched (module globals),
    and through it the module's weights would outlive the export."""
    import onnx
    from onnx_ir import serde

    streamed = []
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None or _nbytes(tensor) < STREAMED_BYTES or tensor.dtype.name == "STRING":
            continue
        header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=tensor.shape.numpy())
        streamed.append((header, tensor))
        value.const_value = None  # serialize_model skips an initializer without a value
    return serde.serialize_model(model), streamed
