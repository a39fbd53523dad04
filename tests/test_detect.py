"""Detection rows -> boxes in pixels of the original image, drawing them, and `ninport predict` on a detector."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ninport
from ninport.apps import detect
from ninport.cli import main
from ninport.errors import NinportWarning, ParseError, PreprocessError
from tests.conftest import REPO, SSD_GOLDEN

MINI_SSD = SSD_GOLDEN / "ssd_mini_96"


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


def test_selection_keeps_scores_at_the_threshold_clips_drops_empty_boxes_best_first():
    rows = np.array([[0, 1, 0.60, 0.1, 0.1, 0.5, 0.5],
                     [0, 2, 0.90, -0.5, 0.2, 0.4, 1.5],     # clipped to the image
                     [0, 1, 0.50, 0.2, 0.2, 0.3, 0.3],      # exactly the threshold: kept
                     [0, 1, 0.49, 0.2, 0.2, 0.3, 0.3],      # under it
                     [0, 1, 0.95, 4.1, 4.0, 4.8, 4.9],      # wholly outside: empty once clipped
                     [0, 1, 0.70, 0.3, 0.3, 0.3, 0.6],      # no width
                     [0, 1, np.nan, 0.1, 0.1, 0.2, 0.2],    # not a score
                     [0, -1, -1, -1, -1, -1, -1],           # Caffe's "nothing found"
                     [1, 1, 0.99, 0.1, 0.1, 0.2, 0.2]],     # another image of the batch
                    dtype=np.float32)
    chosen = detect.select_detections(rows[None, None], (200, 100), labels=["bg", "cat", "dog"])
    assert chosen.threshold == 0.5
    assert [(d.label, d.name, round(d.score, 2)) for d in chosen.detections] == [(2, "dog", 0.9), (1, "cat", 0.6),
                                                                                  (1, "cat", 0.5)]
    assert (chosen.detections[0].xmin, chosen.detections[0].ymin, chosen.detections[0].xmax,
            chosen.detections[0].ymax) == pytest.approx((0, 40, 40, 200))
    assert (chosen.below_threshold, chosen.empty, chosen.beyond_top) == (2, 2, 0)
    assert chosen.rows.shape == (8, 7) and chosen.rows[4, 3] == pytest.approx(4.1), "the net's rows, as they were"
    for d in chosen.detections:
        assert 0 <= d.xmin < d.xmax <= 100 and 0 <= d.ymin < d.ymax <= 200
    top = detect.select_detections(rows, (200, 100), top=2, threshold=0.0)
    assert [round(d.score, 2) for d in top.detections] == [0.9, 0.6]
    assert top.beyond_top == 2 and top.below_threshold == 1  # 0.5 and 0.49 past the top; only NaN under 0
    other = detect.select_detections(rows, (10, 10), image=1)
    assert len(other.detections) == 1 and other.detections[0].image == 1


def test_selection_arguments_are_checked():
    rows = np.zeros((1, 7))
    with pytest.raises(PreprocessError, match="threshold"):
        detect.select_detections(rows, (1, 1), threshold=float("nan"))
    with pytest.raises(PreprocessError, match="top"):
        detect.select_detections(rows, (1, 1), top=0)


def test_threshold_is_never_below_the_nets_own(recwarn):
    assert detect.detection_threshold(None, 0.01) == 0.5
    assert detect.detection_threshold(0.3, None) == 0.3
    assert not recwarn.list
    assert detect.detection_threshold(None, 0.6) == 0.6 and not recwarn.list, "the default rises quietly"
    with pytest.warns(NinportWarning, match="threshold 0.1 is below the prototxt's confidence_threshold 0.2"):
        assert detect.detection_threshold(0.1, 0.2) == 0.2


LABEL_MAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "face" label: 1 display_name: "face" }
item { name: "evil\\x1b[31m" label: 7 }
"""


def _ssd_spec(tmp_path, label_map_file: str | None):
    import ninport

    save = f'save_output_param {{ label_map_file: "{label_map_file}" }}' if label_map_file else ""
    text = (REPO / "reference_models" / "opencv_face_detector" / "deploy.prototxt").read_text()
    text = text.replace("    confidence_threshold: 0.01\n", f"    confidence_threshold: 0.01\n    {save}\n")
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "deploy.prototxt").write_text(text)
    return ninport.load_spec(folder / "deploy.prototxt"), folder / "deploy.prototxt"


def test_label_map_is_read_as_data(tmp_path):
    path = tmp_path / "labelmap.prototxt"
    path.write_text(LABEL_MAP)
    assert detect.read_label_map(path) == {0: "background", 1: "face", 7: "evil\x1b[31m"}
    path.write_text("item { name: 'x' label: 1 } item { name: 'y' label: 1 }")
    with pytest.raises(ParseError, match="label 1 appears twice"):
        detect.read_label_map(path)
    path.write_text("import os")
    with pytest.raises(ParseError, match="not a LabelMap"):
        detect.read_label_map(path)


def test_label_map_file_of_the_prototxt(tmp_path, recwarn):
    spec, prototxt = _ssd_spec(tmp_path, None)
    assert detect.label_map_of(spec, prototxt) is None and not recwarn.list
    assert detect.net_confidence_threshold(spec) == pytest.approx(0.01) and detect.is_detector(spec)
    # SSD prototxts name it relative to the Caffe folder they were trained in: the file name beside is found too
    spec, prototxt = _ssd_spec(tmp_path, "data/VOC0712/labelmap_face.prototxt")
    (prototxt.parent / "labelmap_face.prototxt").write_text(LABEL_MAP)
    path, names = detect.label_map_of(spec, prototxt)
    assert path == prototxt.parent / "labelmap_face.prototxt" and names[1] == "face"
    (prototxt.parent / "data" / "VOC0712").mkdir(parents=True)
    (prototxt.parent / "data" / "VOC0712" / "labelmap_face.prototxt").write_text('item { name: "x" label: 1 }')
    assert detect.label_map_of(spec, prototxt)[1] == {1: "x"}, "the path as written comes first"
    assert not recwarn.list
    (tmp_path / "outside.prototxt").write_text(LABEL_MAP)
    spec, prototxt = _ssd_spec(tmp_path, "../outside.prototxt")
    with pytest.warns(NinportWarning, match="is not found"):
        assert detect.label_map_of(spec, prototxt) is None, "never looked up outside the prototxt's folder"
    spec, prototxt = _ssd_spec(tmp_path, "broken.prototxt")
    (prototxt.parent / "broken.prototxt").write_text("item {")
    with pytest.warns(NinportWarning, match="labels are shown as numbers"):
        assert detect.label_map_of(spec, prototxt) is None


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
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]  # shown best first (Caffe groups them by label)
    assert min(rows[:, 2]) >= 0.5, "every row of this fixture passes the default threshold"
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
    assert lines.pop(0) == ("detections: score >= 0.5 (the prototxt's confidence_threshold is 0.3), boxes clipped "
                            "to the image, best first")
    assert lines[0].endswith("image.npy") and lines[1].strip().startswith("label ") and " score " in lines[1]
