"""Image sizes read from headers (ninport.apps.image_header), checked against OpenCV's decoder where it writes
the format, and built by hand for the rest."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from ninport.apps.image_header import HeaderError, image_size


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tiff", ".ppm", ".pgm", ".webp", ".gif", ".pam"])
@pytest.mark.parametrize("height, width", [(1, 1), (17, 300), (513, 2)])
def test_matches_opencv(tmp_path, suffix, height, width):
    cv2 = pytest.importorskip("cv2")
    image = np.zeros((height, width, 3), np.uint8)
    if suffix == ".pgm":
        image = image[:, :, 0]
    ok, encoded = cv2.imencode(suffix, image)
    assert ok
    data = encoded.tobytes()
    assert image_size(data) == (width, height)
    assert cv2.imdecode(encoded, cv2.IMREAD_COLOR).shape[:2] == (height, width)


def test_jpeg_skips_large_app_segments():
    app = b"\xff\xe1" + struct.pack(">H", 60000) + b"\0" * 59998
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, 480, 640, 3) + b"\0" * 3
    assert image_size(b"\xff\xd8" + app + app + sof) == (640, 480)


def test_gif_webp_variants_and_pam():
    assert image_size(_gif((320, 200), (0, 0, 320, 200))) == (320, 200)
    vp8x = b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + (999).to_bytes(3, "little") + (499).to_bytes(3, "little")
    assert image_size(vp8x) == (1000, 500)
    vp8l = b"RIFF\0\0\0\0WEBPVP8L" + b"\0" * 5 + struct.pack("<I", (99) | (49 << 14))
    assert image_size(vp8l) == (100, 50)
    assert image_size(b"P7\nWIDTH 12\nHEIGHT 34\nDEPTH 3\nMAXVAL 255\nENDHDR\n") == (12, 34)
    assert image_size(b"P6\n# a comment\n 70000 80000\n255\n") == (70000, 80000)
    assert image_size(b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 2)
                      + struct.pack(">HHII", 256, 4, 1, 50000) + struct.pack(">HHIHH", 257, 3, 1, 40000, 0)) \
        == (50000, 40000)


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xda\0\x02", b"\xff\xd8\x00",
                                  b"BM\0", b"II*\0\xff\xff\xff\xff", b"P6 x", b"RIFF\0\0\0\0WEBPVP8 ",
                                  b"v/1\x01 OpenEXR", b"\0\0\0\x0cjP  \r\n"])
def test_unreadable_or_unknown_headers(data):
    with pytest.raises(HeaderError):
        image_size(data)


# --- headers a decoder reads differently from a naive reader: read as the decoder does, or refused ---------


def _tiff(entries, order="<") -> bytes:
    """A TIFF whose first directory holds `entries` (tag, type, count, value), in the given order."""
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    body = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        field = struct.pack(order + "HH", value, 0) if kind == 3 else struct.pack(order + "I", value)
        body += struct.pack(order + "HHI", tag, kind, count) + field
    return head + body + b"\0\0\0\0"


def test_tiff_contradictory_duplicate_size_tags_refused():
    """libtiff keeps the first ImageWidth/ImageLength, Pillow the last: 20000x20000 first, 1x1 after is
    neither's business to guess (it was decoded as 4x10^8 pixels behind a 1x1 check)."""
    bomb = _tiff([(256, 4, 1, 20000), (257, 4, 1, 20000), (256, 3, 1, 1), (257, 3, 1, 1)])
    with pytest.raises(HeaderError, match="two different ImageWidth values"):
        image_size(bomb)
    same = _tiff([(256, 4, 1, 300), (257, 4, 1, 200), (256, 3, 1, 300), (257, 4, 1, 200)], ">")
    assert image_size(same) == (300, 200)


@pytest.mark.parametrize("entry", [(256, 1, 1, 5), (256, 16, 1, 5), (256, 4, 2, 5), (256, 9, 1, 5)])
def test_tiff_size_of_an_unexpected_type_refused(entry):
    with pytest.raises(HeaderError, match="not one SHORT or LONG"):
        image_size(_tiff([entry, (257, 4, 1, 5)]))


def test_tiff_tiles_far_larger_than_the_image_refused():
    """OpenCV allocates one tile (up to 1 GB) whatever the image size."""
    tiles = [(256, 4, 1, 1), (257, 4, 1, 1), (322, 4, 1, 16384), (323, 4, 1, 16384)]
    with pytest.raises(HeaderError, match="tiles of 16384x16384 pixels for a 1x1 image"):
        image_size(_tiff(tiles))
    small = [(256, 4, 1, 100), (257, 4, 1, 100), (322, 3, 1, 256), (323, 3, 1, 256)]  # a small image, one tile
    assert image_size(_tiff(small)) == (100, 100)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_second_ihdr_refused():
    """libpng refuses a second IHDR; Pillow would take it."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    big = _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"tEXt", b"a\0b") + big + _chunk(b"IDAT", b"")
    with pytest.raises(HeaderError, match="second IHDR"):
        image_size(data)
    assert image_size(data.replace(big, b"")) == (1, 1)


def test_jpeg_second_frame_header_refused():
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 1, 1, 3) + b"\0" * 3
    big = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, 20000, 20000, 3) + b"\0" * 3
    with pytest.raises(HeaderError, match="two frame headers"):
        image_size(b"\xff\xd8" + sof + big + b"\xff\xda\0\x02")
    assert image_size(b"\xff\xd8" + sof + b"\xff\xda\0\x02" + big) == (1, 1)  # after the scan: data
    with pytest.raises(HeaderError, match="two frame headers"):  # decoders skip junk: Pillow would take `big`
        image_size(b"\xff\xd8" + sof + b"junk" + big + b"\xff\xda\0\x02")
    assert image_size(b"\xff\xd8junk" + sof + b"\0junk\xff\xda\0\x02") == (1, 1)
    with pytest.raises(HeaderError, match="two frame headers"):  # 0xFF 0x00 is junk too, not a segment
        image_size(b"\xff\xd8" + sof + b"\xff\x00\x00\x40" + big + b"\xff\xda\0\x02")


def _gif(screen, frame, extensions=b"") -> bytes:
    table = b"\0" * 6  # a global color table of 2 entries
    return (b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + table + extensions + b"\x2c"
            + struct.pack("<HHHHB", *frame, 0) + b"\x02\x02\x4c\x01\0\x3b")


def test_gif_first_frame_must_lie_on_the_screen():
    """OpenCV refuses a frame outside the logical screen; Pillow grows the image to hold it."""
    comment = b"\x21\xfe" + b"\x05hello" + b"\x03abc" + b"\0"
    assert image_size(_gif((4, 3), (1, 1, 3, 2), comment)) == (4, 3)
    with pytest.raises(HeaderError, match="lies outside its 1x1 screen"):
        image_size(_gif((1, 1), (0, 0, 20000, 20000), comment))


def test_pnm_comment_ends_at_carriage_return_as_in_opencv():
    """`#c\\r3 2`: the comment ends at CR, so the image is 3x2 (a reader ending it at LF took 255 as the width)."""
    cv2 = pytest.importorskip("cv2")
    data = b"P5\n#c\r3 2\n255\n" + bytes(range(6))
    assert image_size(data) == (3, 2)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).shape == (2, 3)


def test_pnm_numbers_of_thousands_of_digits_are_one_error():
    with pytest.raises(HeaderError, match="5,000 digits"):
        image_size(b"P6\n" + b"9" * 5000 + b" 1\n255\n")
    assert image_size(b"P6\n" + b"0" * 5000 + b"7 1\n255\n") == (7, 1)  # leading zeros: still 7


def test_pam_read_as_opencv_does():
    cv2 = pytest.importorskip("cv2")
    pixels = bytes(range(6))
    data = b"P7\n  WIDTH 3\n# a comment\nHEIGHT 2\nDEPTH 1\nMAXVAL 255\nENDHDR\n" + pixels
    assert image_size(data) == (3, 2)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).shape == (2, 3)
    with pytest.raises(HeaderError, match="WIDTH twice"):
        image_size(b"P7\nWIDTH 1\nHEIGHT 1\nWIDTH 20000\nENDHDR\n")
    with pytest.raises(HeaderError, match="without ENDHDR"):
        image_size(b"P7\nWIDTH 1\nHEIGHT 1\n")
