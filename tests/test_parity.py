"""The parity report: error measures, shape mismatches, NaNs, and where divergence starts."""
from __future__ import annotations

import numpy as np
import pytest

from ninport.parity import GoldenFolder, compare_blobs, relative_error
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
