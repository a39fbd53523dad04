"""An image's width and height from its header, before anything is decoded.

A 200-byte PNG can declare 100,000 x 100,000 pixels; a decoder would allocate 30 GB for it before
finding out the data is missing (a decompression bomb). Reading the header first lets `predict`
refuse such an image with one line. Formats read here: PNG, JPEG, BMP, GIF, WebP, TIFF and the
PNM family (PBM/PGM/PPM/PAM); any other is refused, since its size cannot be known before decoding.
"""
from __future__ import annotations

import re
import struct

FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PNM"


class HeaderError(ValueError):
    """The header is truncated or inconsistent, or the format is not one listed in FORMATS."""


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("PNG without an IHDR header")
    return struct.unpack(">II", data[16:24])


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise HeaderError("JPEG markers out of sync")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            raise HeaderError("JPEG segment with an invalid length")
        if marker in _SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before the data
            break
        pos += 2 + length
    raise HeaderError("JPEG without a frame header (SOF)")


def _bmp(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise HeaderError("truncated BMP header")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _gif(data: bytes) -> tuple[int, int]:
    if len(data) < 10:
        raise HeaderError("truncated GIF header")
    return struct.unpack("<HH", data[6:10])


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


def _tiff(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        found = {}
        for i in range(count):
            entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                value = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
                found[tag] = value
    except struct.error:
        raise HeaderError("truncated TIFF header") from None
    if 256 not in found or 257 not in found:
        raise HeaderError("TIFF without ImageWidth/ImageLength in its first directory")
    return found[256], found[257]


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\d+)")


def _pnm(data: bytes) -> tuple[int, int]:
    if data[:2] == b"P7":  # PAM: WIDTH / HEIGHT lines
        width = re.search(rb"\nWIDTH\s+(\d+)", data[:4096])
        height = re.search(rb"\nHEIGHT\s+(\d+)", data[:4096])
        if not (width and height):
            raise HeaderError("PAM without WIDTH and HEIGHT")
        return int(width[1]), int(height[1])
    pos, values = 2, []
    for _ in range(2):
        match = _PNM_TOKEN.match(data, pos)
        if not match:
            raise HeaderError("PNM header without width and height")
        values.append(int(match[1]))
        pos = match.end()
    return values[0], values[1]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first bytes of an image file (HeaderError if not readable)."""
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
