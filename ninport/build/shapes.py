"""Shape inference with Caffe's own rules, before anything is allocated.

Each layer type's rule lives with its module in `ninport/layers/<family>.py` and is registered on the type's
`LayerType` record; this module runs them over a net: the shape table for `inspect` and the builder, the
checks every layer gets, and which layers fix the input size. Torch-free code (the family files it loads
hold torch modules too).
"""
from __future__ import annotations

import math

from ninport.caffe.geometry import GeometryError, fail
from ninport.caffe.spec import LayerSpec, NetSpec
from ninport.errors import NinportError, ShapeError, UnsupportedLayerError, safe_text, shape_text
from ninport.layers.rules import MAX_BLOB_ELEMENTS, MAX_TOTAL_ACTIVATIONS, MAX_TOTAL_PARAMS
from ninport.registry import LayerShapes, Shape, ShapeTable, layer_type, registered_types

# Failures inside shape rules: the driver adds file and layer to the message. Shape rules (and plugins'
# rules) raise it through `fail`; the geometry module raises the same class.
_LayerShapeError = GeometryError


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
