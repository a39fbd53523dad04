"""NetSpec: the TEST-phase net as plain data (layers, blobs, inputs, outputs, weights as numpy).

This is what the graph builder consumes. Nothing here imports torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.splits import caffe_blobs
from ninport.caffe.upgrade import upgrade_net_with_origins
from ninport.errors import ParseError, ShapeError, counted
from ninport.registry import BlobCounts

# Layers that only matter while training: dropped from a deploy (TEST) net.
TRAINING_ONLY_TYPES = {"Accuracy", "Silence", "HDF5Output"}
# Layers that feed data from a database or file: their first top becomes a net input.
DATA_LAYER_TYPES = {"Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData",
                    "AnnotatedData", "VideoData"}
# The bottoms and tops of the layers that become net inputs (they have no LayerType record), as their Caffe
# headers declare them (AnnotatedData, VideoData: the SSD fork); checked as Caffe's CheckBlobCounts does.
SOURCE_LAYER_COUNTS = {
    "Input": BlobCounts.of(0, (1, None)),
    "Data": BlobCounts.of(0, (1, 2)),
    "ImageData": BlobCounts.of(0, 2),
    "MemoryData": BlobCounts.of(0, 2),
    "WindowData": BlobCounts.of(0, 2),
    "HDF5Data": BlobCounts.of(0, (1, None)),
    "DummyData": BlobCounts.of(0, (1, None)),
    "AnnotatedData": BlobCounts.of(0, (1, None)),
    "VideoData": BlobCounts.of(0, (1, None)),
}


def repeated_key(name: str, occurrence: int) -> str:
    """The key of the `occurrence`-th (2, 3, ...) layer named `name`: the name, a NUL and the count.
    Caffe names are C strings (a name holding NUL is refused), so a key never equals a real name."""
    return f"{name}\x00{occurrence}"


def is_training_only(layer_type: str, phase: int = pb2.TEST) -> bool:
    """Whether a layer of this type is left out of the `phase` net: in TEST, losses and Accuracy (a deploy
    net has no labels); in TRAIN, only layers with no value as a torch op (Silence, HDF5Output)."""
    if phase == pb2.TRAIN:
        return layer_type in TRAINING_ONLY_TYPES - {"Accuracy"}
    return layer_type in TRAINING_ONLY_TYPES or layer_type.endswith("Loss")


# Fields of a prototxt that caffe.proto does not define, kept as plain data: dotted path (relative
# to the layer, or to the net) -> every occurrence in file order; an occurrence is an int, float,
# bool or str (an enum identifier is its bare word), or for a `{ ... }` block a dict of the same form.
UnknownFields = dict  # dict[str, list[int | float | bool | str | UnknownFields]]


@dataclass
class LayerSpec:
    """One Caffe layer of the deploy net. `proto` keeps every parameter as Caffe wrote it;
    `unknown_fields` keeps what a fork wrote that caffe.proto does not know (see UnknownFields),
    e.g. {"interp_param": [{"zoom_factor": [8]}], "pooling_param.some_field": [1]}."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    proto: "pb2.LayerParameter"
    line: int | None = None
    blobs: list[np.ndarray] = field(default_factory=list)
    unknown_fields: UnknownFields = field(default_factory=dict)
    # (line, column) of the first occurrence of each unknown field path, for error messages.
    unknown_field_places: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Unique within the net, since Caffe does not require unique layer names: the name, or for a layer
    # whose name an earlier layer of Caffe's net already has, `repeated_key(name, n)`. What ninport keeps
    # per layer (shapes, weights) is keyed by it; a caffemodel layer reaches the layer whose key is its name.
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.name

    @property
    def repeats_a_name(self) -> bool:
        """True for the second, third, ... layer of a name (Caffe copies no caffemodel weights to it)."""
        return self.key != self.name

    def where(self, source: str | None) -> str:
        place = f"{source}:{self.line}" if source and self.line else (source or "<net>")
        return f'{place}: layer "{self.name}" ({self.type})'


@dataclass
class Preprocess:
    """What Caffe's transform_param says about the expected input (for metadata and `predict`)."""

    crop_size: int = 0
    mean_values: list[float] = field(default_factory=list)
    mean_file: str = ""
    scale: float = 1.0
    mirror: bool = False
    channel_order: str = "BGR"
    value_range: str = "0-255"


@dataclass
class NetSpec:
    name: str
    source: str
    inputs: dict[str, tuple[int, ...]]
    layers: list[LayerSpec]
    outputs: list[str]
    preprocess: Preprocess | None = None
    source_format: str = "current"
    unknown_fields: UnknownFields = field(default_factory=dict)  # net-level fields caffe.proto lacks
    # The dialect the net was read with (`ninport.registry`): its layer types replace the default ones.
    dialect: str | None = None
    # Every blob of Caffe's own net in its order (pycaffe's net.blobs), with the blob whose value it holds:
    # itself, or for a copy Caffe's InsertSplits makes (`<blob>_<layer>_<i>_split_<j>`) the blob it copies.
    caffe_blobs: tuple[tuple[str, str], ...] = ()

    def layer(self, name: str) -> LayerSpec:
        """The first layer named `name` (the one a caffemodel layer of that name reaches)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def with_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> "NetSpec":
        """A copy with other input shapes (e.g. crop 227 or batch 8)."""
        unknown = set(shapes) - set(self.inputs)
        if unknown:
            raise ShapeError(f"{self.source}: no input named {sorted(unknown)[0]!r}; inputs are {list(self.inputs)}")
        new_inputs = dict(self.inputs)
        for name, shape in shapes.items():
            new_inputs[name] = tuple(int(d) for d in shape)
        return NetSpec(self.name, self.source, new_inputs, self.layers, self.outputs, self.preprocess,
                       self.source_format, self.unknown_fields, self.dialect, self.caffe_blobs)


# --- phase rules -----------------------------------------------------------------------------


def _rule_met(rule, phase: int, level: int, stages: set[str]) -> bool:
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer, phase: int = pb2.TEST, level: int = 0, stages: set[str] = frozenset()) -> bool:
    """Caffe's Net::FilterNet rule: no include rules means included unless an exclude rule is met."""
    included = len(layer.include) == 0
    for rule in layer.exclude:
        if _rule_met(rule, phase, level, stages):
            included = False
    for rule in layer.include:
        if _rule_met(rule, phase, level, stages):
            included = True
    return included


# --- building --------------------------------------------------------------------------------


def _input_shape_from_data_layer(layer, where: str) -> tuple[int, ...] | None:
    """N, C, H, W implied by a data layer; None when the layer cannot say (HDF5Data)."""
    kind = layer.type
    if kind == "MemoryData":
        p = layer.memory_data_param
        return (1, p.channels, p.height, p.width)
    if kind == "DummyData":
        p = layer.dummy_data_param
        if len(p.shape):
            return (1,) + tuple(int(d) for d in p.shape[0].dim[1:])
        if len(p.channels):
            return (1, p.channels[0], p.height[0], p.width[0])
        return None
    crop = layer.transform_param.crop_size
    channels = 3
    if kind == "ImageData" and not layer.image_data_param.is_color:
        channels = 1
    if crop:
        return (1, channels, crop, crop)
    if kind == "ImageData" and layer.image_data_param.new_height and layer.image_data_param.new_width:
        p = layer.image_data_param
        return (1, channels, p.new_height, p.new_width)
    return None


def _preprocess_of(layer) -> Preprocess | None:
    if not layer.HasField("transform_param"):
        return None
    t = layer.transform_param
    return Preprocess(crop_size=t.crop_size, mean_values=list(t.mean_value), mean_file=t.mean_file,
                      scale=t.scale, mirror=t.mirror)


def build_netspec(net: "pb2.NetParameter", source: str = "<net>", lines: list[int] | None = None,
                  phase: int = pb2.TEST, stages: set[str] = frozenset(), level: int = 0,
                  unknown_fields: list[UnknownFields] | None = None,
                  net_unknown_fields: UnknownFields | None = None,
                  unknown_places: list[dict[str, tuple[int, int]]] | None = None) -> NetSpec:
    """Turn a parsed NetParameter (any format) into the deploy NetSpec for `phase`.

    `lines` and `unknown_fields` belong to the file's layers (net.layer, or net.layers for V0/V1
    files) in file order: line numbers for error messages, and the fields caffe.proto lacks.
    """
    from ninport.caffe.upgrade import net_format

    fmt = net_format(net)
    current, origins = upgrade_net_with_origins(net, source)
    # Upgrade may prepend an Input layer and fold V0 padding layers: follow each layer's origin.
    line_of: list[int | None] = [None] * len(current.layer)
    unknown_of: list[UnknownFields] = [{} for _ in current.layer]
    places_of: list[dict[str, tuple[int, int]]] = [{} for _ in current.layer]
    for i, origin in enumerate(origins):
        if origin is None:
            continue
        if lines and origin < len(lines):
            line_of[i] = lines[origin]
        if unknown_fields and origin < len(unknown_fields):
            unknown_of[i] = unknown_fields[origin]
        if unknown_places and origin < len(unknown_places):
            places_of[i] = unknown_places[origin]

    inputs: dict[str, tuple[int, ...]] = {}
    preprocess: Preprocess | None = None
    layers: list[LayerSpec] = []
    name_count: dict[str, int] = {}  # layers of each name in Caffe's net so far (inputs and losses included)
    caffe_net = []  # every layer of Caffe's net for this phase, for its blob list
    for index, layer in enumerate(current.layer):
        line = line_of[index]
        place = f"{source}:{line}" if line else source
        if len(layer.include) and len(layer.exclude):
            raise ParseError(f'{place}: layer "{layer.name}": has both include and exclude rules; '
                             "Caffe accepts only one kind")
        if not layer_included(layer, phase, level, stages):
            continue
        name_count[layer.name] = name_count.get(layer.name, 0) + 1
        caffe_net.append(layer)
        if not layer.type:
            if places_of[index]:  # most likely a misspelt `type:`; point at what was written
                path, (ln, col) = next(iter(places_of[index].items()))
                raise ParseError(f'{source}:{ln}:{col}: layer "{layer.name}": has no type, and caffe.proto '
                                 f"has no field {path!r}")
            raise ParseError(f'{place}: layer "{layer.name}": has no type')
        counts = SOURCE_LAYER_COUNTS.get(layer.type)
        as_spec = LayerSpec(layer.name, layer.type, list(layer.bottom), list(layer.top), layer)
        problem = counts.problem(as_spec) if counts else None
        if problem:
            raise ParseError(f'{place}: layer "{layer.name}" ({layer.type}): {problem}')
        if layer.type == "Input":
            shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
            if not shapes:
                raise ShapeError(f'{place}: layer "{layer.name}": Input layer without input_param.shape')
            if len(shapes) not in (1, len(layer.top)):
                raise ShapeError(f'{place}: layer "{layer.name}": {counted(len(layer.top), "top")} but '
                                 f"{counted(len(shapes), 'shape')}")
            if any(len(shape) == 0 for shape in shapes):
                raise ShapeError(f'{place}: layer "{layer.name}": an input shape with no dimensions (0-D); '
                                 "give at least one dim")
            for i, top in enumerate(layer.top):
                inputs[top] = shapes[i if len(shapes) > 1 else 0]
            continue
        if layer.type in DATA_LAYER_TYPES:
            shape = _input_shape_from_data_layer(layer, place)
            if shape is None:
                shape = (1, 3, 0, 0)  # unknown spatial size: must come from --input-shape
            inputs[layer.top[0]] = shape
            if phase == pb2.TRAIN:  # the labels feed the loss layers: one value per item
                for top in layer.top[1:]:
                    inputs[top] = (shape[0],)
            preprocess = preprocess or _preprocess_of(layer)
            continue
        if is_training_only(layer.type, phase):
            continue
        occurrence = name_count[layer.name]
        layers.append(LayerSpec(name=layer.name, type=layer.type, bottoms=list(layer.bottom),
                                tops=list(layer.top), proto=layer, line=line,
                                unknown_fields=unknown_of[index], unknown_field_places=places_of[index],
                                key=layer.name if occurrence == 1 else repeated_key(layer.name, occurrence)))
    if not inputs:
        raise ParseError(f"{source}: the net has no input (no `input:` field, Input layer or data layer "
                         "in the TEST phase)")
    outputs = _check_connectivity(inputs, layers, source)
    return NetSpec(name=current.name, source=source, inputs=inputs, layers=layers, outputs=outputs,
                   preprocess=preprocess, source_format=fmt, unknown_fields=dict(net_unknown_fields or {}),
                   caffe_blobs=caffe_blobs(caffe_net))


def _check_connectivity(inputs, layers: list[LayerSpec], source: str) -> list[str]:
    """Check every bottom exists and no top is overwritten; return Caffe's outputs, sorted by name."""
    available: set[str] = set(inputs)
    produced: set[str] = set(inputs)
    for layer in layers:
        for name in [layer.name, *layer.bottoms, *layer.tops]:
            if "\x00" in name:
                place = f"{source}:{layer.line}" if layer.line else source
                raise ParseError(f"{place}: layer {layer.name[:60]!r} ({layer.type[:60]!r}): the name "
                                 f"{name[:60]!r} holds a NUL byte; "
                                 "Caffe layer and blob names are C strings")
        if not layer.tops:
            raise ParseError(f"{layer.where(source)}: the layer has no top blob; a {layer.type} layer "
                             "produces at least one")
        for bottom in layer.bottoms:
            if bottom not in produced:
                raise ParseError(f"{layer.where(source)}: bottom blob {bottom!r} is not produced by "
                                 "any earlier layer or input")
        for bottom in layer.bottoms:
            available.discard(bottom)
        for i, top in enumerate(layer.tops):
            in_place = i < len(layer.bottoms) and layer.bottoms[i] == top
            if top in inputs and not in_place:
                raise ParseError(f"{layer.where(source)}: top blob {top!r} is a net input; a layer may "
                                 "only write over an input in place (bottom and top the same)")
            if top in produced and not in_place:
                raise ParseError(f"{layer.where(source)}: top blob {top!r} is already produced by "
                                 "another layer (only in-place tops may repeat a name)")
            produced.add(top)
            available.add(top)
    return sorted(available)


def load_netspec(prototxt: str | os.PathLike, phase: int = pb2.TEST, dialect: str | None = None) -> NetSpec:
    """Read a prototxt file (any format) into its deploy NetSpec; `dialect` names a registered dialect
    (`ninport.registry.dialects()`) whose layer types replace the default ones for this net."""
    from ninport.registry import check_dialect, prepare_net

    dialect = check_dialect(dialect)
    text = io.read_prototxt_text(prototxt)
    parsed = io.parse_prototxt(text, str(prototxt))
    field_name = "layers" if len(parsed.net.layers) and not len(parsed.net.layer) else "layer"
    spec = build_netspec(parsed.net, str(prototxt), parsed.layer_lines[field_name], phase=phase,
                         unknown_fields=parsed.layer_unknown_fields[field_name],
                         net_unknown_fields=parsed.unknown_fields,
                         unknown_places=parsed.layer_unknown_places[field_name])
    spec.dialect = dialect
    return prepare_net(spec)
