"""Fuzz: mutated prototxts and caffemodels end in a working module or one NinportError.

Every example mutates a golden (real-Caffe) prototxt and/or its caffemodel: truncation, flipped
bytes, numbers replaced by 0, -1, 2**31, huge values, deleted lines and fields, swapped layer
types. The outcome must be either a module that runs on a zero input of its input shapes, or a
`ninport.NinportError` — never another exception type, never a hang, never a huge allocation.

CI runs a bounded number of examples (NINPORT_FUZZ_EXAMPLES, default 150, split across the
tests below). A longer campaign:

    NINPORT_FUZZ_EXAMPLES=5000 PYTHONPATH=. python -m pytest -q tests/test_fuzz.py
"""
from __future__ import annotations

import math
import os
import re
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ninport
from ninport.caffe import io
from ninport.caffe.shapes import infer_shapes
from ninport.caffe.spec import load_netspec
from ninport.errors import NinportError


VENDORED_GOLDEN = Path(__file__).resolve().parent / "fixtures" / "caffe-golden"
TOTAL_EXAMPLES = int(os.environ.get("NINPORT_FUZZ_EXAMPLES", "150"))
# Share of the total per test: text mutations find the most, so they get the most.
SHARES = {"text": 0.4, "caffemodel": 0.25, "both": 0.15, "bytes": 0.2}
# Seconds one example may take before it counts as a hang (checked by hang_guard, not a speed target).
HANG_SECONDS = 20
# Above this many elements (activations + weights) a mutated net that loaded is not run:
# the check is that loading failed cleanly or succeeded, not how fast torch convolves.
RUN_LIMIT = 20_000_000

CASES = sorted(p.name for p in VENDORED_GOLDEN.iterdir() if (p / "case.json").is_file())
PROTOTXTS = {name: (VENDORED_GOLDEN / name / "net.prototxt").read_text() for name in CASES}
CAFFEMODELS = {name: (VENDORED_GOLDEN / name / "weights.caffemodel").read_bytes()
               for name in CASES if (VENDORED_GOLDEN / name / "weights.caffemodel").is_file()}

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
TYPE_VALUE = re.compile(r"(\btype:\s*)(\"[^\"]*\"|[A-Z_0-9]+)")
FIELD = re.compile(r"\b\w+\s*:\s*(\"[^\"]*\"|[\w.+-]+)")
REPLACEMENT_NUMBERS = ["0", "-1", "1", "2", "3", "7", "100", "65536", "1000000", "2000000000",
                       str(2 ** 31 - 1), str(2 ** 31), str(2 ** 32), str(2 ** 63), str(10 ** 30),
                       "-2147483648", "0.5", "1e30", "-0", "nan", "inf"]
TYPE_NAMES = ['"Convolution"', '"Deconvolution"', '"Pooling"', '"InnerProduct"', '"ReLU"', '"LRN"',
              '"Concat"', '"Eltwise"', '"Slice"', '"Split"', '"Softmax"', '"BatchNorm"', '"Scale"',
              '"Bias"', '"Reshape"', '"Flatten"', '"Crop"', '"PReLU"', '"Input"', '"Data"',
              '"Dropout"', '"SoftmaxWithLoss"', '"Accuracy"', '"MVN"', '"Nope"', '""', "CONVOLUTION",
              "POOLING", "INNER_PRODUCT", "RELU", "SPLIT", "SLICE", "CONCAT", "DATA", "NONE",
              '"conv"', '"pool"', '"innerproduct"', '"padding"', '"relu"']


@contextmanager
def hang_guard(seconds: int = HANG_SECONDS):
    """Fail (instead of hanging CI) when one example runs for `seconds`."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"example ran longer than {seconds} s: a hang")
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


def fuzz_settings(share: str):
    # No per-example deadline (a timing assertion that flakes on a loaded machine); `hang_guard`
    # catches real hangs.
    return settings(max_examples=max(1, math.ceil(TOTAL_EXAMPLES * SHARES[share])), deadline=None,
                    derandomize=os.environ.get("NINPORT_FUZZ_RANDOM") is None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- mutations -------------------------------------------------------------------------------


@st.composite
def text_mutation(draw, text: str) -> str:
    kind = draw(st.sampled_from(["number", "number", "number", "delete_line", "delete_field",
                                 "type", "type", "truncate", "duplicate_line", "flip_char"]))
    if kind == "number":
        spans = [m.span() for m in NUMBER.finditer(text)]
        if spans:
            a, b = draw(st.sampled_from(spans))
            return text[:a] + draw(st.sampled_from(REPLACEMENT_NUMBERS)) + text[b:]
    if kind == "type":
        spans = [m.span(2) for m in TYPE_VALUE.finditer(text)]
        if spans:
            a, b = draw(st.sampled_from(spans))
            return text[:a] + draw(st.sampled_from(TYPE_NAMES)) + text[b:]
    if kind == "delete_field":
        spans = [m.span() for m in FIELD.finditer(text)]
        if spans:
            a, b = draw(st.sampled_from(spans))
            return text[:a] + text[b:]
    lines = text.splitlines(keepends=True)
    if kind in ("delete_line", "duplicate_line") and lines:
        i = draw(st.integers(0, len(lines) - 1))
        return "".join(lines[:i] + ([lines[i]] * 2 if kind == "duplicate_line" else []) + lines[i + 1:])
    if kind == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if text:
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + draw(st.sampled_from(list("{}:\"#\n 0-xe"))) + text[i + 1:]
    return text


@st.composite
def mutated_text(draw, text: str) -> str:
    for _ in range(draw(st.integers(1, 3))):
        text = draw(text_mutation(text))
    return text


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "delete", "insert", "varint"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[i:]
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:  # a long varint: huge lengths, huge dims
            data[i:i + 1] = b"\xff" * draw(st.integers(1, 10)) + b"\x7f"
    return bytes(data)


# --- the property ----------------------------------------------------------------------------


def check_outcome(prototxt: Path, weights: Path | None) -> str:
    """Load; a loaded module must run on zeros. Returns 'error' or 'ok'; anything else fails."""
    with hang_guard(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = ninport.load_spec(prototxt)
            table = infer_shapes(spec)
            size = (sum(math.prod(s) for s in table.blobs.values()) + table.total_params
                    + sum(ls.scratch for ls in table.layers.values()))
            if size > RUN_LIMIT:
                return "error"  # loads cleanly so far; too big to build in a test
            if weights is not None:
                io.read_caffemodel(weights)
            module = ninport.load(prototxt, weights)
        except NinportError as exc:
            message = str(exc)
            assert "\n" not in message.strip(), f"error message spans lines: {message!r}"
            assert message, "empty error message"
            return "error"
        inputs = [torch.zeros(shape) for shape in ninport.describe(module).inputs.values()]
        with torch.no_grad():
            out = module(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        assert all(isinstance(t, torch.Tensor) for t in outs)
        return "ok"


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


@st.composite
def text_case(draw):
    name = draw(st.sampled_from(CASES))
    return name, draw(mutated_text(PROTOTXTS[name]))


@fuzz_settings("text")
@given(case=text_case(), with_weights=st.booleans())
def test_mutated_prototxt(tmp_path_factory, case, with_weights):
    name, text = case
    tmp = tmp_path_factory.mktemp("fuzz")
    weights = VENDORED_GOLDEN / name / "weights.caffemodel" if with_weights and name in CAFFEMODELS else None
    check_outcome(_write(tmp, "net.prototxt", text), weights)


@st.composite
def caffemodel_case(draw):
    name = draw(st.sampled_from(sorted(CAFFEMODELS)))
    return name, draw(mutated_bytes(CAFFEMODELS[name]))


@fuzz_settings("caffemodel")
@given(case=caffemodel_case())
def test_mutated_caffemodel(tmp_path_factory, case):
    name, data = case
    tmp = tmp_path_factory.mktemp("fuzz")
    check_outcome(VENDORED_GOLDEN / name / "net.prototxt", _write(tmp, "w.caffemodel", data))


@st.composite
def both_case(draw):
    name = draw(st.sampled_from(sorted(CAFFEMODELS)))
    other = draw(st.sampled_from(sorted(CAFFEMODELS)))  # sometimes another net's weights
    return draw(mutated_text(PROTOTXTS[name])), draw(mutated_bytes(CAFFEMODELS[other]))


@fuzz_settings("both")
@given(case=both_case())
def test_mutated_prototxt_and_caffemodel(tmp_path_factory, case):
    text, data = case
    tmp = tmp_path_factory.mktemp("fuzz")
    check_outcome(_write(tmp, "net.prototxt", text), _write(tmp, "w.caffemodel", data))


@fuzz_settings("bytes")
@given(data=st.one_of(st.binary(max_size=512),
                      st.sampled_from(CASES).flatmap(lambda n: mutated_bytes(PROTOTXTS[n].encode()))))
def test_arbitrary_bytes_as_either_file(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = _write(tmp, "blob", data)
    with hang_guard():
        for read in (load_netspec, io.read_caffemodel):
            try:
                read(path)
            except NinportError as exc:
                assert str(exc)
    check_outcome(path, None)


def test_fuzz_budget_is_bounded():
    """CI stays fast: the default campaign is small; NINPORT_FUZZ_EXAMPLES raises it."""
    if "NINPORT_FUZZ_EXAMPLES" not in os.environ:
        assert TOTAL_EXAMPLES <= 300
    assert CASES, "no golden cases found"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
