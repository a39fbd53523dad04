"""Per-blob comparison of the converted model against a reference, with a readable verdict."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_TOLERANCE = 1e-5
# A value beyond this (about 1.8e19) squared overflows float32: an area, a variance or a dot product of such
# values is inf. Two runtimes that disagree on values this large (or on NaN/inf) have overflowed, e.g. on
# random weights; their difference proves nothing about the conversion either way.
OVERFLOW_MAGNITUDE = float(np.sqrt(np.finfo(np.float32).max))


@dataclass(frozen=True)
class BlobComparison:
    """One blob compared with a reference: against Caffe in `verify` (tolerance 1e-5 by default), between
    ninport's module and a written file in the self-check (1e-4), which adds the blob's `role`."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    passed: bool
    note: str = ""
    inconclusive: bool = False  # not passed, but only because the values overflowed: neither PASS nor FAIL
    role: str = ""  # self-check: "output" or "logits of Softmax layer <name>"
    overflow: str = ""  # where the torch module overflowed on the way to this blob, if it did

    @property
    def result(self) -> str:
        """PASS, FAIL or INCONCLUSIVE (with the note, if any)."""
        word = "PASS" if self.passed else "INCONCLUSIVE" if self.inconclusive else "FAIL"
        return f"{word} {self.note}".strip()


@dataclass
class ParityReport:
    reference: str
    tolerance: float
    rows: list[BlobComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def first_divergence(self) -> BlobComparison | None:
        """The first blob, in net order, that is out of tolerance: where to start looking."""
        return next((r for r in self.rows if not r.passed), None)


COMPARE_CHUNK = 1 << 20  # elements compared at a time: float64 temporaries of a few MB, whatever the blob


def relative_error(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |a-b|, max |a-b| / max |b| over b's finite values); NaNs in the same places and equal infinities
    count as equal; any other NaN or inf difference makes both NaN.

    Computed in float64 a chunk at a time, so comparing a 1 GB blob costs a few MB more, not the ten
    float64 copies a whole-array expression makes."""
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape != b.shape:
        a, b = np.broadcast_arrays(a, b)
    a, b = a.reshape(-1), b.reshape(-1)
    max_abs = scale = 0.0
    for start in range(0, a.size, COMPARE_CHUNK):
        x = a[start:start + COMPARE_CHUNK].astype(np.float64)
        y = b[start:start + COMPARE_CHUNK].astype(np.float64)
        same = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
        with np.errstate(invalid="ignore"):
            diff = np.where(same, 0.0, np.abs(x - y))
        if np.isnan(diff).any() or np.isinf(diff).any():
            return float("nan"), float("nan")
        max_abs = max(max_abs, float(diff.max()))
        finite = np.abs(y[np.isfinite(y)])
        if finite.size:
            scale = max(scale, float(finite.max()))
    return max_abs, (max_abs / scale if scale else max_abs)


def overflow_note(actual: np.ndarray, expected: np.ndarray) -> str:
    """Why two arrays count as overflowed ('' when they do not): NaN/inf on either side, or a magnitude
    beyond OVERFLOW_MAGNITUDE."""
    notes = []
    for side, values in (("ours", actual), ("theirs", expected)):
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            notes.append(f"NaN/inf in {side}")
        elif values.size and float(np.abs(values).max()) > OVERFLOW_MAGNITUDE:
            notes.append(f"values up to {float(np.abs(values).max()):.3g} in {side}")
    if not notes:
        return ""
    return f"overflow ({', '.join(notes)}): proves nothing either way"


def compare_blobs(actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], order: list[str],
                  reference_name: str, tolerance: float = DEFAULT_TOLERANCE, *,
                  overflowed: Mapping[str, str] | None = None) -> ParityReport:
    """Compare every blob named in `order` that both sides have; shape mismatches fail.

    With `overflowed` (two runtimes compared, not Caffe's own numbers: blob -> where the torch module
    overflowed on the way to it, see `ninport.check.selfcheck.forward_values`), a blob that does not match and
    was computed from an overflow, or holds overflowed values (`overflow_note`), is inconclusive rather
    than a failure."""
    report = ParityReport(reference=reference_name, tolerance=tolerance)
    for name in order:
        if name not in reference or name not in actual:
            continue
        a, b = np.asarray(actual[name]), np.asarray(reference[name])
        if a.shape != b.shape:
            report.rows.append(BlobComparison(name, tuple(a.shape), float("inf"), float("inf"), False,
                                              f"shape {list(a.shape)} vs reference {list(b.shape)}"))
            continue
        max_abs, rel = relative_error(a, b)
        passed = bool(rel <= tolerance)
        note = ""
        if not passed and overflowed is not None:
            note = (f"overflow in {overflowed[name]}: proves nothing either way" if name in overflowed
                    else overflow_note(a, b))
        report.rows.append(BlobComparison(name, tuple(a.shape), max_abs, rel, passed, note, bool(note)))
    return report


@dataclass
class GoldenFolder:
    """A folder of Caffe outputs: case.json, the prototxt, weights, inputs.npz and blobs.npz.

    The folder may come from someone else, so everything in it is checked as data: case.json must be
    a JSON object whose `prototxt` and `weights` name files INSIDE the folder (no absolute path, no
    `..`, no symlink leading out), the npz files are read with their headers checked before anything
    is allocated (ninport.fileio.load_npz), and hold numeric arrays only. Every problem is one
    ParseError line naming the file.
    """

    folder: Path
    info: dict

    @classmethod
    def open(cls, folder: str | Path) -> GoldenFolder:
        from ninport.errors import ParseError, safe_text
        from ninport.fileio import confined_path, read_text_bounded

        folder = Path(folder)
        case = folder / "case.json"
        if not case.is_file():
            raise ParseError(f"{folder}: not a golden folder (no case.json with inputs.npz and blobs.npz)")
        text = read_text_bounded(confined_path(folder, "case.json", "case.json"), "case.json")
        try:
            info = json.loads(text)
        except ValueError as exc:
            raise ParseError(f"{case}: not valid JSON ({exc})") from None
        except RecursionError:  # arrays or objects nested thousands deep
            raise ParseError(f"{case}: not valid JSON for ninport: nested too deeply") from None
        if not isinstance(info, dict):
            raise ParseError(f"{case}: expected a JSON object, got {type(info).__name__}")
        for key in ("prototxt", "weights"):
            value = info.get(key)
            if value is not None and not isinstance(value, str):
                raise ParseError(f"{case}: {key!r} must be a file name (a string), got {type(value).__name__}")
        golden = cls(folder, info)
        for needed in ("inputs.npz", "blobs.npz"):
            if not (folder / needed).is_file():
                raise ParseError(f"{folder}: golden folder without {needed}")
            confined_path(folder, needed, needed)
        prototxt = confined_path(folder, info.get("prototxt") or "net.prototxt", "case.json's prototxt")
        if not prototxt.is_file():
            raise ParseError(f"{case}: its prototxt {safe_text(prototxt.name, 120)!r} is not in the folder")
        if info.get("weights"):
            confined_path(folder, info["weights"], "case.json's weights")
        return golden

    @property
    def prototxt(self) -> Path:
        from ninport.fileio import confined_path

        return confined_path(self.folder, self.info.get("prototxt") or "net.prototxt", "case.json's prototxt")

    @property
    def weights(self) -> Path | None:
        from ninport.fileio import confined_path

        name = self.info.get("weights")
        return confined_path(self.folder, name, "case.json's weights") if name else None

    def _arrays(self, name: str, shapes=None) -> dict[str, np.ndarray]:
        from ninport.errors import ParseError
        from ninport.fileio import confined_path, load_npz

        path = confined_path(self.folder, name, name)
        arrays = load_npz(path, shapes=shapes)
        for key, value in arrays.items():
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise ParseError(f"{path}: array {key!r} has dtype {value.dtype}; expected numbers")
        return arrays

    def _names(self, name: str) -> list[str]:
        from ninport.fileio import confined_path, npz_names

        return npz_names(confined_path(self.folder, name, name))

    def inputs(self) -> dict[str, np.ndarray]:
        """Every array of inputs.npz (for trusted folders; `input_arrays` reads only what a net takes)."""
        return self._arrays("inputs.npz")

    def input_arrays(self, inputs) -> dict[str, np.ndarray]:
        """The net's inputs (blob name -> the shape the net takes) from inputs.npz. Only those members are
        inflated, each after its declared size and .npy header were checked against that shape; a
        ParseError names an input the file lacks or holds at another shape."""
        from ninport.errors import ParseError, safe_text, shape_text

        path = self.folder / "inputs.npz"
        arrays = self._arrays("inputs.npz", inputs)
        missing = [n for n in inputs if n not in arrays]
        if missing:
            held = ", ".join(repr(safe_text(n, 60)) for n in self._names("inputs.npz")[:10]) or "none"
            raise ParseError(f"{path}: no array for the net's input(s) "
                             f"{', '.join(repr(safe_text(n, 60)) for n in missing)} (it has {held})")
        for name, shape in inputs.items():
            if tuple(arrays[name].shape) != tuple(shape):
                raise ParseError(f"{path}: input {safe_text(name, 80)!r} has shape {shape_text(arrays[name].shape)}, "
                                 f"the net takes {shape_text(shape)}")
        return {n: arrays[n] for n in inputs}

    def blobs(self, shapes=None) -> dict[str, np.ndarray]:
        """The arrays of blobs.npz: all of them, or with `shapes` (blob name -> the shape ninport computed)
        only those, read as `ninport.fileio.load_npz` reads a need (one of another shape comes back as a
        placeholder of that shape, which a comparison reports as a mismatch)."""
        return self._arrays("blobs.npz", shapes)

    def blob_names(self) -> list[str]:
        """The names blobs.npz holds, without inflating anything."""
        return self._names("blobs.npz")
