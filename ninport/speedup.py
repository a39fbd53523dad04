"""Opt-in CPU inference speed-up for a converted net: `optimize(module)`, the ReLU fused into its convolution.

What used to be here is now the plain module's default (issue 22, see layers/convolution.py, layers/pooling.py):
each convolution runs as one oneDNN call on channels_last activations with its weight packed for the input's
shape, torch's own pooling runs where it is exact, and an in-place ReLU overwrites its convolution's output.
What stays opt-in, because it changes the graph:
- a ReLU that is the convolution's only user is fused into it as a oneDNN post-op, and its graph node is
  dropped (its submodule stays, unused, so submodule and state-dict names are unchanged; a forward hook on
  the ReLU no longer fires).
Measured against the default module in the same runs (`python -m benchmarks --sections nets`, the
"+ optimize()" rows): no consistent gain left on NIN, GoogLeNet, SqueezeNet or the res10 detector, the
differences going both ways within the noise of the shared 2-core machine.

The result is still a torch.fx.GraphModule named after the Caffe layers, sharing the original's
parameters. Anything not recognised is left as it was. The fast path runs only where it applies
(CPU, float32, 4-D input, no autograd); elsewhere each layer computes exactly what it did before.
Export ONNX / .pt2 from the unoptimized module: the fused graph has no node for the fused ReLUs.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import fx, nn

from ninport.build.description import META_KEY, NetDescription
from ninport.build.graph import contiguous_outputs
from ninport.build.size_checks import carry_size_guard
from ninport.errors import NinportError
from ninport.layers import convolution
from ninport.layers.activation import Elementwise
from ninport.layers.convolution import PackedWeight, onednn_applies, onednn_conv2d

_POST_OPS = ("relu", "none")


def onednn_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) and the fused convolution op."""
    return convolution.ONEDNN


class OneDNNConv2d(nn.Conv2d):
    """A Conv2d (same `weight` / `bias`) computed by oneDNN (`layers.convolution.onednn_conv2d`), optionally
    with a fused ReLU."""

    def __init__(self, conv: nn.Conv2d, post_op: str):
        if post_op not in _POST_OPS:
            raise ValueError(f"post_op must be one of {_POST_OPS}, not {post_op!r}")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, device="meta")
        self.weight = conv.weight  # shared with the unoptimized module, not copied
        self.bias = conv.bias
        self.post_op = post_op
        self.packed = PackedWeight()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", post_op={self.post_op}, onednn"

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, self.weight, self.bias)
        return F.relu(y) if self.post_op == "relu" else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not onednn_applies(self, x):
            return self._reference(x)
        return onednn_conv2d(self, x, self.post_op)


def _eligible_conv(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple) and module.weight.dim() == 4)


def _is_relu(node: fx.Node, owner: fx.GraphModule) -> bool:
    """A node computing a plain ReLU of its single argument (module or function form)."""
    if len(node.args) != 1 or node.kwargs:
        return False
    if node.op == "call_module":
        module = owner.get_submodule(node.target)
        return type(module) is nn.ReLU or (type(module) is Elementwise and module.kind == "relu")
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    return False


def optimize(module: fx.GraphModule) -> fx.GraphModule:
    """A faster CPU-inference copy of `module` (a ninport.load() result or any fx GraphModule).

    Parameters are shared with `module`, which is left unchanged. Numbers match the unoptimized
    module to float32 rounding (different summation order inside oneDNN).
    """
    if not isinstance(module, fx.GraphModule):
        raise NinportError(f"optimize() needs a torch.fx.GraphModule (what ninport.load returns), not "
                           f"{type(module).__name__}")
    fast = fx.GraphModule(module, copy.deepcopy(module.graph), class_name=type(module).__name__)
    fast.meta = copy.deepcopy(module.meta)
    fast.train(module.training)
    if not onednn_available():
        return fast
    description = fast.meta.get(META_KEY)
    blob_nodes: dict[str, str] = ({blob: r.node for blob, r in description.blobs.items()}
                                  if isinstance(description, NetDescription) else {})
    exposed = set(blob_nodes.values())  # nodes whose value forward_blobs reports as a Caffe blob
    graph = fast.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or not _eligible_conv(fast.get_submodule(node.target)):
            continue
        users = list(node.users)
        relu = users[0] if len(users) == 1 and _is_relu(users[0], fast) else None
        if relu is not None and node.name in exposed:
            relu = None  # the pre-ReLU value is a Caffe blob of its own (not an in-place ReLU)
        conv = fast.get_submodule(node.target)
        fused = OneDNNConv2d(conv, "relu" if relu is not None else "none")
        _set_submodule(fast, node.target, carry_size_guard(conv, fused))
        if relu is not None:
            relu.replace_all_uses_with(node)
            for blob, name in blob_nodes.items():
                if name == relu.name:
                    blob_nodes[blob] = node.name
            graph.erase_node(relu)
    if isinstance(description, NetDescription):  # the fused ReLU's blob is now the conv node's value
        fast.meta[META_KEY] = dataclasses.replace(description, blobs={
            blob: dataclasses.replace(record, node=blob_nodes[blob]) for blob, record in description.blobs.items()})
    contiguous_outputs(graph)
    graph.lint()
    fast.recompile()
    return fast


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)
