"""Detection rows -> boxes in pixels of the original image, drawing them, and `ninport predict` on a detector."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ninport
from ninport import detect
from ninport.cli import main
from ninport.errors import PreprocessError
from tests.conftest import REPO

MINI_SSD = REPO.parent / "shared" / "caffe-golden-ssd" / "ssd_mini_96"


def test_rows_become_pixel_boxes_of_each_original_image():
    rows = np.array([[[[0, 1, 0.9, 0.1, 0.2, 0.5, 0.6],
                       [0, 2, 0.4, -0.1, 0.5, 1.2, 0.75],   # corners outside [0, 1] are clipped first
                       [1, 1, 0.8, 0.0, 0.0, 0.5, 0.5]]]], dtype=np.float32)
    found = detect.detections_from_rows(rows, [(200, 100), (50, 80)], labels=["bg", "cat", "dog"])
    assert [len(f) for f in found] == [2, 1]
    first = found[0][0]
    assert (first.label, first.name) == (1, "cat")
    assert first.score == pytest.approx(0.9)
    assert (first.xmin, first.ymin, first.xmax, first.ymax) == pytest.approx((10, 40, 50, 120))
    assert (found[0][1].xmin, found[0][1].xmax, found[0][1].ymax) == pytest.approx((0, 100, 150))
    assert (found[1][0].xmax, found[1][0].ymax) == pytest.approx((40, 25))


def test_caffe_nothing_found_rows_give_no_detection_and_threshold_filters():
    rows = np.array([[0, -1, -1, -1, -1, -1, -1], [1, 3, 0.2, 0, 0, 1, 1]], dtype=np.float32)
    assert detect.detections_from_rows(rows, [(10, 10), (10, 10)]) == [[], [detect.Detection(1, 3, pytest.approx(0.2),
                                                                                              0, 0, 10, 10)]]
    assert detect.detections_from_rows(rows, [(10, 10), (10, 10)], threshold=0.5) == [[], []]


def test_bad_rows_are_refused():
    with pytest.raises(PreprocessError, match="7 values"):
        detect.detections_from_rows(np.zeros((2, 6)), [(1, 1)])
    with pytest.raises(PreprocessError, match="image 3"):
        detect.detections_from_rows(np.array([[3, 1, 0.5, 0, 0, 1, 1]]), [(1, 1)])


def test_label_names_are_printed_escaped():
    found = [detect.Detection(0, 1, 0.5, 0, 0, 1, 1, name="evil\x1b[31m")]
    text = detect.format_detections("img\n.jpg", found)
    assert "\x1b" not in text and "\\x1b" in text and "img\\n.jpg" in text


def test_drawing_marks_the_box_and_keeps_the_image_size(tmp_path):
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    boxes = [detect.Detection(0, 1, 0.75, 10, 20, 50, 40, name="face")]
    drawn = detect.draw_detections(image, boxes)
    assert drawn.shape == image.shape and not image.any(), "the input image is left untouched"
    color = detect._color(1)
    assert tuple(drawn[30, 10]) == color and tuple(drawn[20, 30]) == color  # left edge, top edge
    assert not drawn[30, 30].any(), "inside the box stays as it was"
    path = detect.write_image(tmp_path / "out.png", drawn)
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_array_equal(cv2.imread(str(path)), drawn)


def test_draw_path_numbers_several_images(tmp_path):
    assert detect.draw_path(tmp_path / "a.jpg", 0, 1) == tmp_path / "a.jpg"
    assert detect.draw_path(tmp_path / "a.jpg", 1, 3) == tmp_path / "a-1.jpg"


def _mini_ssd_image(tmp_path):
    if not MINI_SSD.is_dir():
        pytest.skip("needs ../shared/caffe-golden-ssd")
    # the fixture's input is (U(0,255) - 127.5) * 0.007843: undo it to get the image it came from
    blob = np.load(MINI_SSD / "inputs.npz")["data"][0]
    image = (blob / 0.007843 + 127.5).transpose(1, 2, 0).astype(np.float32)
    path = tmp_path / "image.npy"
    np.save(path, image)
    return path


def test_predict_on_a_detector_prints_boxes_in_image_pixels_and_draws(tmp_path, capsys):
    image = _mini_ssd_image(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nalpha\nbeta\ngamma\ndelta\n")
    drawing = tmp_path / "boxes.png"
    code = main(["predict", str(MINI_SSD / "net.prototxt"), str(image),
                 "--weights", str(MINI_SSD / "weights.caffemodel"),
                 "--mean-values", "127.5,127.5,127.5", "--scale", "0.007843", "--labels", str(labels),
                 "--draw", str(drawing), "--json"])
    assert code == 0
    (report,) = json.loads(capsys.readouterr().out)["predictions"]
    rows = np.load(MINI_SSD / "blobs.npz")["detection_out"][0, 0]
    assert len(report["detections"]) == len(rows)
    for found, row in zip(report["detections"], rows):
        assert found["label"] == int(row[1]) and found["name"] == ["background", "alpha", "beta", "gamma",
                                                                   "delta"][int(row[1])]
        assert found["score"] == pytest.approx(float(row[2]), abs=1e-4)
        assert found["box"] == pytest.approx([float(np.clip(v, 0, 1)) * 96 for v in row[3:]], abs=0.05)
    assert report["drawing"] == str(drawing) and drawing.is_file()


def test_detector_label_count_other_than_num_classes_warns(tmp_path):
    image = _mini_ssd_image(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nalpha\nbeta\n")
    with pytest.warns(ninport.NinportWarning, match="3 labels for the net's 5 classes"):
        ninport.classify(MINI_SSD / "net.prototxt", [image], MINI_SSD / "weights.caffemodel",
                         mean_values=(127.5,), scale=0.007843, labels=labels)


def test_predict_on_a_detector_text_output(tmp_path, capsys):
    image = _mini_ssd_image(tmp_path)
    code = main(["predict", str(MINI_SSD / "net.prototxt"), str(image),
                 "--weights", str(MINI_SSD / "weights.caffemodel"),
                 "--mean-values", "127.5,127.5,127.5", "--scale", "0.007843"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.pop(0).startswith("preprocessing: ")
    assert lines[0].endswith("image.npy") and lines[1].strip().startswith("label ") and " score " in lines[1]
