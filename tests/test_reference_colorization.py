"""Colorful Image Colorization (reference_models/colorization): the published colorization_deploy_v2.prototxt.

The file is checked to be the published one (its git blob id, recorded in its README with the source commit);
it builds without `input_shape` with the parameter count its README derives from Open Model Zoo's published
figure; ninport's seeded weights follow the deploy file's Scale filler (2.606), as Caffe's net does; with seeded
weights in a caffemodel the module agrees with OpenCV 4.x's Caffe importer at the declared 224x224 and at 64x96;
and the README's recipe for the released caffemodel (which lacks the two decoding layers) gives through ninport
what OpenCV's sample gives by setting those layers' blobs by hand.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.build.shapes import infer_shapes
from ninport.errors import WeightsError
from tests.caffe_files import write_caffemodel
from tests.conftest import REPO, relative_error
from tests.published_models import git_blob_id

COLORIZATION = REPO / "reference_models" / "colorization" / "deploy.prototxt"
README = COLORIZATION.parent / "README.md"
OPENCV_TOLERANCE = 2e-5  # measured: at most 9.4e-6
# Open Model Zoo's `colorization-v2` (the PyTorch port, colorizers/eccv16.py): 32.2360 M parameters.
OMZ_MPARAMS = 32.2360
# The PyTorch port's BatchNorm channels (it learns gamma and beta; Caffe's BatchNorm keeps statistics only).
BATCHNORM_CHANNELS = 64 + 128 + 256 + 512 + 512 + 512 + 512



def test_the_file_is_the_published_one():
    readme = README.read_text()
    assert f"`{git_blob_id(COLORIZATION)}`" in readme, "deploy.prototxt is not the file its README names"
    assert "not shipped" in readme and (COLORIZATION.parent / "LICENSE").is_file()


def test_parameter_count_is_the_published_one():
    net = ninport.summary(COLORIZATION)
    assert net.parameters == 32_231_334 and net.statistics == 4_999
    table = infer_shapes(ninport.load_spec(COLORIZATION))
    assert table.layers["conv8_313_rh"].params == [(313,)]
    assert table.layers["class8_ab"].params == [(2, 313, 1, 1), (2,)]
    pytorch_port = net.parameters - 313 - 2 + 2 * BATCHNORM_CHANNELS
    assert round(pytorch_port / 1e6, 4) == OMZ_MPARAMS
    assert f"{net.parameters:,}" in README.read_text()


def test_colorization_builds_without_input_shape():
    net = ninport.summary(COLORIZATION)
    assert net.inputs == {"data_l": (1, 1, 224, 224)}
    assert net.outputs == ("class8_ab",)  # the Silence on class8_ab is left out at test time
    blobs = infer_shapes(ninport.load_spec(COLORIZATION)).blobs
    sizes = {"conv1_2norm": (64, 112), "conv2_2norm": (128, 56), "conv3_3norm": (256, 28), "conv5_3norm": (512, 28),
             "conv7_3norm": (512, 28), "conv8_1": (256, 56), "conv8_313_rh": (313, 56), "class8_ab": (2, 56)}
    for blob, (channels, size) in sizes.items():
        assert blobs[blob] == (1, channels, size, size), blob
    assert round(net.macs / 1e9, 1) == 32.0


def test_seeded_weights_follow_the_deploy_files_scale_filler():
    """As Caffe fills a layer the caffemodel does not cover: conv8_313_rh is 2.606 everywhere."""
    from ninport.caffe.weights import random_weights

    spec = ninport.load_spec(COLORIZATION)
    weights = random_weights(infer_shapes(spec), spec, seed=0)
    np.testing.assert_array_equal(weights["conv8_313_rh"][0], np.full(313, 2.606, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights
        module = ninport.load(COLORIZATION)
    scale = [m for m in module.modules() if getattr(m, "weight", None) is not None and m.weight.shape == (313,)]
    assert len(scale) == 1 and torch.equal(scale[0].weight, torch.full((313,), 2.606))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """ninport's seeded weights for the net and a caffemodel holding them."""
    from ninport.caffe.weights import random_weights

    spec = ninport.load_spec(COLORIZATION)
    weights = random_weights(infer_shapes(spec), spec, seed=0)
    path = write_caffemodel(tmp_path_factory.mktemp("colorization") / "seeded.caffemodel", weights)
    return weights, path


def _opencv_4x():
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__}: written against OpenCV 4.x's Caffe importer")
    return cv2


def _l_channel(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An L channel (0-100) minus 50, as the demo feeds the net."""
    return np.random.default_rng(seed).uniform(-50, 50, (1, 1, height, width)).astype(np.float32)


# (blob, the layer OpenCV is asked for): each block's BatchNorm output, the upsampling block after its in-place
# ReLU (OpenCV names a blob by the last layer writing it), and the three decoding layers.
COMPARED = [("conv1_2norm", "conv1_2norm"), ("conv3_3norm", "conv3_3norm"), ("conv5_3norm", "conv5_3norm"),
            ("conv7_3norm", "conv7_3norm"), ("conv8_1", "relu8_1"), ("conv8_313", "conv8_313"),
            ("conv8_313_rh", "conv8_313_rh"), ("class8_313_rh", "class8_313_rh"), ("class8_ab", "class8_ab")]


@pytest.mark.parametrize("height,width", [(224, 224), (64, 96)])
def test_colorization_matches_opencv(seeded, height, width):
    cv2 = _opencv_4x()
    _, path = seeded
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights for every layer: no warning
        module = ninport.load(COLORIZATION, path)
    x = _l_channel(height, width)
    ours = ninport.forward_blobs(module, torch.from_numpy(x))
    net = cv2.dnn.readNetFromCaffe(str(COLORIZATION), str(path))
    net.setInput(x)
    theirs = net.forward([layer for _, layer in COMPARED])
    assert ours["class8_ab"].shape == (1, 2, height // 4, width // 4)
    for (blob, _), expected in zip(COMPARED, theirs):
        got = ours[blob].numpy()
        assert got.shape == expected.shape, blob
        assert np.isfinite(expected).all() and float(np.abs(expected).max()) > 1e-3, f"{blob} died out"
        assert relative_error(got, expected) <= OPENCV_TOLERANCE, f"{height}x{width}: blob {blob}"


def _readme_recipe() -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "pts_in_hull" in b]
    return block


def test_the_readmes_recipe_completes_a_caffemodel_without_the_decoding_layers(seeded, tmp_path, monkeypatch):
    """The released caffemodel has no weights for conv8_313_rh and class8_ab: ninport refuses it as it is; the
    README's recipe adds them, and the module then gives what OpenCV gives with its sample's blob assignments."""
    cv2 = _opencv_4x()
    weights, _ = seeded
    release = {name: blobs for name, blobs in weights.items() if name not in ("conv8_313_rh", "class8_ab")}
    write_caffemodel(tmp_path / "colorization_release_v2.caffemodel", release)
    with pytest.raises(WeightsError, match='"conv8_313_rh"'):
        ninport.load(COLORIZATION, tmp_path / "colorization_release_v2.caffemodel")
    # 313 (a, b) centres on the ab grid, as pts_in_hull.npy holds them
    centres = np.random.default_rng(7).integers(-11, 10, (313, 2)) * 10
    np.save(tmp_path / "pts_in_hull.npy", centres)
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_recipe(), str(README), "exec"), {})
    completed = tmp_path / "colorization_release_v2_decoding.caffemodel"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = ninport.load(COLORIZATION, completed)
    x = _l_channel(64, 64, seed=1)
    ours = ninport.forward_blobs(module, torch.from_numpy(x))
    net = cv2.dnn.readNetFromCaffe(str(COLORIZATION), str(tmp_path / "colorization_release_v2.caffemodel"))
    net.getLayer(net.getLayerId("class8_ab")).blobs = [centres.T.reshape(2, 313, 1, 1).astype(np.float32)]
    net.getLayer(net.getLayerId("conv8_313_rh")).blobs = [np.full([1, 313], 2.606, np.float32)]
    net.setInput(x)
    expected = net.forward("class8_ab")
    assert float(np.abs(expected).max()) > 1.0  # ab values: the centres' mean, not zeros
    assert relative_error(ours["class8_ab"].numpy(), expected) <= OPENCV_TOLERANCE
    np.testing.assert_allclose(ours["conv8_313_rh"].numpy(), 2.606 * ours["conv8_313"].numpy(), rtol=1e-6)
