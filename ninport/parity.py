"""Per-blob comparison of the converted model against a reference, with a readable verdict."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_TOLERANCE = 1e-5


@dataclass
class BlobComparison:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    passed: bool
    note: str = ""


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
    """(max |a-b|, max |a-b| / max |b|); NaNs in the same places count as equal."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    if np.isnan(diff).any():
        return float("nan"), float("nan")
    scale = float(np.nanmax(np.abs(np.where(both_nan, 0.0, b)))) if b.size else 0.0
    return max_abs, (max_abs / scale if scale else max_abs)


def compare_blobs(actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], order: list[str],
                  reference_name: str, tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Compare every blob named in `order` that both sides have; shape mismatches fail."""
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
        report.rows.append(BlobComparison(name, tuple(a.shape), max_abs, rel, bool(rel <= tolerance)))
    return report


@dataclass
class GoldenFolder:
    """A folder of Caffe outputs: case.json, the prototxt, weights, inputs.npz and blobs.npz."""

    folder: Path
    info: dict

    @classmethod
    def open(cls, folder: str | Path) -> "GoldenFolder":
        from ninport.errors import ParseError

        folder = Path(folder)
        case = folder / "case.json"
        if not case.is_file():
            raise ParseError(f"{folder}: not a golden folder (no case.json with inputs.npz and blobs.npz)")
        try:
            info = json.loads(case.read_text())
        except (OSError, ValueError) as exc:
            raise ParseError(f"{case}: unreadable ({exc})") from None
        for needed in ("inputs.npz", "blobs.npz"):
            if not (folder / needed).is_file():
                raise ParseError(f"{folder}: golden folder without {needed}")
        return cls(folder, info)

    @property
    def prototxt(self) -> Path:
        return self.folder / self.info.get("prototxt", "net.prototxt")

    @property
    def weights(self) -> Path | None:
        name = self.info.get("weights")
        return self.folder / name if name else None

    def inputs(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "inputs.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def blobs(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "blobs.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
