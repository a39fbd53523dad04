"""`ninport predict` on many images (ninport.apps.batch): finding them, batches that give one-by-one results,
streamed JSON Lines / CSV, failures that do not stop the run, progress, flat memory."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ninport
from ninport.apps import batch
from tests.conftest import NIN_DEPLOY, REPO, VENDORED_GOLDEN
from tests.test_cli import run_cli

CASE = VENDORED_GOLDEN / "legacy_v1"  # input 3x10x10, output `prob` over 5 classes
NET, WEIGHTS = CASE / "net.prototxt", CASE / "weights.caffemodel"

cv2 = pytest.importorskip("cv2")


def _write_images(folder, names, shape=(12, 14, 3), seed=0):
    """Lossless PNG (or .npy) images of seeded noise; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        if path.suffix == ".npy":
            np.save(path, image)
        else:
            assert cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


# --- finding the images -------------------------------------------------------------------------


def _tree(tmp_path):
    photos = tmp_path / "photos"
    _write_images(photos, ["b.png", "a.jpg", "C.PNG", "a10.png", "a2.png", "sub/z.png", "sub/deeper/y.bmp",
                           "arr.npy"])
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.png").write_bytes((photos / "b.png").read_bytes())
    (photos / ".cache").mkdir()
    _write_images(photos / ".cache", ["x.png"])
    return photos


def test_a_folder_gives_its_image_files_sorted_not_subfolders(tmp_path):
    photos = _tree(tmp_path)
    found = batch.find_images([photos])
    assert [p.name for p in found.paths] == ["C.PNG", "a.jpg", "a10.png", "a2.png", "arr.npy", "b.png"]
    assert found.unsearched == 1  # sub/ (hidden .cache is left out, not searched)
    assert found.skipped == 3     # notes.txt, .hidden.png, .cache


def test_recursive_goes_depth_first_in_name_order(tmp_path):
    photos = _tree(tmp_path)
    found = batch.find_images([photos], recursive=True)
    assert [p.relative_to(photos).as_posix() for p in found.paths] == [
        "C.PNG", "a.jpg", "a10.png", "a2.png", "arr.npy", "b.png", "sub/deeper/y.bmp", "sub/z.png"]
    assert found.unsearched == 0
    # the same order whatever order the file system lists them in, and on every call
    assert batch.find_images([photos], recursive=True) == found


def test_patterns_named_files_order_and_duplicates(tmp_path):
    photos = _tree(tmp_path)
    found = batch.find_images([str(photos / "*.png")])
    assert [p.name for p in found.paths] == ["a10.png", "a2.png", "b.png"]  # Python's glob: case-sensitive here
    deep = batch.find_images([str(photos / "**" / "*.png")])
    assert [p.relative_to(photos).as_posix() for p in deep.paths] == ["a10.png", "a2.png", "b.png", "sub/z.png"]
    # sources keep their order; a file named twice is read once; a named file is read whatever its suffix
    (photos / "odd.data").write_bytes((photos / "b.png").read_bytes())
    mixed = batch.find_images([photos / "b.png", photos / "odd.data", str(photos / "a*.*"), photos / "b.png"])
    assert [p.name for p in mixed.paths] == ["b.png", "odd.data", "a.jpg", "a10.png", "a2.png", "arr.npy"]


def test_finding_errors_name_the_source(tmp_path):
    photos = _tree(tmp_path)
    with pytest.raises(ninport.PreprocessError, match="nosuch: no such file or folder"):
        batch.find_images([photos, tmp_path / "nosuch"])
    with pytest.raises(ninport.PreprocessError, match=r"\*\.gif: no file or folder matches"):
        batch.find_images([str(photos / "*.gif")])
    empty = tmp_path / "empty"
    (empty / "inner").mkdir(parents=True)
    with pytest.raises(ninport.PreprocessError, match=r"no image files found .*1 subfolder\(s\) not searched"):
        batch.find_images([empty])


# --- batches give what one image at a time gives -------------------------------------------------


def _classify_one_by_one(prototxt, paths, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.classify(prototxt, paths, **kwargs).predictions


def _stream(prototxt, sources, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(batch.predict_many(prototxt, sources, **kwargs))


def _assert_same_classes(outcomes, predictions):
    assert [o.image for o in outcomes] == [p.image for p in predictions]
    for outcome, single in zip(outcomes, predictions):
        assert outcome.ok, outcome.error
        assert [c.index for c in outcome.prediction.top] == [c.index for c in single.top]
        np.testing.assert_allclose([c.score for c in outcome.prediction.top], [c.score for c in single.top],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size,read_ahead", [(4, True), (3, False), (1, True)])
def test_batches_give_the_one_by_one_results(tmp_path, size, read_ahead):
    paths = _write_images(tmp_path / "photos", [f"img{i:02d}.png" for i in range(10)])
    outcomes = _stream(NET, [tmp_path / "photos"], weights=WEIGHTS, batch=size, read_ahead=read_ahead, top=5,
                       mean_values=[104, 117, 123])
    _assert_same_classes(outcomes, _classify_one_by_one(NET, paths, weights=WEIGHTS, top=5,
                                                        mean_values=[104, 117, 123]))
    assert [o.index for o in outcomes] == list(range(10))


def test_batches_of_nin_give_the_one_by_one_results(tmp_path):
    """A real conv net (NIN, seeded weights): a batch of 5 and a last batch of 2."""
    paths = _write_images(tmp_path / "photos", [f"img{i}.jpg" for i in range(7)], shape=(60, 50, 3), seed=4)
    kwargs = dict(mean_values=[104, 117, 123], resize=(256, 256), crop=224, top=3)
    outcomes = _stream(NIN_DEPLOY, [str(tmp_path / "photos" / "*.jpg")], batch=5, **kwargs)
    _assert_same_classes(outcomes, _classify_one_by_one(NIN_DEPLOY, paths, **kwargs))


TINY_SSD = """name: "tiny_ssd"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "loc" type: "Convolution" bottom: "conv2" top: "loc"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "conv2" top: "conf"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "prior" type: "PriorBox" bottom: "conv2" bottom: "data" top: "prior"
        prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1
                          variance: 0.2 variance: 0.2 } }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf_flat" top: "conf_reshape"
        reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_out" type: "Flatten" bottom: "conf_softmax" top: "conf_out" }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_out" bottom: "prior"
        top: "detection_out"
        detection_output_param { num_classes: 3 share_location: true background_label_id: 0
          nms_param { nms_threshold: 0.45 top_k: 50 } code_type: CENTER_SIZE keep_top_k: 7
          confidence_threshold: 0.2 } }
"""


def test_a_detector_in_batches_gives_each_image_its_own_boxes(tmp_path):
    prototxt = tmp_path / "ssd.prototxt"
    prototxt.write_text(TINY_SSD)
    shapes = [(40, 30, 3), (32, 32, 3), (20, 50, 3), (64, 64, 3), (33, 31, 3)]
    paths = [_write_images(tmp_path / "photos", [f"img{i}.png"], shape=s, seed=i)[0] for i, s in enumerate(shapes)]
    kwargs = dict(mean_values=[127.5], scale=0.0078)
    outcomes = _stream(prototxt, [tmp_path / "photos"], batch=4, **kwargs)
    singles = _classify_one_by_one(prototxt, paths, **kwargs)
    assert [o.image for o in outcomes] == [p.image for p in singles]
    assert sum(len(p.detections) for p in singles) > 5  # the test compares boxes, not empty lists
    for outcome, single in zip(outcomes, singles):
        found = outcome.prediction.detections
        assert [(d.image, d.label) for d in found] == [(d.image, d.label) for d in single.detections]
        assert [d.score for d in found] == pytest.approx([d.score for d in single.detections], rel=1e-5)
        for mine, theirs in zip(found, single.detections):  # boxes in this image's own pixels
            assert [mine.xmin, mine.ymin, mine.xmax, mine.ymax] == pytest.approx(
                [theirs.xmin, theirs.ymin, theirs.xmax, theirs.ymax], abs=1e-3)


FOLDED = """name: "folded"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "fold" type: "Reshape" bottom: "fc" top: "fold" reshape_param { shape { dim: 1 dim: -1 } } }
layer { name: "prob" type: "Softmax" bottom: "fold" top: "prob" }
"""


def test_a_net_without_a_batch_axis_runs_images_one_at_a_time(tmp_path):
    """Its output folds the batch (Reshape to 1 x -1): batching would mix images, so it falls back."""
    prototxt = tmp_path / "folded.prototxt"
    prototxt.write_text(FOLDED)
    paths = _write_images(tmp_path / "photos", [f"img{i}.png" for i in range(5)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = list(batch.predict_many(prototxt, [tmp_path / "photos"], batch=4, mean_values=[100]))
    assert any("one at a time" in str(w.message) for w in caught)
    _assert_same_classes(outcomes, _classify_one_by_one(prototxt, paths, mean_values=[100]))


def test_stopping_early_ends_the_read_ahead_thread(tmp_path):
    import threading

    _write_images(tmp_path / "photos", [f"img{i:02d}.png" for i in range(30)], shape=(10, 10, 3))
    with batch.predict_many(NET, [tmp_path / "photos"], WEIGHTS, batch=2, mean_values=[1]) as stream:
        assert next(iter(stream)).ok
        assert any(t.name == "ninport-read-ahead" for t in threading.enumerate())
    assert not any(t.name == "ninport-read-ahead" for t in threading.enumerate())


def test_images_of_another_input_shape_start_a_new_batch(tmp_path, monkeypatch):
    """Every image is preprocessed to the net's size today; if sizes ever differ, a batch holds one size."""
    paths = _write_images(tmp_path / "photos", [f"img{i}.png" for i in range(6)])
    sizes = iter([10, 10, 12, 12, 12, 10])
    real_read = batch._read

    def read(index, path, setup):  # a fully convolutional stand-in preprocessing: blobs of two sizes
        size = next(sizes)
        resized = dataclasses.replace(setup.preprocessing, resize=(size, size), crop=0, mean_values=(),
                                      mean_file=None, scale=1.0, origin=())
        return real_read(index, path, dataclasses.replace(setup, preprocessing=resized,
                                                          input_shape=(1, 3, size, size)))

    conv_only = tmp_path / "conv.prototxt"
    conv_only.write_text(NET.read_text().split('layers { name: "fc"')[0])
    monkeypatch.setattr(batch, "_read", read)
    seen = []
    stream = batch.predict_many(conv_only, [tmp_path / "photos"], WEIGHTS, batch=4, read_ahead=False, mean_values=[9])
    real_forward = stream._forward
    monkeypatch.setattr(stream, "_forward", lambda loaded: seen.append([r.blob.shape[2] for r in loaded])
                        or real_forward(loaded))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = list(stream)
    assert seen == [[10, 10], [12, 12, 12], [10]]
    assert [o.image for o in outcomes] == [str(p) for p in paths] and all(o.ok for o in outcomes)


# --- the command: streams, failures, progress ----------------------------------------------------


def _photos_with_a_bad_one(tmp_path, count=9, bad_at=4):
    names = [f"img{i:02d}.png" for i in range(count)]
    paths = _write_images(tmp_path / "photos", names)
    paths[bad_at].write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return paths


def test_jsonl_holds_every_image_in_order_and_the_bad_one_says_why(tmp_path):
    paths = _photos_with_a_bad_one(tmp_path)
    result = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(WEIGHTS), "--jsonl",
                     "--batch", "4", "--top", "2")
    assert result.returncode == 4, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in paths]
    assert "error" in records[4] and "top" not in records[4] and "img04.png" in records[4]["error"]
    assert all(len(r["top"]) == 2 and "error" not in r for i, r in enumerate(records) if i != 4)
    summary = result.stderr.strip().splitlines()[-1]
    assert "9 images in" in summary and "8 ok, 1 failed" in summary and "images/s" in summary
    expected = _classify_one_by_one(NET, [paths[0]], weights=WEIGHTS, top=2)[0]
    assert [t["class"] for t in records[0]["top"]] == [c.index for c in expected.top]


def test_csv_to_a_file_parses_back_with_every_image(tmp_path):
    paths = _photos_with_a_bad_one(tmp_path, count=7, bad_at=0)
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none, with a comma\ntwo\nthree\nfour\n")
    out = tmp_path / "results" / "out.csv"
    out.parent.mkdir()
    result = run_cli("predict", str(NET), str(tmp_path / "photos" / "*.png"), "--weights", str(WEIGHTS),
                     "--labels", str(labels), "--top", "3", "-o", str(out), "-q")
    assert result.returncode == 4 and result.stdout == ""
    assert "7 images" in result.stderr and "1 failed" in result.stderr  # -q keeps the summary when some failed
    assert sorted(os.listdir(out.parent)) == ["out.csv"]  # no temporary file left beside it
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == list(batch.CLASSIFIER_CSV)
    assert [r["image"] for r in rows] == [str(paths[0])] + [str(p) for p in paths[1:] for _ in range(3)]
    assert rows[0]["error"] and not rows[0]["class"]
    for row in rows[1:]:
        assert row["rank"] in "123" and 0 <= int(row["class"]) < 5 and float(row["score"]) > 0 and not row["error"]
        assert row["label"] == ["zero", "one, with a comma", "two", "three", "four"][int(row["class"])]


def test_a_run_that_fails_leaves_no_output_file(tmp_path):
    _write_images(tmp_path / "photos", ["a.png"])
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(tmp_path / "missing.caffemodel"),
                     "-o", str(out))
    assert result.returncode == 1 and "missing.caffemodel" in result.stderr
    assert os.listdir(tmp_path) == ["photos"]
    bad_format = run_cli("predict", str(NET), str(tmp_path / "photos"), "-o", str(tmp_path / "out.txt"))
    assert bad_format.returncode == 1 and "--jsonl or --csv" in bad_format.stderr
    for extra in (["--batch", "4"], ["-o", str(out)], ["--jsonl"]):
        clash = run_cli("predict", str(NET), str(tmp_path / "photos"), "--json", *extra)
        assert clash.returncode == 1 and len(clash.stderr.splitlines()) == 1 and "--json" in clash.stderr
    assert os.listdir(tmp_path) == ["photos"]


def test_progress_lines_on_a_pipe_and_quiet(tmp_path):
    _write_images(tmp_path / "photos", [f"img{i:02d}.png" for i in range(12)], shape=(10, 10, 3))  # no warning
    result = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(WEIGHTS), "--csv",
                     "--batch", "5", "--mean-values", "104,117,123")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if "/12 images (" in line]
    assert progress and all(line.startswith("ninport: ") and "images/s, ETA " in line for line in progress)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # not a terminal: plain lines
    assert result.stderr.strip().splitlines()[-1].startswith("ninport: 12 images in ")
    assert len(result.stdout.splitlines()) == 1 + 12 * 5
    quiet = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(WEIGHTS), "--csv", "-q",
                    "--mean-values", "104,117,123")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == result.stdout


def test_text_output_streams_like_a_single_image(tmp_path):
    paths = _write_images(tmp_path / "photos", ["a.png", "b.png"])
    many = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(WEIGHTS), "--top", "2",
                   "--mean-values", "104,117,123")
    single = run_cli("predict", str(NET), *map(str, paths), "--weights", str(WEIGHTS), "--top", "2",
                     "--mean-values", "104,117,123")
    assert many.returncode == 0 and single.returncode == 0, many.stderr
    assert many.stdout == single.stdout
    as_json = run_cli("predict", str(NET), str(tmp_path / "photos"), "--weights", str(WEIGHTS), "--json",
                      "--mean-values", "104,117,123")
    assert [p["image"] for p in json.loads(as_json.stdout)["predictions"]] == [str(p) for p in paths]


def test_progress_bar_lines_and_live_bar():
    now = [0.0]
    out = io.StringIO()
    bar = batch.ProgressBar(100, out, live=False, interval=10, clock=lambda: now[0])
    for done in range(1, 101):
        now[0] = done * 0.5  # 2 images/s
        bar.update(done, failed=done // 50)
    lines = out.getvalue().splitlines()
    assert lines[0] == "ninport: 1/100 images (1%), 2.0 images/s, ETA 0:50"
    assert [line.split("/")[0] for line in lines] == [f"ninport: {n}" for n in (1, 21, 41, 61, 81)]  # every 10 s
    assert lines[-1].endswith(", 1 failed")
    live = io.StringIO()
    bar = batch.ProgressBar(10, live, live=True, clock=lambda: now[0])
    bar.update(5)
    bar.clear()
    assert live.getvalue().startswith("\r\x1b[K[") and "5/10 images (50%)" in live.getvalue()
    assert live.getvalue().endswith("\r\x1b[K")


MEMORY_PROBE = """
import os, resource, sys, warnings
warnings.simplefilter("ignore")
from ninport.apps import batch
stream = batch.predict_many(sys.argv[1], [sys.argv[2]], sys.argv[3], batch=4)
for outcome in stream:
    assert outcome.ok
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_flat_with_the_number_of_images(tmp_path):
    """Peak RSS for 200 images of 600x600 (1 MiB each decoded) is about that for 20: nothing accumulates."""
    image = np.tile(np.arange(600, dtype=np.uint8)[:, None, None], (1, 600, 3))  # compresses well on disk
    peaks = {}
    for count in (20, 200):
        folder = tmp_path / f"n{count}"
        folder.mkdir()
        for i in range(count):
            cv2.imwrite(str(folder / f"{i:03d}.png"), image)
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(NET), str(folder), str(WEIGHTS)],
                              capture_output=True, text=True, timeout=300, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.returncode == 0, proc.stderr
        peaks[count] = int(proc.stdout.split()[-1]) / 1024  # MiB
    assert peaks[200] - peaks[20] < 40, peaks  # holding the 180 extra decoded images would be +180 MiB
