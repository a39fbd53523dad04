"""Pooling with Caffe's exact geometry at the input's size: torch's own pooling where it is exact.

Caffe rounds the output size up and clips windows at the padded edge. torch's max_pool2d/avg_pool2d
with ceil_mode compute the same windows, the same MAX (padding ignored) and the same AVE divisor
(count_include_pad: the window clipped to [-pad, in + pad)) wherever their output size is Caffe's:
always with pad <= kernel / 2, except that without padding torch drops a last window starting past the
input (stride > kernel) that Caffe keeps (`PoolParams.torch_pools_exactly`, decided from the sizes).
Those run as one native call; no indices are computed.

The corner cases (pad > kernel / 2, which torch refuses; Caffe's empty last window) and every ONNX export
(runtimes disagree on ceil_mode in ONNX) take the explicit form: the input is padded (-FLT_MAX for MAX, as
Caffe's empty windows give; zeros for AVE), `pad` before and after to the end of the last window (while
an exporter traces symbolic sizes, by a bound that covers the windows Caffe keeps at every size,
`PoolParams.right_pad_bound`); a plain floor-mode pool without padding follows and its output is cut to
Caffe's size (`geometry.PoolWindow`, computed from `x.shape`, so it stays symbolic in exported programs).
AVE divides by Caffe's clipped window, computed from the same geometry. The exported ONNX holds
Pad + MaxPool/AveragePool without ceil_mode or pads, and a Slice whose ends come from the input's shape.

A running module decides once per input size (the decision and the explicit form's pads and divisors are
kept for the latest few sizes), so a forward at a size seen before does no geometry in Python; while torch
traces (export, torch.compile) nothing is kept and the geometry follows the (possibly symbolic) sizes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (
    PoolParams,
    fail,
    is_static,
    pool_geometry,
    pool_params,
)
from ninport.caffe.spec import LayerSpec
from ninport.errors import UnsupportedLayerError
from ninport.layers.rules import (
    MAX_BLOB_ELEMENTS,
    one_bottom,
    spatial_4d,
)
from ninport.registry import LayerShapes, builtin_layer

# --- shape rules (torch-free): the sizes Caffe accepts, the weight shapes it expects, the typed parameters ---


def _pooling_max_tops(layer: LayerSpec) -> int:
    """MAX pooling may output a second top, the argmax mask (PoolingLayer::MaxTopBlobs)."""
    return 2 if layer.proto.pooling_param.pool == pb2.PoolingParameter.MAX else 1


def _pooling_settings(layer: LayerSpec) -> str:
    """'MAX k3 s2', 'AVE global'."""
    q = layer.proto.pooling_param
    kind = pb2.PoolingParameter.PoolMethod.Name(q.pool)
    if q.global_pooling:
        return f"{kind} global"
    k = q.kernel_size or f"{q.kernel_h}x{q.kernel_w}"
    s = q.stride if not (q.HasField("stride_h") or q.HasField("stride_w")) else f"{q.stride_h}x{q.stride_w}"
    pad = q.pad if not (q.HasField("pad_h") or q.HasField("pad_w")) else f"{q.pad_h}x{q.pad_w}"
    return f"{kind} k{k} s{s}" + (f" pad {pad}" if pad else "")


@builtin_layer("Pooling", converter="pooling:pooling", bottoms=1, tops=(1, _pooling_max_tops),
               settings=_pooling_settings)
def _pooling(layer, shapes):
    n, c, h, w = spatial_4d(layer, one_bottom(layer, shapes))
    p = layer.proto.pooling_param
    if p.pool == pb2.PoolingParameter.STOCHASTIC:
        raise UnsupportedLayerError("STOCHASTIC pooling is not supported (its TEST-phase weighted "
                                    "average has no exact torch twin); replace it with AVE or MAX")
    geo = pool_geometry(p, (h, w))  # refuses an output size <= 0, as Caffe does
    # The converter pads the input to the extent the windows cover (a last window may start
    # far past the input when stride > kernel): that padded blob must be plausible too.
    extent = [geo.extent(a) for a in (0, 1)]
    scratch = n * c * max(extent[0], h) * max(extent[1], w)
    if scratch > MAX_BLOB_ELEMENTS:
        fail(f"the windows (kernel {geo.kernel}, stride {geo.stride}, pad {geo.pad}) cover "
              f"{extent[0]}x{extent[1]} of a {h}x{w} input: implausibly large; is a number wrong?")
    # A second top (MAX only: the counts allow it) is the argmax mask, shaped like the first.
    return LayerShapes(tops=[(n, c, *geo.out)] * len(layer.tops), scratch=scratch)


# --- torch modules and their converters ------------------------------------------------------


FLT_MAX = float(np.finfo(np.float32).max)


@records_args
class CaffePool2d(nn.Module):
    """Caffe's MAX or AVE pooling at the input's size; `kernel` None is global pooling."""

    def __init__(self, kernel: tuple[int, int] | None, pad: tuple[int, int], stride: tuple[int, int], ceil: bool,
                 mode: str):
        super().__init__()
        self.params = PoolParams(kernel, pad, stride, ceil, mode)
        self.native_at_every_size = self.params.torch_pools_exactly_at_every_size()
        self.plans: dict[tuple[int, int], tuple | None] = {}  # input size -> explicit form's plan, None: native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.kernel is None:  # global pooling: one window over the whole plane
            if p.mode == "max":
                return torch.amax(x, dim=(2, 3), keepdim=True)
            return torch.mean(x, dim=(2, 3), keepdim=True)
        size = (x.shape[2], x.shape[3])
        if torch.onnx.is_in_onnx_export():
            plan = self.explicit_plan(size, x.device)
        elif not is_static(*size) or torch.compiler.is_compiling():  # traced: nothing kept on the module
            plan = None if self.native_at_every_size or (is_static(*size) and p.torch_pools_exactly(size)) \
                else self.explicit_plan(size, x.device)
        else:
            try:
                plan = self.plans[size]
            except KeyError:
                plan = self.plan_for(size, x.device)
        if plan is None:
            if p.mode == "max":
                return F.max_pool2d(x, p.kernel, p.stride, p.pad, ceil_mode=p.ceil)
            return F.avg_pool2d(x, p.kernel, p.stride, p.pad, ceil_mode=p.ceil, count_include_pad=True)
        padding, out, count = plan
        if any(padding):
            x = F.pad(x, padding, mode="constant", value=-FLT_MAX if p.mode == "max" else 0.0)
        if p.mode == "max":
            y = F.max_pool2d(x, p.kernel, p.stride)
        else:
            y = F.avg_pool2d(x, p.kernel, p.stride)
        y = y[:, :, : out[0], : out[1]]
        if count is not None:
            y = y * ((p.kernel[0] * p.kernel[1]) / count.to(y.dtype))  # 1 where Caffe's window is a full kernel
        return y

    def plan_for(self, size: tuple[int, int], device: torch.device) -> tuple | None:
        """Decide a running module's form at an (int) input size, and keep it (the latest 16 sizes)."""
        p = self.params
        plan = None if p.torch_pools_exactly(size) else self.explicit_plan(size, device)
        if len(self.plans) >= 16:
            self.plans.clear()
        self.plans[size] = plan
        return plan

    def explicit_plan(self, size, device: torch.device) -> tuple:
        """The explicit form at an input size: F.pad's padding, Caffe's output size, and AVE's divisors
        (Caffe's window sizes; None for MAX)."""
        p = self.params
        win = p.window(size)
        if is_static(*size):  # exactly to the end of the last window (a huge stride must not pad hugely)
            after = [max(0, win.right_pad(a)) for a in (0, 1)]
        else:  # tracing: a bound that holds at every size, see the docstring
            after = [p.right_pad_bound(a) for a in (0, 1)]
        padding = (p.pad[1], after[1], p.pad[0], after[0])  # F.pad order: w before, w after, h before, h after
        count = None
        if p.mode == "ave":
            divisors = [win.ave_divisor(a, torch.arange(win.out[a], device=device) * p.stride[a] - p.pad[a])
                        for a in (0, 1)]
            count = divisors[0].unsqueeze(1) * divisors[1].unsqueeze(0)
        return padding, win.out, count

    def _apply(self, fn, recurse=True):
        self.plans = {}  # AVE's divisors live on a device: decided again after .to() / .cuda()
        return super()._apply(fn, recurse)


def pooling(ctx: LayerContext) -> nn.Module:
    p = pool_params(ctx.proto.pooling_param)
    if len(ctx.layer.tops) == 2:  # MAX with the argmax mask (the counts allow a second top only for MAX)
        return CaffeMaxPoolWithMask(p.kernel, p.pad, p.stride, p.ceil)
    return CaffePool2d(p.kernel, p.pad, p.stride, p.ceil, p.mode)


@records_args
class CaffeMaxPoolWithMask(nn.Module):
    """Caffe's MAX pooling with its second top, the argmax mask (PoolingLayer::Forward_cpu, top.size() > 1).

    Caffe starts every window at -FLT_MAX with mask -1 and scans it row by row, taking a value only if it
    is strictly greater: ties keep the first maximum in scan order, windows are clipped to the input
    (padding never wins), NaN never wins, a window with nothing above -FLT_MAX gives -FLT_MAX and mask -1.
    The mask is h * W + w in the unpadded (n, c) plane, as float. The same scan here, one kernel offset at
    a time over all windows at once (offsets in row-major order are the scan order of every window):
    strided slices, `>` and `where`, so the ONNX graph is Slice/Greater/Where and its result does not
    depend on how a runtime's MaxPool breaks ties. Global pooling scans the whole plane instead.
    """

    def __init__(self, kernel: tuple[int, int] | None, pad: tuple[int, int], stride: tuple[int, int], ceil: bool):
        super().__init__()
        self.params = PoolParams(kernel, pad, stride, ceil, "max")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        n, c, h, w = x.shape
        if p.kernel is None:  # global: the first position of the plane's maximum, if above -FLT_MAX
            flat = x.reshape(n, c, h * w)
            wins = flat > -FLT_MAX  # False for NaN, -inf and -FLT_MAX, which never win
            top = torch.where(wins, flat, -FLT_MAX).amax(dim=2, keepdim=True)
            position = torch.arange(h * w, device=x.device)
            first = torch.where(wins & (flat == top), position, h * w).amin(dim=2, keepdim=True)
            mask = torch.where(first < h * w, first, -1)
            return top.reshape(n, c, 1, 1), mask.to(x.dtype).reshape(n, c, 1, 1)
        win = p.window((h, w))
        if is_static(h, w):
            after = [max(0, win.right_pad(a)) for a in (0, 1)]
        else:  # tracing: a bound that holds at every size (PoolParams.right_pad_bound)
            after = [p.right_pad_bound(a) for a in (0, 1)]
        padding = (p.pad[1], after[1], p.pad[0], after[0])  # F.pad order: w before, w after, h before, h after
        if any(padding):
            x = F.pad(x, padding, mode="constant", value=-math.inf)  # never > the -FLT_MAX start
        out_h, out_w = win.out
        rows = torch.arange(out_h, device=x.device) * p.stride[0] - p.pad[0]  # each window's first row
        cols = torch.arange(out_w, device=x.device) * p.stride[1] - p.pad[1]
        corner = (rows[:, None] * w + cols[None, :]).to(torch.int32)  # each window's (unclipped) first cell
        top, mask = -FLT_MAX, -1  # Caffe's start; after the first offset, (N, C, out_h, out_w) tensors
        for i in range(p.kernel[0]):
            for j in range(p.kernel[1]):
                cell = x[:, :, i:, j:][:, :, ::p.stride[0], ::p.stride[1]][:, :, :out_h, :out_w]
                wins = cell > top
                top = torch.where(wins, cell, top)
                mask = torch.where(wins, corner + (i * w + j), mask)
        return top, mask.to(x.dtype)
