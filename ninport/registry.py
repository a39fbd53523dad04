"""One registration record per Caffe layer type: its shape rule and its converter, together.

Built-in types are registered in their family file, `ninport.layers.<family>`, which holds the
type's shape rule (decorated with `@builtin_layer`), its torch module and the converter the record
names as "family:function". Users' plugins register through the same door, `register_layer`, with a
callable converter. Registering a type twice is an error unless `replace=True` says it is meant.

A dialect is a named set of records that replace the default ones for the nets read with it, for
forks that gave a standard type other semantics (HED's Caffe computes `Crop` its own way): a record
registered with `dialect="hed"` is used for a net loaded with `ninport.load(..., dialect="hed")`
(`--dialect hed`), and the default record everywhere else. Built-in and plugin dialects register alike.

Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union

from ninport.errors import NinportError, UnsupportedLayerError, one_line, safe_text, shape_text


class LayerSpec(Protocol):
    """What a record reads of a layer: the fields of a `ninport.caffe.spec.LayerSpec`, typed by shape so that
    the records sit below the reader, which checks each layer it reads against them."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    proto: Any
    unknown_fields: dict[str, Any]

Shape = tuple[int, ...]


@dataclass
class LayerShapes:
    """What a shape rule says about one layer: top shapes, weight blob shapes (Caffe layout), MACs, and
    the layer's parameters as the rule read and checked them.

    `params=None` (plugins only) means "whatever blobs the caffemodel holds for this layer".
    `parsed`: the typed parameters the converter needs (an int, a frozen dataclass, ...), read once here
    from the layer's fields and handed to the converter as `LayerContext.parsed`, so no parameter is parsed
    in two places; None where the converter reads nothing the rule has not already checked.
    """

    tops: list[Shape]
    params: list[Shape] | None = field(default_factory=list)
    macs: int = 0
    scratch: int = 0  # elements of an intermediate the converter materializes (e.g. a padded input)
    parsed: Any = None

    @property
    def param_count(self) -> int:
        return sum(math.prod(p) for p in self.params or [])


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


ShapeFn = Callable[["LayerSpec", list[Shape]], Union[LayerShapes, Sequence[Sequence[int]]]]
ConverterFn = Callable[[Any], Any]  # LayerContext -> torch.nn.Module (see ninport.build.context)
SettingsFn = Callable[["LayerSpec"], str]
# Which of a layer's weight blobs are stored statistics: indices, or a function of the layer giving them.
StatisticsSpec = Union[tuple[int, ...], Callable[["LayerSpec"], Sequence[int]]]
# The torch.onnx.export(custom_translation_table=) entries a type's module needs: a function returning
# {torch op: translation}, or "family:function" naming one in `ninport.layers` (imported when exporting).
TranslationsFn = Callable[[], dict]
# One bound on a bottom or top count: a number, None (no bound), or a function of the layer (a bound that
# depends on its parameters).
Bound = Union[int, None, Callable[["LayerSpec"], int]]
# How a type declares a count: an exact number, a (min, max) pair of bounds, or None (any count).
CountSpec = Union[int, tuple[Bound, Bound], None]


@dataclass(frozen=True)
class BlobCounts:
    """How many bottoms and tops a layer type takes, checked as Caffe's `Layer::CheckBlobCounts` checks them
    when it sets the net up: from the type's ExactNum/Min/Max{Bottom,Top}Blobs (exact is min == max) and
    EqualNumBottomTopBlobs (`one_top_per_bottom`). None is no bound; a bound that depends on the layer's
    parameters (Pooling takes a second top, the argmax mask, only for MAX) is a function of the layer.
    """

    min_bottoms: Bound = None
    max_bottoms: Bound = None
    min_tops: Bound = None
    max_tops: Bound = None
    one_top_per_bottom: bool = False

    @classmethod
    def of(cls, bottoms: CountSpec = None, tops: CountSpec = None, one_top_per_bottom: bool = False) -> "BlobCounts":
        """From the declaration form: `1` (exactly one), `(1, 2)`, `(2, None)` (at least two), None (any)."""
        return cls(*_bounds(bottoms, "bottoms"), *_bounds(tops, "tops"), one_top_per_bottom)

    @property
    def bottoms(self) -> tuple[Bound, Bound]:
        return self.min_bottoms, self.max_bottoms

    @property
    def tops(self) -> tuple[Bound, Bound]:
        return self.min_tops, self.max_tops

    def problem(self, layer: "LayerSpec") -> str | None:
        """Why Caffe refuses `layer`'s numbers of bottoms and tops, or None when it takes them."""
        for noun, verb, count, (low, high) in (("bottom", "takes", len(layer.bottoms), self.bottoms),
                                               ("top", "produces", len(layer.tops), self.tops)):
            low, high = _evaluate(low, layer), _evaluate(high, layer)
            if (low is not None and count < low) or (high is not None and count > high):
                return (f"has {_counted(count, noun)}, but a Caffe {layer.type} layer {verb} "
                        f"{_range_text(low, high, noun)}; Caffe refuses this net")
        if self.one_top_per_bottom and len(layer.bottoms) != len(layer.tops):
            return (f"has {_counted(len(layer.bottoms), 'bottom')} and {_counted(len(layer.tops), 'top')}, but a "
                    f"Caffe {layer.type} layer produces one top per bottom; Caffe refuses this net")
        return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bounds(spec: CountSpec, what: str) -> tuple[Bound, Bound]:
    """(min, max) of a declared count (see CountSpec)."""
    if spec is None:
        return None, None
    if _is_count(spec):
        return spec, spec
    if isinstance(spec, tuple) and len(spec) == 2 and all(b is None or callable(b) or _is_count(b) for b in spec):
        low, high = spec
        if _is_count(low) and _is_count(high) and low > high:
            raise NinportError(f"{what} {spec!r}: the minimum is above the maximum")
        return low, high
    raise NinportError(f"{what} must be a count >= 0, a (min, max) pair (None: no bound) or None; got {spec!r}")


def _evaluate(bound: Bound, layer: "LayerSpec") -> int | None:
    return bound(layer) if callable(bound) else bound


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _range_text(low: int | None, high: int | None, noun: str) -> str:
    """'exactly 1 top', 'at least 2 bottoms', '1 or 2 tops', '3 to 4 bottoms'."""
    plural = noun if (high == 1 or (high is None and low == 1)) else noun + "s"
    if low == high:
        return f"no {noun}" if low == 0 else f"exactly {low} {plural}"
    if high is None:
        return f"at least {low} {plural}"
    if not low:
        return f"at most {high} {plural}"
    return f"{low} or {high} {plural}" if high == low + 1 else f"{low} to {high} {plural}"


@dataclass(frozen=True)
class LayerType:
    """Everything ninport knows about one Caffe layer type.

    `converter` is a callable, or "family:function" naming one in `ninport.layers`.
    `origin` says where the type comes from (BVLC Caffe, a fork, a plugin) for docs and messages.
    `reads_unknown_fields`: the type interprets fields the schema does not know (a fork's params kept
    in `LayerSpec.unknown_fields`); for other types such fields make the layer unconvertible.
    `counts`: the bottoms and tops the type takes, checked before its shape rule runs (see BlobCounts).
    `settings(layer)`: a short text of the layer's parameters for `inspect` ("96, k11 s4"); None: none shown.
    `statistics`: the indices of the weight blobs that are statistics gathered in training (BatchNorm's
    mean, variance and scale factor), not learned parameters; a function of the layer where it depends on
    its parameters. `inspect` counts them apart.
    `index_input`: the first bottom holds integer row indices into weight blob 0 (Embed); self-checks feed
    such a net input integers in [0, rows of that blob).
    `onnx_translations`: what torch's ONNX exporter needs to translate the type's custom ops (see
    TranslationsFn); None for modules made of standard torch ops.
    `python_layer`: (module, layer) of a `type: "Python"` layer's `python_param` when this record computes
    that Python layer (`register_python_layer`); such records are found by that pair, not by type name.
    """

    name: str
    shape: ShapeFn
    converter: ConverterFn | str
    origin: str = "BVLC Caffe"
    reads_unknown_fields: bool = False
    counts: BlobCounts = field(default_factory=BlobCounts)
    dialect: str | None = None  # None: the default record; else it replaces it in nets read with this dialect
    settings: SettingsFn | None = None
    statistics: StatisticsSpec = ()
    index_input: bool = False
    onnx_translations: TranslationsFn | str | None = None
    python_layer: tuple[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(dialect or "", type name): what identifies a record in the registry; a Python layer's record:
        ("", "Python module.layer")."""
        if self.python_layer is not None:
            return ("", python_layer_title(*self.python_layer))
        return (self.dialect or "", self.name)

    def shapes(self, layer: "LayerSpec", bottom_shapes: list[Shape]) -> LayerShapes:
        """Run the shape rule; a plugin may return a plain list of top shapes."""
        result = self.shape(layer, bottom_shapes)
        if isinstance(result, LayerShapes):
            return result
        try:
            tops = [tuple(int(d) for d in shape) for shape in result]
        except (TypeError, ValueError):
            raise NinportError(f"the shape rule of layer type {self.name!r} returned {type(result).__name__}, "
                               "expected LayerShapes or a list of top shapes") from None
        return LayerShapes(tops=tops, params=None)

    def convert_function(self) -> ConverterFn:
        return _resolve(self.converter)

    def settings_text(self, layer: "LayerSpec") -> str:
        """What `inspect` shows in the settings column for `layer`."""
        return self.settings(layer) if self.settings is not None else ""

    def statistics_blobs(self, layer: "LayerSpec") -> tuple[int, ...]:
        """The indices of `layer`'s weight blobs that are stored statistics (see `statistics`)."""
        indices = self.statistics(layer) if callable(self.statistics) else self.statistics
        return tuple(int(i) for i in indices)

    def translations(self) -> dict:
        """The type's torch.onnx.export translation table entries ({} for none)."""
        return {} if self.onnx_translations is None else dict(_resolve(self.onnx_translations)())


def _resolve(function: Callable | str) -> Callable:
    """A callable, or the one "family:function" names in `ninport.layers` (imports torch)."""
    if callable(function):
        return function
    family, _, name = function.partition(":")
    return getattr(importlib.import_module(f"ninport.layers.{family}"), name)


_TYPES: dict[str, LayerType] = {}
_PYTHON_LAYERS: dict[tuple[str, str], LayerType] = {}  # python_param (module, layer) -> its record
_DIALECTS: dict[str, dict[str, LayerType]] = {}  # dialect -> type name -> the record replacing the default
_DIALECT_ABOUT: dict[str, str] = {}  # dialect -> what it is, for messages and docs
_DIALECT_PREPARE: dict[str, Callable] = {}  # dialect -> its pass over a whole net (NetSpec -> NetSpec)
_BUILTINS_LOADED = False
# Torch-free modules whose @builtin_layer shape rules register the built-in types, one per layer family
# group; a new family adds its module here.
BUILTIN_RULE_MODULES = tuple(f"ninport.layers.{family}" for family in (
    "activation", "convolution", "pooling", "inner_product", "normalization", "structure", "reduction", "indexing",
    "spp", "fork", "resize", "ssd", "loss", "hed", "roi", "python_layer", "proposal"))


def _table(dialect: str | None) -> dict[str, LayerType]:
    return _TYPES if dialect is None else _DIALECTS.setdefault(dialect, {})


def add_record(record: LayerType, replace: bool) -> LayerType:
    if record.python_layer is not None:
        return _add_python_record(record, replace)
    if not isinstance(record.name, str) or not record.name:
        raise NinportError(f"a layer type name must be a non-empty string, got {record.name!r}")
    if record.dialect is not None and (not isinstance(record.dialect, str) or not record.dialect):
        raise NinportError(f"a dialect name must be a non-empty string, got {record.dialect!r}")
    table = _table(record.dialect)
    if record.name in table and not replace:
        where = "" if record.dialect is None else f" in dialect {record.dialect!r}"
        raise NinportError(f"layer type {record.name!r} is already registered{where} ({table[record.name].origin}); "
                           "pass replace=True to override it")
    table[record.name] = record
    if record.dialect is not None:
        _DIALECT_ABOUT.setdefault(record.dialect, record.origin)
    return record


def builtin_layer(*names: str, converter: str, bottoms: CountSpec, tops: CountSpec, one_top_per_bottom: bool = False,
                  origin: str = "BVLC Caffe", reads_unknown_fields: bool = False, dialect: str | None = None,
                  settings: SettingsFn | None = None, statistics: StatisticsSpec = (), index_input: bool = False,
                  onnx_translations: str | None = None):
    """Decorator for a built-in shape rule: registers one record per named type (in `dialect` if given).

    `bottoms` and `tops` are required: what the type's Caffe header declares (see BlobCounts.of), so
    no built-in type goes unchecked by omission; None where the header declares no bound. The other
    keywords are the LayerType fields of the same names.
    """
    counts = BlobCounts.of(bottoms, tops, one_top_per_bottom)

    def register(shape: ShapeFn) -> ShapeFn:
        for name in names:
            add_record(LayerType(name, shape, converter, origin, reads_unknown_fields, counts, dialect, settings,
                           statistics, index_input, onnx_translations), replace=False)
        return shape
    return register


def builtin_python_layer(python_module: str, python_layer: str, *, converter: str, bottoms: CountSpec,
                         tops: CountSpec, origin: str, settings: SettingsFn | None = None,
                         onnx_translations: str | None = None):
    """Decorator for a built-in Python layer's shape rule: the record computing the `type: "Python"` layers
    whose python_param names this module and layer (see `register_python_layer`)."""
    counts = BlobCounts.of(bottoms, tops)

    def register(shape: ShapeFn) -> ShapeFn:
        add_record(LayerType("Python", shape, converter, origin, False, counts, None, settings, (), False,
                             onnx_translations, (python_module, python_layer)), replace=False)
        return shape
    return register


def checked_module(module_fn, origin: str):
    """Wrap a plugin's `module(ctx)` so that what it returns is checked once, at the reference input
    size, against its own shape rule: a module that fails or disagrees is an error naming the layer
    and the plugin (the graph builder adds the layer), not a traceback later in a forward pass."""

    def convert(ctx):
        import torch
        from torch import nn

        module = module_fn(ctx)
        if not isinstance(module, nn.Module):
            raise UnsupportedLayerError(f"the {origin} module function returned {type(module).__name__}, "
                                        "not a torch.nn.Module")
        try:
            with torch.no_grad():
                out = module(*[torch.zeros(shape) for shape in ctx.bottom_shapes])
        except Exception as exc:
            shapes = ", ".join(shape_text(s) for s in ctx.bottom_shapes)
            raise UnsupportedLayerError(f"the {origin} module failed on bottoms of shapes {shapes}: "
                                        f"{one_line(exc)}") from exc
        outs = out if isinstance(out, (tuple, list)) else (out,)
        got = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in outs]
        if got != [tuple(s) for s in ctx.top_shapes]:
            raise UnsupportedLayerError(f"the {origin} module computes tops {got}, its shape rule said "
                                        f"{[tuple(s) for s in ctx.top_shapes]}")
        return module

    if hasattr(module_fn, "plugin_module"):  # already checked (a plugin's type renamed after loading)
        module_fn = module_fn.plugin_module
    convert.plugin_module = module_fn
    return convert


def register_layer(name: str, *, shape: ShapeFn, module: ConverterFn, origin: str = "plugin",
                   reads_unknown_fields: bool = True, bottoms: CountSpec = None, tops: CountSpec = None,
                   replace: bool = False, dialect: str | None = None, settings: SettingsFn | None = None,
                   statistics: StatisticsSpec = (), index_input: bool = False,
                   onnx_translations: TranslationsFn | None = None) -> LayerType:
    """Teach ninport a layer type from your own code (a fork's layer, a custom op).

    `shape(layer, bottom_shapes)` returns the top shapes (a list of tuples) or a `LayerShapes` with
    weight blob shapes and MACs; `layer` is a `ninport.caffe.spec.LayerSpec` whose `proto` holds the
    typed fields and `unknown_fields` the fields the schema does not know, as plain data.
    `module(ctx)` returns the torch.nn.Module computing the layer: called with the bottoms as
    tensors, it returns one tensor or a tuple (one per top). `ctx` is a
    `ninport.build.context.LayerContext` (layer, bottom_shapes, top_shapes, weights as numpy,
    `ctx.parameter(i)`). The module is run once on zeros at the reference input size and must give
    the tops its shape rule promised. Read parameters with `layer_param(layer, "my_param.alpha",
    default)`: it finds them typed or among the kept unknown fields.
    A shape rule or module that raises is reported naming the layer and `origin`.
    `bottoms` and `tops` say how many the type takes, as Caffe's layer declares them: `1` (exactly
    one), `(1, 2)`, `(2, None)` (at least two); a bound may be a function of the layer. A layer with
    other counts is refused, naming it, before the shape rule runs. None (the default): not checked.
    Registering a type ninport already knows raises unless `replace=True`.
    `dialect="name"` registers the type in that dialect (created on first use) instead: nets loaded with
    `dialect="name"` get it in place of the default record of that type, other nets never see it.
    `settings(layer) -> str`: the layer's parameters in a few words, for `inspect`'s settings column.
    `statistics`: the indices of the weight blobs that are statistics gathered in training, not learned
    (a running mean and variance), or a function of the layer giving them: `inspect` counts them apart.
    `index_input=True`: the first bottom holds row indices into weight blob 0 (as Embed's does).
    `onnx_translations() -> {torch op: onnxscript function}`: how torch's ONNX exporter translates the custom
    ops (`torch.library`) your module calls (`torch.onnx.export(custom_translation_table=)`).
    """
    _load_builtins()
    return add_record(_plugin_record(f"register_layer({name!r})", name, shape, module, origin, reads_unknown_fields,
                                     bottoms, tops, dialect, settings, statistics, index_input, onnx_translations),
                      replace=replace)


def _plugin_record(caller: str, name: str, shape, module, origin, reads_unknown_fields, bottoms, tops, dialect,
                   settings, statistics, index_input, onnx_translations, python_layer=None) -> LayerType:
    """A plugin's record from `register_layer`'s (or `register_python_layer`'s) arguments, checked."""
    if not callable(shape) or not callable(module):
        raise NinportError(f"{caller}: shape and module must be callables")
    for argument, value in (("settings", settings), ("onnx_translations", onnx_translations)):
        if value is not None and not callable(value):
            raise NinportError(f"{caller}: {argument} must be a callable or None")
    if not callable(statistics) and not (isinstance(statistics, (tuple, list))
                                         and all(_is_count(i) for i in statistics)):
        raise NinportError(f"{caller}: statistics must be blob indices (a tuple of integers >= 0) "
                           "or a function of the layer")
    try:
        counts = BlobCounts.of(bottoms, tops)
    except NinportError as exc:
        raise NinportError(f"{caller}: {exc}") from None
    return LayerType(name, shape, checked_module(module, origin), origin, reads_unknown_fields, counts, dialect,
                     settings, tuple(statistics) if not callable(statistics) else statistics, bool(index_input),
                     onnx_translations, python_layer)


def register_python_layer(python_module: str, python_layer: str, *, shape: ShapeFn, module: ConverterFn,
                          origin: str = "plugin", bottoms: CountSpec = None, tops: CountSpec = None,
                          replace: bool = False, settings: SettingsFn | None = None,
                          statistics: StatisticsSpec = (), onnx_translations: TranslationsFn | None = None
                          ) -> LayerType:
    """Teach ninport a Caffe `type: "Python"` layer: the one whose `python_param` names `python_module`
    and `python_layer` (a Python layer runs code that is not in the Caffe files, so each module/layer pair
    needs its own converter; other Python layers stay refused, naming their module and layer).

    The keywords are `register_layer`'s. The layer's `param_str` is data: read it with
    `ninport.python_params(layer)`, which parses a literal dict (YAML's flow form, as py-faster-rcnn's
    layers write it) without running anything.
    """
    for what, value in (("module", python_module), ("layer", python_layer)):
        if not isinstance(value, str) or not value:
            raise NinportError(f"register_python_layer: the python_param {what} must be a non-empty string, "
                               f"got {value!r}")
    if not python_layer.isidentifier():  # Caffe looks the layer up as an attribute of the module
        raise NinportError(f"register_python_layer: the python_param layer {python_layer!r} is not a Python "
                           "identifier (a class name)")
    _load_builtins()
    caller = f"register_python_layer({python_module!r}, {python_layer!r})"
    return add_record(_plugin_record(caller, "Python", shape, module, origin, False, bottoms, tops, None, settings,
                                     statistics, False, onnx_translations, (python_module, python_layer)),
                      replace=replace)


def with_origin(record: LayerType, origin: str) -> LayerType:
    """A plugin's record with another origin, which its messages name (a plugin file's name)."""
    return dataclasses.replace(record, origin=origin, converter=checked_module(record.converter, origin))


def python_layer_title(python_module: str, python_layer: str) -> str:
    """"Python rpn.proposal_layer.ProposalLayer": how messages and the registry name a Python layer."""
    return f"Python {python_module}.{python_layer}"


def _add_python_record(record: LayerType, replace: bool) -> LayerType:
    if record.dialect is not None:
        raise NinportError("a Python layer's record cannot belong to a dialect")
    pair = record.python_layer
    if pair in _PYTHON_LAYERS and not replace:
        raise NinportError(f"{python_layer_title(*pair)} is already registered ({_PYTHON_LAYERS[pair].origin}); "
                           "pass replace=True to override it")
    _PYTHON_LAYERS[pair] = record
    return record


def python_layer_record(python_module: str, python_layer: str) -> LayerType | None:
    """The record computing the Python layers whose python_param names this module and layer, or None."""
    _load_builtins()
    return _PYTHON_LAYERS.get((python_module, python_layer))


def unregister_python_layer(python_module: str, python_layer: str) -> None:
    """Remove a plugin's Python layer registration (built-in ones stay)."""
    record = _PYTHON_LAYERS.get((python_module, python_layer))
    if record is not None and callable(record.converter):
        del _PYTHON_LAYERS[(python_module, python_layer)]


def unregister_layer(name: str, dialect: str | None = None) -> None:
    """Remove a plugin's registration (built-in types stay)."""
    table = _TYPES if dialect is None else _DIALECTS.get(dialect, {})
    record = table.get(name)
    if record is not None and callable(record.converter):
        del table[name]


def layer_type(name: str, dialect: str | None = None) -> LayerType | None:
    """The record of a Caffe type: the dialect's own when `dialect` has one, else the default one."""
    _load_builtins()
    if dialect is not None and name in _DIALECTS.get(dialect, {}):
        return _DIALECTS[dialect][name]
    return _TYPES.get(name)


def registered_types() -> list[str]:
    _load_builtins()
    return sorted(_TYPES)


def all_layer_types() -> list[LayerType]:
    """Every record: the default ones, then each dialect's, sorted by name, then the Python layers'."""
    _load_builtins()
    return [_TYPES[name] for name in sorted(_TYPES)] + [
        table[name] for dialect in sorted(_DIALECTS) for table in [_DIALECTS[dialect]] for name in sorted(table)] + [
        _PYTHON_LAYERS[pair] for pair in sorted(_PYTHON_LAYERS)]


def python_layer_records() -> list[LayerType]:
    """The records of the Python layers ninport computes (built-in and plugins'), by module and layer."""
    _load_builtins()
    return [_PYTHON_LAYERS[pair] for pair in sorted(_PYTHON_LAYERS)]


def find_record(key: tuple[str, str]) -> LayerType | None:
    """The record with this `LayerType.key` (no fallback to the default record)."""
    _load_builtins()
    python = next((record for record in _PYTHON_LAYERS.values() if record.key == tuple(key)), None)
    if python is not None:
        return python
    dialect, name = key
    return (_DIALECTS.get(dialect, {}) if dialect else _TYPES).get(name)


def register_dialect(name: str, *, about: str, prepare: Callable | None = None, replace: bool = False) -> None:
    """Declare a dialect (what it is, for messages) and optionally its pass over the whole net.

    `prepare(spec) -> spec` runs when a net is read in the dialect, before any shape rule: for fork
    semantics that depend on the net's wiring (HED's Crop derives its offsets from the layers between
    its bottoms). It receives and returns a `ninport.caffe.spec.NetSpec` (torch-free data) and raises a
    NinportError naming the layer for what the fork would refuse. Its types register with
    `register_layer(..., dialect=name)`.
    """
    if not isinstance(name, str) or not name:
        raise NinportError(f"a dialect name must be a non-empty string, got {name!r}")
    if prepare is not None and not callable(prepare):
        raise NinportError(f"register_dialect({name!r}): prepare must be a callable")
    if name in _DIALECT_PREPARE and prepare is not None and not replace:
        raise NinportError(f"dialect {name!r} already has a prepare pass; pass replace=True to override it")
    _DIALECT_ABOUT[name] = about
    _DIALECTS.setdefault(name, {})
    if prepare is not None:
        _DIALECT_PREPARE[name] = prepare


def prepare_net(spec):
    """Run the pass of the dialect `spec` was read in, if it has one (see `register_dialect`)."""
    prepare = _DIALECT_PREPARE.get(spec.dialect) if spec.dialect else None
    return spec if prepare is None else prepare(spec)


def dialects() -> dict[str, str]:
    """Every dialect (with a type or a pass of its own): name -> where it comes from."""
    _load_builtins()
    return {name: _DIALECT_ABOUT.get(name, "") for name in sorted(_DIALECTS)
            if _DIALECTS[name] or name in _DIALECT_PREPARE}


def dialect_types(dialect: str) -> list[str]:
    """The types a dialect gives its own semantics."""
    _load_builtins()
    return sorted(_DIALECTS.get(dialect, {}))


def check_dialect(dialect: Any) -> str | None:
    """`dialect` when it is None or a registered dialect; NinportError naming the known ones otherwise."""
    if dialect is None:
        return None
    known = dialects()
    if isinstance(dialect, str) and dialect in known:
        return dialect
    listed = ", ".join(f"{name} ({about})" for name, about in known.items()) or "none"
    raise NinportError(f"unknown dialect {safe_text(repr(dialect), 60)}; registered dialects: {listed}")


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for name in BUILTIN_RULE_MODULES:
            importlib.import_module(name)  # their @builtin_layer decorators register the types


# --- reading a layer's parameters, typed or kept as unknown fields ------------------------------

_MISSING = object()


def layer_param(layer: LayerSpec, path: str, default: Any = None) -> Any:
    """The value of a layer parameter by dotted path ("interp_param.zoom_factor"), from wherever the
    reader put it: the typed proto when ninport's schema knows the field, else the fields a fork's
    prototxt added, kept in `layer.unknown_fields`. `default` when the field is not given.

    A field given twice takes the last value, as protobuf does for optional fields (a repeated typed
    field gives the list); an enum gives its name ("INFERENCE"). The value is plain data from the model file: check
    its type before using it.
    """
    value = _typed_value(layer.proto, path.split("."))
    if value is _MISSING:
        value = _unknown_value(getattr(layer, "unknown_fields", None) or {}, path.split("."))
    return default if value is _MISSING else value


def layer_fields(layer: LayerSpec, message: str) -> set[str]:
    """Names of the fields given inside `message` ("upsample_param"), typed or unknown."""
    names: set[str] = set()
    proto = layer.proto
    if message in proto.DESCRIPTOR.fields_by_name and proto.HasField(message):
        names.update(fd.name for fd, _ in getattr(proto, message).ListFields())
    prefix = message + "."
    for key, values in (getattr(layer, "unknown_fields", None) or {}).items():
        if key.startswith(prefix):
            names.add(key[len(prefix):].split(".")[0])
        elif key == message:
            for value in values:
                if isinstance(value, dict):
                    names.update(k.split(".")[0] for k in value)
    return names


def _typed_value(message, parts: list[str]) -> Any:
    for i, part in enumerate(parts):
        fd = message.DESCRIPTOR.fields_by_name.get(part)
        if fd is None:
            return _MISSING
        last = i == len(parts) - 1
        if fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED:
            if not last:
                return _MISSING
            values = list(getattr(message, part))
            if not values:
                return _MISSING
            if fd.enum_type is not None:
                return [fd.enum_type.values_by_number[v].name if v in fd.enum_type.values_by_number else v
                        for v in values]
            return values
        if not message.HasField(part):
            return _MISSING
        value = getattr(message, part)
        if last:
            if fd.enum_type is not None:
                named = fd.enum_type.values_by_number.get(value)
                return named.name if named is not None else value
            return value
        message = value
    return _MISSING


def _unknown_value(fields: dict, parts: list[str]) -> Any:
    """Look `parts` up in kept unknown fields: a dotted key, or a message kept as a nested dict."""
    key = ".".join(parts)
    if fields.get(key):
        return fields[key][-1]
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        nested = [v for v in fields.get(head, []) if isinstance(v, dict)]
        if nested:
            found = _unknown_value(nested[-1], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING

