"""`ninport predict`: images through Caffe's preprocessing and the converted net."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ninport
from ninport.predict import top_classes
from ninport.preprocess import caffe_transform
from tests.conftest import VENDORED_GOLDEN, load_golden
from tests.test_cli import run_cli

CASE = VENDORED_GOLDEN / "legacy_v1"  # input 3x10x10, output `prob` over 5 classes


def _image(tmp_path, shape=(10, 10, 3), seed=0):
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "image.npy"
    np.save(path, image)
    return image, path


def _expected_top(prototxt, weights, blob, k=5):
    module = ninport.load(prototxt, weights)
    return top_classes(module(torch.from_numpy(blob)).detach().numpy(), k)


def test_predict_matches_transform_plus_model(tmp_path):
    image, path = _image(tmp_path)
    result = run_cli("predict", str(CASE / "net.prototxt"), str(path), "--weights", str(CASE / "weights.caffemodel"),
                     "--mean-values", "104,117,123", "--json")
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    blob = caffe_transform(image, mean_values=(104, 117, 123))
    expected = _expected_top(CASE / "net.prototxt", CASE / "weights.caffemodel", blob)
    assert [t["class"] for t in entry["top"]] == [c for c, _ in expected]
    np.testing.assert_allclose([t["score"] for t in entry["top"]], [s for _, s in expected], rtol=1e-6)


def test_predict_reads_image_files_with_labels(tmp_path):
    cv2 = pytest.importorskip("cv2")
    image, npy = _image(tmp_path, seed=1)
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), image)  # lossless: the same BGR pixels
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class-{i}" for i in range(5)))
    args = ["--weights", str(CASE / "weights.caffemodel"), "--labels", str(labels), "--top", "2"]
    from_png = run_cli("predict", str(CASE / "net.prototxt"), str(png), *args)
    from_npy = run_cli("predict", str(CASE / "net.prototxt"), str(npy), *args)
    assert from_png.returncode == 0, from_png.stderr
    assert from_png.stdout.splitlines()[1:] == from_npy.stdout.splitlines()[1:]
    assert "1. class" in from_png.stdout and "class-" in from_png.stdout and "3. class" not in from_png.stdout


def test_predict_nin_resize_crop_and_mean(tmp_path):
    cv2 = pytest.importorskip("cv2")
    case = load_golden("nin_v1_224")
    image, path = _image(tmp_path, shape=(300, 280, 3), seed=2)
    result = run_cli("predict", str(case.prototxt), str(path), "--weights", str(case.weights), "--resize", "256,256",
                     "--crop", "224", "--mean-values", "104,117,123", "--json")
    assert result.returncode == 0, result.stderr
    blob = caffe_transform(cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR), crop_size=224,
                           mean_values=(104, 117, 123))
    expected = _expected_top(case.prototxt, case.weights, blob)
    assert [t["class"] for t in json.loads(result.stdout)[0]["top"]] == [c for c, _ in expected]


def test_predict_errors_are_one_line(tmp_path):
    _, path = _image(tmp_path)
    missing = run_cli("predict", str(CASE / "net.prototxt"), str(tmp_path / "nope.jpg"), "--weights",
                      str(CASE / "weights.caffemodel"))
    assert missing.returncode == 1 and "nope.jpg: no such file" in missing.stderr
    too_small = run_cli("predict", str(CASE / "net.prototxt"), str(path), "--weights", str(CASE / "weights.caffemodel"),
                        "--crop", "12")
    assert too_small.returncode == 1 and len(too_small.stderr.strip().splitlines()) == 1
