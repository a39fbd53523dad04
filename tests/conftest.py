"""Shared fixtures: where the real-Caffe golden cases live (all in the repository), and a guard against hangs."""
from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.seeded_weights import NIN_GOLDEN, nin_weights

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
VENDORED_GOLDEN = FIXTURES / "caffe-golden"  # small BVLC Caffe cases, one folder each
NIN_CASES = ("nin_v1_224", "nin_v1_227")     # in NIN_GOLDEN: big, their caffemodel rebuilt from its seed
SIZES_GOLDEN = FIXTURES / "caffe-golden-sizes"  # BVLC Caffe: one net at four input sizes
SSD_GOLDEN = FIXTURES / "caffe-golden-ssd"      # SSD Caffe (weiliu89's fork): PriorBox ... DetectionOutput
NIN_DEPLOY = REPO / "reference_models" / "nin_imagenet" / "deploy.prototxt"
NIN_TRAIN_VAL = REPO / "reference_models" / "nin_imagenet" / "train_val.prototxt"


@contextmanager
def within(seconds: float, what: str = "the read") -> Iterator[None]:
    """Fail with TimeoutError instead of hanging CI when `what` runs longer than `seconds` (a blocked
    read on a FIFO, a runaway example); SIGALRM, so the main thread of a POSIX process only."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds} s: a hang")
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows
        yield
        return
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class GoldenCase:
    """One case computed by BVLC Caffe itself (see tests/fixtures/caffe-golden/README.md)."""

    name: str
    folder: Path
    info: dict

    @property
    def prototxt(self) -> Path:
        return self.folder / self.info["prototxt"]

    @property
    def weights(self) -> Path | None:
        w = self.info.get("weights")
        return self.folder / w if w else None

    def inputs(self) -> dict[str, np.ndarray]:
        data = np.load(self.folder / "inputs.npz")
        return {name: data[name] for name in self.info["inputs"]}

    def blobs(self) -> dict[str, np.ndarray]:
        data = np.load(self.folder / "blobs.npz")
        return {name: data[name] for name in data.files}


def golden_case_names() -> list[str]:
    names = sorted(p.name for p in VENDORED_GOLDEN.iterdir() if (p / "case.json").is_file())
    return names + list(NIN_CASES)


def load_golden(name: str) -> GoldenCase:
    if name in NIN_CASES:
        folder = NIN_GOLDEN / name
        nin_weights()  # written on first use, sha256-checked: case.json's weights path then holds it
    else:
        folder = VENDORED_GOLDEN / name
    return GoldenCase(name, folder, json.loads((folder / "case.json").read_text()))


@contextmanager
def plain_kernels() -> Iterator[None]:
    """ninport's convolutions on nn.Conv2d's own path (their oneDNN path off, see ninport/layers/convolution.py),
    so a twin that runs torch's default kernels (the generated .py, a .pt2 program) can be compared with the
    module bit for bit. The oneDNN path itself is checked against nn.Conv2d to float32 rounding
    (tests/layers/test_convolution.py) and against Caffe (the golden cases)."""
    from ninport.layers import convolution

    available = convolution.ONEDNN
    convolution.ONEDNN = False
    try:
        yield
    finally:
        convolution.ONEDNN = available


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - b| / max |b|: the project's parity measure."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) if expected.size else 0.0
    return diff / scale if scale else diff


@pytest.fixture(params=golden_case_names())
def golden_case(request) -> GoldenCase:
    return load_golden(request.param)


# --- the converter coverage guard ----------------------------------------------------------------
# Every built-in converter must actually run during the test session: record the types whose
# converter the graph builder called, and fail a full run that leaves one unexercised.
CONVERTED_TYPES: set[str] = set()


@pytest.fixture(autouse=True, scope="session")
def _record_converted_types():
    from ninport.registry import LayerType

    original = LayerType.convert_function

    def recording(self):
        function = original(self)

        def convert(ctx):
            CONVERTED_TYPES.add(self.name)
            return function(ctx)
        return convert

    LayerType.convert_function = recording
    yield
    LayerType.convert_function = original


def _is_full_run(config) -> bool:
    args = [a for a in config.args if a not in ("tests", "tests/", str(REPO / "tests"), str(REPO))]
    return not args and not config.getoption("keyword") and not config.getoption("markexpr")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 or not _is_full_run(session.config) or not CONVERTED_TYPES:
        return
    from ninport.registry import all_layer_types

    missing = sorted(r.name for r in all_layer_types() if not callable(r.converter) and r.name not in CONVERTED_TYPES)
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"FAILED converter coverage guard: no test ran the converter of {', '.join(missing)}",
                            red=True)
        session.exitstatus = 1
