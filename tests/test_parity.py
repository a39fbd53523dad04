"""The parity report: error measures, shape mismatches, NaNs, and where divergence starts."""
from __future__ import annotations

import numpy as np
import pytest

from ninport.check.parity import GoldenFolder, compare_blobs, relative_error
from tests.conftest import VENDORED_GOLDEN


def test_relative_error_is_max_abs_over_max_reference():
    max_abs, rel = relative_error(np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 4.0]))
    assert max_abs == pytest.approx(0.5) and rel == pytest.approx(0.125)


def test_nans_in_the_same_places_are_equal_elsewhere_they_fail():
    assert relative_error(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == (0.0, 0.0)
    assert np.isnan(relative_error(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))[1])


def test_report_names_first_divergence_in_net_order_and_shape_mismatch():
    ref = {"a": np.ones(3), "b": np.ones(3), "c": np.ones((2, 2))}
    ours = {"a": np.ones(3), "b": np.ones(3) * 2, "c": np.ones((4,))}
    report = compare_blobs(ours, ref, ["a", "b", "c", "missing"], "test")
    assert [r.name for r in report.rows] == ["a", "b", "c"]
    assert not report.passed and report.first_divergence.name == "b"
    assert "shape [4] vs reference [2, 2]" in report.rows[2].note


def test_golden_folder_opens_and_refuses_non_golden(tmp_path):
    golden = GoldenFolder.open(VENDORED_GOLDEN / "mini_resnet")
    assert golden.prototxt.name == "net.prototxt" and golden.weights.is_file()
    assert set(golden.inputs()) == {"data"} and "add" in golden.blobs()
    from ninport.errors import ParseError
    with pytest.raises(ParseError, match="not a golden folder"):
        GoldenFolder.open(tmp_path)


def test_equal_infinities_are_equal_other_infinities_fail():
    """Caffe's Log(0) is -inf, an Exp of a large value +inf: the same infinity on both sides agrees."""
    assert relative_error(np.array([np.inf, -np.inf, 2.0]), np.array([np.inf, -np.inf, 2.0])) == (0.0, 0.0)
    max_abs, rel = relative_error(np.array([np.inf, 2.0]), np.array([-np.inf, 2.0]))
    assert np.isnan(rel) and np.isnan(max_abs)
    assert np.isnan(relative_error(np.array([np.inf, 2.0]), np.array([5.0, 2.0]))[1])
    # the scale is the reference's largest finite value
    assert relative_error(np.array([np.inf, 1.5]), np.array([np.inf, 2.0])) == (0.5, 0.25)


def test_a_runtime_comparison_that_overflowed_is_inconclusive_not_a_failure():
    big = np.float32(3e33)
    ours = {"out": np.array([big, 1.0], np.float32), "nan": np.array([np.nan, 1.0]), "ok": np.ones(2),
            "bad": np.array([1.0, 2.0])}
    theirs = {"out": np.array([big * np.float32(1.0001), 1.0], np.float32), "nan": np.array([np.inf, 1.0]),
              "ok": np.ones(2), "bad": np.array([1.0, 3.0])}
    order = ["out", "nan", "ok", "bad"]
    report = compare_blobs(ours, theirs, order, "onnxruntime", 1e-5, overflowed={})
    rows = {r.name: r for r in report.rows}
    assert rows["out"].inconclusive and "values up to 3e+33" in rows["out"].note
    assert rows["nan"].inconclusive and "NaN/inf in ours, NaN/inf in theirs" in rows["nan"].note
    assert rows["ok"].result == "PASS" and rows["bad"].result == "FAIL" and not rows["bad"].inconclusive
    assert rows["out"].result.startswith("INCONCLUSIVE overflow")
    # a blob the torch module computed from an overflow (an Exp that gave inf inside a layer) proves nothing
    upstream = compare_blobs(ours, theirs, order, "onnxruntime", 1e-5, overflowed={"bad": "layer 'e' (exp ...)"})
    assert upstream.rows[3].inconclusive and "overflow in layer 'e'" in upstream.rows[3].note
    # Caffe's own numbers are compared as they are: an overflow there is a failure
    strict = compare_blobs(ours, theirs, order, "Caffe", 1e-5)
    assert [r.result for r in strict.rows] == ["FAIL", "FAIL", "PASS", "FAIL"]


def test_verify_verdict_says_an_overflow_proves_nothing():
    from ninport.check.verification import compare_all

    ours = {"out": np.array([np.inf, 1.0]), "mid": np.ones(2)}
    theirs = {"out": np.array([np.nan, 1.0]), "mid": np.ones(2)}
    comparison = compare_all(ours, theirs, ["mid", "out"], "onnxruntime", 1e-5, overflowed={})
    assert comparison.passed and [r.name for r in comparison.inconclusive] == ["out"]
    verdict = comparison.verdict()
    assert verdict.startswith("2 blobs compared: INCONCLUSIVE: 'out' overflowed") and "proves nothing" in verdict
    assert "the other 1 blob PASS" in verdict
    theirs["mid"] = np.array([1.0, 2.0])
    failed = compare_all(ours, theirs, ["mid", "out"], "onnxruntime", 1e-5, overflowed={})
    assert not failed.passed and "FAIL: first divergence at blob 'mid'" in failed.verdict()
    one = compare_all({"a": np.ones(1)}, {"a": np.ones(1)}, ["a"], "x", 1e-5)
    assert one.verdict() == "1 blob compared: PASS"
