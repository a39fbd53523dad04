"""`ninport predict`: images through Caffe's preprocessing and the converted net."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.apps.predict import top_classes
from ninport.apps.preprocess import caffe_transform
from tests.conftest import VENDORED_GOLDEN, load_golden
from tests.test_cli import run_cli

CASE = VENDORED_GOLDEN / "legacy_v1"  # input 3x10x10, output `prob` over 5 classes


def _image(tmp_path, shape=(10, 10, 3), seed=0):
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "image.npy"
    np.save(path, image)
    return image, path


def _expected_top(prototxt, weights, blob, k=5):
    module = ninport.load(prototxt, weights)
    return top_classes(module(torch.from_numpy(blob)).detach().numpy(), k)


def test_predict_matches_transform_plus_model(tmp_path):
    image, path = _image(tmp_path)
    result = run_cli("predict", str(CASE / "net.prototxt"), str(path), "--weights", str(CASE / "weights.caffemodel"),
                     "--mean-values", "104,117,123", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [entry] = report["predictions"]
    assert report["preprocessing"]["mean_values"] == [104, 117, 123] and report["preprocessing"]["crop"] == 0
    blob = caffe_transform(image, mean_values=(104, 117, 123))
    expected = _expected_top(CASE / "net.prototxt", CASE / "weights.caffemodel", blob)
    assert [t["class"] for t in entry["top"]] == [c for c, _ in expected]
    np.testing.assert_allclose([t["score"] for t in entry["top"]], [s for _, s in expected], rtol=1e-6)


def test_predict_reads_image_files_with_labels(tmp_path):
    cv2 = pytest.importorskip("cv2")
    image, npy = _image(tmp_path, seed=1)
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), image)  # lossless: the same BGR pixels
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class-{i}" for i in range(5)))
    args = ["--weights", str(CASE / "weights.caffemodel"), "--labels", str(labels), "--top", "2"]
    from_png = run_cli("predict", str(CASE / "net.prototxt"), str(png), *args)
    from_npy = run_cli("predict", str(CASE / "net.prototxt"), str(npy), *args)
    assert from_png.returncode == 0, from_png.stderr
    assert from_png.stdout.splitlines()[2:] == from_npy.stdout.splitlines()[2:]
    assert from_png.stdout.startswith("preprocessing: resize to 10x10 (the net's input size); no crop; no mean")
    assert "1. class" in from_png.stdout and "class-" in from_png.stdout and "3. class" not in from_png.stdout


def test_predict_nin_resize_crop_and_mean(tmp_path):
    cv2 = pytest.importorskip("cv2")
    case = load_golden("nin_v1_224")
    image, path = _image(tmp_path, shape=(300, 280, 3), seed=2)
    result = run_cli("predict", str(case.prototxt), str(path), "--weights", str(case.weights), "--resize", "256,256",
                     "--crop", "224", "--mean-values", "104,117,123", "--json")
    assert result.returncode == 0, result.stderr
    blob = caffe_transform(cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR), crop_size=224,
                           mean_values=(104, 117, 123))
    expected = _expected_top(case.prototxt, case.weights, blob)
    assert [t["class"] for t in json.loads(result.stdout)["predictions"][0]["top"]] == [c for c, _ in expected]


def test_predict_errors_are_one_line(tmp_path):
    _, path = _image(tmp_path)
    missing = run_cli("predict", str(CASE / "net.prototxt"), str(tmp_path / "nope.jpg"), "--weights",
                      str(CASE / "weights.caffemodel"))
    assert missing.returncode == 1 and "nope.jpg: no such file" in missing.stderr
    too_small = run_cli("predict", str(CASE / "net.prototxt"), str(path), "--weights", str(CASE / "weights.caffemodel"),
                        "--crop", "12")
    assert too_small.returncode == 1 and len(too_small.stderr.strip().splitlines()) == 1


def test_predict_odd_images_are_one_line_errors_naming_the_file(tmp_path):
    """Each was an internal error (exit 2): a complex .npy, 1000 channels to resize (cv2.error), a PNM header
    number of 5,000 digits (Python's int limit)."""
    np.save(tmp_path / "complex.npy", np.zeros((10, 10, 3), np.complex64))
    np.save(tmp_path / "channels.npy", np.zeros((12, 12, 1000), np.uint8))
    (tmp_path / "digits.ppm").write_bytes(b"P6\n" + b"9" * 5000 + b" 1\n255\n")
    for name in ("complex.npy", "channels.npy", "digits.ppm"):
        result = run_cli("predict", str(CASE / "net.prototxt"), str(tmp_path / name), "--weights",
                         str(CASE / "weights.caffemodel"))
        errors = [line for line in result.stderr.splitlines() if not line.endswith("...")]
        assert result.returncode == 1 and len(errors) == 1 and name in errors[0], result.stderr


def test_label_count_other_than_the_class_count_warns(tmp_path):
    _, path = _image(tmp_path)
    labels = tmp_path / "labels.txt"
    for count, warned in ((5, False), (4, True), (6, True)):
        labels.write_text("".join(f"class-{i}\n" for i in range(count)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = ninport.classify(CASE / "net.prototxt", [path, path], CASE / "weights.caffemodel",
                                      mean_values=(104, 117, 123), labels=labels)
        said = [str(w.message) for w in caught if "labels for the net" in str(w.message)]
        assert said == ([f"{labels}: {count:,} labels for the net's 5 classes; the labels shown may not belong to "
                         "their classes"] if warned else []), count
        assert all(c.label == (f"class-{c.index}" if c.index < count else None)
                   for p in result.predictions for c in p.top)


# --- the preprocessing rules: said, and warned about where they are a guess -------------------------

MEMORY_DATA = """layer { name: "data" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 1 channels: 3 height: 8 width: 8 }
        %s }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 4 } }
"""


def _prototxt(tmp_path, transform: str = ""):
    path = tmp_path / "net.prototxt"
    path.write_text(MEMORY_DATA % transform)
    return path


def _resolve(tmp_path, transform: str = "", **kwargs):
    spec = ninport.load_spec(_prototxt(tmp_path, transform))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = ninport.resolve_preprocessing(spec.source, spec.inputs["data"], spec.preprocess, **kwargs)
    return pre, [str(w.message) for w in caught if issubclass(w.category, ninport.NinportWarning)]


def test_no_mean_anywhere_warns_raw_pixels(tmp_path):
    pre, said = _resolve(tmp_path)
    assert not pre.subtracts_mean and "no mean (raw 0-255 pixels)" in pre.describe()
    assert len(said) == 1 and "raw 0-255 pixels" in said[0]
    pre, said = _resolve(tmp_path, mean_values=[1, 2, 3])
    assert pre.mean_values == (1.0, 2.0, 3.0) and not said


def test_the_prototxt_mean_values_are_used_and_said(tmp_path):
    pre, said = _resolve(tmp_path, "transform_param { mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 }")
    assert pre.mean_values == (104.0, 117.0, 123.0) and pre.scale == 0.5 and not said
    assert "mean values 104,117,123 (the prototxt's transform_param)" in pre.describe()
    assert "scale 0.5 (the prototxt's transform_param)" in pre.describe()


def test_missing_mean_file_of_the_prototxt_warns(tmp_path):
    pre, said = _resolve(tmp_path, 'transform_param { mean_file: "missing.binaryproto" }')
    assert not pre.subtracts_mean and len(said) == 1 and "missing.binaryproto" in said[0] and "NO mean" in said[0]


def test_mean_file_beside_the_prototxt_is_read(tmp_path):
    from ninport.caffe import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 3, 9, 9])
    blob.data.extend([7.0] * 3 * 81)
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    pre, said = _resolve(tmp_path, 'transform_param { mean_file: "mean.binaryproto" }', crop=8)
    assert not said and pre.resize == (9, 9) and pre.crop == 8 and pre.mean.shape == (3, 9, 9)
    assert pre.describe().startswith("resize to 9x9 (the mean image's size); center crop 8 (given); mean image")


def _mean_file(path):
    from ninport.caffe import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 3, 8, 8])
    blob.data.extend([7.0] * 3 * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob.SerializeToString())
    return path


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_mean_file_outside_the_prototxt_folder_is_read_with_a_warning_naming_it(tmp_path, where):
    outside = _mean_file(tmp_path / "elsewhere" / "mean.binaryproto")
    net = tmp_path / "net"
    net.mkdir()
    name = str(outside) if where == "absolute" else "../elsewhere/mean.binaryproto"
    pre, said = _resolve(net, f'transform_param {{ mean_file: "{name}" }}')
    assert pre.mean is not None and pre.mean.shape == (3, 8, 8)
    assert len(said) == 1 and f"is {outside}, outside the prototxt's folder" in said[0]
    _mean_file(net / "mean.binaryproto")
    pre, said = _resolve(net, 'transform_param { mean_file: "mean.binaryproto" }')
    assert pre.mean is not None and not said


def test_non_square_image_squashed_without_crop_warns(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    path = tmp_path / "wide.npy"
    np.save(path, image)
    pytest.importorskip("cv2")
    with pytest.warns(ninport.NinportWarning) as caught:
        result = ninport.classify(_prototxt(tmp_path), [path], mean_values=[100.0], top=2)
    said = [str(w.message) for w in caught]
    assert any("8x16 image is squashed to 8x8 without a crop" in m for m in said), said
    assert [c.index for c in result.predictions[0].top] == [c for c, _ in top_classes(
        ninport.load(_prototxt(tmp_path))(torch.from_numpy(caffe_transform(
            __import__("cv2").resize(image, (8, 8), interpolation=1), mean_values=[100.0]))).detach().numpy(), 2)]
    square = tmp_path / "square.npy"
    np.save(square, image[:, :8])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ninport.classify(_prototxt(tmp_path), [square], mean_values=[100.0])
    assert not [str(w.message) for w in caught if "is squashed to" in str(w.message)]


def _declared(tmp_path, text: str):
    from ninport.apps.preprocess import read_preprocess_file

    path = tmp_path / "net.preprocess.json"
    path.write_text(text)
    return read_preprocess_file(path)


def test_preprocess_file_supplies_what_the_prototxt_lacks(tmp_path):
    declared = _declared(tmp_path, '{"mean_values": [1, 2, 3], "scale": 0.5, "resize": [8, 8], "crop": 0}')
    pre, said = _resolve(tmp_path, declared=declared)
    assert not said, "the file answers every question: nothing to warn about"
    assert (pre.mean_values, pre.scale, pre.resize, pre.crop) == ((1.0, 2.0, 3.0), 0.5, (8, 8), 0)
    assert pre.describe() == ("resize to 8x8 (net.preprocess.json); no crop (net.preprocess.json); mean values 1,2,3 "
                              "(net.preprocess.json); scale 0.5 (net.preprocess.json)")
    assert pre.declared == str(declared.path) and not pre.warn_on_squash
    given, said = _resolve(tmp_path, declared=declared, mean_values=[9], scale=2)
    assert given.mean_values == (9.0,) and given.scale == 2 and not said, "arguments override the file"
    none, said = _resolve(tmp_path, declared=_declared(tmp_path, '{"mean_values": []}'))
    assert not none.subtracts_mean and "no mean (net.preprocess.json)" in none.describe() and not said


def test_preprocess_file_that_contradicts_the_transform_param_wins_and_says_so(tmp_path):
    declared = _declared(tmp_path, '{"mean_values": [1, 2, 3], "scale": 0.25}')
    pre, said = _resolve(tmp_path, "transform_param { mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 }",
                         declared=declared)
    assert pre.mean_values == (1.0, 2.0, 3.0) and pre.scale == 0.25
    assert len(said) == 2 and all("net.preprocess.json" in m and "transform_param" in m for m in said), said
    same, said = _resolve(tmp_path, "transform_param { scale: 0.25 }", declared=declared)
    assert same.scale == 0.25 and not said


def test_no_mean_hint_is_not_imagenet_for_a_detector(tmp_path):
    _, said = _resolve(tmp_path)
    assert "104,117,123" in said[0] and "net.preprocess.json" in said[0]
    pre, said = _resolve(tmp_path, detector=True)
    assert len(said) == 1 and "104,117,123" not in said[0]
    assert not pre.warn_on_squash and "the whole image, as SSD nets are trained" in pre.describe()


def test_squash_warning_only_when_nobody_chose_the_resize(tmp_path):
    pre, _ = _resolve(tmp_path, mean_values=[1])
    assert pre.warn_on_squash, "resize guessed from the net's input, no crop: a wide image would be squashed"
    for kwargs in ({"resize": (8, 8)}, {"declared": _declared(tmp_path, '{"resize": 8}')}, {"crop": 8},
                   {"detector": True}):
        pre, _ = _resolve(tmp_path, mean_values=[1], **kwargs)
        assert not pre.warn_on_squash, kwargs


def test_rgb_channel_order_flips_the_image(tmp_path):
    image, path = _image(tmp_path, shape=(8, 8, 3), seed=4)
    prototxt = _prototxt(tmp_path)
    (tmp_path / "net.preprocess.json").write_text('{"channel_order": "RGB", "mean_values": [0]}')
    result = ninport.classify(prototxt, [path], top=4)
    assert result.preprocessing.channel_order == "RGB"
    assert "channels RGB (net.preprocess.json)" in result.preprocessing.describe()
    module = ninport.load(prototxt)
    expected = top_classes(module(torch.from_numpy(caffe_transform(image[:, :, ::-1]))).detach().numpy(), 4)
    assert [(c.index, c.score) for c in result.predictions[0].top] == [(i, pytest.approx(v)) for i, v in expected]
    bgr = ninport.classify(prototxt, [path], top=4, channel_order="BGR")
    assert [c.index for c in bgr.predictions[0].top] == [i for i, _ in top_classes(module(torch.from_numpy(
        caffe_transform(image))).detach().numpy(), 4)]


def test_a_broken_preprocess_file_is_one_line_before_the_net_loads(tmp_path):
    _, path = _image(tmp_path, shape=(8, 8, 3))
    (tmp_path / "net.preprocess.json").write_text('{"mean_value": [1]}')
    result = run_cli("predict", str(_prototxt(tmp_path)), str(path))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "net.preprocess.json: unknown key 'mean_value'" in line


def test_threshold_and_draw_need_a_detector(tmp_path):
    _, path = _image(tmp_path, shape=(8, 8, 3))
    for kwargs in ({"threshold": 0.5}, {"draw": tmp_path / "out.jpg"}):
        with pytest.raises(ninport.PreprocessError, match="applies to detectors"):
            ninport.classify(_prototxt(tmp_path), [path], mean_values=[1], **kwargs)


def test_arguments_are_checked_before_the_net_is_loaded(tmp_path, monkeypatch):
    import ninport.api

    def never(*args, **kwargs):
        raise AssertionError("the net was loaded before the arguments were checked")

    monkeypatch.setattr(ninport.api, "load", never)
    _, image = _image(tmp_path)
    with pytest.raises(ninport.ParseError, match="nope.jpg: no such file"):
        ninport.classify(CASE / "net.prototxt", [tmp_path / "nope.jpg"], mean_values=[1.0])
    with pytest.raises(ninport.ParseError, match="labels"):
        ninport.classify(CASE / "net.prototxt", [image], mean_values=[1.0], labels=tmp_path / "labels.txt")
    with pytest.raises(ninport.NinportError, match="top must be at least 1"):
        ninport.classify(CASE / "net.prototxt", [image], top=0)
    with pytest.raises(ninport.PreprocessError, match="crop must be a positive integer"):
        ninport.classify(CASE / "net.prototxt", [image], crop=2.5)
    with pytest.raises(ninport.PreprocessError, match="the net takes 10x10"):
        ninport.classify(CASE / "net.prototxt", [image], crop=8)


@pytest.mark.parametrize("flag,value,needle", [
    ("--mean-values", "104,abc", "--mean-values"), ("--top", "-1", "--top"), ("--crop", "0", "--crop"),
    ("--scale", "nan", "--scale"), ("--resize", "0,5", "--resize"),
])
def test_bad_flag_values_are_exit_1_naming_the_flag(tmp_path, flag, value, needle):
    _, image = _image(tmp_path)
    result = run_cli("predict", str(CASE / "net.prototxt"), str(image), flag, value)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ninport: error: ") and needle in line and "Traceback" not in result.stderr
