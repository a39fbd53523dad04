"""`ninport predict`: classify images with a converted net, preprocessing them the way Caffe did.

Images are read as BGR 0-255 (OpenCV when installed, else Pillow, or a saved HxWxC `.npy` array),
resized to the mean image's size (or to `resize`), then `ninport.preprocess.caffe_transform`
crops, subtracts the mean and scales exactly as Caffe's DataTransformer. The scores are the net's
first output, flattened per image (e.g. NIN's 1000x1x1 `pool4`, or a Softmax `prob`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ninport.errors import ParseError, PreprocessError

MAX_IMAGE_PIXELS = 2 ** 27          # width x height of one image (e.g. 11,585 x 11,585)
MAX_IMAGE_FILE_BYTES = 2 ** 30


def _check_image_size(path: Path, height: int, width: int, channels: int = 3) -> None:
    if height <= 0 or width <= 0:
        raise PreprocessError(f"{path}: the image is {height}x{width} pixels; nothing to classify")
    if height * width > MAX_IMAGE_PIXELS or height * width * channels > MAX_IMAGE_PIXELS * 4:
        raise PreprocessError(f"{path}: the image is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                              "ninport decodes; resize it first")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an HxWx3 uint8 BGR array (or a `.npy` HxWxC array as saved).

    Only regular files are read (a FIFO or device is refused at once), at most MAX_IMAGE_FILE_BYTES,
    and the size the header declares is checked against MAX_IMAGE_PIXELS before decoding (see
    ninport.image_header: a small file can declare a huge image).
    """
    from ninport.fileio import load_npy, read_bounded
    from ninport.image_header import HeaderError, image_size

    path = Path(path)
    if path.suffix == ".npy":
        array = load_npy(path)
        if array.ndim not in (2, 3):
            raise PreprocessError(f"{path}: expected an HxW or HxWxC image array, got shape {list(array.shape)}")
        _check_image_size(path, array.shape[0], array.shape[1], array.shape[2] if array.ndim == 3 else 1)
        return array
    data = read_bounded(path, MAX_IMAGE_FILE_BYTES, "image file")
    try:
        width, height = image_size(data[:1 << 20])
    except HeaderError as exc:
        raise ParseError(f"{path}: {exc}") from None
    _check_image_size(path, height, width)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ParseError(f"{path}: OpenCV cannot decode this image")
        return image
    try:
        from PIL import Image
    except ImportError:
        raise PreprocessError("reading image files needs OpenCV or Pillow (pip install 'opencv-python-headless<5' "
                              "or pillow); a saved HxWx3 BGR .npy array works without either") from None
    import io

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's own bomb check, as a second line
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))[:, :, ::-1].copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ParseError(f"{path}: Pillow cannot decode this image ({exc})") from None


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, as Caffe's tools do with OpenCV (cv2.resize) before the transform."""
    if image.shape[:2] == (height, width):
        return image
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        raise PreprocessError(f"cannot resize to {height}x{width}: more than the {MAX_IMAGE_PIXELS:,} pixels "
                              "ninport handles, or empty")
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    try:
        from PIL import Image
    except ImportError:
        raise PreprocessError("resizing images needs OpenCV or Pillow; give an image of the net's input "
                              f"size ({height}x{width}) or install one of them") from None
    channels = [Image.fromarray(np.ascontiguousarray(image[:, :, c])) for c in range(image.shape[2])]
    return np.stack([np.asarray(ch.resize((width, height), Image.BILINEAR)) for ch in channels], axis=2)


@dataclass
class Prediction:
    image: str
    top: list[tuple[int, float]]  # (class index, score), best first


def read_labels(path: str | os.PathLike) -> list[str]:
    """One label per line (e.g. Caffe's synset_words.txt); a regular UTF-8 file of bounded size."""
    from ninport.fileio import read_text_bounded

    return read_text_bounded(path, "labels file").splitlines()


def top_classes(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (index, score) pairs; ties keep the lower index first."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-flat, kind="stable")[: max(1, k)]
    return [(int(i), float(flat[i])) for i in order]
