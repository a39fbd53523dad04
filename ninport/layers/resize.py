"""Resizing layers of the forks: Interp (DeepLab v2 / PSPNet, align-corners bilinear) and the YOLO
ports' nearest-neighbour Upsample. Output sizes are computed from the bottoms' shapes at run time
with the fork's own rules (`interp_size`), so the module is right at any input size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.context import LayerContext
from ninport.build.recorded import records_args
from ninport.caffe.shapes_fork import InterpRule, interp_size


@records_args
class Interp(nn.Module):
    """Crop by pad_beg / pad_end, then bilinear with aligned corners (caffe_cpu_interp2: source
    position = out index * (in - 1) / (out - 1)). The output size follows `interp_size`: from the
    second bottom when there is one, else from shrink_factor, zoom_factor, height and width."""

    def __init__(self, pad_beg: int = 0, pad_end: int = 0, shrink: int | None = None, zoom: int | None = None,
                 height: int | None = None, width: int | None = None):
        super().__init__()
        self.pad_beg, self.pad_end = pad_beg, pad_end
        self.shrink, self.zoom, self.height, self.width = shrink, zoom, height, width

    def extra_repr(self) -> str:
        given = {"pad_beg": self.pad_beg, "pad_end": self.pad_end, "shrink": self.shrink, "zoom": self.zoom,
                 "height": self.height, "width": self.width}
        return ", ".join(f"{k}={v}" for k, v in given.items() if v) or "size of the second bottom"

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        in_hw = (int(x.shape[2]), int(x.shape[3]))
        eff_h, eff_w = in_hw[0] + self.pad_beg + self.pad_end, in_hw[1] + self.pad_beg + self.pad_end
        reference_hw = (int(reference.shape[2]), int(reference.shape[3])) if reference is not None else None
        out_hw = interp_size((eff_h, eff_w), reference_hw, self.shrink, self.zoom, self.height, self.width)
        begin = -self.pad_beg
        if (eff_h, eff_w) != in_hw:
            x = x[:, :, begin:begin + eff_h, begin:begin + eff_w]
        if (eff_h, eff_w) == tuple(out_hw):  # the fork copies: no interpolation
            return x
        return F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=True)


def interp(ctx: LayerContext) -> nn.Module:
    rule: InterpRule = ctx.parsed  # read and checked once, by the shape rule
    return Interp(rule.pad_beg, rule.pad_end, rule.shrink, rule.zoom, rule.height, rule.width)


@records_args
class NearestUpsample(nn.Module):
    """Every pixel repeated scale x scale times: top[h, w] = bottom[h / scale, w / scale]."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.scale
        return x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


def upsample(ctx: LayerContext) -> nn.Module:
    return NearestUpsample(ctx.parsed)  # the scale its shape rule checked
