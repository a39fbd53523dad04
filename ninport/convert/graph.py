"""The generic builder: NetSpec (+ weights) -> torch.fx.GraphModule, in Caffe's layer order.

Submodules are named after Caffe layers and graph nodes after the blobs they produce, so the
generated code reads like the prototxt. In-place Caffe layers become ordinary functional
nodes; `blob_nodes` remembers which node holds each blob's final value (what Caffe reports).
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import torch
from torch import fx, nn

from ninport.caffe.shapes import ShapeTable, infer_shapes
from ninport.caffe.spec import NetSpec
from ninport.convert.registry import CONVERTERS, LayerContext, _load_all, supported_layer_types
from ninport.errors import NinportError, NinportWarning, UnsupportedLayerError

META_KEY = "ninport"


def module_name(layer_name: str) -> str:
    """A submodule name for a Caffe layer: torch forbids '.' and the empty name, nothing else."""
    name = layer_name.replace(".", "_") or "_unnamed"
    return name


def _node_name(blob: str) -> str:
    name = re.sub(r"\W", "_", blob)
    return name if name and not name[0].isdigit() else f"blob_{name}"


def build_graph_module(spec: NetSpec, weights: dict[str, list[np.ndarray]],
                       table: ShapeTable | None = None) -> fx.GraphModule:
    """Build the GraphModule; `weights` maps layer name -> blobs in Caffe layout."""
    _load_all()
    table = table or infer_shapes(spec)
    root = nn.Module()
    graph = fx.Graph()
    blob_node: dict[str, fx.Node] = {}
    used_module_names: set[str] = set()
    for name in spec.inputs:
        blob_node[name] = graph.placeholder(_node_name(name))
    for layer in spec.layers:
        convert = CONVERTERS.get(layer.type)
        if convert is None:
            raise UnsupportedLayerError(f"{layer.where(spec.source)}: layer type {layer.type!r} is not supported; "
                                        f"supported types: {', '.join(supported_layer_types())}")
        ctx = LayerContext(layer=layer, bottom_shapes=[table.blobs[b] for b in layer.bottoms],
                           top_shapes=[table.blobs[t] for t in layer.tops],
                           weights=weights.get(layer.name, []))
        try:
            module = convert(ctx)
        except NinportError as exc:
            raise type(exc)(f"{layer.where(spec.source)}: {exc}") from None
        target = module_name(layer.name)
        if target in used_module_names:  # two layers whose names differ only by '.' vs '_'
            suffix = 1
            while f"{target}_{suffix}" in used_module_names:
                suffix += 1
            target = f"{target}_{suffix}"
        used_module_names.add(target)
        root.add_module(target, module)
        args = tuple(blob_node[b] for b in layer.bottoms)
        first_top = layer.tops[0] if layer.tops else layer.name
        node = graph.create_node("call_module", target, args, name=_node_name(first_top))
        if len(layer.tops) == 1:
            blob_node[layer.tops[0]] = node
        else:
            for i, top in enumerate(layer.tops):
                blob_node[top] = graph.create_node("call_function", _getitem, (node, i), name=_node_name(top))
    outputs = [blob_node[b] for b in spec.outputs]
    graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    gm = fx.GraphModule(root, graph, class_name=_class_name(spec.name))
    gm.meta[META_KEY] = {
        "inputs": {k: tuple(v) for k, v in spec.inputs.items()},
        "outputs": list(spec.outputs),
        "blob_nodes": {blob: node.name for blob, node in blob_node.items()},
        "blob_shapes": dict(table.blobs),
        # blob -> the Caffe layer that wrote its final value (OpenCV's forward() wants layer names)
        "blob_layers": {**{name: name for name in spec.inputs},
                        **{top: layer.name for layer in spec.layers for top in layer.tops}},
        "source": spec.source,
        "net_name": spec.name,
    }
    gm.eval()
    return gm


def _getitem(values, index: int):
    return values[index]


def _class_name(net_name: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", net_name or "caffe")
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Caffe"
    return name if not name[0].isdigit() else f"Net{name}"


def forward_blobs(module: fx.GraphModule, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run one forward pass and return every Caffe blob by its Caffe name.

    In-place blobs hold their value after the last in-place layer, as Caffe reports them.
    """
    meta = module.meta.get(META_KEY)
    if meta is None:
        raise NinportError("forward_blobs needs a module built by ninport.load()")
    values: dict[str, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            values[n.name] = result
            return result

    with torch.no_grad():
        Recorder(module).run(*inputs)
    return {blob: values[node] for blob, node in meta["blob_nodes"].items()}


def warn_random_weights(source: str) -> None:
    warnings.warn(f"{source}: no caffemodel given; the net has seeded RANDOM weights (fine for "
                  "checking structure and shapes, meaningless for predictions)", NinportWarning, stacklevel=3)
