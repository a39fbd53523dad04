"""Faster R-CNN VGG16 (reference_models/faster_rcnn_vgg16): py-faster-rcnn's published end-to-end test.prototxt.

The file is checked to be the published one (its git blob id, recorded in its README with the source commit);
it builds without `input_shape` (inputs data and im_info; the Python proposal layer and ROIPooling) with the
parameter count recomputed here from the layer list and Caffe's blob shapes; its preprocess file says what its
README says; and with the seeded weights of the real-Caffe fixtures in tests/fixtures/caffe-golden-fork (the
548 MB caffemodel is rebuilt from its seed, sha256-checked, and kept there: git ignores it) the module built
from this file matches Caffe on every saved blob at 224x320, rois row for row, and gives the same detections
when py-faster-rcnn's test_net post-processing is applied to both; at 600x800 (slow) the RPN and the rois match.
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
from ninport.build.shapes import infer_shapes
from tests.conftest import REPO, plain_kernels, relative_error
from tests.layers.proposal_reference import bbox_transform_inv, clip_boxes, py_cpu_nms
from tests.published_models import git_blob_id

FASTER_RCNN = REPO / "reference_models" / "faster_rcnn_vgg16" / "deploy.prototxt"
README = FASTER_RCNN.parent / "README.md"
FORK_GOLDEN = REPO / "tests" / "fixtures" / "caffe-golden-fork"
TOLERANCE = 1e-5  # measured at most 4.4e-6 (cls_prob); the convolutions' BLAS sums differ from Caffe's
PIXEL_MEANS = (102.9801, 115.9465, 122.7717)  # py-faster-rcnn's cfg.PIXEL_MEANS, BGR



def test_the_file_is_the_published_one():
    readme = README.read_text()
    assert f"`{git_blob_id(FASTER_RCNN)}`" in readme, "deploy.prototxt is not the file its README names"
    assert "not shipped" in readme and (FASTER_RCNN.parent / "LICENSE").is_file()
    # the real-Caffe fixtures ran this very file
    assert (FORK_GOLDEN / "faster_rcnn_vgg16" / "net.prototxt").read_bytes() == FASTER_RCNN.read_bytes()


def test_parameter_count():
    """VGG-16's convolutions, the RPN (3x3 512 -> 512, then 1x1 to 2 x 9 scores and 4 x 9 deltas), fc6 on the
    7x7 ROIPooling of conv5_3, fc7, and the two heads (21 classes, 4 x 21 deltas); ROIPooling and the proposal
    layer have no weights."""
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg16 = sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))
    rpn = (9 * 512 + 1) * 512 + (512 + 1) * 18 + (512 + 1) * 36
    heads = (512 * 7 * 7 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 21 + (4096 + 1) * 84
    net = ninport.summary(FASTER_RCNN)
    assert net.parameters == vgg16 + rpn + heads == 137_078_239
    assert f"{net.parameters:,}" in README.read_text()
    table = infer_shapes(ninport.load_spec(FASTER_RCNN))
    assert table.layers["proposal"].params == [] and table.layers["roi_pool5"].params == []


def test_faster_rcnn_builds_without_input_shape():
    net = ninport.summary(FASTER_RCNN)
    assert net.inputs == {"data": (1, 3, 224, 224), "im_info": (1, 3)}
    assert net.outputs == ("bbox_pred", "cls_prob")
    rows = {row.layer: row for row in net.layers}
    assert rows["proposal"].type == "Python" and rows["roi_pool5"].type == "ROIPooling"
    # Caffe's shapes after setup: the proposal layer's top is 1x5 until its first forward
    assert rows["proposal"].output_shapes == ((1, 5),) and rows["roi_pool5"].output_shapes == ((1, 512, 7, 7),)
    assert rows["cls_prob"].output_shapes == ((1, 21),) and rows["bbox_pred"].output_shapes == ((1, 84),)
    blobs = infer_shapes(ninport.load_spec(FASTER_RCNN, {"data": (1, 3, 600, 800), "im_info": (1, 3)})).blobs
    assert blobs["conv5_3"] == (1, 512, 38, 50) and blobs["rpn_cls_score_reshape"] == (1, 2, 9 * 38, 50)
    assert blobs["rpn_cls_prob_reshape"] == (1, 18, 38, 50) and blobs["rpn_bbox_pred"] == (1, 36, 38, 50)


def test_preprocess_file_says_what_the_readme_says():
    from ninport.apps.preprocess import preprocess_file_for, read_preprocess_file

    declared = read_preprocess_file(preprocess_file_for(FASTER_RCNN))
    assert declared.mean_values == PIXEL_MEANS and declared.scale == 1.0 and declared.channel_order == "BGR"
    assert declared.resize is None  # the factor depends on the image: shorter side 600, longer at most 1000
    readme = README.read_text()
    for fact in ("102.9801, 115.9465, 122.7717", "shorter side is 600", "longer would exceed 1000",
                 "[height, width, scale]", "deploy.preprocess.json"):
        assert fact in readme, fact
    for fact in ("600", "1000", "im_info"):
        assert fact in declared.comment, fact


# ----------------------------------------------------------- against real Caffe (seeded weights) ----

def _seeded_vgg16():
    spec = importlib.util.spec_from_file_location("seeded_vgg16", FORK_GOLDEN / "seeded_vgg16.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faster_rcnn():
    """The module built from the reference file (no input_shape) with the fixtures' seeded weights."""
    seeded = _seeded_vgg16()
    weights = seeded.ensure_caffemodel(FORK_GOLDEN / "faster_rcnn_vgg16" / "weights.caffemodel")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights for every layer: no warning
        module = ninport.load(FASTER_RCNN, weights)
    return module, seeded


def _case(name: str, seeded) -> tuple[dict, dict[str, np.ndarray], np.lib.npyio.NpzFile]:
    info = json.loads((FORK_GOLDEN / name / "case.json").read_text())
    inputs = dict(np.load(FORK_GOLDEN / name / "inputs.npz"))
    if "data" not in inputs:  # the 600x800 image is rebuilt from its seed and checked by its sha256
        height, width = (int(v) for v in info["blobs"]["data"][2:])
        inputs["data"] = seeded.seeded_image(info["seed"], height, width)
        digest = hashlib.sha256(inputs["data"].tobytes()).hexdigest()
        assert digest == info["inputs_regenerate"]["data"]["sha256"], "not the image Caffe ran"
    return info, inputs, np.load(FORK_GOLDEN / name / "blobs.npz")


def detections(rois: np.ndarray, bbox_pred: np.ndarray, cls_prob: np.ndarray, im_info: np.ndarray,
               thresh: float = 0.05, nms_thresh: float = 0.3) -> dict[int, np.ndarray]:
    """py-faster-rcnn's im_detect and test_net after the forward: boxes in the original image (rois / scale,
    each class's deltas applied, clipped), then per class the scores above `thresh` and NMS at `nms_thresh`.
    Class -> rows [x1, y1, x2, y2, score]."""
    height, width, scale = (float(v) for v in im_info[0])
    boxes = clip_boxes(bbox_transform_inv(rois[:, 1:5] / scale, bbox_pred), (height / scale, width / scale))
    found = {}
    for j in range(1, cls_prob.shape[1]):
        keep = np.where(cls_prob[:, j] > thresh)[0]
        dets = np.hstack((boxes[keep, 4 * j:4 * j + 4], cls_prob[keep, j:j + 1])).astype(np.float32)
        if len(dets):
            found[j] = dets[py_cpu_nms(dets, nms_thresh)]
    return found


def test_faster_rcnn_matches_caffe_at_224x320(faster_rcnn):
    module, seeded = faster_rcnn
    info, inputs, caffe = _case("faster_rcnn_vgg16", seeded)
    ours = ninport.forward_blobs(module, torch.from_numpy(inputs["data"]), torch.from_numpy(inputs["im_info"]))
    for blob in caffe.files:
        got = ours[blob].numpy()
        assert got.shape == caffe[blob].shape, blob
        assert relative_error(got, caffe[blob]) <= TOLERANCE, f"blob {blob}"
    rois = ours["rois"].numpy()
    assert rois.shape == (300, 5) and len(np.unique(rois, axis=0)) == 300  # distinct proposals
    assert (rois[:, 0] == 0).all() and (rois[:, 3] <= 319).all() and (rois[:, 4] <= 223).all()
    ours_found = detections(rois, ours["bbox_pred"].numpy(), ours["cls_prob"].numpy(), inputs["im_info"])
    caffe_found = detections(caffe["rois"], caffe["bbox_pred"], caffe["cls_prob"], inputs["im_info"])
    assert sorted(ours_found) == sorted(caffe_found) and len(caffe_found) >= 10  # 13 classes
    for label, rows in caffe_found.items():
        assert ours_found[label].shape == rows.shape, label
        np.testing.assert_allclose(ours_found[label], rows, rtol=1e-4, atol=1e-3)
    scores = np.concatenate([rows[:, 4] for rows in caffe_found.values()])
    assert scores.max() > 0.8 and np.isfinite(np.concatenate(list(caffe_found.values()))).all()


@pytest.mark.slow
def test_faster_rcnn_matches_caffe_at_600x800(faster_rcnn):
    """py-faster-rcnn's typical input size. With torch's own convolution kernels (RPN outputs 2e-6 from
    Caffe's) the 300 rois come out as Caffe's, in its order, and so do the heads. The fixture's README
    measures how close the rois come to flipping: stable at 1e-7 relative noise, not at 1e-6."""
    module, seeded = faster_rcnn
    info, inputs, caffe = _case("faster_rcnn_vgg16_600x800", seeded)
    assert inputs["data"].shape == (1, 3, 600, 800) and inputs["im_info"].tolist() == [[600.0, 800.0, 1.0]]
    with plain_kernels():
        ours = ninport.forward_blobs(module, torch.from_numpy(inputs["data"]), torch.from_numpy(inputs["im_info"]))
    for blob in caffe.files:
        got = ours[blob].numpy()
        assert got.shape == caffe[blob].shape, blob
        assert relative_error(got, caffe[blob]) <= TOLERANCE, f"blob {blob}"


@pytest.mark.slow
def test_faster_rcnn_at_600x800_with_the_default_kernels(faster_rcnn):
    """The module's default CPU convolutions (oneDNN) round differently (RPN outputs 6.5e-6 from Caffe's),
    enough to swap two proposals whose scores nearly tie: the same 300 rois, each with Caffe's heads, in
    Caffe's order but for such swaps."""
    module, seeded = faster_rcnn
    info, inputs, caffe = _case("faster_rcnn_vgg16_600x800", seeded)
    ours = ninport.forward_blobs(module, torch.from_numpy(inputs["data"]), torch.from_numpy(inputs["im_info"]))
    for blob in ("rpn_cls_prob_reshape", "rpn_bbox_pred"):
        assert relative_error(ours[blob].numpy(), caffe[blob]) <= TOLERANCE, blob
    rois = ours["rois"].numpy()
    assert rois.shape == caffe["rois"].shape
    # each of ours is one of Caffe's (coordinates up to 800: 1e-5 relative is < 0.01 pixel)
    distance = np.abs(rois[:, None, :] - caffe["rois"][None, :, :]).max(axis=2)
    match = distance.argmin(axis=1)
    assert (distance[np.arange(len(rois)), match] < 0.01).all() and len(set(match.tolist())) == len(rois)
    assert (match != np.arange(len(rois))).sum() <= 4, "more than near-tie swaps"
    for blob in ("cls_prob", "bbox_pred"):
        assert relative_error(ours[blob].numpy(), caffe[blob][match]) <= TOLERANCE, blob


def test_faster_rcnn_through_the_generated_python_file(faster_rcnn):
    """The .py export (module classes' own source plus safetensors) gives Caffe's outputs at 224x320."""
    from tests.generated import generated_twin

    module, seeded = faster_rcnn
    _, inputs, caffe = _case("faster_rcnn_vgg16", seeded)
    with torch.no_grad():
        outputs = generated_twin(module)(torch.from_numpy(inputs["data"]), torch.from_numpy(inputs["im_info"]))
    for blob, got in zip(("bbox_pred", "cls_prob"), outputs, strict=True):
        assert relative_error(got.numpy(), caffe[blob]) <= TOLERANCE, blob


@pytest.mark.slow
def test_faster_rcnn_in_onnxruntime(faster_rcnn, tmp_path):
    """The ONNX file (standard operators; 550 MB, about 35 s to write and run) gives Caffe's outputs at 224x320."""
    pytest.importorskip("onnxruntime")
    from ninport.export.artifacts import verify_onnx

    module, seeded = faster_rcnn
    _, inputs, caffe = _case("faster_rcnn_vgg16", seeded)
    path = ninport.export_onnx(module, tmp_path / "faster_rcnn_vgg16.onnx")
    outputs = verify_onnx(path, {"data": inputs["data"], "im_info": inputs["im_info"]})
    for blob, got in zip(("bbox_pred", "cls_prob"), outputs, strict=True):
        assert relative_error(got, caffe[blob]) <= TOLERANCE, blob
