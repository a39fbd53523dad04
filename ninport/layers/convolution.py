"""Convolution and Deconvolution: Caffe's weight layouts equal torch's, so weights copy as they are.

torch computes the same output sizes as Caffe at every input size (`geometry.ConvGeometry`); a bottom
torch would fail on (wrong rank or channels, or a kernel larger than the padded input) is refused by
the shape rule, naming the layer, before the forward runs (`ninport.build.size_checks`).

Inference on the CPU runs each convolution as one oneDNN call on channels_last activations, with the
weight reordered once per input shape into the blocked layout oneDNN picks for that shape (`onednn_conv2d`;
kept for the latest 4 input shapes while they take at most 16 MiB, else for the latest one: a large weight,
FCN's 411 MB fc6, is held at most twice, whatever sizes the images come in). Measured
against `nn.Conv2d`'s own CPU path this is up to 3x faster per layer (7x7 stride 2, and 1x1 convolutions on
small planes, where reordering the weight on every call dominated), and the channels_last output it hands
on makes the following pooling, ReLU and concatenation run on vectorized kernels too. Wherever that path
does not apply (autograd, another device or dtype, while torch traces the module for export or
torch.compile) the layer is plain `nn.Conv2d`; the two agree to float32 rounding.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from ninport.build.context import LayerContext
from ninport.caffe.geometry import (
    conv_geometry,
    fail,
)
from ninport.caffe.spec import LayerSpec
from ninport.layers.rules import (
    one_bottom,
    spatial_4d,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


def _checked_conv_param(layer, shapes):
    """The checks Convolution and Deconvolution share: 4-D bottom, axis 1, positive sizes, group."""
    p = layer.proto.convolution_param
    n, c, h, w = spatial_4d(layer, one_bottom(layer, shapes))
    if p.axis != 1:
        fail(f"{layer.type} axis {p.axis} is not supported (only 1)")
    g = conv_geometry(p)
    groups = p.group
    if groups <= 0:
        fail(f"group must be positive, got {groups}")
    if p.num_output <= 0:
        fail(f"num_output must be positive, got {p.num_output}")
    if c % groups or p.num_output % groups:
        fail(f"group {groups} does not divide the input channels {c} and num_output {p.num_output}")
    return p, g, groups, (n, c, h, w)


def _pair_text(prefix: str, pair: tuple[int, int], default: int) -> str:
    """' k3', ' s1x2', or '' for the default."""
    if pair == (default, default):
        return ""
    return f" {prefix}{pair[0]}" if pair[0] == pair[1] else f" {prefix}{pair[0]}x{pair[1]}"


def _conv_settings(layer: LayerSpec) -> str:
    """'96, k11 s4', '64, k3 pad 1 group 2 no bias'."""
    c = layer.proto.convolution_param
    g = conv_geometry(c)
    text = (f"{c.num_output},{_pair_text('k', g.kernel, -1)}{_pair_text('s', g.stride, 1)}"
            f"{_pair_text('pad ', g.pad, 0)}{_pair_text('d', g.dilation, 1)}")
    return text + (f" group {c.group}" if c.group != 1 else "") + ("" if c.bias_term else " no bias")


@builtin_layer("Convolution", converter="convolution:convolution", bottoms=(1, None), tops=(1, None),
               one_top_per_bottom=True, settings=_conv_settings)  # BaseConvolutionLayer
def _convolution(layer, shapes):
    p, g, groups, (n, c, h, w) = _checked_conv_param(layer, shapes)
    out_hw = [g.output_size(a, size) for a, size in enumerate((h, w))]
    if min(out_hw) <= 0:
        fail(f"kernel {g.kernel} (dilation {g.dilation}) does not fit the padded input {h}x{w}")
    params = [(p.num_output, c // groups) + g.kernel]
    if p.bias_term:
        params.append((p.num_output,))
    top = (n, p.num_output, *out_hw)
    macs = n * p.num_output * out_hw[0] * out_hw[1] * (c // groups) * g.kernel[0] * g.kernel[1]
    padded = n * c * (h + 2 * g.pad[0]) * (w + 2 * g.pad[1]) if any(g.pad) else 0  # torch may pad a copy
    return LayerShapes(tops=[top], params=params, macs=macs, scratch=padded, parsed=g)


@builtin_layer("Deconvolution", converter="convolution:deconvolution", bottoms=(1, None), tops=(1, None),
               one_top_per_bottom=True, settings=_conv_settings)  # BaseConvolutionLayer
def _deconvolution(layer, shapes):
    p, g, groups, (n, c, h, w) = _checked_conv_param(layer, shapes)
    out_hw = [g.deconv_output_size(a, size) for a, size in enumerate((h, w))]
    if min(out_hw) <= 0:
        fail(f"output size {out_hw[0]}x{out_hw[1]} is not positive")
    params = [(c, p.num_output // groups) + g.kernel]
    if p.bias_term:
        params.append((p.num_output,))
    macs = n * c * h * w * (p.num_output // groups) * g.kernel[0] * g.kernel[1]
    return LayerShapes(tops=[(n, p.num_output, *out_hw)], params=params, macs=macs, parsed=g)


# --- torch modules and their converters ------------------------------------------------------


ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


PACKED_SHAPES = 4  # input shapes a convolution keeps a packed weight for (a batch size that alternates, say)
PACKED_BYTES = 16 << 20  # ... while their packings take at most this much; a larger weight keeps one packing


def packed_shapes_kept(weight: torch.Tensor) -> int:
    """How many input shapes' packings of `weight` a convolution keeps (see PACKED_SHAPES, PACKED_BYTES)."""
    return max(1, min(PACKED_SHAPES, PACKED_BYTES // max(1, weight.numel() * weight.element_size())))


class PackedWeight:
    """A convolution's weight reordered for oneDNN, per input shape (the latest `packed_shapes_kept`), for one version
    of the weight.

    Kept on the module but not part of it: no state-dict entry, and a copy or a pickle of the module
    starts without it (oneDNN's blocked tensors cannot be copied or saved)."""

    def __init__(self) -> None:
        self.weight_key: tuple | None = None  # the weight's storage and version the packings were made from
        self.by_shape: dict[torch.Size, torch.Tensor] = {}
        self.failed = False  # oneDNN refused this convolution once: plain torch from then on
        self.lock = threading.Lock()  # one thread packs at a time (a server's threads share one module)

    def for_shape(self, weight: torch.Tensor, args: tuple, shape: torch.Size) -> torch.Tensor:
        """The packing of `weight` for input `shape`: the one kept, else a new one (evicting the oldest)."""
        weight_key = (weight.data_ptr(), weight._version)
        tensor = self.by_shape.get(shape) if self.weight_key == weight_key else None
        if tensor is not None:
            return tensor
        with self.lock:
            if self.weight_key != weight_key:
                self.weight_key, self.by_shape = weight_key, {}
            tensor = self.by_shape.get(shape)
            if tensor is None:
                while len(self.by_shape) >= packed_shapes_kept(weight):  # the old packing goes before the new
                    del self.by_shape[next(iter(self.by_shape))]
                with torch.no_grad():
                    dense = weight.detach().contiguous().to_mkldnn()  # no copy of the weight before this one
                    tensor = torch._C._nn.mkldnn_reorder_conv2d_weight(dense, *args, list(shape))
                    del dense
                self.by_shape[shape] = tensor
            return tensor

    def __deepcopy__(self, memo) -> PackedWeight:
        return PackedWeight()

    def __reduce__(self):
        return PackedWeight, ()


def onednn_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `onednn_conv2d` computes this call: CPU float32 4-D inference, oneDNN on, no autograd, not traced."""
    if torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy):  # first: nothing below is looked at
        return False                                                        # while torch traces
    weight = conv.weight
    return (ONEDNN and x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.device.type == "cpu" and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                   or (conv.bias is not None and conv.bias.requires_grad)))
            and not conv.packed.failed)


def onednn_conv2d(conv: nn.Conv2d, x: torch.Tensor, post_op: str = "none") -> torch.Tensor:
    """`conv(x)` (then ReLU for post_op "relu") as one oneDNN convolution on channels_last activations; the
    weight is reordered for x's shape once (kept for the latest `packed_shapes_kept` shapes), and again when it
    changes."""
    packed: PackedWeight = conv.packed
    weight = conv.weight
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    try:
        tensor = packed.for_shape(weight, args, x.shape)
        return torch.ops.mkldnn._convolution_pointwise(x.contiguous(memory_format=torch.channels_last),
                                                       tensor, conv.bias, *args, post_op, [], "")
    except RuntimeError:  # a shape or build oneDNN refuses: plain torch from now on
        packed.failed, packed.weight_key, packed.by_shape = True, None, {}
        y = conv._conv_forward(x, weight, conv.bias)
        return torch.relu(y) if post_op == "relu" else y


class CaffeConv2d(nn.Conv2d):
    """nn.Conv2d: torch's output sizes are Caffe's at every input size (sizes refused by the shape rule).
    CPU inference runs on oneDNN (see the module docstring); the result equals nn.Conv2d's to float32
    rounding."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packed = PackedWeight()  # a plain attribute: not a submodule, parameter or buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_applies(self, x):
            return onednn_conv2d(self, x)
        return super().forward(x)


class CaffeConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d, Caffe's Deconvolution at every input size."""


def convolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = ctx.parsed  # the geometry its shape rule checked
    # Built on the meta device: torch's random init would be thrown away by the Caffe weights.
    conv = CaffeConv2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride, padding=g.pad,
                       dilation=g.dilation, groups=p.group, bias=p.bias_term, device="meta")
    conv.weight = ctx.parameter(0)
    if p.bias_term:
        conv.bias = ctx.parameter(1)
    return conv


def deconvolution(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.convolution_param
    g = ctx.parsed  # the geometry its shape rule checked
    deconv = CaffeConvTranspose2d(ctx.bottom_shapes[0][1], p.num_output, g.kernel, stride=g.stride,
                                  padding=g.pad, dilation=g.dilation, groups=p.group, bias=p.bias_term,
                                  device="meta")
    deconv.weight = ctx.parameter(0)
    if p.bias_term:
        deconv.bias = ctx.parameter(1)
    return deconv
