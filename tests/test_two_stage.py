"""ninport.apps.two_stage: py-faster-rcnn's scaling and post-processing (lib/fast_rcnn/test.py at 781a917b),
checked on cases worked out by hand from the original formulas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ninport
from ninport.apps import two_stage
from ninport.errors import PreprocessError


@pytest.mark.parametrize("height, width, scale", [
    (480, 640, 1.25),          # shorter side to 600: 800 wide, under 1000
    (300, 1000, 1.0),          # 600 would make it 2000 wide: the longer side goes to 1000
    (600, 999, 1.0),           # round(999) = 999: the shorter side rule holds
    (400, 668, 1.5),           # round(1002) > 1000: 1000 / 668
])
def test_image_scale_follows_test_scales_and_max_size(height, width, scale):
    expected = 1000 / 668 if (height, width) == (400, 668) else scale
    assert two_stage.image_scale(height, width) == pytest.approx(expected, rel=1e-12)


def test_image_blob_subtracts_the_means_then_scales_and_gives_im_info():
    image = np.empty((48, 64, 3), np.uint8)
    image[:] = (103, 116, 123)
    data, info, scale = two_stage.image_blob(image)
    assert scale == 12.5 and data.shape == (1, 3, 600, 800) and data.dtype == np.float32
    np.testing.assert_allclose(info, [[600, 800, 12.5]])
    np.testing.assert_allclose(data[0, :, 5, 7], np.array([103, 116, 123]) - np.array(two_stage.PIXEL_MEANS_BGR),
                               atol=1e-4)  # OpenCV interpolates float32 in fixed point
    with pytest.raises(PreprocessError, match="3-channel"):
        two_stage.image_blob(np.zeros((4, 4), np.uint8))


def test_bbox_transform_inv_uses_plus_one_widths():
    boxes = np.array([[10, 20, 29, 59]], np.float32)          # 20 wide, 40 high, centre (20, 40)
    zero = two_stage.bbox_transform_inv(boxes, np.zeros((1, 4), np.float32))
    np.testing.assert_allclose(zero, [[10, 20, 30, 60]])       # ctr + 0.5 w: one pixel past x2, as the original
    moved = two_stage.bbox_transform_inv(boxes, np.array([[0.5, -0.25, np.log(2), 0]], np.float32))
    np.testing.assert_allclose(moved, [[10, 10, 50, 50]], rtol=1e-6)  # ctr (30, 30), 40 wide, 40 high


def test_nms_suppresses_only_above_the_threshold_with_plus_one_areas():
    boxes = np.array([[0, 0, 9, 9], [0, 5, 9, 14], [0, 0, 9, 9], [50, 50, 59, 59]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # box 1 overlaps box 0 by 10x5 = 50 of 100 + 100 - 50: IoU 1/3 > 0.3; box 2 is box 0
    assert two_stage.nms(boxes, scores, 0.3) == [0, 3]
    assert two_stage.nms(boxes, scores, 1 / 3) == [0, 1, 3]  # IoU equal to the threshold is kept


def test_detections_from_heads_scale_clip_classes_and_threshold():
    rois = np.array([[0, 20, 20, 59, 59], [0, 1000, 1000, 1300, 1300], [0, 0, 0, 9, 9]], np.float32)
    scores = np.array([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.97, 0.02, 0.01]], np.float32)
    deltas = np.zeros((3, 12), np.float32)
    selection = two_stage.detections_from_heads(rois, scores, deltas, 2.0, (300, 400), threshold=0.5,
                                                labels=["bg", "cat", "dog"])
    found = [(d.label, d.name, round(d.score, 2), d.xmin, d.ymin, d.xmax, d.ymax) for d in selection.detections]
    # roi 0 at scale 2: (10, 10)-(29.5, 29.5); zero deltas move x2 to x1 + width (+1 pixel widths)
    assert found[0][:3] == (1, "cat", 0.8)
    np.testing.assert_allclose(found[0][3:], [10, 10, 30.5, 30.5])  # width 20.5: x2 = ctr + 10.25
    assert found[1][:3] == (2, "dog", 0.7)
    np.testing.assert_allclose(found[1][3:], [399, 299, 399, 299])  # clipped to [0, w - 1] x [0, h - 1]
    assert selection.below_threshold == 1  # the background roi
    only_best = two_stage.detections_from_heads(rois, scores, deltas, 2.0, (300, 400), threshold=0.5, top=1)
    assert len(only_best.detections) == 1 and only_best.beyond_top == 1


def test_class_agnostic_deltas_of_r_fcn_apply_to_every_class():
    rois = np.array([[0, 0, 0, 9, 9]], np.float32)
    scores = np.array([[0.1, 0.3, 0.6]], np.float32)
    deltas = np.zeros((1, 8), np.float32)
    deltas[0, 4] = 1.0  # the object column pair moves the box right by its width
    selection = two_stage.detections_from_heads(rois, scores, deltas, 1.0, (100, 100), threshold=0.5)
    (found,) = selection.detections
    assert found.label == 2
    np.testing.assert_allclose([found.xmin, found.xmax], [10, 20])
    with pytest.raises(PreprocessError, match="box deltas per roi"):
        two_stage.detections_from_heads(rois, scores, np.zeros((1, 4), np.float32), 1.0, (9, 9), threshold=0.5)


def test_pixel_rows_are_divided_by_the_scale():
    rows = np.array([[[[0, 3, 0.9, 20, 40, 200, 120], [0, 1, 0.2, 0, 0, 5, 5], [0, -1, -1, -1, -1, -1, -1]]]])
    selection = two_stage.detections_from_pixel_rows(rows, 2.0, (50, 80), threshold=0.5)
    (found,) = selection.detections
    assert (found.label, found.xmin, found.ymin, found.xmax, found.ymax) == (3, 10, 20, 79, 50 - 1)
    assert selection.below_threshold == 1


FASTER_RCNN_TAIL = """
input: "data"
input_shape { dim: 1 dim: 3 dim: 64 dim: 64 }
input: "im_info"
input_shape { dim: 1 dim: 3 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "rpn" type: "Python" bottom: "conv" bottom: "im_info" top: "rois"
        python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
layer { name: "pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 0.0625 } }
layer { name: "cls" type: "InnerProduct" bottom: "pool" top: "cls" inner_product_param { num_output: 3 } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "pool" top: "bbox_pred" inner_product_param { num_output: 12 } }
layer { name: "cls_prob" type: "Softmax" bottom: "cls" top: "cls_prob" }
"""


def test_two_stage_blobs_finds_the_proposals_the_scores_and_the_deltas(tmp_path):
    net = tmp_path / "frcnn.prototxt"
    net.write_text(FASTER_RCNN_TAIL)
    blobs = two_stage.two_stage_blobs(ninport.load_spec(net))
    assert blobs == two_stage.TwoStageBlobs("data", "im_info", rois="rois", scores="cls_prob", deltas="bbox_pred")
    single = tmp_path / "single.prototxt"
    single.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                      'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert two_stage.two_stage_blobs(ninport.load_spec(single)) is None


def test_heads_post_processing_matches_py_faster_rcnn_on_caffes_outputs():
    """Caffe's own rois, scores and deltas (the seeded Faster R-CNN VGG16 fixture) through ninport's
    post-processing and through py-faster-rcnn's functions (tests/layers/proposal_reference.py, the original
    code ported to Python 3): the same boxes per class."""
    from tests.conftest import REPO
    from tests.layers.proposal_reference import bbox_transform_inv, clip_boxes, py_cpu_nms

    case = REPO / "tests" / "fixtures" / "caffe-golden-fork" / "faster_rcnn_vgg16"
    caffe, inputs = np.load(case / "blobs.npz"), np.load(case / "inputs.npz")
    height, width, scale = (float(v) for v in inputs["im_info"][0])
    image_size = (round(height / scale), round(width / scale))
    rois, scores, deltas = caffe["rois"], caffe["cls_prob"], caffe["bbox_pred"]
    boxes = clip_boxes(bbox_transform_inv(rois[:, 1:5] / scale, deltas), image_size)
    expected = []
    for label in range(1, scores.shape[1]):
        chosen = np.where(scores[:, label] >= 0.05)[0]
        rows = np.hstack((boxes[chosen, 4 * label:4 * label + 4], scores[chosen, label:label + 1])).astype(np.float32)
        expected += [(label, *row) for row in rows[py_cpu_nms(rows, 0.3)]] if len(rows) else []
    found = two_stage.detections_from_heads(rois, scores, deltas, scale, image_size, threshold=0.05).detections
    assert len(found) == len(expected) >= 50
    got = sorted((d.label, d.xmin, d.ymin, d.xmax, d.ymax, d.score) for d in found)
    want = sorted((row[0], *row[1:5], row[5]) for row in expected)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-3)


def test_predict_runs_a_two_stage_detector_on_photos(tmp_path):
    """`predict` on a Faster R-CNN net (the mini fixture, real-Caffe weights): im_info fed, boxes in the
    photo's pixels, drawn; a folder runs one image at a time."""
    from tests.conftest import REPO
    from tests.test_cli import run_cli

    case = REPO / "tests" / "fixtures" / "caffe-golden-fork" / "fast_rcnn_mini"
    photo = REPO / "tests" / "fixtures" / "photos" / "chelsea.jpg"
    args = [str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"), "--threshold", "0.2"]
    one = run_cli("predict", *args, str(photo), "--top", "3", "--draw", str(tmp_path / "boxes.jpg"))
    assert one.returncode == 0, one.stderr
    assert "shorter side 600" in one.stdout and one.stdout.count("\n  label ") == 3, one.stdout
    assert (tmp_path / "boxes.jpg").stat().st_size > 0
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        (folder / name).write_bytes((photo.parent / name).read_bytes())
    many = run_cli("predict", *args, str(folder), "--batch", "2", "--jsonl", "-o", str(tmp_path / "out.jsonl"))
    assert many.returncode == 0, many.stderr
    import json

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["chelsea.jpg", "coffee.jpg"]
    assert all(r["detections"] and 0 <= r["detections"][0]["box"][2] <= 451 for r in rows)
    refused = run_cli("predict", *args, str(photo), "--resize", "300,300")
    assert refused.returncode == 1 and "two-stage" in refused.stderr and "--resize" in refused.stderr
