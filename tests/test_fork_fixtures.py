"""tests/fixtures/caffe-golden-fork: the fork-Caffe golden cases are whole, and the VGG16 weights and inputs that
are not committed are rebuilt, by numpy alone, into the very bytes Caffe ran (their recorded sha256)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

FORK_GOLDEN = Path(__file__).resolve().parent / "fixtures" / "caffe-golden-fork"
CASES = sorted(p.name for p in FORK_GOLDEN.iterdir() if (p / "case.json").is_file())


def _seeded_vgg16():
    spec = importlib.util.spec_from_file_location("seeded_vgg16", FORK_GOLDEN / "seeded_vgg16.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _info(case: str) -> dict:
    return json.loads((FORK_GOLDEN / case / "case.json").read_text())


def test_every_layer_and_model_of_the_issue_has_cases_at_two_sizes():
    for case in ("roi_pooling", "roi_pooling_scale_half", "psroi_pooling", "pooling_mask", "upsample_mask",
                 "proposal_python", "fast_rcnn_mini", "rfcn_mini"):
        assert case in CASES and f"{case}_size2" in CASES
    assert {"upsample_mask_odd", "faster_rcnn_vgg16", "faster_rcnn_vgg16_600x800"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_case_is_whole_and_as_caffe_wrote_it(case):
    info = _info(case)
    folder = FORK_GOLDEN / case
    assert (folder / info["prototxt"]).is_file()
    assert info["caffe_commit"] == "9b891540183ddc834a02b2bd81b31afae71b2153" and "BVLC" in info["sources"]
    inputs, blobs = np.load(folder / "inputs.npz"), np.load(folder / "blobs.npz")
    assert sorted(inputs.files) == sorted(info["inputs"])
    saved = info.get("blobs_saved", list(info["blobs"]))
    assert blobs.files == saved
    for name in saved:
        assert blobs[name].dtype == np.float32 and list(blobs[name].shape) == info["blobs"][name], name
        assert np.isfinite(blobs[name]).all(), name
    for name in inputs.files:
        assert list(inputs[name].shape) == info["inputs"][name]
        if name in saved:
            assert np.array_equal(inputs[name], blobs[name]), f"{name}: the input Caffe got"
    if "weights_sha256" not in info and "weights" in info:
        assert (folder / info["weights"]).is_file()


def test_vgg16_inputs_are_the_seeded_images():
    seeded = _seeded_vgg16()
    small = np.load(FORK_GOLDEN / "faster_rcnn_vgg16" / "inputs.npz")["data"]
    assert np.array_equal(small, seeded.seeded_image(_info("faster_rcnn_vgg16")["seed"], 224, 320))
    large = _info("faster_rcnn_vgg16_600x800")
    data = seeded.seeded_image(large["seed"], 600, 800)
    assert hashlib.sha256(data.tobytes()).hexdigest() == large["inputs_regenerate"]["data"]["sha256"]


def test_vgg16_weights_rebuild_into_the_bytes_caffe_ran():
    seeded = _seeded_vgg16()
    digest, size = hashlib.sha256(), 0
    for chunk in seeded.caffemodel_chunks():
        digest.update(chunk)
        size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
    info = _info("faster_rcnn_vgg16")
    assert digest.hexdigest() == seeded.CAFFEMODEL_SHA256 == info["weights_sha256"]
    assert size == info["weights_bytes"]


def test_ensure_caffemodel_refuses_bytes_that_are_not_the_recorded_ones(tmp_path):
    seeded = _seeded_vgg16()
    path = tmp_path / "weights.caffemodel"
    path.write_bytes(b"not the weights")
    with pytest.raises(RuntimeError, match=r"not the recorded 0{64}"):
        seeded.ensure_caffemodel(path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == [], "nothing half-written is left behind"
