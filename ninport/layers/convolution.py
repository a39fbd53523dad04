"""Convolution and Deconvolution: Caffe's weight layouts equal torch's, so weights copy as they are.

torch computes the same output sizes as Caffe at every input size (`geometry.ConvGeometry`); a bottom
torch would fail on (wrong rank or channels, or a kernel larger than the padded input) is refused by
the shape rule, naming the layer, before the forward runs (`ninport.build.size_checks`).
"""
from __future__ import annotations

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


class CaffeConv2d(nn.Conv2d):
    """nn.Conv2d: torch's output sizes are Caffe's at every input size (sizes refused by the shape rule)."""


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
