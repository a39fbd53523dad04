"""`ninport.verify`: a typed report; blobs present on one side only fail instead of being skipped."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import ninport
from ninport.check.verification import compare_all
from tests.conftest import VENDORED_GOLDEN


def test_golden_folder_report_is_typed_and_passes():
    report = ninport.verify(VENDORED_GOLDEN / "mini_resnet", opencv=False, onnx=False)
    assert report.passed and len(report.comparisons) == 1
    [caffe] = report.comparisons
    assert caffe.reference == "Caffe (golden mini_resnet)" and not caffe.uncompared
    # every blob of Caffe's dump, in Caffe's order, its split copies included
    assert [r.name for r in caffe.rows] == ["data", "data_data_0_split_0", "data_data_0_split_1", "a", "b", "proj",
                                            "add"]
    assert caffe.verdict() == "7 blobs compared: PASS"


def _golden_copy(tmp_path, case: str, drop: str | None = None, add: str | None = None):
    folder = tmp_path / case
    shutil.copytree(VENDORED_GOLDEN / case, folder)
    with np.load(folder / "blobs.npz") as data:
        blobs = {k: data[k] for k in data.files}
    if drop:
        del blobs[drop]
    if add:
        blobs[add] = np.zeros(3, np.float32)
    np.savez(folder / "blobs.npz", **blobs)
    return folder


def test_a_blob_missing_from_the_golden_file_fails(tmp_path):
    report = ninport.verify(_golden_copy(tmp_path, "mini_resnet", drop="proj"), opencv=False, onnx=False)
    [caffe] = report.comparisons
    assert not report.passed and caffe.missing_in_reference == ("proj",)
    assert all(r.passed for r in caffe.rows)  # every compared blob agrees: only the gap fails
    assert caffe.verdict() == "6 blobs compared, 1 uncompared: FAIL: not in the reference: 'proj'"


def test_a_golden_blob_ninport_does_not_compute_fails(tmp_path):
    report = ninport.verify(_golden_copy(tmp_path, "mini_resnet", add="extra"), opencv=False, onnx=False)
    [caffe] = report.comparisons
    assert not report.passed and caffe.missing_in_ninport == ("extra",)
    assert "not computed by ninport: 'extra'" in caffe.verdict()


def test_split_copies_are_compared_and_may_be_left_out_of_a_dump(tmp_path):
    """Caffe's split copies are named as InsertSplits names them for this net: a wrong value in one fails,
    a name Caffe would not make fails, and a dump without them (nothing is lost) still passes."""
    report = ninport.verify(_golden_copy(tmp_path, "mini_resnet", drop="data_data_0_split_1"), opencv=False,
                            onnx=False)
    assert report.passed and "data_data_0_split_1" not in [r.name for r in report.comparisons[0].rows]
    folder = _golden_copy(tmp_path / "wrong", "mini_resnet")
    with np.load(folder / "blobs.npz") as data:
        blobs = {k: data[k] for k in data.files}
    blobs["data_data_0_split_1"] = blobs["data_data_0_split_1"] + 1
    blobs["data_data_0_split_2"] = blobs["data"]  # Caffe makes two copies of data here, not three
    np.savez(folder / "blobs.npz", **blobs)
    [caffe] = ninport.verify(folder, opencv=False, onnx=False).comparisons
    assert caffe.first_divergence.name == "data_data_0_split_1"
    assert caffe.missing_in_ninport == ("data_data_0_split_2",)
    ours = {"a": np.ones(2), "a_a_0_split_0": np.ones(2)}
    comparison = compare_all(ours, {"a": np.ones(2), "b": np.ones(2)}, ["a", "a_a_0_split_0"], "r", 1e-5,
                             optional=frozenset({"a_a_0_split_0"}))
    assert comparison.missing_in_ninport == ("b",) and comparison.missing_in_reference == ()


def test_cli_verify_fails_with_exit_3_on_an_uncompared_blob(tmp_path):
    from tests.test_cli import run_cli

    result = run_cli("verify", str(_golden_copy(tmp_path, "mini_resnet", drop="proj")), "--no-opencv", "--no-onnx")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not in the reference: 'proj'" in result.stdout and "PASS" not in result.stdout.splitlines()[-1]


def test_golden_inputs_must_match_the_net(tmp_path):
    folder = _golden_copy(tmp_path, "mini_resnet")
    np.savez(folder / "inputs.npz", other=np.zeros((1, 3), np.float32))
    with pytest.raises(ninport.NinportError, match=r"inputs.npz: no array for the net's input\(s\) 'data'"):
        ninport.verify(folder, opencv=False, onnx=False)


def test_opencv_and_onnxruntime_without_golden():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    case = VENDORED_GOLDEN / "legacy_v0"
    report = ninport.verify(case / "net.prototxt", weights=case / "weights.caffemodel")
    assert report.passed and report.inputs_source == "seeded random inputs (seed 0)"
    assert [c.reference for c in report.comparisons] == ["OpenCV 4.x dnn", "onnxruntime (exported ONNX)"]


@pytest.mark.parametrize("kwargs,needle", [
    ({"tolerance": float("nan")}, "tolerance"), ({"tolerance": -1.0}, "tolerance"), ({"seed": 1.5}, "seed"),
    ({"weights": 7}, "weights"),
])
def test_bad_arguments_name_the_argument(kwargs, needle):
    with pytest.raises(ninport.NinportError, match=needle):
        ninport.verify(VENDORED_GOLDEN / "mini_resnet", opencv=False, onnx=False, **kwargs)


def test_verify_without_weights_does_not_cry_wolf_on_the_face_detector(tmp_path):
    """`ninport verify deploy.prototxt` without weights: the seeded weights follow the published file's
    fillers (msra, xavier, constant) and a 0.01 confidence threshold lets hundreds of random boxes through;
    their decoding overflows. That proves nothing either way: no FAIL, no exit 3."""
    from tests.conftest import REPO

    text = (REPO / "reference_models" / "opencv_face_detector" / "deploy.prototxt").read_text()
    if "weight_filler" not in text:  # the published file declares its fillers; give them as it does
        text = text.replace("convolution_param {", 'convolution_param { weight_filler { type: "msra" } '
                                                   'bias_filler { type: "constant" value: 0 } ')
    text = text.replace("confidence_threshold: 0.2", "confidence_threshold: 0.01")
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(text)
    with pytest.warns(ninport.NinportWarning, match="RANDOM weights"):
        report = ninport.verify(prototxt, opencv=False)
        module = ninport.load(prototxt)
    [ort] = report.comparisons
    assert report.passed and ort.first_divergence is None, ort.verdict()
    assert all(row.passed or row.inconclusive for row in ort.rows)
    assert "FAIL" not in ort.verdict()
    # the hard case it is: the seeded forward really overflows, inside DetectionOutput's box decoding
    from ninport.check.selfcheck import forward_values, reference_inputs

    meta = ninport.describe(module)
    _, overflowed = forward_values(module, reference_inputs(module), meta)
    assert overflowed[meta.blobs["detection_out"].node].startswith("layer 'detection_out' (exp ")
