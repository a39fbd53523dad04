"""FCN-8s for PASCAL VOC (reference_models/fcn8s): the published deploy.prototxt of shelhamer/fcn.berkeleyvision.org.

The file is checked to be the published one (its git blob id, recorded in its README with the source commit);
it builds without `input_shape` with the published parameter count (recomputed here from the layer list) and
Caffe's blob sizes (the 100-pixel pad of conv1_1, the three Crops); and with seeded weights in a caffemodel the
module built at the declared 500x500 runs at two small sizes, where it agrees with OpenCV 4.x's Caffe importer.
The seeded weights are ninport's own (`random_weights`), written once for the module (about 10 s: 134M values).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.build.shapes import infer_shapes
from tests.caffe_files import write_caffemodel
from tests.conftest import REPO, relative_error
from tests.published_models import git_blob_id

FCN8S = REPO / "reference_models" / "fcn8s" / "deploy.prototxt"
README = FCN8S.parent / "README.md"
# OpenCV's convolutions sum in another order (and block sizes); the errors measured were at most 7.3e-6.
OPENCV_TOLERANCE = 2e-5



def test_the_file_is_the_published_one():
    readme = README.read_text()
    assert f"`{git_blob_id(FCN8S)}`" in readme, "deploy.prototxt is not the file its README names"
    assert "not shipped" in readme


def _vgg16_convolutions() -> int:
    """VGG-16's 13 3x3 convolutions with biases (Simonyan and Zisserman, configuration D)."""
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))


def test_parameter_count_is_fcn_vgg16s():
    """134M in the paper (CVPR 2015, Table 1); exactly, from the layer list: VGG-16's convolutions, fc6 and fc7
    as 7x7 and 1x1 convolutions, three 1x1 21-class scores and three bias-free 21->21 Deconvolutions."""
    scores = (4096 + 1) * 21 + (512 + 1) * 21 + (256 + 1) * 21
    deconvolutions = 21 * 21 * (4 * 4 + 4 * 4 + 16 * 16)
    by_hand = _vgg16_convolutions() + (512 * 49 + 1) * 4096 + (4096 + 1) * 4096 + scores + deconvolutions
    net = ninport.summary(FCN8S)
    assert net.parameters == by_hand == 134_489_759
    assert round(net.parameters / 1e6) == 134
    assert f"{net.parameters:,}" in README.read_text()


def test_fcn8s_builds_without_input_shape_with_caffes_blob_sizes():
    spec = ninport.load_spec(FCN8S)
    assert dict(spec.inputs) == {"data": (1, 3, 500, 500)}
    blobs = infer_shapes(spec).blobs
    sizes = {"conv1_1": 698, "pool1": 349, "pool2": 175, "pool3": 88, "pool4": 44, "pool5": 22, "fc7": 16,
             "score_fr": 16, "upscore2": 34, "score_pool4c": 34, "upscore_pool4": 70, "score_pool3c": 70,
             "upscore8": 568, "score": 500}
    for blob, size in sizes.items():
        assert blobs[blob][2:] == (size, size), blob
    assert blobs["score"] == (1, 21, 500, 500)
    net = ninport.summary(FCN8S)
    assert net.outputs == ("score",)
    assert [row.settings for row in net.layers if row.type == "Crop"] == [
        "axis 2 offset 5", "axis 2 offset 9", "axis 2 offset 31"]
    assert round(net.macs / 1e9, 1) == 181.5


@pytest.fixture(scope="module")
def fcn8s(tmp_path_factory):
    """The module (no input_shape) and the caffemodel of ninport's seeded weights it was loaded from."""
    from ninport.caffe.weights import random_weights

    spec = ninport.load_spec(FCN8S)
    weights = random_weights(infer_shapes(spec), spec, seed=0)
    path = write_caffemodel(tmp_path_factory.mktemp("fcn8s") / "seeded.caffemodel", weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights for every layer: no warning
        module = ninport.load(FCN8S, path)
    return module, path


def _opencv_4x():
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__}: written against OpenCV 4.x's Caffe importer")
    return cv2


# The scores before and after each skip's fusion, and the output: every in-place-free blob of the head.
COMPARED = ["score_fr", "upscore2", "fuse_pool4", "fuse_pool3", "score"]


@pytest.mark.parametrize("height,width", [(37, 50), (64, 48)])
def test_fcn8s_matches_opencv_at_sizes_other_than_the_declared_one(fcn8s, height, width):
    cv2 = _opencv_4x()
    module, weights = fcn8s
    x = np.random.default_rng(height).uniform(-120, 130, (1, 3, height, width)).astype(np.float32)
    ours = ninport.forward_blobs(module, torch.from_numpy(x))
    net = cv2.dnn.readNetFromCaffe(str(FCN8S), str(weights))
    net.setInput(x)
    theirs = dict(zip(COMPARED, net.forward(COMPARED)))
    assert ours["score"].shape == (1, 21, height, width)
    for blob in COMPARED:
        got, expected = ours[blob].numpy(), theirs[blob]
        assert got.shape == expected.shape, blob
        assert np.isfinite(expected).all() and float(np.abs(expected).max()) > 0.1, f"{blob} died out"
        assert relative_error(got, expected) <= OPENCV_TOLERANCE, f"{height}x{width}: blob {blob}"
