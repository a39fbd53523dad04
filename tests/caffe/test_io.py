"""Reading prototxts and caffemodels: every golden file, all formats, wire-level blob decoding."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.spec import load_netspec

from benchmarks.models import delimited_head, varint
from tests.conftest import VENDORED_GOLDEN, golden_case_names, load_golden, within
from tests.peak_rss import peak_rss_growth


@pytest.mark.parametrize("name", golden_case_names())
def test_every_golden_prototxt_and_caffemodel_reads(name):
    case = load_golden(name)
    info = case.info
    spec = load_netspec(case.prototxt)
    assert spec.outputs == info["outputs"]
    assert {k: list(v) for k, v in spec.inputs.items()} == {k: list(v) for k, v in info["inputs"].items()}
    if case.weights:
        raw = io.read_caffemodel(case.weights)
        assert raw and all(isinstance(layer.name, str) for layer in raw)
        for layer in raw:
            for blob in layer.blobs:
                assert blob.data.dtype in (np.float32, np.float64) and blob.data.ndim == 1


def test_all_three_formats_occur_in_the_golden_set():
    formats = {load_netspec(load_golden(name).prototxt).source_format for name in golden_case_names()}
    assert formats == {"V0", "V1", "current"}


def _net_with(blob_setter) -> bytes:
    net = pb2.NetParameter()
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob_setter(layer.blobs.add())
    return net.SerializeToString()


def test_packed_float_data(tmp_path):
    values = np.arange(12, dtype=np.float32)
    path = tmp_path / "w.caffemodel"

    def setter(blob):
        blob.shape.dim.extend([3, 4])
        blob.data.extend(values.tolist())
    path.write_bytes(_net_with(setter))
    [layer] = io.read_caffemodel(path)
    assert layer.name == "fc" and layer.type == "InnerProduct"
    assert layer.blobs[0].shape == (3, 4)
    np.testing.assert_array_equal(layer.blobs[0].data, values)


def test_unpacked_float_data(tmp_path):
    """Old writers emit `data` one float per field (wire type 5), not packed: read them too."""
    values = [1.5, -2.0, 3.25]
    body = b"".join(b"\x2d" + np.float32(v).tobytes() for v in values)  # field 5, wire type 5
    shape = b"\x3a\x02\x08\x03"                                        # field 7: BlobShape { dim: 3 }
    blob = shape + body
    layer = b"\x0a\x02fc" + b"\x12\x0cInnerProduct" + b"\x3a" + bytes([len(blob)]) + blob
    data = b"\xa2\x06" + bytes([len(layer)]) + layer                  # field 100, length-delimited
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data)
    [raw] = io.read_caffemodel(path)
    np.testing.assert_array_equal(raw.blobs[0].data, np.array(values, dtype=np.float32))
    assert raw.blobs[0].shape == (3,)


def _unpacked(number: int, values: np.ndarray) -> bytes:
    """`values` as unpacked fields: one (key, value) per value, as old writers emitted `data`."""
    wire = 5 if values.dtype == np.float32 else 1
    records = np.zeros(values.size, dtype=[("key", "u1"), ("value", values.dtype.newbyteorder("<"))])
    records["key"], records["value"] = number << 3 | wire, values
    return records.tobytes()


def _blob_model(blob: bytes) -> bytes:
    layer = delimited_head(1, 2) + b"fc" + delimited_head(2, 12) + b"InnerProduct" + delimited_head(7, len(blob)) + blob
    return delimited_head(100, len(layer)) + layer


@pytest.mark.parametrize("seed", range(40))
def test_mixed_packed_and_unpacked_data_reads_as_protobuf_does(tmp_path, seed):
    """Runs of unpacked values of every length (around the run finder's windows too), lone ones
    between other fields, a non-minimal key, packed spans: all in file order, as protobuf merges them."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(rng.integers(1, 12)):
        number, dtype = [(5, np.float32), (8, np.float64)][rng.integers(2)]
        values = rng.normal(size=int(rng.choice([1, 2, 3, 63, 64, 65, 127, 128, 129, 1000]))).astype(dtype)
        little = values.astype(values.dtype.newbyteorder("<")).tobytes()
        form = rng.integers(4)
        if form == 0:
            pieces.append(delimited_head(number, len(little)) + little)
        elif form == 1:
            pieces.append(_unpacked(number, values))
        elif form == 2:  # lone values between other fields (num, then a legacy width)
            pieces += [_unpacked(number, values[:1]) + b"\x08\x01", b"\x20" + varint(int(rng.integers(1, 300)))]
        else:  # the key written in two bytes (0xad 0x00 is 0x2d): not a run of one-byte keys
            key = varint(number << 3 | (5 if dtype == np.float32 else 1))
            pieces.append(bytes([key[0] | 0x80, 0]) + little[:values.itemsize])
    blob = b"".join(pieces)
    expected = pb2.BlobProto.FromString(blob)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_blob_model(blob))
    [layer] = io.read_caffemodel(path)
    want = np.array(expected.data, np.float32) if len(expected.data) else np.array(expected.double_data)
    np.testing.assert_array_equal(layer.blobs[0].data, want)
    assert layer.blobs[0].data.dtype == want.dtype and layer.blobs[0].legacy_shape == (
        (expected.num, 0, 0, expected.width) if expected.HasField("num") else None)


def test_reading_unpacked_floats_costs_a_small_multiple_of_the_file_size(tmp_path):
    """A 25 MB caffemodel of unpacked floats took 495 MB (a Python int per value, then an int64
    index per byte): runs are now strided views of the file, copied once into the blob's array."""
    values = np.arange(5_000_000, dtype=np.float32)
    shape = delimited_head(7, 1 + len(varint(values.size))) + b"\x08" + varint(values.size)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_blob_model(shape + _unpacked(5, values)))
    tiny = tmp_path / "tiny.caffemodel"
    tiny.write_bytes(_blob_model(_unpacked(5, values[:3])))
    size = path.stat().st_size
    measured = peak_rss_growth("ninport.caffe.io:read_caffemodel", path, cap=8 * size)
    baseline = peak_rss_growth("ninport.caffe.io:read_caffemodel", tiny).growth
    assert measured.error != "MemoryError", f"more than 8x the file size ({size:,} bytes)"
    assert measured.error is None, measured.error
    assert measured.growth - baseline <= 3 * size, f"{(measured.growth - baseline) / size:.1f}x the file size"


def test_double_data(tmp_path):
    values = np.linspace(-1, 1, 6)

    def setter(blob):
        blob.shape.dim.extend([2, 3])
        blob.double_data.extend(values.tolist())
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_net_with(setter))
    [layer] = io.read_caffemodel(path)
    assert layer.blobs[0].data.dtype == np.float64
    np.testing.assert_array_equal(layer.blobs[0].data, values)


def test_legacy_v1_blob_dims(tmp_path):
    net = pb2.NetParameter()
    v1 = net.layers.add(name="conv", type=pb2.V1LayerParameter.CONVOLUTION)
    blob = v1.blobs.add(num=1, channels=1, height=1, width=4)
    blob.data.extend([1, 2, 3, 4])
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net.SerializeToString())
    [layer] = io.read_caffemodel(path)
    assert layer.name == "conv" and layer.type == str(pb2.V1LayerParameter.CONVOLUTION)
    assert layer.blobs[0].legacy_shape == (1, 1, 1, 4) and layer.blobs[0].shape is None


def test_layers_without_blobs_are_kept(tmp_path):
    net = pb2.NetParameter()
    net.layer.add(name="relu", type="ReLU")
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net.SerializeToString())
    [layer] = io.read_caffemodel(path)
    assert layer.name == "relu" and layer.blobs == []


def test_blob_decoding_has_no_per_float_python():
    """Fast path: float data is handed to numpy as a view, never decoded float by float."""
    source = Path(io.__file__).read_text()
    tree = ast.parse(source)
    decoders = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("_read_blob", "_typed_array")]
    assert len(decoders) == 2
    calls = {getattr(c.func, "attr", getattr(c.func, "id", "")) for d in decoders for c in ast.walk(d)
             if isinstance(c, ast.Call)}
    assert "frombuffer" in calls
    assert "unpack" not in calls and "unpack_from" not in calls


@pytest.mark.parametrize("count", [1000, 2_000_000])  # a small array, and one past io._OWN_MAPPING_BYTES
def test_caffemodel_arrays_are_their_own_or_views_of_the_file(tmp_path, count):
    """By default each blob is read into an array of its own that ninport.load can adopt as a parameter
    (aligned, writable, sharing no memory with the file's mapping); `mapped=True` (inspect) gives views of
    the mapped file, read only when used."""
    values = np.arange(count, dtype=np.float32)
    path = tmp_path / "w.caffemodel"
    head = delimited_head(7, 1 + len(varint(count))) + b"\x08" + varint(count)
    path.write_bytes(_blob_model(head + delimited_head(5, values.nbytes) + values.tobytes()))
    [layer] = io.read_caffemodel(path)
    data = layer.blobs[0].data
    np.testing.assert_array_equal(data, values)
    assert data.flags.writeable and data.flags.aligned and data.flags.c_contiguous and data.dtype == np.float32
    [mapped] = io.read_caffemodel(path, mapped=True)
    view = mapped.blobs[0].data
    np.testing.assert_array_equal(view, values)
    assert not view.flags.writeable and view.base is not None
    assert not np.shares_memory(data, view)


def test_layer_lines_skip_comments_and_strings():
    text = '# layer { not this\nname: "x { layer {"\nlayer {\n  name: "a"\n}\nlayers {\n}\n'
    assert io.layer_lines(text) == [3, 6]


def test_read_caffemodel_proto_full_parse():
    net = io.read_caffemodel_proto(VENDORED_GOLDEN / "legacy_v1" / "weights.caffemodel")
    assert len(net.layers) > 0


# --- NVCaffe raw_data blobs -------------------------------------------------------------------


def _raw_blob_model(path, values: np.ndarray, type_value: int, dims) -> None:
    def setter(blob):
        blob.shape.dim.extend(dims)
        blob.raw_data_type = type_value
        blob.raw_data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    path.write_bytes(_net_with(setter))


def test_nvcaffe_fp16_raw_data_becomes_float32(tmp_path):
    values = np.array([0.5, -1.25, 3.0, 65504.0, 1e-3, 0], dtype=np.float16)
    path = tmp_path / "fp16.caffemodel"
    _raw_blob_model(path, values, pb2.FLOAT16, [2, 3])
    [layer] = io.read_caffemodel(path)
    blob = layer.blobs[0]
    assert blob.data.dtype == np.float32 and blob.shape == (2, 3)
    np.testing.assert_array_equal(blob.data, values.astype(np.float32))
    [kept] = io.read_caffemodel(path, keep_half=True)
    assert kept.blobs[0].data.dtype == np.float16
    np.testing.assert_array_equal(kept.blobs[0].data, values)


def test_nvcaffe_float_raw_data_is_read_as_is_and_double_reads(tmp_path):
    values = np.arange(1000, dtype=np.float32) / 7
    path = tmp_path / "f32.caffemodel"
    _raw_blob_model(path, values, pb2.FLOAT, [1000])
    [layer] = io.read_caffemodel(path)
    assert layer.blobs[0].data.dtype == np.float32 and layer.blobs[0].data.flags.writeable
    np.testing.assert_array_equal(layer.blobs[0].data, values)
    assert io.read_caffemodel(path, mapped=True)[0].blobs[0].data.base is not None  # a view of the file
    doubles = np.linspace(-1, 1, 5)
    _raw_blob_model(path, doubles, pb2.DOUBLE, [5])
    np.testing.assert_array_equal(io.read_caffemodel(path)[0].blobs[0].data, doubles)


def test_nvcaffe_raw_data_wins_over_data_and_bad_kinds_are_refused(tmp_path):
    def setter(blob):
        blob.shape.dim.append(2)
        blob.data.extend([9.0, 9.0])
        blob.raw_data_type = pb2.FLOAT16
        blob.raw_data = np.array([1, 2], dtype="<f2").tobytes()
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_net_with(setter))
    assert io.read_caffemodel(path)[0].blobs[0].data.tolist() == [1.0, 2.0]

    from ninport.errors import ParseError

    def int_setter(blob):
        blob.raw_data_type = pb2.INT
        blob.raw_data = b"\0" * 8
    path.write_bytes(_net_with(int_setter))
    with pytest.raises(ParseError, match="raw_data of type 3"):
        io.read_caffemodel(path)

    def odd_setter(blob):
        blob.raw_data_type = pb2.FLOAT16
        blob.raw_data = b"\0" * 3
    path.write_bytes(_net_with(odd_setter))
    with pytest.raises(ParseError, match="not a multiple"):
        io.read_caffemodel(path)


# --- inputs that are not regular files --------------------------------------------------------


@pytest.fixture
def no_hang():
    """Fail instead of hanging when a read blocks (e.g. on a FIFO)."""
    with within(10, "reading the input"):
        yield


@pytest.mark.parametrize("reader", [load_netspec, io.read_caffemodel, io.read_mean_binaryproto,
                                    io.read_caffemodel_proto])
def test_fifo_is_refused_at_once(tmp_path, no_hang, reader):
    import os

    from ninport.errors import ParseError
    fifo = tmp_path / "net.prototxt"
    os.mkfifo(fifo)
    with pytest.raises(ParseError, match=r"is a FIFO \(named pipe\); expected a regular file"):
        reader(fifo)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_refused(no_hang, device):
    from ninport.errors import ParseError
    with pytest.raises(ParseError, match=r"is a device; expected a regular file \(a Caffe net"):
        load_netspec(device)
    with pytest.raises(ParseError, match="is a device; expected a regular file"):
        io.read_caffemodel(device)


def test_symlink_to_fifo_is_refused(tmp_path, no_hang):
    import os

    from ninport.errors import ParseError
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.prototxt").symlink_to(tmp_path / "fifo")
    with pytest.raises(ParseError, match="FIFO"):
        load_netspec(tmp_path / "link.prototxt")


# --- mean files ---------------------------------------------------------------------------------


def _mean_blob(dims, values) -> bytes:
    shape = b"".join(b"\x08" + varint(d) for d in dims)  # BlobShape.dim, unpacked
    data = np.asarray(values, dtype="<f4").tobytes()
    return delimited_head(7, len(shape)) + shape + delimited_head(5, len(data)) + data


@pytest.mark.parametrize("dims,count", [
    ([1, 2**62 + 1, 4, 1], "18,446,744,073,709,551,620"),  # np.prod wrapped to 4: the check passed
    ([1, 3, 6148914691236517205, 1], "18,446,744,073,709,551,615"),  # wrapped to -1: "(-1 values)"
])
def test_mean_blob_shape_products_do_not_wrap(tmp_path, dims, count):
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(_mean_blob(dims, [1, 2, 3, 4]))
    from ninport.errors import ParseError
    with pytest.raises(ParseError) as info:
        io.read_mean_binaryproto(path)
    assert str(info.value) == f"{path}: the blob has shape {dims} ({count} values) but holds 4 values"


def test_a_prototxts_overflowing_mean_file_is_a_one_line_error_or_warning(tmp_path):
    """predict needs the mean: exit 1, one line. convert only records the mean's channel means in the
    ONNX metadata, so it warns, naming the file, and writes a complete model (exit 0)."""
    import cv2

    from tests.test_cli import messages, run_cli
    (tmp_path / "mean.binaryproto").write_bytes(_mean_blob([1, 2**62 + 1, 4, 1], [1, 2, 3, 4]))
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "data" type: "MemoryData" top: "data" top: "label" transform_param { '
                   'mean_file: "mean.binaryproto" } memory_data_param { batch_size: 1 channels: 3 height: 8 '
                   'width: 8 } }\nlayer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                   "inner_product_param { num_output: 4 } }\n")
    cv2.imwrite(str(tmp_path / "image.png"), np.zeros((8, 8, 3), np.uint8))
    said = f"mean.binaryproto: the blob has shape [1, {2**62 + 1}, 4, 1] (18,446,744,073,709,551,620 values)"
    predict = run_cli("predict", str(net), str(tmp_path / "image.png"), cwd=tmp_path)
    assert predict.returncode == 1 and messages(predict.stderr) == [f"ninport: error: {tmp_path}/{said} but holds 4 "
                                                                    "values"], predict.stderr
    convert = run_cli("convert", str(net), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert convert.returncode == 0, convert.stderr
    assert any(line.startswith("ninport: warning: mean_file_channel_means not recorded:") and said in line
               for line in messages(convert.stderr)), convert.stderr
    assert (tmp_path / "out" / "net.onnx").is_file()
