"""Shape inference with Caffe's own rules, before anything is allocated.

Each supported layer type registers a function that, from the layer and its bottom shapes,
gives its top shapes, the shapes of its weight blobs (as Caffe stores them) and its MACs.
The graph builder and `inspect` both use this table, so a net that Caffe would refuse is
refused here, with the layer named, before any tensor exists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import (  # noqa: F401 - re-exported
    INT32_MAX,
    GeometryError,
    broadcast_view,
    canonical_axis,
    check_crop,
    conv_geometry,
    fail,
    inner_product_k,
    pool_geometry,
    pool_output_size,
    pool_params,
    reshape_output,
    scale_param_shape,
    spp_levels,
    spp_output_features,
    spp_pooling_param,
)
from ninport.caffe.spec import LayerSpec, NetSpec
from ninport.errors import NinportError, ShapeError, UnsupportedLayerError, safe_text, shape_text
from ninport.registry import LayerShapes, Shape, builtin_layer, layer_type, registered_types

# A single blob (activation or weight) above this many elements is refused as implausible.
MAX_BLOB_ELEMENTS = 2 ** 31 - 1
# All weights together above this many elements (4 GiB of float32, 7x VGG16) are refused.
MAX_TOTAL_PARAMS = 2 ** 30
# All activations and converter intermediates of one forward pass at the reference input size above this
# many elements (16 GiB of float32) are refused.
MAX_TOTAL_ACTIVATIONS = 2 ** 32


@dataclass
class ShapeTable:
    """Every blob's shape and every layer's weights/MACs for one set of input shapes; `layers` is keyed by
    `LayerSpec.key` (the layer name, unless an earlier layer has the same name)."""

    blobs: dict[str, Shape]
    layers: dict[str, LayerShapes]

    @property
    def total_params(self) -> int:
        return sum(ls.param_count for ls in self.layers.values())

    @property
    def total_macs(self) -> int:
        return sum(ls.macs for ls in self.layers.values())


# Failures inside shape rules: the driver adds file and layer to the message. Shape rules (and plugins'
# rules) raise it through `fail`; the geometry module raises the same class.
_LayerShapeError = GeometryError


# --- shape functions -------------------------------------------------------------------------


def one_bottom(layer: LayerSpec, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        fail(f"expects 1 bottom, got {len(shapes)}")
    return shapes[0]


def same_as_bottom(layer: LayerSpec, shapes: list[Shape]) -> LayerShapes:
    return LayerShapes(tops=[one_bottom(layer, shapes)])


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


def _lrn_settings(layer: LayerSpec) -> str:
    p = layer.proto.lrn_param
    return f"n{p.local_size} alpha {p.alpha:g} beta {p.beta:g}"


@builtin_layer("LRN", converter="normalization:lrn", bottoms=1, tops=1, settings=_lrn_settings)
def _lrn(layer, shapes):
    p = layer.proto.lrn_param
    if p.local_size % 2 != 1:
        fail(f"local_size {p.local_size} must be odd (Caffe's rule)")
    shape = one_bottom(layer, shapes)
    if len(shape) != 4:
        fail(f"expects a 4-D (N, C, H, W) bottom, got shape {shape_text(shape)}")
    n, c, h, w = shape
    size = p.local_size
    # The converter pads the squared input by (size - 1) / 2 on each side of the window's axes.
    if p.norm_region == pb2.LRNParameter.WITHIN_CHANNEL:
        scratch = n * c * (h + size - 1) * (w + size - 1)
    else:
        scratch = n * (c + size - 1) * h * w
    return LayerShapes(tops=[shape], scratch=scratch)


def spatial_4d(layer: LayerSpec, shape: Shape) -> Shape:
    if len(shape) != 4:
        fail(f"expects a 4-D (N, C, H, W) bottom, got shape {shape_text(shape)}")
    return shape


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
    return LayerShapes(tops=[top], params=params, macs=macs, scratch=padded)


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
    return LayerShapes(tops=[(n, p.num_output, *out_hw)], params=params, macs=macs)


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
    if len(layer.tops) > 1:
        raise UnsupportedLayerError("a second top (MAX pooling's argmax mask) is not supported")
    # The converter pads the input to the extent the windows cover (a last window may start
    # far past the input when stride > kernel): that padded blob must be plausible too.
    extent = [geo.extent(a) for a in (0, 1)]
    scratch = n * c * max(extent[0], h) * max(extent[1], w)
    if scratch > MAX_BLOB_ELEMENTS:
        fail(f"the windows (kernel {geo.kernel}, stride {geo.stride}, pad {geo.pad}) cover "
              f"{extent[0]}x{extent[1]} of a {h}x{w} input: implausibly large; is a number wrong?")
    return LayerShapes(tops=[(n, c, *geo.out)], scratch=scratch)


@builtin_layer("InnerProduct", converter="inner_product:inner_product", bottoms=1, tops=1,
               settings=lambda layer: f"{layer.proto.inner_product_param.num_output}")
def _inner_product(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.inner_product_param
    axis = canonical_axis(p.axis, len(shape))
    k = inner_product_k(shape, axis)
    if p.num_output <= 0:
        fail(f"num_output must be positive, got {p.num_output}")
    weight = (k, p.num_output) if p.transpose else (p.num_output, k)
    params = [weight] + ([(p.num_output,)] if p.bias_term else [])
    m = math.prod(shape[:axis])
    return LayerShapes(tops=[shape[:axis] + (p.num_output,)], params=params, macs=m * k * p.num_output)


@builtin_layer("BatchNorm", converter="normalization:batch_norm", bottoms=1, tops=1,
               settings=lambda layer: "statistics: mean, variance, scale factor",
               statistics=(0, 1, 2))  # every blob: running mean and variance sums, the moving-average factor
def _batch_norm(layer, shapes):
    shape = one_bottom(layer, shapes)
    c = shape[1] if len(shape) > 1 else 1
    eps = layer.proto.batch_norm_param.eps
    if not eps >= 0:
        fail(f"eps {eps} must be non-negative")
    return LayerShapes(tops=[shape], params=[(c,), (c,), (1,)])


_scale_param_shape = scale_param_shape


def _check_broadcast(shape: Shape, other: Shape, axis: int):
    axis = canonical_axis(axis, len(shape))
    if shape[axis:axis + len(other)] != tuple(other):
        fail(f"second bottom {shape_text(other)} does not match bottom {shape_text(shape)} at axis {axis}")


@builtin_layer("Scale", converter="normalization:scale", bottoms=(1, 2), tops=1)
def _scale(layer, shapes):
    p = layer.proto.scale_param
    if len(shapes) not in (1, 2):
        fail(f"expects 1 or 2 bottoms, got {len(shapes)}")
    shape = shapes[0]
    if len(shapes) == 2:  # the scale comes from the second bottom; only a bias is learned
        _check_broadcast(shape, shapes[1], p.axis)
        return LayerShapes(tops=[shape], params=[tuple(shapes[1])] if p.bias_term else [])
    pshape = _scale_param_shape(shape, p.axis, p.num_axes)
    params = [pshape] + ([pshape] if p.bias_term else [])
    return LayerShapes(tops=[shape], params=params)


@builtin_layer("Bias", converter="normalization:bias", bottoms=(1, 2), tops=1)
def _bias(layer, shapes):
    p = layer.proto.bias_param
    if len(shapes) not in (1, 2):
        fail(f"expects 1 or 2 bottoms, got {len(shapes)}")
    shape = shapes[0]
    if len(shapes) == 2:
        _check_broadcast(shape, shapes[1], p.axis)
        return LayerShapes(tops=[shape])
    return LayerShapes(tops=[shape], params=[_scale_param_shape(shape, p.axis, p.num_axes)])


@builtin_layer("PReLU", converter="activation:prelu", bottoms=1, tops=1)
def _prelu(layer, shapes):
    shape = one_bottom(layer, shapes)
    if len(shape) < 2:
        fail("PReLU needs a bottom with a channel axis")
    channels = 1 if layer.proto.prelu_param.channel_shared else shape[1]
    return LayerShapes(tops=[shape], params=[(channels,)])


@builtin_layer("Eltwise", converter="structure:eltwise", bottoms=(2, None), tops=1,
               settings=lambda layer: pb2.EltwiseParameter.EltwiseOp.Name(layer.proto.eltwise_param.operation))
def _eltwise(layer, shapes):
    if len(shapes) < 2:
        fail(f"expects at least 2 bottoms, got {len(shapes)}")
    if any(s != shapes[0] for s in shapes):
        fail(f"bottoms must all have the same shape, got {', '.join(shape_text(s) for s in shapes)}")
    p = layer.proto.eltwise_param
    if len(p.coeff) and len(p.coeff) != len(shapes):
        fail(f"{len(p.coeff)} coeff values for {len(shapes)} bottoms")
    if len(p.coeff) and p.operation != pb2.EltwiseParameter.SUM:
        fail("coeff is only allowed with operation SUM")
    return LayerShapes(tops=[shapes[0]])


def concat_axis(p, ndim: int) -> int:
    if p.HasField("concat_dim") and not p.HasField("axis"):
        return canonical_axis(p.concat_dim, ndim)
    return canonical_axis(p.axis, ndim)


@builtin_layer("Concat", converter="structure:concat", bottoms=(1, None), tops=1)
def _concat(layer, shapes):
    if not shapes:
        fail("expects at least 1 bottom")
    axis = concat_axis(layer.proto.concat_param, len(shapes[0]))
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(s[a] != shapes[0][a] for a in range(len(s)) if a != axis):
            fail(f"bottoms {', '.join(shape_text(x) for x in shapes)} differ outside the concat axis {axis}")
    top = list(shapes[0])
    top[axis] = sum(s[axis] for s in shapes)
    return LayerShapes(tops=[tuple(top)])


def slice_sizes(p, shape: Shape, n_tops: int) -> tuple[int, list[int]]:
    """Axis and per-top sizes of a Slice layer (slice_point or an even split)."""
    if p.HasField("slice_dim") and not p.HasField("axis"):
        axis = canonical_axis(p.slice_dim, len(shape))
    else:
        axis = canonical_axis(p.axis, len(shape))
    total = shape[axis]
    points = list(p.slice_point)
    if points:
        if len(points) != n_tops - 1:
            fail(f"{len(points)} slice_point values for {n_tops} tops (need {n_tops - 1})")
        bounds = [0] + points + [total]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if any(s <= 0 for s in sizes):
            fail(f"slice_point {points} do not split axis {axis} of size {total} into positive parts")
    else:
        if n_tops == 0 or total % n_tops:
            fail(f"axis {axis} of size {total} cannot be split evenly into {n_tops} tops")
        sizes = [total // n_tops] * n_tops
    return axis, sizes


@builtin_layer("Slice", converter="structure:slice_", bottoms=1, tops=(1, None))
def _slice(layer, shapes):
    shape = one_bottom(layer, shapes)
    axis, sizes = slice_sizes(layer.proto.slice_param, shape, len(layer.tops))
    return LayerShapes(tops=[shape[:axis] + (s,) + shape[axis + 1:] for s in sizes])


@builtin_layer("Split", converter="structure:split", bottoms=1, tops=(1, None))
def _split(layer, shapes):
    shape = one_bottom(layer, shapes)
    return LayerShapes(tops=[shape] * len(layer.tops))


@builtin_layer("Flatten", converter="structure:flatten", bottoms=1, tops=1)
def _flatten(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.flatten_param
    start = canonical_axis(p.axis, len(shape))
    end = canonical_axis(p.end_axis, len(shape))
    if end < start:
        fail(f"end_axis {p.end_axis} comes before axis {p.axis}")
    return LayerShapes(tops=[shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]])


@builtin_layer("Reshape", converter="structure:reshape", bottoms=1, tops=1)
def _reshape(layer, shapes):
    return LayerShapes(tops=[reshape_output(layer.proto.reshape_param, one_bottom(layer, shapes))])


def crop_offsets(p, shape: Shape, ref: Shape) -> tuple[int, list[int]]:
    """Axis and offsets of a Crop at these bottom shapes (see `geometry.check_crop`)."""
    return check_crop(p, shape, ref)


def crop_settings(layer: LayerSpec) -> str:
    """'axis 2 offset 1,1' (in dialect hed, the offsets HED's Caffe derives from the net)."""
    p = layer.proto.crop_param
    return f"axis {p.axis} offset {','.join(str(o) for o in p.offset) or 0}"


@builtin_layer("Crop", converter="structure:crop", bottoms=2, tops=1, settings=crop_settings)
def _crop(layer, shapes):
    if len(shapes) != 2:
        fail(f"expects 2 bottoms (data and reference), got {len(shapes)}")
    shape, ref = shapes
    if len(shape) != len(ref):
        fail(f"bottoms have different ranks {shape_text(shape)} and {shape_text(ref)}")
    axis, _ = crop_offsets(layer.proto.crop_param, shape, ref)
    return LayerShapes(tops=[shape[:axis] + ref[axis:]])


@builtin_layer("Softmax", converter="structure:softmax", bottoms=1, tops=1)
def _softmax(layer, shapes):
    shape = one_bottom(layer, shapes)
    canonical_axis(layer.proto.softmax_param.axis, len(shape))
    return LayerShapes(tops=[shape])


def supported_types() -> list[str]:
    return registered_types()


def _check_dims(shape: Shape, what: str) -> None:
    if any(int(d) <= 0 for d in shape):
        fail(f"{what} has a non-positive dimension: {shape_text(shape)}")
    if math.prod(shape) > MAX_BLOB_ELEMENTS:
        fail(f"{what} {shape_text(shape)} has {math.prod(shape):,} elements, more than the "
              f"{MAX_BLOB_ELEMENTS:,} ninport accepts; is a number wrong?")


def unconvertible_layers(spec: NetSpec) -> list[str]:
    """One line per layer ninport cannot convert: an unknown type, or fields the schema does not know
    on a type that does not read them. Empty when every layer is known."""
    problems = []
    for layer in spec.layers:
        record = layer_type(layer.type, spec.dialect)
        unknown = sorted(layer.unknown_fields)
        where = layer.where(spec.source)
        if unknown and layer.unknown_field_places:  # point at the first unknown field: file:line:col
            line, col = min(layer.unknown_field_places.values())
            where = where.replace(f"{spec.source}:{layer.line}:", f"{spec.source}:{line}:{col}:", 1)
        if record is None and layer.type == "Python":
            p = layer.proto.python_param
            problems.append(f"{layer.where(spec.source)}: a Python layer runs code that is not in the Caffe "
                            f"files ({safe_text(p.module or '?')}.{safe_text(p.layer or '?')}); replace it with "
                            "standard layers, or register a plugin (ninport.register_layer)")
        elif record is None:
            extra = f" with fields {', '.join(safe_text(u) for u in unknown)}" if unknown else ""
            problems.append(f"{where}: unknown layer type {safe_text(layer.type)!r}{extra}")
        elif unknown and not record.reads_unknown_fields:
            problems.append(f"{where}: fields caffe.proto does not define and this layer type does not read: "
                            f"{', '.join(safe_text(u) for u in unknown)}")
    return problems


def _refuse_unconvertible(spec: NetSpec) -> None:
    problems = unconvertible_layers(spec)
    if not problems:
        return
    shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
    count = f"{len(problems)} layer{'s' if len(problems) > 1 else ''}"
    hint = ""
    if any(layer_type(layer.type, spec.dialect) is None for layer in spec.layers):
        hint = (". Add a type with ninport.register_layer or `--plugin`; supported types: "
                + ", ".join(registered_types()))
    raise UnsupportedLayerError(f"{count} cannot be converted: " + "; ".join(shown) + hint)


def layer_shapes(record, layer: LayerSpec, bottom_shapes: list[Shape]) -> LayerShapes:
    """One layer's shape rule at these bottoms, with the checks every layer gets (its tops named and
    plausible, in place only if the shape stays); GeometryError or NinportError says why it refuses.

    The one decision on a layer's sizes: `infer_shapes` runs it at the reference input, and a converted
    module runs it again on the actual bottoms when it sees a new size (`ninport.build.size_checks`).
    """
    try:
        result = record.shapes(layer, bottom_shapes)
    except (_LayerShapeError, NinportError):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's shape rule failed
        if not callable(record.converter):
            raise
        fail(f"the shape rule of {record.origin} type {layer.type!r} failed: "
              f"{type(exc).__name__}: {safe_text(str(exc))}")
    if len(result.tops) != len(layer.tops):
        if not layer.tops:
            fail("has no top")
        fail(f"produces {len(result.tops)} tops but {len(layer.tops)} are named")
    for i, (top, shape) in enumerate(zip(layer.tops, result.tops)):
        _check_dims(shape, f"top {safe_text(top)!r}")
        if i < len(layer.bottoms) and layer.bottoms[i] == top and tuple(shape) != tuple(bottom_shapes[i]):
            fail(f"computes in place (top {safe_text(top)!r} is its bottom) but changes the shape "
                  f"{shape_text(bottom_shapes[i])} to {shape_text(shape)}; Caffe refuses this too: "
                  "give the top another name")
    for i, pshape in enumerate(result.params or []):
        _check_dims(pshape, f"weight blob {i}")
    if result.scratch > MAX_BLOB_ELEMENTS:
        fail(f"converting this layer needs a {result.scratch:,}-element intermediate (a padded input or "
              "window table): implausibly large; is a number wrong?")
    return result


def weights_mismatch(result: LayerShapes, reference: LayerShapes | None) -> str | None:
    """Why a layer's weights (shaped at the reference input) do not fit the bottoms that gave `result`,
    or None when they fit (or a plugin's rule does not say its weight shapes)."""
    if reference is None or result.params is None or reference.params is None:
        return None
    got, want = [tuple(p) for p in result.params], [tuple(p) for p in reference.params]
    if got == want:
        return None
    differ = [i for i in range(max(len(got), len(want))) if got[i:i + 1] != want[i:i + 1]]
    return (f"its weights {', '.join(shape_text(want[i]) for i in differ if i < len(want))} do not fit these "
            f"bottoms, which need weights {', '.join(shape_text(got[i]) for i in differ if i < len(got))}")


def infer_shapes(spec: NetSpec) -> ShapeTable:
    """Shapes of every blob of `spec` at its input shapes; ShapeError naming the layer on failure.

    Every layer that cannot be converted is reported in one UnsupportedLayerError before any shape
    is computed, so a user sees the whole list at once.
    """
    _refuse_unconvertible(spec)
    blobs: dict[str, Shape] = {}
    for name, shape in spec.inputs.items():
        shape = tuple(int(d) for d in shape)
        if not shape or any(d <= 0 for d in shape):
            raise ShapeError(f"{spec.source}: input {safe_text(name)!r} has shape {shape_text(shape)}; it needs at "
                             "least one axis and every dimension must be positive (for a data layer without "
                             "crop_size, give --input-shape N,C,H,W)")
        if math.prod(shape) > MAX_BLOB_ELEMENTS:
            raise ShapeError(f"{spec.source}: input {safe_text(name)!r} of shape {shape_text(shape)} is "
                             "implausibly large")
        blobs[name] = shape
    layers: dict[str, LayerShapes] = {}
    total_params = 0
    total_activations = sum(math.prod(s) for s in blobs.values())
    for layer in spec.layers:
        record = layer_type(layer.type, spec.dialect)
        try:
            bottom_shapes = [blobs[b] for b in layer.bottoms]
            counts_problem = record.counts.problem(layer)  # Caffe checks the counts before any shape
            if counts_problem:
                fail(counts_problem)
            result = layer_shapes(record, layer, bottom_shapes)
            total_params += sum(math.prod(pshape) for pshape in result.params or [])
            if total_params > MAX_TOTAL_PARAMS:
                fail(f"the net's weights reach {total_params:,} values here, more than the {MAX_TOTAL_PARAMS:,} "
                      "ninport accepts; is a number wrong?")
            total_activations += sum(math.prod(s) for s in result.tops) + result.scratch
            if total_activations > MAX_TOTAL_ACTIVATIONS:
                fail(f"the net's activations reach {total_activations:,} values here, more than the "
                      f"{MAX_TOTAL_ACTIVATIONS:,} ninport accepts; is an input shape or a number wrong?")
        except _LayerShapeError as exc:
            raise ShapeError(f"{layer.where(spec.source)}: {exc}") from None
        except NinportError as exc:
            raise type(exc)(f"{layer.where(spec.source)}: {exc}") from None
        for top, shape in zip(layer.tops, result.tops):
            blobs[top] = tuple(int(d) for d in shape)
        layers[layer.key] = result
    return ShapeTable(blobs=blobs, layers=layers)


# --- ArgMax, Reduction, Tile, MVN, Embed, Parameter, SPP ----------------------------------------


def argmax_top_shape(p, shape: Shape) -> tuple[int | None, Shape]:
    """Caffe's ArgMax: (axis or None, top shape).

    With `axis`: the bottom's shape with that axis cut to top_k. Without: max(3, ndim) axes of 1,
    with N at 0, top_k at 2 and 2 at 1 when out_max_val (indices then values).
    """
    if p.top_k < 1:
        fail(f"top_k {p.top_k} must be at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, len(shape))
        if p.top_k > shape[axis]:
            fail(f"top_k {p.top_k} exceeds the size {shape[axis]} of axis {axis}")
        return axis, shape[:axis] + (int(p.top_k),) + shape[axis + 1:]
    per_item = math.prod(shape[1:])
    if p.top_k > per_item:
        fail(f"top_k {p.top_k} exceeds the {per_item} values per item of the bottom {shape_text(shape)}")
    top = [1] * max(3, len(shape))
    top[0], top[2] = shape[0], int(p.top_k)
    if p.out_max_val:
        top[1] = 2
    return None, tuple(top)


@builtin_layer("ArgMax", converter="reduction:argmax", bottoms=1, tops=1)
def _argmax(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.argmax_param
    axis, top = argmax_top_shape(p, shape)
    # top_k > 1 ranks through an (items, top_k, axis size) comparison table in the converter
    scratch = math.prod(shape) * p.top_k if p.top_k > 1 else 0
    if scratch > MAX_BLOB_ELEMENTS:
        fail(f"top_k {p.top_k} over {math.prod(shape):,} values needs a {scratch:,}-element ranking "
              "table: implausibly large; is a number wrong?")
    return LayerShapes(tops=[top], scratch=scratch)


@builtin_layer("Reduction", converter="reduction:reduction", bottoms=1, tops=1)
def _reduction(layer, shapes):
    shape = one_bottom(layer, shapes)
    axis = canonical_axis(layer.proto.reduction_param.axis, len(shape))
    return LayerShapes(tops=[shape[:axis]])  # all axes from `axis` on are reduced; axis 0 gives a scalar


@builtin_layer("Tile", converter="indexing:tile", bottoms=1, tops=1)
def _tile(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.tile_param
    axis = canonical_axis(p.axis, len(shape))
    if not p.HasField("tiles"):
        fail("tile_param.tiles must be given (Caffe's rule)")
    if p.tiles <= 0:
        fail(f"tiles {p.tiles} must be positive")
    return LayerShapes(tops=[shape[:axis] + (shape[axis] * p.tiles,) + shape[axis + 1:]])


@builtin_layer("MVN", converter="reduction:mvn", bottoms=1, tops=1)
def _mvn(layer, shapes):
    shape = one_bottom(layer, shapes)
    if len(shape) > 4:
        fail(f"expects a bottom of at most 4 axes (Caffe's num/channels/height/width), got {shape_text(shape)}")
    # Caffe reshapes the top with num(), channels(), height(), width(): always 4-D.
    return LayerShapes(tops=[tuple(shape) + (1,) * (4 - len(shape))])


@builtin_layer("Embed", converter="indexing:embed", bottoms=1, tops=1, index_input=True)
def _embed(layer, shapes):
    shape = one_bottom(layer, shapes)
    p = layer.proto.embed_param
    if p.num_output <= 0:
        fail(f"num_output must be positive, got {p.num_output}")
    if p.input_dim <= 0:
        fail(f"input_dim must be positive, got {p.input_dim}")
    params = [(int(p.input_dim), int(p.num_output))] + ([(int(p.num_output),)] if p.bias_term else [])
    return LayerShapes(tops=[tuple(shape) + (int(p.num_output),)], params=params)


@builtin_layer("Parameter", converter="indexing:parameter", bottoms=0, tops=1)
def _parameter(layer, shapes):
    p = layer.proto.parameter_param
    if not p.HasField("shape") or not len(p.shape.dim):
        fail("parameter_param.shape must give at least one dimension")
    shape = tuple(int(d) for d in p.shape.dim)
    return LayerShapes(tops=[shape], params=[shape])


def spp_pooling_params(p, in_hw: tuple[int, int]) -> list:
    """The PoolingParameter of each SPP pyramid level, as Caffe's SPPLayer builds them at `in_hw`."""
    if p.pool == pb2.SPPParameter.STOCHASTIC:
        raise UnsupportedLayerError("STOCHASTIC pooling is not supported (its TEST-phase weighted "
                                    "average has no exact torch twin); use AVE or MAX")
    pool = pb2.PoolingParameter.MAX if p.pool == pb2.SPPParameter.MAX else pb2.PoolingParameter.AVE
    return [spp_pooling_param(level, pool) for level in spp_levels(p, in_hw)]


@builtin_layer("SPP", converter="spp:spp", bottoms=1, tops=1)
def _spp(layer, shapes):
    n, c, h, w = spatial_4d(layer, one_bottom(layer, shapes))
    p = layer.proto.spp_param
    levels = spp_pooling_params(p, (h, w))
    outs = [pool_geometry(pp, (h, w)).out for pp in levels]
    if any(out != (2 ** i, 2 ** i) for i, out in enumerate(outs)):  # geometry.SPPLevel says this cannot happen
        fail(f"pyramid levels give {outs} windows at {h}x{w}")
    if len(levels) == 1:  # Caffe runs the single pooling layer straight into the top: no flatten
        return LayerShapes(tops=[(n, c, *outs[0])])
    return LayerShapes(tops=[(n, spp_output_features(c, p.pyramid_height))])


# --- which layers fix the input size ------------------------------------------------------------


def _probe_sizes(spec: NetSpec) -> list[dict[str, Shape]]:
    """Input shapes other than the reference one: every 4-D input grown to 2H x 2W."""
    probes = []
    for grow in (lambda d: 2 * d,):
        probe = {name: tuple(shape[:2]) + tuple(grow(int(d)) for d in shape[2:]) if len(shape) == 4 else tuple(shape)
                 for name, shape in spec.inputs.items()}
        if probe != {k: tuple(v) for k, v in spec.inputs.items()}:
            probes.append(probe)
    return probes


def _fixing_at(spec: NetSpec, reference: ShapeTable, inputs: dict[str, Shape]) -> list[tuple[str, str]]:
    """The layers that refuse `inputs`, or whose weights would need other shapes there."""
    blobs = dict(inputs)
    found = []
    at = ", ".join(shape_text(s) for s in inputs.values())
    for layer in spec.layers:
        record = layer_type(layer.type, spec.dialect)
        bottoms = [blobs[b] for b in layer.bottoms]
        try:
            result = layer_shapes(record, layer, bottoms)
        except Exception as exc:  # noqa: BLE001 - any refusal of the size, from a rule or a plugin
            found.append((layer.name, f"refuses bottom {', '.join(shape_text(s) for s in bottoms)} (input {at}): "
                                      f"{safe_text(str(exc))}"))
            return found
        ref = reference.layers.get(layer.key)
        mismatch = weights_mismatch(result, ref)
        if mismatch is not None:
            found.append((layer.name, f"its weights {', '.join(shape_text(p) for p in ref.params)} take only "
                                      f"bottom {', '.join(shape_text(reference.blobs[b]) for b in layer.bottoms)}; "
                                      f"input {at} gives {', '.join(shape_text(s) for s in bottoms)}"))
            result = ref  # the weights are what they are: carry on with the reference tops
            if any(tuple(t) != tuple(reference.blobs[top]) for t, top in zip(result.tops, layer.tops)):
                return found
        for top, shape in zip(layer.tops, result.tops):
            blobs[top] = tuple(int(d) for d in shape)
    return found


def size_fixing_layers(spec: NetSpec, table: ShapeTable | None = None) -> list[tuple[str, str]]:
    """[(Caffe layer name, reason)] for the layers that fix the net's input size, [] when it runs at
    other sizes too, as Caffe reshapes a net to its input.

    Probed at 2H x 2W of every 4-D input: if the net takes it, nothing fixes its size (some sizes may
    still be refused: an Eltwise whose bottoms only meet at multiples of 16, or AlexNet's fc6, which
    takes 227 to 230 only); otherwise the layers that refuse it, or whose weights would need other
    shapes there (an InnerProduct after spatial layers), are returned. Torch-free: used by `inspect`.
    """
    reference = table or infer_shapes(spec)
    first: list[tuple[str, str]] | None = None
    for probe in _probe_sizes(spec):
        found = _fixing_at(spec, reference, probe)
        if not found:
            return []
        first = found if first is None else first
    return first or []


def size_fixing_text(fixed) -> str:
    """`layer 'fc6': its weights ...; layer ...`: which layers fix the input size and why, for messages."""
    return "; ".join(f"layer {safe_text(layer, 80)!r}: {safe_text(reason, 300)}" for layer, reason in fixed)
