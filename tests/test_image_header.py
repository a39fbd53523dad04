"""Image sizes read from headers (ninport.image_header), checked against OpenCV's decoder where it writes
the format, and built by hand for the rest."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from ninport.image_header import HeaderError, image_size


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tiff", ".ppm", ".pgm", ".webp"])
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
    assert image_size(b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 8) == (320, 200)
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
