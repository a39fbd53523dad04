"""Element-wise layers: ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, BNLL, Power, Exp, Log,
Threshold, Clip, Swish and Dropout (Caffe's TRAIN-phase masking in train(), a copy in eval())."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.geometry import (
    fail,
)
from ninport.caffe.spec import LayerSpec
from ninport.layers.rules import (
    one_bottom,
    same_as_bottom,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


# Bottom and top counts below are what each type's header in BVLC Caffe (include/caffe/layers/*.hpp)
# declares; forks' types cite their fork. Caffe's NeuronLayer (ReLU, Sigmoid, ..., PReLU, Exp, Log):
# exactly one bottom and one top.
def _relu_settings(layer: LayerSpec) -> str:
    slope = layer.proto.relu_param.negative_slope
    return f"slope {slope:g}" if slope else ""


def _dropout_settings(layer: LayerSpec) -> str:
    return f"{layer.proto.dropout_param.dropout_ratio:g}"


_NEURON_SETTINGS = {"ReLU": _relu_settings, "Dropout": _dropout_settings}


for _type, _function in (("ReLU", "relu"), ("Sigmoid", "sigmoid"), ("TanH", "tanh"), ("AbsVal", "absval"),
                         ("BNLL", "bnll"), ("Power", "power"), ("ELU", "elu"), ("Threshold", "threshold"),
                         ("Clip", "clip"), ("Dropout", "dropout"), ("Swish", "swish")):
    builtin_layer(_type, converter=f"activation:{_function}", bottoms=1, tops=1,
                  settings=_NEURON_SETTINGS.get(_type))(same_as_bottom)


@builtin_layer("Exp", converter="activation:exp", bottoms=1, tops=1)
@builtin_layer("Log", converter="activation:log", bottoms=1, tops=1)
def _exp_log(layer, shapes):
    p = layer.proto.exp_param if layer.type == "Exp" else layer.proto.log_param
    if not (p.base > 0 or p.base == -1):
        fail(f"base {p.base} must be positive or -1 (e), as Caffe checks")
    if layer.type == "Log" and p.base == 1:
        fail("base 1 has no logarithm")
    return same_as_bottom(layer, shapes)


@builtin_layer("PReLU", converter="activation:prelu", bottoms=1, tops=1)
def _prelu(layer, shapes):
    shape = one_bottom(layer, shapes)
    if len(shape) < 2:
        fail("PReLU needs a bottom with a channel axis")
    channels = 1 if layer.proto.prelu_param.channel_shared else shape[1]
    return LayerShapes(tops=[shape], params=[(channels,)])


# --- torch modules and their converters ------------------------------------------------------


@records_args
class Elementwise(nn.Module):
    """A parameter-free element-wise op; `kind` and `args` say which, for readable graphs."""

    def __init__(self, kind: str, **args: float):
        super().__init__()
        self.kind = kind
        self.args = args
        for name, value in args.items():
            setattr(self, name, value)

    def extra_repr(self) -> str:
        return ", ".join([self.kind] + [f"{k}={v}" for k, v in self.args.items()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = self.kind
        if kind == "relu":
            if self.args.get("inplace") and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
                return F.relu_(x)  # inference, over a bottom nothing else reads (see relu())
            return F.relu(x)
        if kind == "leaky_relu":
            return F.leaky_relu(x, self.negative_slope)
        if kind == "elu":
            return F.elu(x, self.alpha)
        if kind == "sigmoid":
            return torch.sigmoid(x)
        if kind == "tanh":
            return torch.tanh(x)
        if kind == "abs":
            return torch.abs(x)
        if kind == "bnll":  # log(1 + e^x), computed stably as Caffe does
            return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))
        if kind == "power":
            y = x * self.scale + self.shift if (self.scale != 1 or self.shift != 0) else x
            return y if self.power == 1 else torch.pow(y, self.power)
        if kind == "exp":  # base^(shift + scale*x)
            return torch.exp((x * self.scale + self.shift) * self.log_base)
        if kind == "log":  # log_base(shift + scale*x)
            y = torch.log(x * self.scale + self.shift)
            return y if self.inv_log_base == 1 else y * self.inv_log_base
        if kind == "threshold":
            return (x > self.threshold).to(x.dtype)
        if kind == "clip":
            return torch.clamp(x, self.min, self.max)
        if kind == "swish":
            return x * torch.sigmoid(x * self.beta)
        if kind == "identity":
            return x
        raise ValueError(kind)


def _log_of_base(base: float) -> float:
    return 1.0 if base == -1 else math.log(base)


def relu(ctx: LayerContext) -> nn.Module:
    """ReLU; in place in inference where Caffe's layer is in place over a fresh blob nothing else reads (a
    convolution's, say): no new tensor to allocate and fill, as in torchvision's nn.ReLU(inplace=True)."""
    slope = ctx.proto.relu_param.negative_slope
    if slope:
        return Elementwise("leaky_relu", negative_slope=slope)
    return Elementwise("relu", inplace=True) if ctx.may_overwrite_bottom else Elementwise("relu")


def prelu(ctx: LayerContext) -> nn.Module:
    channels = ctx.weights[0].size
    module = nn.PReLU(num_parameters=channels)
    module.weight = ctx.parameter(0)
    return module


def elu(ctx: LayerContext) -> nn.Module:
    return Elementwise("elu", alpha=ctx.proto.elu_param.alpha)


def sigmoid(ctx: LayerContext) -> nn.Module:
    return Elementwise("sigmoid")


def tanh(ctx: LayerContext) -> nn.Module:
    return Elementwise("tanh")


def absval(ctx: LayerContext) -> nn.Module:
    return Elementwise("abs")


def bnll(ctx: LayerContext) -> nn.Module:
    return Elementwise("bnll")


def power(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.power_param
    return Elementwise("power", power=p.power, scale=p.scale, shift=p.shift)


def exp(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.exp_param
    return Elementwise("exp", log_base=_log_of_base(p.base), scale=p.scale, shift=p.shift)


def log(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.log_param
    return Elementwise("log", inv_log_base=1.0 / _log_of_base(p.base), scale=p.scale, shift=p.shift)


def threshold(ctx: LayerContext) -> nn.Module:
    return Elementwise("threshold", threshold=ctx.proto.threshold_param.threshold)


def clip(ctx: LayerContext) -> nn.Module:
    p = ctx.proto.clip_param
    return Elementwise("clip", min=p.min, max=p.max)


def swish(ctx: LayerContext) -> nn.Module:
    return Elementwise("swish", beta=ctx.proto.swish_param.beta)


@records_args
class CaffeDropoutUnscaled(nn.Module):
    """Dropout with `scale_train: false` (fast-rcnn's fork, OpenCV): train() keeps each value with
    probability 1 - ratio, unscaled; eval() multiplies by 1 - ratio instead."""

    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * torch.bernoulli(torch.full_like(x, 1.0 - self.ratio))
        return x * (1.0 - self.ratio)


def dropout(ctx: LayerContext) -> nn.Module:
    # Caffe's TRAIN phase keeps each value with probability 1 - ratio and scales it by 1 / (1 - ratio),
    # its TEST phase copies: exactly torch's nn.Dropout.
    p = ctx.proto.dropout_param
    if not getattr(p, "scale_train", True):
        return CaffeDropoutUnscaled(float(p.dropout_ratio))
    return nn.Dropout(float(p.dropout_ratio))
