"""An image's width and height from its header, read the way the decoder will read it.

A 200-byte PNG can declare 100,000 x 100,000 pixels; a decoder would allocate 30 GB for it before
finding out the data is missing (a decompression bomb). Reading the header first lets `predict`
refuse such an image with one line. Formats read here: PNG, JPEG, BMP, GIF, WebP, TIFF and the
PNM family (PBM/PGM/PPM/PAM); any other is refused, since its size cannot be known before decoding.

The size that matters is the one the decoder allocates, so each reader follows the decoders
(OpenCV's, which uses libpng, libjpeg, libtiff and libwebp, and Pillow's) and refuses a header that
they could read differently: a second PNG IHDR or JPEG frame header (Pillow keeps the last, libpng and
libjpeg the first or none), contradictory duplicate TIFF ImageWidth/ImageLength tags (libtiff keeps
the first, Pillow the last), TIFF tiles larger than the image, a GIF whose first frame lies outside
its screen (Pillow grows the image to fit it), a PAM field given twice. PNM comments end at CR or LF
as OpenCV's do.
"""
from __future__ import annotations

import struct

FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PNM"
TEXT_HEADER_BYTES = 1 << 20   # a PNM/PAM header (numbers, comments) must end within this many bytes
MAX_HEADER_BLOCKS = 100_000   # chunks, segments or blocks walked before the first image data
MAX_TIFF_TILE_PIXELS = 1 << 20  # a tile may exceed the image (small images in big tiles) up to this


class HeaderError(ValueError):
    """The header is truncated or inconsistent, or the format is not one listed in FORMATS."""


def _png(data: bytes) -> tuple[int, int]:
    """IHDR, which must be the first chunk; a second one before the image data is refused."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("PNG without an IHDR header")
    size = struct.unpack(">II", data[16:24])
    pos = 8
    for _ in range(MAX_HEADER_BLOCKS):
        if pos + 8 > len(data):
            return size
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            return size
        if kind == b"IHDR" and pos != 8:
            raise HeaderError("PNG with a second IHDR header (decoders disagree on which one counts)")
        pos += 12 + length
    raise HeaderError(f"PNG with more than {MAX_HEADER_BLOCKS:,} chunks before its image data")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int]:
    """The frame header (SOF); every marker up to the scan is read, and a second frame header refused."""
    pos, size = 2, None
    for _ in range(MAX_HEADER_BLOCKS):
        if pos + 4 > len(data):
            break
        if data[pos] != 0xFF:  # junk between segments: libjpeg and Pillow skip to the next 0xFF, so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x00, 0x01, *range(0xD0, 0xD8)):  # a stuffed 0xFF (junk), markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: the header is over
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            raise HeaderError("JPEG segment with an invalid length")
        if marker in _SOF:
            if size is not None:
                raise HeaderError("JPEG with two frame headers (SOF); decoders disagree on which one counts")
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = width, height
        pos += 2 + length
    else:
        raise HeaderError(f"JPEG with more than {MAX_HEADER_BLOCKS:,} segments before its image data")
    if size is None:
        raise HeaderError("JPEG without a frame header (SOF)")
    return size


def _bmp(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise HeaderError("truncated BMP header")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _gif(data: bytes) -> tuple[int, int]:
    """The logical screen; the first frame must lie inside it (OpenCV refuses otherwise, Pillow grows the
    image to hold it)."""
    if len(data) < 13:
        raise HeaderError("truncated GIF header")
    width, height = struct.unpack("<HH", data[6:10])
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = 0  # extensions and their sub-blocks
    while pos < len(data):
        block = data[pos]
        if block == 0x2C:  # image descriptor
            if pos + 9 > len(data):
                break
            left, top, frame_w, frame_h = struct.unpack("<HHHH", data[pos + 1:pos + 9])
            if left + frame_w > width or top + frame_h > height:
                raise HeaderError(f"GIF whose first frame ({frame_w}x{frame_h} at {left},{top}) lies outside "
                                  f"its {width}x{height} screen")
            return width, height
        if block != 0x21:
            raise HeaderError("GIF without an image" if block == 0x3B else "GIF blocks out of sync")
        pos += 2  # an extension: its label, then sub-blocks up to an empty one
        while pos < len(data) and data[pos]:
            pos += 1 + data[pos]
            blocks += 1
            if blocks > MAX_HEADER_BLOCKS:
                raise HeaderError(f"GIF with more than {MAX_HEADER_BLOCKS:,} blocks before its first frame")
        pos += 1
    raise HeaderError("truncated GIF: no frame header")


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise HeaderError("WebP without a VP8/VP8L/VP8X header")


_TIFF_TAGS = {256: "ImageWidth", 257: "ImageLength", 322: "TileWidth", 323: "TileLength"}


def _tiff(data: bytes) -> tuple[int, int]:
    """ImageWidth/ImageLength of the first directory (the page decoders read), each a single SHORT or
    LONG; a tag given twice with different values is refused (libtiff keeps the first, Pillow the last)."""
    order = "<" if data[:2] == b"II" else ">"
    found: dict[int, int] = {}
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        for i in range(count):
            entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, kind, n = struct.unpack(order + "HHI", entry[:8])
            if tag not in _TIFF_TAGS:
                continue
            if kind not in (3, 4) or n != 1:
                raise HeaderError(f"TIFF {_TIFF_TAGS[tag]} is not one SHORT or LONG value")
            (value,) = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])
            if found.setdefault(tag, value) != value:
                raise HeaderError(f"TIFF with two different {_TIFF_TAGS[tag]} values ({found[tag]} and {value}) "
                                  "in its first directory; decoders disagree on which one counts")
    except struct.error:
        raise HeaderError("truncated TIFF header") from None
    if 256 not in found or 257 not in found:
        raise HeaderError("TIFF without ImageWidth/ImageLength in its first directory")
    width, height = found[256], found[257]
    tile = found.get(322, 0) * found.get(323, 0)
    if tile > max(width * height, MAX_TIFF_TILE_PIXELS):
        raise HeaderError(f"TIFF tiles of {found[322]}x{found[323]} pixels for a {width}x{height} image")
    return width, height


_SPACE = b" \t\n\v\f\r"
MAX_DIGITS = 10  # a PNM/PAM number with more significant digits is beyond any decoder's int


def _number(digits: bytes, what: str) -> int:
    significant = digits.lstrip(b"0")
    if len(significant) > MAX_DIGITS:
        raise HeaderError(f"{what} has {len(significant):,} digits; decoders read at most a 32-bit number")
    return int(significant or b"0")


def _pnm(data: bytes) -> tuple[int, int]:
    """Width and height as OpenCV's PxM reader takes them: whitespace and `#` comments (to CR or LF)
    before each number."""
    if data[:2] == b"P7":
        return _pam(data)
    if len(data) < 3 or data[2] not in _SPACE:
        raise HeaderError("PNM magic number not followed by whitespace")
    header = data[:TEXT_HEADER_BYTES]
    pos, values = 2, []
    for what in ("PNM width", "PNM height"):
        while pos < len(header) and not 0x30 <= header[pos] <= 0x39:
            if header[pos] == 0x23:  # '#': a comment up to CR or LF
                ends = [e for e in (header.find(b"\n", pos), header.find(b"\r", pos)) if e >= 0]
                if not ends:
                    break
                pos = min(ends) + 1
            elif header[pos] in _SPACE:
                pos += 1
            else:
                raise HeaderError(f"unexpected byte {header[pos]:#04x} in the PNM header")
        start = pos
        while pos < len(header) and 0x30 <= header[pos] <= 0x39:
            pos += 1
        if start == pos or pos == len(header):
            raise HeaderError(f"PNM header without width and height in its first {TEXT_HEADER_BYTES:,} bytes")
        values.append(_number(header[start:pos], what))
    return values[0], values[1]


def _pam(data: bytes) -> tuple[int, int]:
    """WIDTH and HEIGHT lines up to ENDHDR, as OpenCV's PAM reader takes them; a field given twice is refused."""
    if len(data) < 3 or data[2] not in b"\r\n":
        raise HeaderError("PAM magic number not followed by a line break")
    fields: dict[bytes, int] = {}
    for line in data[3:TEXT_HEADER_BYTES].replace(b"\r", b"\n").split(b"\n")[:-1]:  # complete lines only
        parts = line.split(None, 1)
        if not parts or parts[0].startswith(b"#"):
            continue
        name = parts[0]
        if name == b"ENDHDR":
            break
        if name in (b"WIDTH", b"HEIGHT"):
            what = f"PAM {name.decode()}"
            value = parts[1].strip() if len(parts) == 2 else b""
            if not value.isdigit():
                raise HeaderError(f"{what} is not a number")
            if name in fields:
                raise HeaderError(f"PAM header gives {name.decode()} twice")
            fields[name] = _number(value, what)
    else:
        raise HeaderError(f"PAM header without ENDHDR in its first {TEXT_HEADER_BYTES:,} bytes")
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        raise HeaderError("PAM without WIDTH and HEIGHT")
    return fields[b"WIDTH"], fields[b"HEIGHT"]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image file's bytes (all of them: some headers point far into the file);
    HeaderError if not readable, or readable in two ways."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    if len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"1234567":
        return _pnm(data)
    raise HeaderError(f"not an image format whose size ninport can check before decoding ({FORMATS})")
