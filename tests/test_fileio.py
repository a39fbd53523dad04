"""Bounded reads (ninport.fileio and its users): inputs that are not regular files are refused at once,
sizes are checked from headers before anything is decoded or allocated, golden folders are data."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ninport import fileio
from ninport.apps.predict import MAX_IMAGE_PIXELS, read_image, read_labels, resize_image
from ninport.caffe.io import read_mean_binaryproto
from ninport.check.parity import GoldenFolder
from ninport.errors import NinportError, ParseError, PreprocessError
from tests.conftest import VENDORED_GOLDEN, within


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


READERS = {
    "image": read_image,
    "npy image": read_image,
    "mean file": read_mean_binaryproto,
    "labels": read_labels,
    "npz": fileio.load_npz,
    "npy": fileio.load_npy,
}
SUFFIX = {"image": ".png", "npy image": ".npy", "mean file": ".binaryproto", "labels": ".txt", "npz": ".npz",
          "npy": ".npy"}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_is_refused_at_once(tmp_path, reader):
    path = _fifo(tmp_path, "input" + SUFFIX[reader])
    with within(5), pytest.raises(NinportError, match="FIFO"):
        READERS[reader](path)


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_at_once(tmp_path, reader, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    link = tmp_path / ("input" + SUFFIX[reader])
    link.symlink_to(device)  # the suffix the reader expects, the device behind it
    with within(5), pytest.raises(NinportError, match="device"):
        READERS[reader](link)
    with within(5), pytest.raises(NinportError, match="device"):
        READERS[reader](device)


def test_directories_and_missing_files(tmp_path):
    for read in (read_image, read_mean_binaryproto, read_labels, fileio.load_npz):
        with pytest.raises(ParseError, match="directory"):
            read(tmp_path)
        with pytest.raises(ParseError, match="no such file"):
            read(tmp_path / "nope.png")


def test_read_bounded_checks_size_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1000)
    assert fileio.read_bounded(path, 1000) == b"x" * 1000
    with pytest.raises(ParseError, match="1,000 bytes, more than the 999"):
        fileio.read_bounded(path, 999, "thing")


def test_oversized_mean_file_refused_before_reading(tmp_path, monkeypatch):
    from ninport.caffe import io as caffe_io

    path = tmp_path / "mean.binaryproto"
    with open(path, "wb") as f:
        f.truncate(caffe_io.MAX_MEAN_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ParseError, match="more than the"):
        read_mean_binaryproto(path)


def test_labels_split_on_line_feeds_only_as_caffe_does(tmp_path):
    """A form feed, \\x1c-\\x1e, NEL or U+2028 inside a label stays in it (str.splitlines broke lines there and
    shifted every later label); a Windows CR before the LF is dropped."""
    path = tmp_path / "labels.txt"
    names = ["a\fb", "c\x1cd\x1de\x1ef", "g\x85h", "i\u2028j\u2029k", "", "last"]
    path.write_text("\r\n".join(names) + "\r\n", encoding="utf-8", newline="")
    assert read_labels(path) == names
    path.write_text("x\ny", encoding="utf-8")  # no final line feed
    assert read_labels(path) == ["x", "y"]
    path.write_text("", encoding="utf-8")
    assert read_labels(path) == []


def test_labels_must_be_utf8_text(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"chat\nchien\n")
    assert read_labels(path) == ["chat", "chien"]
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ParseError, match="not UTF-8"):
        read_labels(path)


# --- npy / npz -------------------------------------------------------------------------------------


def _npy_bytes(header: dict, data: bytes = b"") -> bytes:
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body + data


def test_npy_round_trip_and_fortran_order(tmp_path):
    array = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "a.npy", array)
    loaded = fileio.load_npy(tmp_path / "a.npy")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, array)


def test_npy_header_shape_checked_before_allocation(tmp_path):
    path = tmp_path / "bomb.npy"
    # 8 bytes on disk declaring a 10^6 x 10^6 float64 array (8 TB)
    path.write_bytes(_npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}, b"\0" * 8))
    with pytest.raises(ParseError, match="more than the"):
        fileio.load_npy(path)
    with pytest.raises(ParseError, match="more than the"):
        read_image(path)


def test_npy_truncated_data_refused_before_allocation(tmp_path):
    path = tmp_path / "short.npy"
    path.write_bytes(_npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)}, b"\0" * 16))
    with pytest.raises(ParseError, match="truncated"):
        fileio.load_npy(path)


def test_npy_with_objects_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ParseError, match="pickle"):
        fileio.load_npy(path)


def test_npz_round_trip(tmp_path):
    arrays = {"data": np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32), "n": np.arange(3)}
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    loaded = fileio.load_npz(tmp_path / "a.npz")
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype and np.array_equal(loaded[key], value)


def _zip_member(archive: zipfile.ZipFile, name: str, payload: bytes, compress=zipfile.ZIP_DEFLATED):
    archive.writestr(zipfile.ZipInfo(name), payload, compress_type=compress)


def test_npz_decompression_bomb_refused(tmp_path):
    """A member that inflates to 4 GiB of zeros (a few MB on disk would do; this one declares it)."""
    path = tmp_path / "bomb.npz"
    header = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2 ** 30,)})
    with zipfile.ZipFile(path, "w") as archive:
        _zip_member(archive, "data.npy", header + b"\0" * 4096)
    # the header declares 4 GiB: refused before anything is inflated or allocated
    with pytest.raises(ParseError, match="more than the"):
        fileio.load_npz(path)


def test_npz_lying_zip_sizes_refused(tmp_path):
    """The zip's central directory declares a small size; the stream inflates to far more."""
    path = tmp_path / "liar.npz"
    header = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (4,)})
    payload = header + b"\0" * (1 << 20)
    with zipfile.ZipFile(path, "w") as archive:
        _zip_member(archive, "data.npy", payload)
    data = bytearray(path.read_bytes())
    small = struct.pack("<I", len(header) + 16)
    real = struct.pack("<I", len(payload))
    data = data.replace(real, small)  # local header and central directory
    path.write_bytes(bytes(data))
    with pytest.raises(ParseError):
        fileio.load_npz(path)


def test_npz_total_declared_size_bounded(tmp_path):
    path = tmp_path / "many.npz"
    np.savez(path, a=np.zeros(1000, np.float32), b=np.zeros(1000, np.float32))
    with pytest.raises(ParseError, match="declare"):
        fileio.load_npz(path, total_limit=5000)


def _npz_with_junk(path: Path, arrays: dict, junk: bytes = b"not a deflate stream") -> None:
    """An npz of `arrays` plus a member `junk.npy` whose stored bytes are `junk` (a corrupt stream unless
    `junk` is a real deflate stream): reading it fails, so a load that succeeds never inflated it."""
    np.savez_compressed(path, **arrays)
    header = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2 ** 28,)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo("junk.npy"), header + b"\0" * 1024, compress_type=zipfile.ZIP_DEFLATED)
    data = path.read_bytes()
    info = zipfile.ZipFile(path).getinfo("junk.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    path.write_bytes(data[:start] + junk[:info.compress_size].ljust(info.compress_size, b"\xff")
                     + data[start + info.compress_size:])


def test_npz_members_not_needed_are_never_inflated(tmp_path):
    path = tmp_path / "inputs.npz"
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _npz_with_junk(path, {"data": data})
    with pytest.raises(ParseError, match="junk.npy"):
        fileio.load_npz(path)  # every member: the junk one is read and fails
    loaded = fileio.load_npz(path, shapes={"data": (2, 3, 4)})
    assert list(loaded) == ["data"] and np.array_equal(loaded["data"], data)
    assert fileio.npz_names(path) == ["data", "junk"]


def test_npz_needed_member_checked_against_the_need_before_inflating(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, data=np.zeros((400, 100), np.float32))
    with pytest.raises(ParseError, match=r"member data.npy: declares 160,128 bytes uncompressed, more than an "
                                         r"array of shape \[4, 2\] takes"):
        fileio.load_npz(path, shapes={"data": (4, 2)})
    other = fileio.load_npz(path, shapes={"data": (400, 50, 2)})["data"]  # another shape: not inflated
    assert other.shape == (400, 100) and other.dtype == np.float32 and other.strides == (0, 0)
    assert not other.flags.writeable


def test_golden_inputs_read_only_for_the_net(golden):
    case = GoldenFolder.open(golden)
    data = case.inputs()["data"]
    _npz_with_junk(golden / "inputs.npz", {"data": data})
    assert np.array_equal(case.input_arrays({"data": (1, 3, 9, 8)})["data"], data)
    with pytest.raises(ParseError, match=r"inputs.npz: input 'data' has shape \[1, 3, 9, 8\], the net takes "
                                         r"\[1, 3, 8, 9\]"):
        case.input_arrays({"data": (1, 3, 8, 9)})


def test_verify_inflates_only_the_golden_arrays_it_compares(golden, tmp_path):
    """An inputs.npz and a blobs.npz of about 1 MB whose unused members inflate to 512 MiB each cost 2 GB more
    in `verify` before (4.4 GB for the issue's 2 GB member); now only the net's inputs and blobs are read.
    Measured as the peak RSS of a subprocess, against the same verify on the folder as it was."""
    import subprocess
    import sys

    def peak_rss_mib(folder: Path) -> float:
        code = ("import resource, sys, ninport\n"
                "report = ninport.verify(sys.argv[1], opencv=False, onnx=False)\n"
                "print(report.comparisons[0].verdict())\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        result = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                                timeout=300, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
        assert result.returncode == 0, result.stderr
        verdict, peak = result.stdout.strip().splitlines()
        assert verdict.startswith("2 blobs compared"), verdict  # `unused` is listed as uncompared, not read
        return float(peak)

    plain = tmp_path / "plain"
    shutil.copytree(golden, plain)
    for name in ("inputs.npz", "blobs.npz"):
        arrays = dict(np.load(golden / name))
        path = golden / name
        np.savez(path, **arrays)
        header = _npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (2 ** 29,)})
        with zipfile.ZipFile(path, "a") as archive:
            info = zipfile.ZipInfo("unused.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(header)
                for _ in range(2 ** 29 // 2 ** 24):
                    member.write(b"\0" * 2 ** 24)
    assert (golden / "inputs.npz").stat().st_size < 2 ** 21
    bombed, baseline = peak_rss_mib(golden), peak_rss_mib(plain)
    assert bombed < baseline + 100, (bombed, baseline)


@pytest.mark.parametrize("content, words", [
    (b"", "not a numpy .npz"),
    (b"PK\x03\x04garbage", "not a numpy .npz"),
    (b"not a zip at all", "not a numpy .npz"),
])
def test_npz_garbage(tmp_path, content, words):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ParseError, match=words):
        fileio.load_npz(path)


def test_npz_member_not_npy_or_object(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:
        _zip_member(archive, "data.npy", b"hello world, not an array")
    with pytest.raises(ParseError, match="not a numpy array"):
        fileio.load_npz(path)
    buffer = io.BytesIO()
    np.save(buffer, np.array([None], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        _zip_member(archive, "obj.npy", buffer.getvalue())
    with pytest.raises(ParseError, match="pickle"):
        fileio.load_npz(path)


# --- images ----------------------------------------------------------------------------------------


def _png(width: int, height: int, idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_bomb_refused_from_its_header(tmp_path):
    """A valid PNG of 60,000 x 60,000 black pixels compresses to a few MB; the header alone says so.
    The IDAT here is a tiny deflate stream of zeros: a decoder would allocate 10 GB before noticing."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(60_000, 60_000, zlib.compress(b"\0" * 100_000, 9)))
    with within(10), pytest.raises(PreprocessError, match="60000x60000 pixels, more than"):
        read_image(path)


def test_image_of_allowed_size_is_read(tmp_path):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for suffix in (".png", ".bmp", ".jpg", ".tiff", ".ppm", ".webp"):
        path = tmp_path / f"a{suffix}"
        assert cv2.imwrite(str(path), image)
        got = read_image(path)
        assert got.shape == (20, 30, 3), suffix
        if suffix not in (".jpg", ".webp"):
            assert np.array_equal(got, image), suffix


def test_tiff_whose_directory_follows_the_image_data_is_read(tmp_path):
    """libtiff (and so OpenCV) writes the directory after the pixels: a TIFF over 1 MiB was refused as a
    "truncated TIFF header" when only the file's first MiB went to the header reader."""
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    path = tmp_path / "big.tiff"
    assert cv2.imwrite(str(path), image)
    assert struct.unpack("<I", path.read_bytes()[4:8])[0] > 2 ** 20
    assert np.array_equal(read_image(path), image)


def test_image_of_unknown_format_refused(tmp_path):
    path = tmp_path / "a.exr"
    path.write_bytes(b"v/1\x01" + b"\0" * 100)
    with pytest.raises(ParseError, match="size ninport can check"):
        read_image(path)


def test_npy_image_over_the_pixel_limit(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    path = tmp_path / "big.npy"
    path.write_bytes(_npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (side, side)}))
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + side * side)  # sparse: the data is all there, and too much
    with pytest.raises(PreprocessError, match="more than the"):
        read_image(path)


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, [("b", "u1"), ("g", "u1"), ("r", "u1")], "U3", "M8[s]"])
def test_npy_image_that_is_not_pixels_refused_naming_the_file(tmp_path, dtype):
    path = tmp_path / "odd.npy"
    np.save(path, np.zeros((12, 12, 3) if np.dtype(dtype).fields is None else (12, 12), dtype))
    with pytest.raises(PreprocessError, match="odd.npy: an image array must hold real numbers"):
        read_image(path)


@pytest.mark.parametrize("dtype", ["int64", "float16", ">f4", "int8"])
def test_npy_images_of_any_real_dtype_resize(tmp_path, dtype):
    """OpenCV resizes only some dtypes (no int64, float16; non-native byte order): the others go as float32."""
    pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 100, (12, 14, 3)).astype(dtype)
    path = tmp_path / "a.npy"
    np.save(path, image)
    got = resize_image(read_image(path), 10, 10)
    np.testing.assert_allclose(got, resize_image(image.astype(np.float32), 10, 10), rtol=1e-6)


def test_resize_more_channels_than_opencv_takes_at_once():
    """OpenCV resizes at most 512 channels at a time (a cv2.error beyond): 1000 go in groups."""
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).random((12, 12, 1000)).astype(np.float32)
    got = resize_image(image, 10, 10)
    assert got.shape == (10, 10, 1000)
    for c in (0, 511, 512, 999):
        np.testing.assert_allclose(got[:, :, c], cv2.resize(image[:, :, c], (10, 10)), atol=1e-5)


def test_image_headers_that_decoders_read_differently_refused_naming_the_file(tmp_path):
    """The issue's TIFF: first tags 20000x20000, duplicates 1x1 (decoded as 4x10^8 pixels); and a PNM number
    of 5,000 digits (an internal error from Python's int limit)."""
    entries = [(256, 20000), (257, 20000), (256, 1), (257, 1)]
    tiff = b"II*\0" + struct.pack("<IH", 8, len(entries))
    tiff += b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries) + b"\0" * 4
    (tmp_path / "bomb.tif").write_bytes(tiff + b"\0" * 1000)
    (tmp_path / "digits.ppm").write_bytes(b"P6\n" + b"9" * 5000 + b" 1\n255\n")
    for name, words in (("bomb.tif", "two different ImageWidth"), ("digits.ppm", "5,000 digits")):
        with within(10), pytest.raises(ParseError, match=words) as info:
            read_image(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))


def test_resize_to_an_absurd_size_refused():
    with pytest.raises(PreprocessError, match="cannot resize"):
        resize_image(np.zeros((4, 4, 3), np.uint8), 100_000, 100_000)


# --- golden folders --------------------------------------------------------------------------------


@pytest.fixture
def golden(tmp_path) -> Path:
    folder = tmp_path / "golden"
    shutil.copytree(VENDORED_GOLDEN / "conv_rect", folder)
    return folder


def test_golden_folder_reads(golden):
    case = GoldenFolder.open(golden)
    assert case.prototxt == golden / "net.prototxt" and case.weights == golden / "weights.caffemodel"
    assert set(case.input_arrays({"data": (1, 3, 9, 8)})) == {"data"}
    assert "out" in case.blobs()


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"prototxt": 3}', "must be a file name"),
    ('{"weights": ["a"]}', "must be a file name"),
    ('{"prototxt": "../../../../etc/passwd"}', "inside the folder"),
    ('{"prototxt": "/etc/passwd"}', "inside the folder"),
    ('{"weights": "sub/../../x"}', "inside the folder"),
    ('{"prototxt": ""}', None),  # empty: the default net.prototxt
])
def test_golden_case_json_malformed(golden, text, words):
    (golden / "case.json").write_text(text)
    if words is None:
        assert GoldenFolder.open(golden).prototxt == golden / "net.prototxt"
        return
    with pytest.raises(ParseError, match=words) as info:
        GoldenFolder.open(golden)
    assert "case.json" in str(info.value) or str(golden) in str(info.value)


@pytest.mark.parametrize("nesting", ["array", "object"])
def test_golden_case_json_nested_too_deeply(golden, nesting):
    """100,000 levels: a RecursionError in json.loads (an internal error) before."""
    depth = 100_000
    text = "[" * depth + "]" * depth if nesting == "array" else '{"a":' * depth + "1" + "}" * depth
    (golden / "case.json").write_text(text)
    with pytest.raises(ParseError, match="case.json: not valid JSON for ninport: nested too deeply"):
        GoldenFolder.open(golden)


def test_golden_symlink_leading_out_refused(golden, tmp_path):
    outside = tmp_path / "secret.prototxt"
    outside.write_text("name: 'x'")
    (golden / "net.prototxt").unlink()
    (golden / "net.prototxt").symlink_to(outside)
    with pytest.raises(ParseError, match="leads outside"):
        GoldenFolder.open(golden)
    (golden / "net.prototxt").unlink()
    (golden / "net.prototxt").symlink_to(golden / "weights.caffemodel")  # a link inside is fine
    assert GoldenFolder.open(golden).prototxt.name == "net.prototxt"


def test_golden_malformed_npz(golden):
    (golden / "blobs.npz").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: no arrays
    case = GoldenFolder.open(golden)
    assert case.blobs() == {}
    (golden / "inputs.npz").write_bytes(b"garbage")
    with pytest.raises(ParseError, match="inputs.npz"):
        case.inputs()
    np.savez(golden / "inputs.npz", other=np.zeros(3, np.float32))
    with pytest.raises(ParseError, match="no array for the net's input"):
        case.input_arrays({"data": (1, 3, 9, 8)})
    np.savez(golden / "inputs.npz", data=np.array(["text"]))
    with pytest.raises(ParseError, match="expected numbers"):
        case.inputs()


def test_golden_npz_that_is_a_fifo(golden):
    (golden / "inputs.npz").unlink()
    os.mkfifo(golden / "inputs.npz")
    with within(5), pytest.raises(ParseError, match="FIFO|golden folder without"):
        GoldenFolder.open(golden).inputs()


def test_golden_case_json_is_data(golden):
    info = json.loads((golden / "case.json").read_text())
    info["prototxt"] = "net.prototxt\x1b[31m"
    (golden / "case.json").write_text(json.dumps(info))
    with pytest.raises(ParseError) as info_:
        GoldenFolder.open(golden).prototxt.read_text()
    assert "\x1b" not in str(info_.value)
