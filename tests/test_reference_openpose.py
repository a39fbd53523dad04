"""OpenPose's COCO body net as its authors published it (reference_models/openpose_coco).

The file is checked to be the published one (its git blob id, recorded in its README with the source commit);
it builds from it without `input_shape` at its declared 1x1, and the module matches BVLC Caffe on every blob at
1x1 and 20x13 with seeded weights (tests/fixtures/openpose_coco: the 52M weights are regenerated from the seed
and checked by sha256, not committed), in torch, in onnxruntime and through the generated .py file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.caffe.shapes import infer_shapes
from tests.caffe_files import write_caffemodel
from tests.conftest import REPO, relative_error

MODELS = REPO / "reference_models"
OPENPOSE = MODELS / "openpose_coco" / "deploy.prototxt"
FIXTURE = REPO / "tests" / "fixtures" / "openpose_coco"
TOLERANCE = 1e-5


def git_blob_id(path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def test_the_file_is_the_published_one():
    readme = (OPENPOSE.parent / "README.md").read_text()
    assert f"`{git_blob_id(OPENPOSE)}`" in readme, f"{OPENPOSE.name} is not the file its README names"
    assert "not shipped" in readme


def test_openpose_builds_at_its_declared_1x1_without_input_shape():
    net = ninport.summary(OPENPOSE)
    assert net.inputs == {"image": (1, 3, 1, 1)} and net.outputs == ("net_output",)
    assert f"{net.parameters:,}" in (MODELS / "openpose_coco" / "README.md").read_text()
    pools = [row for row in net.layers if row.type == "Pooling"]
    assert [row.output_shapes for row in pools] == [((1, 64, 1, 1),), ((1, 128, 1, 1),), ((1, 256, 1, 1),)]
    at_368 = ninport.summary(OPENPOSE, (1, 3, 368, 368))
    assert at_368.layers[-1].output_shapes == ((1, 57, 46, 46),)
    assert round(at_368.macs / 1e9, 1) == 135.9


def _seeded_weights_module():
    spec = importlib.util.spec_from_file_location("openpose_seeded_weights", FIXTURE / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def openpose(tmp_path_factory):
    """ninport.load of the published prototxt (no input_shape) with the fixture's seeded weights."""
    info = json.loads((FIXTURE / "case.json").read_text())
    spec = ninport.load_spec(OPENPOSE)
    table = infer_shapes(spec)
    seeded = _seeded_weights_module()
    weights = seeded.seeded_weights([(layer.name, table.layers[layer.key].params) for layer in spec.layers
                                     if table.layers[layer.key].params], info["seed"])
    assert seeded.weights_sha256(weights) == info["weights_sha256"], "the seeded weights are not Caffe's"
    path = write_caffemodel(tmp_path_factory.mktemp("openpose") / "seeded.caffemodel", weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caffemodel for every layer: no random weights, no warning
        module = ninport.load(OPENPOSE, path)
    return module, info


@pytest.mark.parametrize("size", ["1x3x1x1", "1x3x20x13"])
def test_openpose_matches_caffe_on_every_blob(openpose, size):
    module, info = openpose
    x = np.load(FIXTURE / f"inputs_{size}.npz")["image"]
    expected = np.load(FIXTURE / f"blobs_{size}.npz")
    blobs = ninport.forward_blobs(module, torch.from_numpy(x))
    assert list(blobs) == info["blob_order"]  # split copies included, in Caffe's order
    for name in expected.files:
        got = blobs[name].numpy()
        assert got.shape == expected[name].shape, name
        assert relative_error(got, expected[name]) <= TOLERANCE, f"{size}: blob {name}"
    assert float(np.abs(expected["net_output"]).max()) > 0.1  # the seeded weights keep activations alive


def test_openpose_in_onnxruntime_at_a_size_other_than_the_declared_one(openpose, tmp_path):
    pytest.importorskip("onnxruntime")
    from ninport.artifacts import verify_onnx

    module, _ = openpose
    path = ninport.export_onnx(module, tmp_path / "openpose.onnx")  # traced at 2x2: height and width symbolic
    for size in ["1x3x1x1", "1x3x20x13"]:
        x = np.load(FIXTURE / f"inputs_{size}.npz")["image"]
        (got,) = verify_onnx(path, {"image": x})
        caffe = np.load(FIXTURE / f"blobs_{size}.npz")["net_output"]
        assert relative_error(got, caffe) <= TOLERANCE, size


@pytest.mark.slow
def test_openpose_runs_at_368(openpose):
    """The module built at the declared 1x1 runs at the size OpenPose uses (about 136 GMAC)."""
    module, _ = openpose
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 368, 368)).astype(np.float32) - 128) / 256
    with torch.no_grad():
        out = module(x)
    assert out.shape == (1, 57, 46, 46) and bool(torch.isfinite(out).all()) and float(out.std()) > 0.01


def test_openpose_through_the_generated_python_file(openpose):
    from tests.generated import generated_twin

    module, _ = openpose
    twin = generated_twin(module)
    for size in ["1x3x1x1", "1x3x20x13"]:
        x = torch.from_numpy(np.load(FIXTURE / f"inputs_{size}.npz")["image"])
        with torch.no_grad():
            got = twin(x).numpy()
        assert relative_error(got, np.load(FIXTURE / f"blobs_{size}.npz")["net_output"]) <= TOLERANCE, size
