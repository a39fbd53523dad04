"""The generic builder: NetSpec (+ weights) -> torch.fx.GraphModule, in Caffe's layer order.

Names from the model file are data, never code: torch.fx writes Python source for the module, so
every submodule and graph node gets a generated identifier (the Caffe name made into a plain ASCII
identifier, with a counter when two collide, never a Python keyword or an attribute of nn.Module /
GraphModule). The Caffe names live in the module's NetDescription (`ninport.describe`), built here
and only here. In-place Caffe layers become ordinary functional nodes; the description records which
node holds each blob's final value (what Caffe reports).
"""
from __future__ import annotations

import builtins
import dataclasses
import keyword
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from ninport.build.shapes import infer_shapes, size_fixing_layers
from ninport.registry import ShapeTable
from ninport.caffe.spec import NetSpec
from ninport import registry
from ninport.build.context import LayerContext
from ninport.build.size_checks import SizeGuard, guard_sizes
from ninport.build.description import BlobRecord, LayerRecord, NetDescription, Phase, attach, describe
from ninport.errors import NinportError, NinportWarning, UnsupportedLayerError, safe_text
from ninport.layers.rules import same_as_bottom

MAX_IDENTIFIER_CHARS = 64
# Layer types whose module returns a new tensor (never its input or a view of it): an in-place layer right
# after one of them, its only reader, may overwrite that tensor (`LayerContext.may_overwrite_bottom`).
FRESH_TOP_TYPES = frozenset({"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale"})
# Attribute names a submodule must not take: what nn.Module / GraphModule have or set on instances.
_RESERVED = (set(dir(fx.GraphModule)) | set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
             | {"training", "graph", "code", "meta", "forward", "self", "torch", "fx", "nn"})


def python_identifier(name: str, used: set[str], fallback: str = "layer") -> str:
    """A fresh identifier derived from a Caffe name: ASCII letters, digits and '_' only, not reserved,
    not in `used` (which it is added to). 'cccp8-1024' -> 'cccp8_1024', '' -> 'layer', 'def' -> 'def_'."""
    base = re.sub(r"[^0-9A-Za-z_]", "_", name)[:MAX_IDENTIFIER_CHARS].lstrip("_") or fallback
    if base[0].isdigit():
        base = f"{fallback}_{base}"
    if base in _RESERVED or keyword.iskeyword(base):
        base = f"{base}_"
    candidate, counter = base, 2
    while candidate in used or candidate in _RESERVED:
        candidate, counter = f"{base}_{counter}", counter + 1
    used.add(candidate)
    return candidate


def build_graph_module(spec: NetSpec, weights: dict[str, list[np.ndarray]],
                       table: ShapeTable | None = None, *, weights_source: str | None = None,
                       phase: Phase = "TEST") -> fx.GraphModule:
    """Build the GraphModule and attach its NetDescription; `weights` maps `LayerSpec.key` (the layer name,
    unless an earlier layer has the same name) -> blobs (Caffe layout)."""
    table = table or infer_shapes(spec)
    root = nn.Module()
    graph = fx.Graph()
    blob_node: dict[str, fx.Node] = {}
    blob_layer: dict[str, str | None] = {}
    module_names: set[str] = set()
    node_names: set[str] = set()
    layer_records: list[LayerRecord] = []
    node_type: dict[fx.Node, str] = {}  # each layer's node -> its Caffe type
    for name in spec.inputs:
        blob_node[name] = graph.placeholder(python_identifier(name, node_names, "blob"))
        blob_layer[name] = None
    for layer in spec.layers:
        record = registry.layer_type(layer.type, spec.dialect)
        if record is None:
            raise UnsupportedLayerError(f"{layer.where(spec.source)}: layer type is not supported")
        convert = record.convert_function()
        ctx = LayerContext(layer=layer, bottom_shapes=[table.blobs[b] for b in layer.bottoms],
                           top_shapes=[table.blobs[t] for t in layer.tops],
                           weights=weights.get(layer.key, []), parsed=table.layers[layer.key].parsed,
                           may_overwrite_bottom=_may_overwrite_bottom(layer, blob_node, node_type))
        try:
            module = convert(ctx)
        except NinportError as exc:
            raise type(exc)(f"{layer.where(spec.source)}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a plugin's converter failed: name the layer, not a traceback
            if not callable(record.converter):  # a built-in converter failing is a bug: let it show
                raise
            raise UnsupportedLayerError(f"{layer.where(spec.source)}: the {record.origin} converter failed: "
                                        f"{type(exc).__name__}: {safe_text(str(exc))}") from exc
        if not isinstance(module, nn.Module):
            raise UnsupportedLayerError(f"{layer.where(spec.source)}: the converter returned "
                                        f"{type(module).__name__}, not a torch.nn.Module")
        if record.shape is not same_as_bottom:  # a rule that takes every shape (ReLU, Dropout...) needs no guard
            guard_sizes(module, SizeGuard(record, layer, ctx.bottom_shapes, table.layers.get(layer.key)))
        target = python_identifier(layer.name, module_names)
        root.add_module(target, module)
        layer_records.append(LayerRecord(layer.name, layer.type, target, tuple(layer.bottoms), tuple(layer.tops)))
        args = tuple(blob_node[b] for b in layer.bottoms)
        first_top = layer.tops[0] if layer.tops else layer.name
        node = graph.create_node("call_module", target, args, name=python_identifier(first_top, node_names, "blob"))
        node_type[node] = layer.type
        if len(layer.tops) == 1:
            blob_node[layer.tops[0]] = node
        else:
            for i, top in enumerate(layer.tops):
                blob_node[top] = graph.create_node("call_function", _getitem, (node, i),
                                                   name=python_identifier(top, node_names, "blob"))
        for top in layer.tops:
            blob_layer[top] = layer.name
    outputs = [blob_node[b] for b in spec.outputs]
    graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    contiguous_outputs(graph)
    gm = fx.GraphModule(root, graph, class_name=net_class_name(spec.name or Path(spec.source).stem))
    attach(gm, NetDescription(
        name=spec.name, source=spec.source, source_format=spec.source_format,
        inputs={k: tuple(int(d) for d in v) for k, v in spec.inputs.items()},
        outputs=tuple(spec.outputs),
        blobs={blob: BlobRecord(blob, node.name, blob_layer[blob], tuple(table.blobs[blob]))
               for blob, node in blob_node.items()},
        layers=tuple(layer_records), weights=weights_source, preprocess=spec.preprocess, phase=phase,
        dialect=spec.dialect, caffe_blobs=spec.caffe_blobs, size_fixed_by=tuple(size_fixing_layers(spec, table))))
    gm.eval()
    return gm


def _may_overwrite_bottom(layer, blob_node: dict[str, fx.Node], node_type: dict[fx.Node, str]) -> bool:
    """Whether an in-place layer's bottom is a fresh tensor no other layer has read (see FRESH_TOP_TYPES);
    layers after it read the in-place layer's own node, so nothing reads the overwritten value later."""
    if len(layer.bottoms) != 1 or list(layer.tops) != list(layer.bottoms):
        return False
    node = blob_node[layer.bottoms[0]]
    return node_type.get(node) in FRESH_TOP_TYPES and not node.users


def _getitem(values, index: int):
    return values[index]


def contiguous_output(value):
    """An output in the default (contiguous) layout: the layers may hand on channels_last tensors (see
    layers/convolution.py), the caller gets what a plain torch module gives. No copy when it already is."""
    return value.contiguous() if isinstance(value, torch.Tensor) else value


def contiguous_outputs(graph: fx.Graph) -> None:
    """Route each output of `graph` through `contiguous_output` (once)."""
    output = graph.output_node()

    def wrap(value):
        if isinstance(value, fx.Node) and value.target is not contiguous_output:
            with graph.inserting_before(output):
                return graph.call_function(contiguous_output, (value,))
        if isinstance(value, (tuple, list)):
            return type(value)(wrap(v) for v in value)
        return value

    output.args = (wrap(output.args[0]),)


def net_class_name(net_name: str) -> str:
    """The net's class name: the letters and digits of its name in CamelCase ('nin-imagenet' -> 'NinImagenet'),
    never a keyword, soft keyword or builtin ('none' -> 'NoneNet', 'valueError' -> 'ValueErrorNet')."""
    words = re.findall(r"[A-Za-z0-9]+", (net_name or "caffe")[:MAX_IDENTIFIER_CHARS])
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Caffe"
    name = name if not name[0].isdigit() else f"Net{name}"
    while keyword.iskeyword(name) or keyword.issoftkeyword(name) or hasattr(builtins, name):
        name += "Net"
    return name


def forward_blobs(module: fx.GraphModule, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run one forward pass and return every Caffe blob by its Caffe name, as pycaffe's `net.blobs`:
    in Caffe's order, with the copies Caffe's automatic Split layers make (`<blob>_<layer>_<i>_split_<j>`,
    the same tensor as the blob they copy), so a full blob dump of Caffe compares name for name.

    In-place blobs hold their value after the last in-place layer, as Caffe reports them.
    """
    description = describe(module)
    values: dict[str, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            values[n.name] = result
            return result

    with torch.no_grad():
        Recorder(module).run(*inputs)
    # in the default layout, as the module's outputs (the layers may hand on channels_last tensors)
    blobs = {blob: contiguous_output(values[record.node]) for blob, record in description.blobs.items()}
    ordered = {name: blobs[source] for name, source in description.caffe_blobs if source in blobs}
    ordered.update((blob, value) for blob, value in blobs.items() if blob not in ordered)
    return ordered


def with_outputs(module: fx.GraphModule, blobs: Sequence[str]) -> fx.GraphModule:
    """The same net returning these Caffe blobs, in this order (a tuple when several): a detector's proposals
    beside its scores, a layer's features for transfer learning. It shares the module's submodules and
    parameters; the layers no requested blob needs are left out."""
    description = describe(module)
    if isinstance(blobs, str) or not blobs:
        raise NinportError("blobs must be a non-empty list of blob names")
    unknown = [b for b in blobs if b not in description.blobs]
    if unknown:
        raise NinportError(f"{description.source}: no blob {safe_text(str(unknown[0]), 80)!r} in the net; its blobs: "
                           + ", ".join(safe_text(b, 80) for b in list(description.blobs)[:40]))
    graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    graph.graph_copy(module.graph, copied)
    by_name = {node.name: node for node in module.graph.nodes}
    outputs = [copied[by_name[description.blobs[b].node]] for b in blobs]
    graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    contiguous_outputs(graph)
    picked = fx.GraphModule(module, graph, class_name=type(module).__name__)
    picked.graph.eliminate_dead_code()
    picked.delete_all_unused_submodules()
    picked.recompile()
    attach(picked, dataclasses.replace(description, outputs=tuple(blobs)))
    picked.train(module.training)
    return picked


def warn_random_weights(source: str) -> None:
    warnings.warn(f"{source}: no caffemodel given; the net has seeded RANDOM weights (fine for "
                  "checking structure and shapes, meaningless for predictions)", NinportWarning, stacklevel=3)
