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


@dataclass
class BlobComparison:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    passed: bool
    note: str = ""
    inconclusive: bool = False  # not passed, but only because the values overflowed: neither PASS nor FAIL

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


def relative_error(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |a-b|, max |a-b| / max |b| over b's finite values); NaNs in the same places and equal infinities
    count as equal; any other NaN or inf difference makes both NaN."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    if np.isnan(diff).any() or np.isinf(diff).any():
        return float("nan"), float("nan")
    max_abs = float(diff.max()) if diff.size else 0.0
    finite = np.abs(b[np.isfinite(b)])
    scale = float(finite.max()) if finite.size else 0.0
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
    overflowed on the way to it, see `ninport.selfcheck.forward_values`), a blob that does not match and
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

    def _arrays(self, name: str) -> dict[str, np.ndarray]:
        from ninport.errors import ParseError
        from ninport.fileio import confined_path, load_npz

        path = confined_path(self.folder, name, name)
        arrays = load_npz(path)
        for key, value in arrays.items():
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise ParseError(f"{path}: array {key!r} has dtype {value.dtype}; expected numbers")
        return arrays

    def inputs(self) -> dict[str, np.ndarray]:
        return self._arrays("inputs.npz")

    def input_arrays(self, names) -> dict[str, np.ndarray]:
        """The inputs the net needs, by blob name; a ParseError names any inputs.npz lacks."""
        from ninport.errors import ParseError

        arrays = self.inputs()
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ParseError(f"{self.folder / 'inputs.npz'}: no array for the net's input(s) "
                             f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, arrays)) or 'none'})")
        return {n: arrays[n] for n in names}

    def blobs(self) -> dict[str, np.ndarray]:
        return self._arrays("blobs.npz")
