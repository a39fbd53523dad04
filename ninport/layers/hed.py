"""The `hed` dialect: nets for HED's Caffe fork (s9xie/hed), whose `Crop` is not BVLC's.

BVLC's Crop takes its offsets from `crop_param` (default 0: the top-left corner). HED's fork (the FCN
"future" branch's CropLayer, src/caffe/layers/crop_layer.cpp at a2ad4103) has no crop_param: at net setup
it walks from each bottom back to the blob where their paths meet and composes every layer's `coord_map`,
a per-axis affine map (scale, offset) from a layer's bottom coordinates to its top's; the map from the
first bottom to the second must be a pure integer shift `-c`, and the top is the first bottom cut at
offset c to the second bottom's height and width. HED's deploy.prototxt relies on it to align its five
side outputs with the image (its `conv1_1` pads by 35). The offsets are fixed at setup, whatever the input
size later is.

Here `prepare` (run when a net is read with `dialect="hed"`) computes them as the fork does, in float32
as the fork's `Dtype`, and writes them into each Crop's parameters as BVLC's equivalent (axis 2, the two
offsets), which BVLC's Crop then computes exactly: the fork's forward copies
`bottom[0][n, c, crop_h + h, crop_w + w]` for the second bottom's h, w, where BVLC's does the same. The
`Crop` record of the dialect adds the fork's own requirements (two 4-D bottoms, no crop_param) and
refuses a crop past the first bottom's end, which the fork would read out of bounds.

The coord_map of each type is the fork's: Convolution and Pooling the inverse of FilterMap(kernel, stride,
pad) = (stride, (kernel - 1) / 2 - pad), Deconvolution FilterMap itself, an earlier Crop (1, -offset),
the identity for LRN, Concat, Eltwise, MVN, Softmax, Split, Slice and the neuron layers; any other layer
on a crop's path has none (the fork aborts with NOT_IMPLEMENTED), and is refused naming both layers.

Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.geometry import conv_geometry, fail, pool_params
from ninport.caffe.spec import LayerSpec, NetSpec
from ninport.errors import ShapeError, safe_text, shape_text
from ninport.layers.structure import crop_settings
from ninport.registry import LayerShapes, builtin_layer, register_dialect

DIALECT = "hed"
ORIGIN = "HED's Caffe fork (s9xie/hed)"
F32 = np.float32
IDENTITY_TYPES = frozenset({"LRN", "Concat", "Eltwise", "MVN", "Softmax", "Split", "Slice",
                            # the fork's NeuronLayer subclasses
                            "AbsVal", "BNLL", "Dropout", "Exp", "Log", "Power", "ReLU", "Sigmoid", "TanH",
                            "Threshold", "PReLU"})

AffineMap = tuple[tuple[np.float32, np.float32], ...]  # per axis (scale, offset): top = scale * bottom + offset


def _identity() -> AffineMap:
    return ((F32(1), F32(0)), (F32(1), F32(0)))


def _compose(left: AffineMap, right: AffineMap) -> AffineMap:
    """left after right, as DiagonalAffineMap::compose: (l.a r.a, l.a r.b + l.b), in float32."""
    return tuple((F32(la * ra), F32(F32(la * rb) + lb)) for (la, lb), (ra, rb) in zip(left, right))


def _inverse(m: AffineMap) -> AffineMap:
    return tuple((F32(F32(1) / a), F32(-b / a)) for a, b in m)


def _filter_map(kernel, stride, pad) -> AffineMap:
    """FilterMap: (stride, (kernel - 1) / 2 - pad) per axis, the centre of a window in bottom coordinates."""
    return tuple((F32(stride[a]), F32(F32(kernel[a] - 1) / F32(2)) - F32(pad[a])) for a in (0, 1))


def coord_map(layer: LayerSpec, crops: dict[str, tuple[int, int]]) -> AffineMap:
    """The fork's coord_map of `layer` (bottom -> top coordinates); GeometryError where it has none."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer.proto.convolution_param)
        if g.dilation != (1, 1):
            fail(f"its dilation {g.dilation[0]}x{g.dilation[1]} does not exist in HED's Caffe")
        m = _filter_map(g.kernel, g.stride, g.pad)
        return m if kind == "Deconvolution" else _inverse(m)
    if kind == "Pooling":
        p = pool_params(layer.proto.pooling_param)
        if p.kernel is None:
            fail("a global pooling's window depends on the input size, so HED's coord_map of it is not "
                 "fixed; give the Crop a path without it")
        return _inverse(_filter_map(p.kernel, p.stride, p.pad))
    if kind == "Crop":
        h, w = crops[layer.key]
        return ((F32(1), F32(-h)), (F32(1), F32(-w)))
    if kind in IDENTITY_TYPES:
        return _identity()
    fail(f"HED's Caffe has no coord_map for a {safe_text(kind)} layer (it aborts with NOT_IMPLEMENTED)")


def fork_crop_offsets(layers: list[LayerSpec], index: int, crops: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(crop_h, crop_w) of the Crop `layers[index]`, as the fork's CropLayer::LayerSetUp computes them."""
    crop = layers[index]
    if len(crop.bottoms) != 2:
        fail(f"HED's Crop takes exactly 2 bottoms, got {len(crop.bottoms)}")
    producer: dict[str, LayerSpec] = {}  # blob -> the first layer writing it (in-place layers skipped)
    for layer in layers:
        for top in layer.tops:
            producer.setdefault(top, layer)
    path = {crop.bottoms[0]}
    blob = crop.bottoms[0]
    while blob in producer:
        layer = producer[blob]
        if not layer.bottoms:
            break
        blob = layer.bottoms[0]
        path.add(blob)
    meet = crop.bottoms[1]
    while meet not in path:
        layer = producer.get(meet)
        if layer is None or not layer.bottoms:
            fail(f"cannot align apparently disconnected blobs {safe_text(crop.bottoms[0])!r} and "
                 f"{safe_text(crop.bottoms[1])!r} (HED's Caffe refuses them too)")
        meet = layer.bottoms[0]
    maps = []
    for start in crop.bottoms:
        m = _identity()
        blob = start
        while blob != meet:
            layer = producer[blob]
            try:
                m = _compose(m, coord_map(layer, crops))
            except Exception as exc:  # name the layer on the crop's path
                fail(f'on its path, layer "{safe_text(layer.name)}" ({safe_text(layer.type)}): {exc}')
            blob = layer.bottoms[0]
        maps.append(m)
    crop_map = _compose(maps[1], _inverse(maps[0]))
    offsets = []
    for axis, (scale, offset) in enumerate(crop_map):
        what = ("height", "width")[axis]
        if scale != 1:
            fail(f"its bottoms differ in scale along the {what} ({float(scale):g}), so HED's Caffe cannot "
                 "align them (CHECK_DOUBLE_EQ(scale, 1))")
        if offset > 0:
            fail(f"negative crop {what}: the second bottom starts {float(offset):g} before the first "
                 "(HED's Caffe: 'Negative crop width.')")
        if offset != _round(offset):
            fail(f"crop {what} {-float(offset):g} is not an integer (HED's Caffe refuses it)")
        offsets.append(int(-_round(offset)))
    return offsets[0], offsets[1]


def _round(value: np.float32) -> float:
    """C's round(): halves away from zero."""
    return math.copysign(math.floor(abs(float(value)) + 0.5), float(value))


def prepare(spec: NetSpec) -> NetSpec:
    """Give every Crop the offsets HED's Caffe computes, as BVLC's crop_param (axis 2, offset h, w)."""
    from ninport.caffe.geometry import GeometryError

    layers = list(spec.layers)
    crops: dict[str, tuple[int, int]] = {}
    for index, layer in enumerate(layers):
        if layer.type != "Crop":
            continue
        where = layer.where(spec.source)
        if layer.proto.HasField("crop_param"):
            raise ShapeError(f"{where}: HED's Caffe has no crop_param (its Crop computes the offsets from the "
                             "net); read this net without dialect='hed' for BVLC's Crop")
        try:
            crops[layer.key] = fork_crop_offsets(layers, index, crops)
        except GeometryError as exc:
            raise ShapeError(f"{where}: {exc}") from None
        proto = pb2.LayerParameter()
        proto.CopyFrom(layer.proto)
        proto.crop_param.axis = 2
        proto.crop_param.offset.extend(crops[layer.key])
        layers[index] = dataclasses.replace(layer, proto=proto)
    return dataclasses.replace(spec, layers=layers)


register_dialect(DIALECT, about=ORIGIN, prepare=prepare)


@builtin_layer("Crop", converter="structure:crop", bottoms=2, tops=1, origin=ORIGIN, dialect=DIALECT,
               settings=crop_settings)
def _hed_crop(layer, shapes):
    """The fork's Crop: two 4-D bottoms, top (N, C) of the first and (H, W) of the second, cut at the
    offsets `prepare` wrote; a cut past the first bottom's end (which the fork reads out of bounds) is refused."""
    if len(shapes) != 2:
        fail(f"HED's Crop takes exactly 2 bottoms, got {len(shapes)}")
    shape, ref = shapes
    if len(shape) != 4 or len(ref) != 4:
        fail(f"HED's Crop takes 4-D bottoms, got {shape_text(shape)} and {shape_text(ref)}")
    p = layer.proto.crop_param
    if p.axis != 2 or len(p.offset) != 2:
        fail("the Crop's offsets were not computed (read the net with ninport.load(..., dialect='hed'))")
    for axis, offset in zip((2, 3), p.offset):
        if offset + ref[axis] > shape[axis]:
            fail(f"HED's crop at offset {offset} of size {ref[axis]} runs past axis {axis} of size "
                 f"{shape[axis]} of {shape_text(shape)} (the fork would read out of bounds)")
    return LayerShapes(tops=[(shape[0], shape[1], ref[2], ref[3])], parsed=(2, [int(o) for o in p.offset]))
