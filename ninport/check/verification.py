"""`ninport verify` as a library: the converted net against Caffe's own outputs, OpenCV and onnxruntime.

- A golden folder (outputs written by real Caffe) is compared blob by blob. A blob on one side only
  is listed and fails the comparison: a check that silently skips blobs proves less than it says.
  Caffe's own split copies (`<blob>_<layer>_<i>_split_<j>`, named exactly as Caffe's InsertSplits names
  them for this net) are compared like any blob when the dump has them; a dump may leave them out.
- OpenCV 4.x's independent Caffe importer computes the net's outputs, except where it is known to
  compute something other than Caffe (then it is skipped, with the reason).
- onnxruntime runs the exported ONNX file on the same inputs.

A runtime comparison (OpenCV, onnxruntime) of a blob that overflowed (NaN/inf, or values whose square
exceeds float32's range: random weights through an Exp, e.g. an SSD's box decoding) is INCONCLUSIVE, not a
failure: two runtimes that both overflowed prove nothing either way. Caffe's own numbers are compared as
they are.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ninport.api import InputShape, PathLike, check_int, check_net_files, check_path
from ninport.check.parity import BlobComparison, GoldenFolder, compare_blobs
from ninport.errors import NinportError, counted, safe_text

DEFAULT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Comparison:
    """The converted net against one reference: a row per blob both have, and the blobs only one has."""

    reference: str
    tolerance: float
    rows: tuple[BlobComparison, ...]
    missing_in_reference: tuple[str, ...] = ()   # blobs ninport computed that the reference lacks
    missing_in_ninport: tuple[str, ...] = ()     # blobs the reference has that ninport does not compute

    @property
    def uncompared(self) -> tuple[str, ...]:
        return self.missing_in_reference + self.missing_in_ninport

    @property
    def passed(self) -> bool:
        """No blob failed (an inconclusive one, which overflowed, is not a failure) and none is uncompared."""
        return bool(self.rows) and all(r.passed or r.inconclusive for r in self.rows) and not self.uncompared

    @property
    def inconclusive(self) -> tuple[BlobComparison, ...]:
        """The blobs whose comparison proves nothing: they overflowed on one side or both."""
        return tuple(r for r in self.rows if r.inconclusive)

    @property
    def first_divergence(self) -> BlobComparison | None:
        """The first blob, in net order, out of tolerance: where to start looking."""
        return next((r for r in self.rows if not r.passed and not r.inconclusive), None)

    def verdict(self) -> str:
        """One line: `12 blobs compared, 0 uncompared: PASS` or what failed."""
        head = f"{counted(len(self.rows), 'blob')} compared"
        if self.uncompared:
            head += f", {len(self.uncompared):,} uncompared"
        if self.passed and self.inconclusive:
            shown = _names(tuple(r.name for r in self.inconclusive))
            agreed = len(self.rows) - len(self.inconclusive)
            return (f"{head}: INCONCLUSIVE: {shown} overflowed (inf/NaN in the net, or values near float32's "
                    f"limit), which proves nothing either way"
                    + (f"; the other {counted(agreed, 'blob')} PASS" if agreed else "")
                    + "; try real weights and inputs")
        if self.passed:
            return f"{head}: PASS"
        reasons = []
        first = self.first_divergence
        if first is not None:
            reasons.append(f"first divergence at blob {safe_text(first.name, 80)!r}")
        if self.missing_in_reference:
            reasons.append(f"not in the reference: {_names(self.missing_in_reference)}")
        if self.missing_in_ninport:
            reasons.append(f"not computed by ninport: {_names(self.missing_in_ninport)}")
        if not self.rows and not reasons:
            reasons.append("no blob in common")
        return f"{head}: FAIL: {'; '.join(reasons)}"


@dataclass(frozen=True)
class Skipped:
    reference: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    prototxt: str
    weights: str | None
    inputs_source: str
    comparisons: tuple[Comparison, ...]
    skipped: tuple[Skipped, ...]

    @property
    def passed(self) -> bool:
        """True when at least one reference was compared and every comparison passed."""
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)


def _names(names: tuple[str, ...], limit: int = 5) -> str:
    shown = ", ".join(repr(safe_text(n, 60)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def compare_all(actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], order: list[str],
                reference_name: str, tolerance: float, reference_names: list[str] | None = None,
                optional: frozenset[str] = frozenset(), *, overflowed: dict[str, str] | None = None) -> Comparison:
    """Every blob of both sides: compared where both have it, listed where only one has it, except the
    `optional` ones (Caffe's split copies) that the reference leaves out.

    `reference_names`: every blob the reference holds, when `reference` holds only those ninport also
    computes (a golden blobs.npz is read that way: the rest is listed, never inflated).
    `overflowed`: see `ninport.check.parity.compare_blobs` (for runtimes, not Caffe's own numbers)."""
    report = compare_blobs(actual, reference, order, reference_name, tolerance, overflowed=overflowed)
    held = list(reference) if reference_names is None else reference_names
    ours_only = tuple(name for name in order if name in actual and name not in held and name not in optional)
    theirs_only = tuple(name for name in held if name not in actual)
    return Comparison(reference_name, tolerance, tuple(report.rows), ours_only, theirs_only)


def opencv_known_deviation(layers: list) -> str | None:
    """Why OpenCV 4.x's Caffe importer is known to compute something else for this net, if it is."""
    for layer in layers:
        p = layer.proto
        name = safe_text(layer.name, 80)
        if layer.type == "LRN" and p.lrn_param.k != 1:
            return f'OpenCV ignores LRN k != 1 (layer "{name}")'
        if layer.type == "Log":
            return f'OpenCV computes Log differently (layer "{name}")'
        if layer.type == "InnerProduct" and (p.inner_product_param.axis != 1 or p.inner_product_param.transpose):
            return f'OpenCV mishandles InnerProduct axis != 1 or transpose (layer "{name}")'
    return None


def run_opencv(prototxt: Path, weights: Path | None, inputs: dict[str, np.ndarray], outputs: list[str],
               blob_layers: dict[str, str]) -> tuple[dict[str, np.ndarray] | None, str]:
    """The outputs computed by OpenCV 4.x's Caffe importer, or (None, why not)."""
    try:
        import cv2
    except ImportError:
        return None, "OpenCV not installed (pip install 'opencv-python-headless<5')"
    if int(cv2.__version__.split(".")[0]) >= 5:
        return None, f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.x)"
    values = {}
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights)) if weights else \
            cv2.dnn.readNetFromCaffe(str(prototxt))
        for name, value in inputs.items():
            net.setInput(value, name)
        known = set(net.getLayerNames())
        for blob in outputs:
            # OpenCV names outputs by layer, sometimes by the layer's top: try the last writer first.
            candidates = [n for n in (blob_layers.get(blob), blob) if n in known]
            if not candidates:
                return None, f"OpenCV has no layer for output blob {safe_text(blob, 80)!r}"
            values[blob] = net.forward(candidates[0])
    except cv2.error as exc:
        lines = str(exc).strip().splitlines() or ["cv2.error"]
        return None, f"OpenCV could not run this net ({safe_text(lines[-1], 120)})"
    return values, ""


def check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise NinportError(f"tolerance must be a finite number >= 0, got {safe_text(repr(tolerance), 40)}")
    return float(tolerance)


def verify(target: PathLike, weights: PathLike | None = None, golden: PathLike | None = None,
           input_shape: InputShape = None, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
           opencv: bool = True, onnx: bool = True,
           progress: Callable[[str], None] | None = None, dialect: str | None = None) -> VerifyReport:
    """Compare the converted net with every reference available; see the module docstring.

    `target` is a golden folder (its prototxt, weights and inputs are used) or a prototxt (then
    `golden` may name a golden folder; without one the inputs are seeded random). Raises
    NinportError for bad arguments or files; a mismatch is a report that does not pass. `dialect`: see
    `ninport.load`; OpenCV, which knows no dialect, is then skipped.
    """
    target = check_path(target, "target")
    weights = check_path(weights, "weights", optional=True)
    golden_path = check_path(golden, "golden", optional=True)
    tolerance = check_tolerance(tolerance)
    seed = check_int(seed, "seed", minimum=0)
    say = progress or (lambda message: None)

    folder = None
    if target.is_dir():
        folder = GoldenFolder.open(target)
        prototxt, weights = folder.prototxt, weights or folder.weights
    else:
        prototxt = target
        if golden_path is not None:
            folder = GoldenFolder.open(golden_path)
    check_net_files(prototxt, weights, input_shape, dialect)  # before torch loads: a typo fails in milliseconds

    import ninport
    from ninport.check.selfcheck import forward_values, reference_inputs

    say(f"loading {prototxt}")
    module = ninport.load(prototxt, weights, input_shape=input_shape, dialect=dialect)
    meta = ninport.describe(module)
    from ninport import memory

    memory.require(memory.verify_bytes(module, meta), f"{prototxt}: verifying {memory.at_input(meta)}",
                   "give a smaller --input-shape")
    if folder is not None:
        inputs = folder.input_arrays(meta.inputs)  # only these members are inflated, each checked first
        inputs_source = f"the golden folder {folder.folder}"
    else:
        inputs = reference_inputs(module, seed, meta)
        inputs_source = f"seeded random inputs (seed {seed})"
    say("running the converted model")
    inputs = {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in meta.inputs}
    values, overflowed_nodes = forward_values(module, inputs, meta, {r.node for r in meta.blobs.values()})
    computed = {blob: values[record.node] for blob, record in meta.blobs.items() if record.node in values}
    # as pycaffe's net.blobs: Caffe's order, with its automatic split copies (see ninport.forward_blobs)
    blobs = {name: computed[source] for name, source in meta.caffe_blobs if source in computed}
    blobs.update((blob, value) for blob, value in computed.items() if blob not in blobs)
    overflowed = {blob: overflowed_nodes[record.node] for blob, record in meta.blobs.items()
                  if record.node in overflowed_nodes}
    outputs = list(meta.outputs)
    comparisons: list[Comparison] = []
    skipped: list[Skipped] = []
    if folder is not None:
        reference = folder.blobs({name: value.shape for name, value in blobs.items()})
        comparisons.append(compare_all(blobs, reference, list(blobs), f"Caffe (golden {folder.folder.name})",
                                       tolerance, reference_names=folder.blob_names(),
                                       optional=frozenset(meta.split_copies)))
    if opencv:
        deviation = opencv_known_deviation(ninport.load_spec(prototxt).layers)
        if dialect is not None:
            skipped.append(Skipped("OpenCV", f"the net is read in dialect {dialect!r}, which OpenCV does not know"))
        elif weights is None and module.state_dict():
            skipped.append(Skipped("OpenCV", "no caffemodel given, so OpenCV and ninport would not share weights"))
        elif deviation:
            skipped.append(Skipped("OpenCV", f"{deviation}; Caffe's golden outputs are the reference here"))
        else:
            say("running OpenCV's Caffe importer")
            values, why = run_opencv(prototxt, weights, inputs, outputs,
                                     {b: r.layer or b for b, r in meta.blobs.items()})
            if values is None:
                skipped.append(Skipped("OpenCV", why))
            else:
                comparisons.append(compare_all({k: blobs[k] for k in outputs}, values, outputs, "OpenCV 4.x dnn",
                                               tolerance, overflowed=overflowed))
    if onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            skipped.append(Skipped("onnxruntime", "not installed (pip install onnxruntime)"))
        else:
            from ninport.export.artifacts import verify_onnx
            from ninport.export.onnx import export_onnx

            say("exporting ONNX and running it in onnxruntime")
            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(module, Path(tmp) / "model.onnx")
                values = verify_onnx(path, inputs)
            comparisons.append(compare_all({k: blobs[k] for k in outputs}, dict(zip(outputs, values)), outputs,
                                           "onnxruntime (exported ONNX)", tolerance, overflowed=overflowed))
    return VerifyReport(str(prototxt), str(weights) if weights else None, inputs_source, tuple(comparisons),
                        tuple(skipped))
