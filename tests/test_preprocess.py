"""Caffe's TEST-time DataTransformer in numpy, mean .binaryproto files, and the mean in ONNX metadata."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import ninport
from ninport.caffe import caffe_pb2
from ninport.caffe.io import read_mean_binaryproto
from ninport.caffe.spec import Preprocess
from ninport.errors import NinportError, NinportWarning, ParseError
from ninport.errors import PreprocessError
from ninport.apps.preprocess import caffe_transform, transform_for


# --- reference: Caffe's DataTransformer::Transform loop, index by index ------------------------


def caffe_loop(image, crop_size=0, mean=None, mean_values=(), scale=1.0):
    """A literal transcription of data_transformer.cpp (TEST phase, no mirror) over a flat CHW datum."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    datum_height, datum_width, datum_channels = img.shape
    # Caffe's Datum stores CHW; uint8 pixels are cast to float (Dtype), float pixels used as is.
    data = img.transpose(2, 0, 1).reshape(-1)
    mean_flat = None if mean is None else np.asarray(mean, dtype=np.float32).reshape(-1)
    mean_values = [np.float32(v) for v in mean_values]
    if len(mean_values) == 1 and datum_channels > 1:
        mean_values = mean_values * datum_channels
    scale = np.float32(scale)
    height, width, h_off, w_off = datum_height, datum_width, 0, 0
    if crop_size:
        height = width = crop_size
        h_off = (datum_height - crop_size) // 2
        w_off = (datum_width - crop_size) // 2
    out = np.zeros(datum_channels * height * width, dtype=np.float32)
    for c in range(datum_channels):
        for h in range(height):
            for w in range(width):
                data_index = (c * datum_height + h_off + h) * datum_width + w_off + w
                top_index = (c * height + h) * width + w
                element = np.float32(data[data_index])
                if mean_flat is not None:
                    out[top_index] = (element - mean_flat[data_index]) * scale
                elif mean_values:
                    out[top_index] = (element - mean_values[c]) * scale
                else:
                    out[top_index] = element * scale
    return out.reshape(1, datum_channels, height, width)


def _image(h, w, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
    return (rng.random((h, w, c)) * 255).astype(dtype)


def _mean_image(c, h, w, seed=1):
    return (np.random.default_rng(seed).random((c, h, w)) * 255).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("size,crop", [((8, 8), 0), ((8, 11), 5), ((9, 10), 4), ((7, 7), 7), ((6, 9), 1)])
@pytest.mark.parametrize("mean_kind", ["none", "file", "one_value", "three_values"])
@pytest.mark.parametrize("scale", [1.0, 0.00390625, 0.017])
def test_matches_caffe_loop(dtype, size, crop, mean_kind, scale):
    h, w = size
    image = _image(h, w, dtype=dtype)
    kwargs = {"crop_size": crop, "scale": scale}
    if mean_kind == "file":
        kwargs["mean"] = _mean_image(3, h, w)
    elif mean_kind == "one_value":
        kwargs["mean_values"] = (127.5,)
    elif mean_kind == "three_values":
        kwargs["mean_values"] = (104.0, 117.0, 123.0)
    got = caffe_transform(image, **kwargs)
    expected = caffe_loop(image, **kwargs)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (1, 3, crop or h, crop or w)
    np.testing.assert_array_equal(got, expected)


def test_crop_offsets_are_caffes_integer_division():
    # pixel value encodes its position: channel*10000 + row*100 + col
    h, w = 9, 12
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([c * 10000 + rows * 100 + cols for c in range(3)], axis=-1).astype(np.float32)
    out = caffe_transform(image, crop_size=4)
    # h_off = (9 - 4) // 2 = 2, w_off = (12 - 4) // 2 = 4
    assert out[0, 0, 0, 0] == 2 * 100 + 4
    assert out[0, 2, 3, 3] == 20000 + 5 * 100 + 7


def test_mean_file_is_subtracted_at_uncropped_positions():
    h, w = 10, 10
    image = np.zeros((h, w, 3), dtype=np.uint8)
    mean = np.zeros((3, h, w), dtype=np.float32)
    mean[:, 3:7, 3:7] = 1.0  # only the central window, which the crop of 4 picks: (10-4)//2 = 3
    out = caffe_transform(image, crop_size=4, mean=mean)
    np.testing.assert_array_equal(out, -np.ones((1, 3, 4, 4), dtype=np.float32))


def test_channels_stay_in_given_order_bgr():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    out = caffe_transform(image, mean_values=(1, 2, 3))
    assert out[0, :, 0, 0].tolist() == [9.0, 18.0, 27.0]


def test_grayscale_hw_image_is_one_channel():
    image = _image(6, 6, c=1)[:, :, 0]
    out = caffe_transform(image, crop_size=4, mean_values=(100,), scale=0.5)
    assert out.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(out, caffe_loop(image, crop_size=4, mean_values=(100,), scale=0.5))


def test_mean_with_leading_one_accepted():
    image, mean = _image(5, 5), _mean_image(3, 5, 5)
    np.testing.assert_array_equal(caffe_transform(image, mean=mean[None]), caffe_transform(image, mean=mean))


def test_does_not_modify_the_input():
    image = _image(6, 6, dtype=np.float32)
    before = image.copy()
    caffe_transform(image, crop_size=4, mean_values=(1.0,), scale=2.0)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("image,kwargs,words", [
    (np.zeros((5, 8, 3), np.uint8), {"crop_size": 6}, "smaller than crop_size 6"),
    (np.zeros((8, 5, 3), np.uint8), {"crop_size": 6}, "smaller than crop_size 6"),
    (np.zeros((8, 8, 3), np.uint8), {"crop_size": -1}, "crop_size must be >= 0"),
    (np.zeros((8, 8, 3), np.uint8), {"mean": np.zeros((1, 8, 8), np.float32)}, "3 channel(s) but the mean image has 1"),
    (np.zeros((8, 8, 1), np.uint8), {"mean": np.zeros((3, 8, 8), np.float32)}, "1 channel(s) but the mean image has 3"),
    (np.zeros((8, 8, 3), np.uint8), {"mean": np.zeros((3, 6, 6), np.float32)},
     "image is 8x8 but the mean image is 6x6"),
    (np.zeros((8, 8, 3), np.uint8), {"mean": np.zeros((8, 8), np.float32)}, "mean image must be (C, H, W)"),
    (np.zeros((8, 8, 3), np.uint8), {"mean": np.zeros((3, 8, 8), np.float32), "mean_values": (1.0,)},
     "mean file and mean_value at the same time"),
    (np.zeros((8, 8, 3), np.uint8), {"mean_values": (1.0, 2.0)}, "2 mean values for an image with 3 channel(s)"),
    (np.zeros((8, 8, 1), np.uint8), {"mean_values": (1.0, 2.0, 3.0)}, "3 mean values for an image with 1 channel(s)"),
    (np.zeros((1, 8, 8, 3), np.uint8), {}, "HxWxC"),
    (np.zeros((0, 8, 3), np.uint8), {}, "image is empty"),
    (np.array([["a"]]), {}, "dtype"),
    (np.zeros((4, 4, 3), bool), {}, "dtype"),
])
def test_errors_caffe_would_refuse(image, kwargs, words):
    with pytest.raises(PreprocessError) as info:
        caffe_transform(image, **kwargs)
    assert isinstance(info.value, NinportError)
    message = str(info.value)
    assert words in message and "\n" not in message


# --- transform_for ------------------------------------------------------------------------------


def _write_mean(path, mean, legacy=True, double=False):
    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    else:
        blob.shape.dim.extend(mean.shape)
    (blob.double_data if double else blob.data).extend(mean.reshape(-1).tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def test_transform_for_reads_relative_mean_file(tmp_path):
    mean = _mean_image(3, 9, 9)
    _write_mean(tmp_path / "mean.binaryproto", mean)
    image = _image(9, 9)
    pre = Preprocess(crop_size=5, mean_file="mean.binaryproto", scale=0.5)
    got = transform_for(pre, image, mean_file_base_dir=tmp_path)
    np.testing.assert_array_equal(got, caffe_loop(image, crop_size=5, mean=mean, scale=0.5))


def test_transform_for_absolute_mean_file_and_values(tmp_path):
    mean = _mean_image(3, 6, 6)
    path = _write_mean(tmp_path / "m.binaryproto", mean)
    image = _image(6, 6)
    got = transform_for(Preprocess(mean_file=str(path)), image, mean_file_base_dir="/nonexistent")
    np.testing.assert_array_equal(got, caffe_loop(image, mean=mean))
    got = transform_for(Preprocess(crop_size=4, mean_values=[104.0, 117.0, 123.0]), image)
    np.testing.assert_array_equal(got, caffe_loop(image, crop_size=4, mean_values=(104.0, 117.0, 123.0)))


def test_transform_for_without_preprocess_is_plain_nchw():
    image = _image(4, 5)
    np.testing.assert_array_equal(transform_for(None, image), image.transpose(2, 0, 1)[None].astype(np.float32))


def test_transform_for_refuses_mean_file_and_values(tmp_path):
    pre = Preprocess(mean_file="mean.binaryproto", mean_values=[1.0])
    with pytest.raises(PreprocessError, match="both mean_file 'mean.binaryproto' and mean_value"):
        transform_for(pre, _image(4, 4), mean_file_base_dir=tmp_path)


def test_transform_for_missing_mean_file(tmp_path):
    with pytest.raises(ParseError, match="no such file"):
        transform_for(Preprocess(mean_file="nope.binaryproto"), _image(4, 4), mean_file_base_dir=tmp_path)


def test_usage_from_prototxt_data_layer(tmp_path):
    mean = _mean_image(3, 8, 8)
    _write_mean(tmp_path / "mean.binaryproto", mean)
    prototxt = _data_net(tmp_path, "mean.binaryproto", crop=6)
    spec = ninport.load_spec(prototxt)
    image = _image(8, 8)
    blob = transform_for(spec.preprocess, image, mean_file_base_dir=prototxt.parent)
    assert blob.shape == spec.inputs["data"]
    np.testing.assert_array_equal(blob, caffe_loop(image, crop_size=6, mean=mean))


# --- read_mean_binaryproto ----------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("double", [False, True])
def test_binaryproto_round_trip(tmp_path, legacy, double):
    mean = _mean_image(3, 4, 5)
    path = _write_mean(tmp_path / "mean.binaryproto", mean, legacy=legacy, double=double)
    got = read_mean_binaryproto(path)
    assert got.dtype == np.float32 and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, mean)
    got[0, 0, 0] = -1.0  # writable, not a view of the file


def test_binaryproto_shape_with_leading_one_and_three_axes(tmp_path):
    mean = _mean_image(1, 3, 3)
    for dims in ([1, 1, 3, 3], [1, 3, 3]):
        blob = caffe_pb2.BlobProto()
        blob.shape.dim.extend(dims)
        blob.data.extend(mean.reshape(-1).tolist())
        path = tmp_path / f"m{len(dims)}.binaryproto"
        path.write_bytes(blob.SerializeToString())
        assert read_mean_binaryproto(path).shape == (1, 3, 3)


def _blob_bytes(shape=None, legacy=None, n_data=None):
    blob = caffe_pb2.BlobProto()
    if shape is not None:
        blob.shape.dim.extend(shape)
    if legacy is not None:
        blob.num, blob.channels, blob.height, blob.width = legacy
    count = n_data if n_data is not None else int(np.prod(shape or legacy))
    blob.data.extend([1.0] * count)
    return blob.SerializeToString()


def _caffemodel_bytes():
    net = caffe_pb2.NetParameter()
    layer = net.layer.add()
    layer.name, layer.type = "conv1", "Convolution"
    b = layer.blobs.add()
    b.shape.dim.extend([2, 3, 1, 1])
    b.data.extend([0.5] * 6)
    return net.SerializeToString()


@pytest.mark.parametrize("content,words", [
    (b"", "empty file"),
    (_blob_bytes(legacy=(1, 3, 4, 4))[:-5], "truncated"),
    (b"\xff" * 40, "not a valid .binaryproto"),
    (b'name: "net"\nlayer { }\n', "not a valid .binaryproto"),
    (_caffemodel_bytes(), "no blob data"),
    (_blob_bytes(shape=[64, 3, 2, 2]), "64 images"),
    (_blob_bytes(shape=[10]), "a mean file holds one"),
    (_blob_bytes(legacy=(1, 3, 4, 4), n_data=5), "holds 5 values"),
    (_blob_bytes(shape=[1, 3, 0, 4], n_data=2), "a mean file holds one"),
    (caffe_pb2.BlobProto(data=[1.0, 2.0]).SerializeToString(), "records no shape"),
])
def test_binaryproto_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.binaryproto"
    path.write_bytes(content)
    with pytest.raises(ParseError) as info:
        read_mean_binaryproto(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


def test_binaryproto_missing_and_directory(tmp_path):
    with pytest.raises(ParseError, match="no such file"):
        read_mean_binaryproto(tmp_path / "missing.binaryproto")
    with pytest.raises(ParseError, match="is a directory"):
        read_mean_binaryproto(tmp_path)


# --- ONNX metadata ------------------------------------------------------------------------------


def _data_net(tmp_path, mean_file, crop=6):
    path = tmp_path / "net.prototxt"
    path.write_text(f"""name: "meannet"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  include {{ phase: TEST }}
  transform_param {{ crop_size: {crop} mean_file: "{mean_file}" }}
  data_param {{ source: "val_lmdb" batch_size: 1 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 2 kernel_size: 3 }} }}
""")
    return path


def _load(prototxt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NinportWarning)  # random weights
        return ninport.load(prototxt)


def _channel_means(mean):
    return [float(v) for v in mean.reshape(3, -1).mean(axis=1, dtype=np.float64)]


def test_onnx_metadata_records_mean_file_channel_means(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from ninport.export.onnx import export_onnx

    mean = (_mean_image(3, 8, 8) / 255 - 0.5) * 0.2 + np.array([104, 117, 123], np.float32)[:, None, None]
    (tmp_path / "means").mkdir()
    _write_mean(tmp_path / "means" / "mean.binaryproto", mean)
    module = _load(_data_net(tmp_path, "means/mean.binaryproto"))
    path = export_onnx(module, tmp_path / "net.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["mean_file"] == "means/mean.binaryproto"
    means = json.loads(props["mean_file_channel_means"])
    assert means == pytest.approx(_channel_means(mean), rel=1e-12)
    assert [round(m) for m in means] == [104, 117, 123]  # BGR order, as in the file


def test_metadata_mean_file_absolute_path(tmp_path):
    from ninport.export.onnx import build_metadata

    mean = _mean_image(3, 8, 8)
    path = _write_mean(tmp_path / "abs_mean.binaryproto", mean, legacy=False)
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    props = build_metadata(_load(_data_net(sub, str(path))))
    assert json.loads(props["mean_file_channel_means"]) == pytest.approx(_channel_means(mean), rel=1e-12)


def test_metadata_without_mean_file_present(tmp_path):
    from ninport.export.onnx import build_metadata

    props = build_metadata(_load(_data_net(tmp_path, "absent.binaryproto")))
    assert props["mean_file"] == "absent.binaryproto"
    assert "mean_file_channel_means" not in props


def test_metadata_unreadable_mean_file_warns_and_skips(tmp_path):
    from ninport.export.onnx import build_metadata

    (tmp_path / "garbage.binaryproto").write_bytes(b"\xff" * 16)
    module = _load(_data_net(tmp_path, "garbage.binaryproto"))
    with pytest.warns(NinportWarning, match="mean_file_channel_means not recorded: .*garbage.binaryproto"):
        props = build_metadata(module)
    assert "mean_file_channel_means" not in props


# --- <stem>.preprocess.json: declared preprocessing, read as data -------------------------------------------


def _declare(tmp_path, text: str):
    from ninport.apps.preprocess import read_preprocess_file

    path = tmp_path / "deploy.preprocess.json"
    path.write_text(text)
    return read_preprocess_file(path)


def test_preprocess_file_every_field(tmp_path):
    from ninport.apps.preprocess import preprocess_file_for

    assert preprocess_file_for(tmp_path / "deploy.prototxt") == tmp_path / "deploy.preprocess.json"
    declared = _declare(tmp_path, '{"comment": "why", "mean_values": [104, 177.5, 123], "scale": 0.5, '
                                  '"resize": [300, 400], "crop": 0, "channel_order": "RGB"}')
    assert declared.mean_values == (104.0, 177.5, 123.0) and declared.scale == 0.5 and declared.crop == 0
    assert declared.resize == (300, 400) and declared.channel_order == "RGB" and declared.comment == "why"
    assert declared.mean_file is None
    square = _declare(tmp_path, '{"resize": 256, "mean_values": []}')
    assert square.resize == (256, 256) and square.mean_values == () and square.crop is None
    (tmp_path / "mean.binaryproto").write_bytes(b"")
    assert _declare(tmp_path, '{"mean_file": "mean.binaryproto"}').mean_file == tmp_path / "mean.binaryproto"


@pytest.mark.parametrize("text,needle", [
    ('{"mean": [1, 2, 3]}', "unknown key 'mean'"),
    ('{"crop": 1, "crop": 2}', "key 'crop' appears twice"),
    ('{"scale": NaN}', "not plain JSON"),
    ('{"scale": "1"}', "scale must be a finite number"),
    ('{"mean_values": 104}', "mean_values must be a list"),
    ('{"mean_values": [1, true]}', "mean_values must be a finite number"),
    ('{"resize": [0, 5]}', "resize must be [H, W]"),
    ('{"resize": [1, 2, 3]}', "resize must be [H, W]"),
    ('{"resize": 2.5}', "resize must be a whole number"),
    ('{"crop": -1}', "crop must be 0 (none)"),
    ('{"channel_order": "bgr"}', 'channel_order must be "BGR" or "RGB"'),
    ('{"mean_file": "../mean.binaryproto"}', "must name a file inside the folder"),
    ('{"mean_file": "/etc/passwd"}', "must name a file inside the folder"),
    ('{"mean_values": [1], "mean_file": "m"}', "not both"),
    ('[104, 177, 123]', "expected a JSON object"),
    ('{"crop": 1,\n "scale": }', ":2:"),
    ('[' * 5000 + ']' * 5000, "not plain JSON"),
])
def test_preprocess_file_refuses_what_it_does_not_know(tmp_path, text, needle):
    with pytest.raises(ParseError) as caught:
        _declare(tmp_path, text)
    message = str(caught.value)
    assert "deploy.preprocess.json" in message and needle in message and "\n" not in message


def test_preprocess_file_is_bounded_and_must_be_regular(tmp_path):
    from ninport.apps.preprocess import MAX_PREPROCESS_FILE_BYTES

    with pytest.raises(ParseError, match="larger than|too large|bytes"):
        _declare(tmp_path, '{"comment": "' + "x" * MAX_PREPROCESS_FILE_BYTES + '"}')
    from ninport.apps.preprocess import read_preprocess_file

    with pytest.raises(ParseError):
        read_preprocess_file(tmp_path)  # a folder
