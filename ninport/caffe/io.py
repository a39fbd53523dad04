"""Reading Caffe files: prototxt as protobuf text, caffemodel weights straight from the wire.

The caffemodel reader does not let protobuf decode the weights: it walks the wire format of the
memory-mapped file message by message (touching only the fields' headers) and reads every packed
float field straight from the file into its own aligned numpy array, so a 500 MB model costs one
read, about its own size in memory, and no per-float Python objects. Runs of unpacked floats are
gathered with strided views of the file, copied once.
"""
from __future__ import annotations

import bisect
import contextlib
import math
import mmap
import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ninport.errors import ParseError
from ninport.fileio import open_regular
from ninport.wire import Truncated as _Truncated
from ninport.wire import field_at as _field_at
from ninport.wire import fields as _fields
from ninport.wire import varint as _varint

if TYPE_CHECKING:
    from ninport.caffe.prototxt import ParsedNet

# A prototxt larger than this is refused before it is read (the biggest published nets are ~1 MB).
MAX_PROTOTXT_BYTES = 64 << 20

# Field numbers from caffe.proto (BVLC), for the wire-level reader.
_NET_LAYER, _NET_LAYERS_V1 = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_V1_NAME, _V1_TYPE, _V1_BLOBS, _V1_V0LAYER = 4, 5, 6, 1
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_BLOB_RAW_DATA_TYPE, _BLOB_RAW_DATA = 10, 12  # NVCaffe
# NVCaffe's Type enum -> little-endian numpy dtype of raw_data (INT, UINT, BOOL are not weights).
_RAW_DTYPES = {0: "<f8", 1: "<f4", 2: "<f2"}
_SHAPE_DIM = 1


def _caffe_pb2():
    from ninport.caffe import caffe_pb2

    return caffe_pb2


def _read_input(path: Path, expected: str, *, mapped: bool = False, limit: int | None = None):
    """The bytes of a user's file (memory-mapped if `mapped`), or one ParseError line naming it:
    missing, not a regular file, unreadable, empty or larger than `limit` bytes."""
    with open_regular(path, expected) as fh:
        return _contents(fh, path, expected, mapped=mapped, limit=limit)


def _contents(fh, path: Path, expected: str, *, mapped: bool = False, limit: int | None = None):
    """`_read_input` of a file already open (`open_regular`)."""
    size = os.fstat(fh.fileno()).st_size
    if limit is not None and size > limit:
        raise ParseError(f"{path}: {size:,} bytes is more than the {limit:,} bytes allowed for "
                         f"{expected}")
    try:
        if mapped and size:
            try:
                data = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError):
                data = fh.read()
        else:
            data = fh.read(size + 1 if limit is None else min(size, limit) + 1)
    except OSError as exc:
        raise ParseError(f"{path}: cannot read: {exc.strerror}") from None
    if limit is not None and len(data) > limit:
        raise ParseError(f"{path}: more than the {limit:,} bytes allowed for {expected}")
    if len(data) == 0:
        raise ParseError(f"{path}: empty file, expected {expected}")
    return data


@contextlib.contextmanager
def _wire_errors(path: Path, size: int, expected: str):
    """Turn the wire reader's failures into one ParseError line naming the file."""
    try:
        yield
    except _Truncated as exc:
        raise ParseError(f"{path}: truncated or not {expected} (data ends inside a field "
                         f"near byte {exc.args[0]} of {size})") from None
    except ValueError as exc:
        raise ParseError(f"{path}: not a valid {expected.removeprefix('a ')} ({exc})") from None


def read_prototxt_text(path: str | os.PathLike) -> str:
    """Read a prototxt as text, refusing binary or empty files with a clear message."""
    path = Path(path)
    raw = _read_input(path, "a Caffe net in prototxt form", limit=MAX_PROTOTXT_BYTES)
    if b"\x00" in raw[:4096]:
        raise ParseError(f"{path}: looks like a binary file, not a text prototxt "
                         "(was a .caffemodel given where a .prototxt was expected?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{path}: not UTF-8 text at byte {exc.start}; is this a prototxt?") from None
    if text.isspace():  # (strip() would copy the whole text)
        raise ParseError(f"{path}: only whitespace, expected a Caffe net in prototxt form")
    return text


def parse_prototxt(text: str, source: str) -> "ParsedNet":
    """Parse prototxt text: the raw NetParameter (not yet upgraded), each layer's line, and the
    fields the schema does not know (kept as plain data, see ninport.caffe.prototxt)."""
    from ninport.caffe.prototxt import parse_net

    return parse_net(text, source)


def parse_net_text(text: str, source: str) -> "object":
    """Parse prototxt text into a raw caffe_pb2.NetParameter (not yet upgraded; unknown fields
    are skipped here, use parse_prototxt to keep them)."""
    return parse_prototxt(text, source).net


def read_prototxt(path: str | os.PathLike) -> "object":
    """Read and parse a prototxt file into a raw NetParameter."""
    return parse_net_text(read_prototxt_text(path), str(path))


def layer_lines(text: str) -> list[int]:
    """Line numbers (1-based) of each top-level `layer {` / `layers {` block, in file order.

    Used only to point error messages at the right place; a scan of braces that skips strings
    and comments is enough, and cheaper than a second parse.
    """
    lines: list[int] = []
    newlines = [m.start() for m in re.finditer("\n", text)]
    depth, line, i, n = 0, 1, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                if text[j] == "\\":
                    j += 1
                if j < n and text[j] == "\n":
                    line += 1
                j += 1
            i = j + 1
            continue
        elif ch == "{":
            if depth == 0:
                start = i - 1
                while start >= 0 and text[start] in " \t\r\n:":
                    start -= 1
                word_end = start + 1
                while start >= 0 and (text[start].isalnum() or text[start] == "_"):
                    start -= 1
                if text[start + 1:word_end] in ("layer", "layers"):
                    lines.append(bisect.bisect_left(newlines, start + 1) + 1)
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        i += 1
    return lines


# ---------------------------------------------------------------------------------------------
# caffemodel: wire-level reader


@dataclass
class RawBlob:
    """One weight blob as stored: flat data plus whatever shape the file recorded."""

    data: np.ndarray                      # 1-D float32 or float64, possibly a view of the file
    shape: tuple[int, ...] | None = None  # BlobShape, when the file has one
    legacy_shape: tuple[int, int, int, int] | None = None  # num, channels, height, width

    @property
    def recorded_shape(self) -> tuple[int, ...]:
        if self.shape is not None:
            return self.shape
        if self.legacy_shape is not None:
            return self.legacy_shape
        return (int(self.data.size),)


@dataclass
class RawLayerWeights:
    name: str
    type: str
    blobs: list[RawBlob] = field(default_factory=list)


def _packed_varints(buf, span) -> list[int]:
    out, pos = [], span[0]
    while pos < span[1]:
        value, pos = _varint(buf, pos, span[1])
        out.append(value)
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# Blob data fields: field number -> (numpy dtype, wire type of one unpacked value).
_DATA_FIELDS = {_BLOB_DATA: ("<f4", 5), _BLOB_DOUBLE_DATA: ("<f8", 1)}
# Single unpacked values are gathered this many at a time (bounds the index array's memory).
_GATHER_CHUNK = 1 << 16


class _DataPieces:
    """Where one data field's values lie, in file order, noted without a Python object per value.

    Old writers emit `data` unpacked: one field (key byte, 4 bytes) per float. A run of such
    fields is noted as (first value's offset, count) and later viewed in place with a stride; a
    lone unpacked value costs 8 bytes (its offset in an int64 array); a packed span is viewed as is.
    """

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)
        self.parts: list[tuple[str, int, int]] = []  # ("packed", start, end) | ("run", offset, count)
        self.singles = array("q")                    # | ("singles", first index, end index)

    def add_packed(self, start: int, end: int) -> None:
        self.parts.append(("packed", start, end))

    def add_run(self, offset: int, count: int) -> None:
        self.parts.append(("run", offset, count))

    def add_single(self, offset: int) -> None:
        n = len(self.singles)
        if self.parts and self.parts[-1][0] == "singles":
            self.parts[-1] = ("singles", self.parts[-1][1], n + 1)
        else:
            self.parts.append(("singles", n, n + 1))
        self.singles.append(offset)


def _unpacked_run(buf, start: int, end: int, stride: int) -> int:
    """How many fields of `stride` bytes (one key byte, then the value) that repeat the key byte at
    `start` follow each other from there; looks ahead in doubling windows, so the cost is linear in
    the run's length, not in what is left of the blob."""
    key, limit = buf[start], (end - start) // stride
    keys = np.frombuffer(buf, dtype=np.uint8, count=limit * stride, offset=start)[::stride]
    count, window = 0, 64
    while count < limit:
        other = np.flatnonzero(keys[count:count + window] != key)
        if other.size:
            return count + int(other[0])
        count, window = min(limit, count + window), window * 2
    return limit


# Arrays of at least this many bytes get memory of their own from an anonymous mapping, populated at once:
# numpy advises the kernel to back its large arrays with huge pages, and where the kernel then compacts
# memory to find them (transparent_hugepage/defrag = madvise, a common default) filling a fresh numpy array
# took 1.5-2x as long as reading the file; a populated mapping takes less (VGG16: 0.56 s against 0.65 s).
_OWN_MAPPING_BYTES = 1 << 22
_MAPPING_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_POPULATE", 0)


def _new_array(count: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialized, writable, page-aligned (or numpy-aligned, when small) array of `count` values."""
    nbytes = count * dtype.itemsize
    if nbytes >= _OWN_MAPPING_BYTES:
        try:
            return np.frombuffer(mmap.mmap(-1, nbytes, flags=_MAPPING_FLAGS) if _MAPPING_FLAGS else
                                 mmap.mmap(-1, nbytes), dtype=dtype)
        except (OSError, ValueError):
            pass
    return np.empty(count, dtype=dtype)


class _SpanReader:
    """Reads a span of the file into a new array of its own (aligned, writable) with one read call and
    no intermediate bytes object, so the mapped file's pages are never touched for the data."""

    def __init__(self, fh):
        self.raw = getattr(fh, "raw", fh)

    def __call__(self, start: int, count: int, dtype: np.dtype) -> np.ndarray:
        out = _new_array(count, dtype)
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            self.raw.seek(start + done)
            got = self.raw.readinto(view[done:])
            if not got:  # the file shrank since it was mapped
                raise _Truncated(start + done)
            done += got
        return out


def _typed_array(buf, pieces: _DataPieces, read: _SpanReader | None = None) -> np.ndarray | None:
    """Join a data field's occurrences, in file order, into one array without a loop per value:
    packed spans and runs are views of the file, lone unpacked values one numpy gather per chunk.
    With `read`, the result owns its memory: a single packed span (what every current writer makes) is
    read from the file into it, anything else is copied out of the views."""
    dtype, width = pieces.dtype, pieces.dtype.itemsize
    arrays: list[np.ndarray] = []
    for kind, a, b in pieces.parts:
        if kind == "packed":
            if (b - a) % width:
                raise ValueError(f"packed {dtype.name} data length not a multiple of {width}")
            if read is not None and len(pieces.parts) == 1:
                return read(a, (b - a) // width, dtype)
            arrays.append(np.frombuffer(buf, dtype=dtype, count=(b - a) // width, offset=a))
        elif kind == "run":
            arrays.append(np.ndarray((b,), dtype=dtype, buffer=buf, offset=a, strides=(width + 1,)))
        else:
            raw = np.frombuffer(buf, dtype=np.uint8)
            offsets = np.frombuffer(pieces.singles, dtype=np.int64)[a:b]
            for i in range(0, offsets.size, _GATHER_CHUNK):
                index = offsets[i:i + _GATHER_CHUNK, None] + np.arange(width)
                arrays.append(raw[index].reshape(-1).view(dtype))
    if not arrays:
        return None
    if len(arrays) == 1 and arrays[0].flags.c_contiguous:
        return arrays[0]
    return np.concatenate(arrays)


def _read_blob(buf, start: int, end: int, keep_half: bool = False, read: _SpanReader | None = None) -> RawBlob:
    pieces = {number: _DataPieces(dtype) for number, (dtype, _) in _DATA_FIELDS.items()}
    legacy = [None, None, None, None]
    shape = None
    raw_span, raw_type = None, 0  # NVCaffe: raw_data_type defaults to DOUBLE, the enum's first value
    pos = start
    while pos < end:
        key_pos = pos
        number, wire, value, pos = _field_at(buf, pos, end)
        if number == _BLOB_RAW_DATA and wire == 2:
            raw_span = value
        elif number == _BLOB_RAW_DATA_TYPE and wire == 0:
            raw_type = value
        elif number in _DATA_FIELDS:
            if wire == 2:
                pieces[number].add_packed(*value)
            elif wire == _DATA_FIELDS[number][1]:
                stride = pos - key_pos
                if pos < end and buf[pos] == buf[key_pos] and stride == 1 + pieces[number].dtype.itemsize:
                    count = _unpacked_run(buf, key_pos, end, stride)  # the same one-byte key follows
                    pieces[number].add_run(value[0], count)
                    pos = key_pos + count * stride
                else:
                    pieces[number].add_single(value[0])
        elif number == _BLOB_SHAPE and wire == 2:
            dims: list[int] = []
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == _SHAPE_DIM:
                    dims.extend(_packed_varints(buf, v2) if w2 == 2 else [v2])
            shape = tuple(_signed64(d) for d in dims)
        elif number in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH) and wire == 0:
            legacy[number - 1] = _signed64(value)
    data = None
    if raw_span is not None:  # NVCaffe reads raw_data first when present
        if raw_type not in _RAW_DTYPES:
            raise ValueError(f"raw_data of type {raw_type} (NVCaffe INT/UINT/BOOL) is not a float blob")
        raw_pieces = _DataPieces(_RAW_DTYPES[raw_type])
        raw_pieces.add_packed(*raw_span)
        data = _typed_array(buf, raw_pieces, read)
        if data is None:
            data = np.zeros(0, dtype=_RAW_DTYPES[raw_type])
        if data.dtype == np.float16 and not keep_half:
            data = data.astype(np.float32)
    if data is None:
        data = _typed_array(buf, pieces[_BLOB_DATA], read)
    if data is None:
        data = _typed_array(buf, pieces[_BLOB_DOUBLE_DATA], read)
    if data is None:
        data = np.zeros(0, dtype=np.float32)
    legacy_shape = None
    if any(v is not None for v in legacy):
        legacy_shape = tuple(v if v is not None else 0 for v in legacy)
    return RawBlob(data=data, shape=shape, legacy_shape=legacy_shape)


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _read_layer(buf, start: int, end: int, name_no: int, type_no: int, blobs_no: int,
                keep_half: bool = False, read: _SpanReader | None = None):
    name, type_, blobs = "", "", []
    for number, wire, value in _fields(buf, start, end):
        if number == name_no and wire == 2:
            name = _text(buf, value)
        elif number == type_no:
            type_ = _text(buf, value) if wire == 2 else value
        elif number == blobs_no and wire == 2:
            blobs.append(_read_blob(buf, *value, keep_half=keep_half, read=read))
        elif number == _V1_V0LAYER and name_no == _V1_NAME and wire == 2:
            v0 = _read_layer(buf, *value, _V0_NAME, _V0_TYPE, _V0_BLOBS, keep_half, read)
            name, type_ = name or v0.name, type_ or v0.type
            blobs.extend(v0.blobs)
    return RawLayerWeights(name=name, type=str(type_), blobs=blobs)


def read_caffemodel(path: str | os.PathLike, *, keep_half: bool = False, mapped: bool = False) -> list[RawLayerWeights]:
    """Read every layer's weight blobs from a binary caffemodel (current, V1 or V0 layout, and
    NVCaffe's raw_data blobs).

    Layers without blobs are kept too (their names tell us the file's net). Each blob's array is its own
    (aligned, writable, sharing memory with nothing else): `ninport.load` makes its parameters from these
    arrays without copying them. With `mapped`, the arrays may instead be read-only views of the mapped
    file, read only when used (for checking shapes, as `inspect` does): copy before writing to them.
    NVCaffe fp16 blobs become float32 unless `keep_half`.
    """
    path = Path(path)
    with open_regular(path, "a binary .caffemodel") as fh:
        buf = _contents(fh, path, "a binary .caffemodel", mapped=True)
        read = None if mapped else _SpanReader(fh)
        layers: list[RawLayerWeights] = []
        with _wire_errors(path, len(buf), "a caffemodel"):
            for number, wire, value in _fields(buf, 0, len(buf)):
                if number == _NET_LAYER and wire == 2:
                    layers.append(_read_layer(buf, *value, _LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS, keep_half, read))
                elif number == _NET_LAYERS_V1 and wire == 2:
                    layers.append(_read_layer(buf, *value, _V1_NAME, _V1_TYPE, _V1_BLOBS, keep_half, read))
    if not layers:
        head = bytes(buf[:64])
        hint = " (it looks like text: was a prototxt given as weights?)" if head.isascii() else ""
        raise ParseError(f"{path}: no layers found; not a Caffe .caffemodel{hint}")
    return layers


def read_caffemodel_proto(path: str | os.PathLike) -> "object":
    """Parse a caffemodel fully with protobuf (slow for big nets; used by `upgrade`)."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    data = bytes(_read_input(path, "a binary .caffemodel", mapped=True))
    net = _caffe_pb2().NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ParseError(f"{path}: not a valid caffemodel ({' '.join(str(exc).split()) or 'decode error'})") from None
    if not net.layer and not net.layers:
        raise ParseError(f"{path}: no layers found; not a Caffe .caffemodel")
    return net


MAX_MEAN_FILE_BYTES = 2 ** 28  # a 3 x 4096 x 4096 float mean image is 200 MB


def read_named_mean_file(path: str | os.PathLike, prototxt: str | os.PathLike, name: str) -> np.ndarray:
    """`read_mean_binaryproto` of the file a prototxt's transform_param names (`name`, found at `path`).

    A mean file outside the prototxt's folder (an absolute path, `..`, a link that leads out, or one found in
    the current folder) is still read, as Caffe would, but with a NinportWarning naming it: a model file
    chose which file on this machine ninport opens.
    """
    import warnings

    from ninport.errors import NinportWarning, safe_text

    path = Path(path)
    try:
        resolved = path.resolve()
        inside = resolved.is_relative_to(Path(prototxt).resolve().parent)
    except (OSError, RuntimeError):  # a symlink loop: read_mean_binaryproto names the failure
        resolved, inside = path, False
    if not inside:
        warnings.warn(f"{prototxt}: its mean_file {safe_text(name, 120)!r} is {safe_text(resolved, 200)}, outside "
                      "the prototxt's folder; reading it as the net's mean image", NinportWarning, stacklevel=3)
    return read_mean_binaryproto(path)


def read_mean_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """Read a Caffe mean file (`.binaryproto`: one serialized BlobProto) as a float32 (C, H, W) array.

    The channels are in the file's order, which for Caffe means is BGR. The shape comes from the
    blob's `shape` or, in older files, its legacy num/channels/height/width (num must be 1). Empty,
    truncated or garbage files, and blobs that are not one image (e.g. a weight blob), raise a
    ParseError naming the file. Like Caffe, `double_data` is used when `data` is absent. Only a
    regular file of at most MAX_MEAN_FILE_BYTES is read (a FIFO or /dev/zero is refused at once).
    """
    from ninport.fileio import read_bounded

    path = Path(path)
    buf = read_bounded(path, MAX_MEAN_FILE_BYTES, ".binaryproto mean file")
    if not buf:
        raise ParseError(f"{path}: empty file, expected a .binaryproto mean file")
    with _wire_errors(path, len(buf), "a .binaryproto mean file"):
        blob = _read_blob(buf, 0, len(buf))
    if blob.data.size == 0:
        raise ParseError(f"{path}: no blob data found; not a .binaryproto mean file")
    if blob.shape is None and blob.legacy_shape is None:
        raise ParseError(f"{path}: the blob records no shape; not a .binaryproto mean file")
    shape = blob.recorded_shape
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 4:
        raise ParseError(f"{path}: the blob has shape {list(blob.recorded_shape)}, {shape[0]} images; "
                         "a mean file holds one (1, C, H, W) image")
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise ParseError(f"{path}: the blob has shape {list(blob.recorded_shape)}; "
                         "a mean file holds one (1, C, H, W) or (C, H, W) image")
    count = math.prod(shape)  # Python ints: np.prod wraps around (2**62+1 x 4 "is" 4)
    if blob.data.size != count:
        raise ParseError(f"{path}: the blob has shape {list(blob.recorded_shape)} ({count:,} values) "
                         f"but holds {blob.data.size:,} values")
    return np.array(blob.data, dtype=np.float32).reshape(shape)
