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

from ninport.caffe.io import check_is_file
from ninport.errors import ParseError, PreprocessError


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an HxWx3 uint8 BGR array (or a `.npy` HxWxC array as saved)."""
    path = Path(path)
    check_is_file(path)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ParseError(f"{path}: not a numpy array file ({exc})") from None
        if array.ndim not in (2, 3):
            raise PreprocessError(f"{path}: expected an HxW or HxWxC image array, got shape {list(array.shape)}")
        return array
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ParseError(f"{path}: OpenCV cannot decode this image")
        return image
    try:
        from PIL import Image
    except ImportError:
        raise PreprocessError("reading image files needs OpenCV or Pillow (pip install 'opencv-python-headless<5' "
                              "or pillow); a saved HxWx3 BGR .npy array works without either") from None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))[:, :, ::-1].copy()
    except OSError as exc:
        raise ParseError(f"{path}: Pillow cannot decode this image ({exc})") from None


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, as Caffe's tools do with OpenCV (cv2.resize) before the transform."""
    if image.shape[:2] == (height, width):
        return image
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
    """One label per line (e.g. Caffe's synset_words.txt)."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ParseError(f"{path}: cannot read labels: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ParseError(f"{path}: labels file is not UTF-8 text") from None


def top_classes(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (index, score) pairs; ties keep the lower index first."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-flat, kind="stable")[: max(1, k)]
    return [(int(i), float(flat[i])) for i in order]
