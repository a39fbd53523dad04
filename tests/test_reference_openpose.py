"""OpenPose's COCO body net (reference_models/openpose_coco): ninport's own rendering of the published net.

The file is what tools/make_reference_models.py writes from the architecture facts (OpenPose's own file is under
OpenPose's non-commercial licence and is not shipped); parsed, it is the same NetParameter as the published
pose_deploy_linevec.prototxt (a sha256 of the parsed message's deterministic serialization, recorded in the
README when the two were compared, pins that). It builds without `input_shape` at its declared 1x1, and the
module matches BVLC Caffe on every blob at 1x1 and 20x13 with seeded weights (tests/fixtures/openpose_coco: the
52M weights are regenerated from the seed and checked by sha256, not committed), in torch, in onnxruntime and
through the generated .py file; and, on the same weights, at OpenPose's native 368x368 (reshaped from 1x1 as the
OpenPose app does; tests/fixtures/caffe-golden-fork/openpose_coco_368) in torch and onnxruntime.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import ninport
from ninport.build.shapes import infer_shapes
from ninport.caffe import caffe_pb2
from tests.caffe_files import write_caffemodel
from tests.conftest import REPO, relative_error

MODELS = REPO / "reference_models"
OPENPOSE = MODELS / "openpose_coco" / "deploy.prototxt"
FIXTURE = REPO / "tests" / "fixtures" / "openpose_coco"
TOLERANCE = 1e-5


# sha256 of caffe_pb2.NetParameter.SerializeToString(deterministic=True) of OpenPose's published
# pose_deploy_linevec.prototxt (commit in README.md), parsed: the wire form depends only on the parsed values
# (fields in number order), not on layout, comments or `1.0` versus `1`.
PUBLISHED_NET_SHA256 = "5bc0451810318ad0f4068ddaa4746a73155c01009554fd126999e340876a2bd9"
PUBLISHED_PARAMETERS = 52_311_446  # what the published net's layer shapes add up to (209 MB of float32)


def parsed_net_sha256(text: str) -> str:
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    return hashlib.sha256(net.SerializeToString(deterministic=True)).hexdigest()


def test_the_file_is_ninports_rendering_of_the_published_net():
    text = OPENPOSE.read_text()
    generator = importlib.util.spec_from_file_location("make_reference_models",
                                                       REPO / "tools" / "make_reference_models.py")
    module = importlib.util.module_from_spec(generator)
    generator.loader.exec_module(module)
    assert text == module.openpose_coco(), "rerun python tools/make_reference_models.py"
    assert parsed_net_sha256(text) == PUBLISHED_NET_SHA256, "not the published net once parsed"
    readme = (OPENPOSE.parent / "README.md").read_text()
    assert PUBLISHED_NET_SHA256 in readme and "not shipped" in readme


def test_the_fingerprint_tells_nets_apart():
    """One changed value, or the output's two halves swapped, gives another fingerprint."""
    text = OPENPOSE.read_text()
    assert parsed_net_sha256(text.replace("num_output: 19 ", "num_output: 18 ", 1)) != PUBLISHED_NET_SHA256
    swapped = text.replace('bottom: "Mconv7_stage6_L2"  bottom: "Mconv7_stage6_L1"',
                           'bottom: "Mconv7_stage6_L1"  bottom: "Mconv7_stage6_L2"')
    assert swapped != text and parsed_net_sha256(swapped) != PUBLISHED_NET_SHA256
    assert parsed_net_sha256("# a comment\n" + text.replace("lr_mult: 1 ", "lr_mult: 1.0 ")) == PUBLISHED_NET_SHA256


# (blob, channels) at 368x368, where every map is 46x46: F (conv4_4_CPM), each stage's input (F + 38 PAFs +
# 19 heatmaps = 185 channels), the last stage's branches and the output (19 heatmaps, then 38 PAFs).
SHAPES_AT_368 = {"conv4_4_CPM": 128, "conv5_5_CPM_L1": 38, "conv5_5_CPM_L2": 19, "concat_stage2": 185,
                 "Mconv5_stage4_L1": 128, "concat_stage6": 185, "Mconv7_stage6_L1": 38, "Mconv7_stage6_L2": 19,
                 "net_output": 57}


def test_the_net_has_openposes_parameters_and_blob_shapes():
    table = infer_shapes(ninport.load_spec(OPENPOSE, (1, 3, 368, 368)))
    assert table.total_params == PUBLISHED_PARAMETERS
    for blob, channels in SHAPES_AT_368.items():
        assert table.blobs[blob] == (1, channels, 46, 46), blob
    assert table.blobs["pool3_stage1"] == (1, 256, 46, 46) and table.blobs["conv1_2"] == (1, 64, 368, 368)
    convs = {name: layer.params for name, layer in table.layers.items() if layer.params}
    assert len(convs) == 92  # 12 in the trunk, 2 x 5 in stage 1, 2 x 7 in each of stages 2-6
    assert convs["Mconv1_stage2_L1"] == [(128, 185, 7, 7), (128,)]
    assert convs["conv5_4_CPM_L2"] == [(512, 128, 1, 1), (512,)]


def test_openpose_builds_at_its_declared_1x1_without_input_shape():
    net = ninport.summary(OPENPOSE)
    assert net.inputs == {"image": (1, 3, 1, 1)} and net.outputs == ("net_output",)
    assert net.parameters == PUBLISHED_PARAMETERS
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
    """ninport.load of the reference prototxt (no input_shape) with the fixture's seeded weights."""
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
    from ninport.export.artifacts import verify_onnx

    module, _ = openpose
    path = ninport.export_onnx(module, tmp_path / "openpose.onnx")  # traced at 2x2: height and width symbolic
    for size in ["1x3x1x1", "1x3x20x13"]:
        x = np.load(FIXTURE / f"inputs_{size}.npz")["image"]
        (got,) = verify_onnx(path, {"image": x})
        caffe = np.load(FIXTURE / f"blobs_{size}.npz")["net_output"]
        assert relative_error(got, caffe) <= TOLERANCE, size


# ------------------------------------------- real Caffe at OpenPose's native 368x368 (same seeded weights) ----

NATIVE = REPO / "tests" / "fixtures" / "caffe-golden-fork" / "openpose_coco_368"


def native_case() -> tuple[dict, np.ndarray, np.lib.npyio.NpzFile]:
    """fixture.json, the input Caffe ran (rebuilt from its seed, checked by sha256) and the blobs it saved."""
    info = json.loads((NATIVE / "fixture.json").read_text())
    recipe = info["inputs_regenerate"]["image"]
    pixels = np.random.RandomState(recipe["seed"]).randint(0, 256, info["reshaped_to"]).astype(np.float32)
    x = ((pixels - 128.0) / 256.0).astype(np.float32)
    assert hashlib.sha256(x.tobytes()).hexdigest() == recipe["sha256"], "not the image Caffe ran"
    return info, x, np.load(NATIVE / "blobs.npz")


def test_openpose_matches_caffe_at_368x368(openpose):
    """Built at the declared 1x1 (no input_shape), run at the size the OpenPose app reshapes to: every blob Caffe
    saved (the trunk's output, stages 1, 3 and 6, the net's output) within 1e-5 relative."""
    module, info = openpose
    native, x, caffe = native_case()
    assert native["weights_sha256"] == info["weights_sha256"] and x.shape == (1, 3, 368, 368)
    assert module.get_submodule("conv1_1").weight.shape == (64, 3, 3, 3)
    with torch.no_grad():
        outputs = ninport.with_outputs(module, caffe.files)(torch.from_numpy(x))
    for name, got in zip(caffe.files, outputs, strict=True):
        assert got.shape == caffe[name].shape, name
        assert relative_error(got.numpy(), caffe[name]) <= TOLERANCE, f"368x368: blob {name}"
    assert caffe["net_output"].shape == (1, 57, 46, 46) and caffe["net_output"].std() > 0.5  # alive, not saturated


def test_openpose_in_onnxruntime_at_368x368(openpose, tmp_path):
    """The ONNX file (traced at 2x2, height and width symbolic; 209 MB) at 368x368 (about 15 s)."""
    pytest.importorskip("onnxruntime")
    from ninport.export.artifacts import verify_onnx

    module, _ = openpose
    _, x, caffe = native_case()
    path = ninport.export_onnx(module, tmp_path / "openpose.onnx")
    (got,) = verify_onnx(path, {"image": x})
    assert relative_error(got, caffe["net_output"]) <= TOLERANCE


def test_openpose_through_the_generated_python_file(openpose):
    from tests.generated import generated_twin

    module, _ = openpose
    twin = generated_twin(module)
    for size in ["1x3x1x1", "1x3x20x13"]:
        x = torch.from_numpy(np.load(FIXTURE / f"inputs_{size}.npz")["image"])
        with torch.no_grad():
            got = twin(x).numpy()
        assert relative_error(got, np.load(FIXTURE / f"blobs_{size}.npz")["net_output"]) <= TOLERANCE, size
