"""`ninport predict`: classify images with a converted net, preprocessing them the way Caffe did.

Images are read as BGR 0-255 (OpenCV when installed, else Pillow, or a saved HxWxC `.npy` array),
resized to the mean image's size (or to `resize`), then `ninport.preprocess.caffe_transform`
crops, subtracts the mean and scales exactly as Caffe's DataTransformer. The scores are the net's
first output, flattened per image (e.g. NIN's 1000x1x1 `pool4`, or a Softmax `prob`).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ninport.caffe.spec import Preprocess
from ninport.errors import NinportWarning, ParseError, PreprocessError, safe_text
from ninport.fileio import check_regular_file
from ninport.preprocess import caffe_transform

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


def read_labels(path: str | os.PathLike) -> list[str]:
    """One label per line (e.g. Caffe's synset_words.txt); a regular UTF-8 file of bounded size."""
    from ninport.fileio import read_text_bounded

    return read_text_bounded(path, "labels file").splitlines()


def top_classes(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (index, score) pairs; ties keep the lower index first."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-flat, kind="stable")[: max(1, k)]
    return [(int(i), float(flat[i])) for i in order]


# --- the predict flow: preprocessing rules, then the net -----------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """What `predict` does to each image before the net, and where each setting came from."""

    resize: tuple[int, int]           # (H, W) every image is resized to first (bilinear)
    crop: int                         # center crop size, 0 for none
    mean_values: tuple[float, ...]    # per-channel means (BGR), or () when a mean image or no mean is used
    mean_file: str | None             # the .binaryproto mean image used, if any
    scale: float
    origin: tuple[str, ...]           # one note per setting, e.g. "crop 224 from the prototxt's transform_param"
    mean: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def subtracts_mean(self) -> bool:
        return self.mean is not None or bool(self.mean_values)

    def describe(self) -> str:
        """One line, e.g. `resize 256x256, crop 224, mean values 104,117,123 (--mean-values), scale 1`."""
        return "; ".join(self.origin)


@dataclass(frozen=True)
class ClassScore:
    index: int
    score: float
    label: str | None = None


@dataclass(frozen=True)
class Prediction:
    image: str
    top: tuple[ClassScore, ...]   # best first; empty for a detector
    detections: tuple | None = None  # a detector's boxes (ninport.detect.Detection), in the original image's pixels
    drawing: str | None = None        # where the boxes were drawn, if asked


@dataclass(frozen=True)
class PredictResult:
    prototxt: str
    weights: str | None           # None: seeded random weights (a NinportWarning said so)
    input: str                    # the net's image input blob
    preprocessing: Preprocessing
    predictions: tuple[Prediction, ...]


def _find_mean_file(name: str, prototxt: Path) -> Path | None:
    """A transform_param mean_file: beside the prototxt first, then as given (Caffe's working folder)."""
    path = Path(name)
    for candidate in ([path] if path.is_absolute() else [prototxt.parent / path, path]):
        if candidate.is_file():
            return candidate
    return None


def resolve_preprocessing(prototxt: str | os.PathLike, input_shape: tuple[int, ...], net: Preprocess | None, *,
                          mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
                          scale: float | None = None, crop: int | None = None,
                          resize: tuple[int, int] | None = None) -> Preprocessing:
    """The settings `predict` uses: the arguments given, else the net's transform_param, else defaults.

    Warns (NinportWarning) when no mean is subtracted because neither the net nor the caller gives one,
    and when the prototxt names a mean_file that is not found. Raises PreprocessError for settings
    Caffe would refuse (a mean file and mean values together, a crop larger than the resize, ...).
    """
    from ninport.caffe.io import read_mean_binaryproto

    prototxt = Path(prototxt)
    if len(input_shape) != 4:
        raise PreprocessError(f"{prototxt}: predict needs a net with one N,C,H,W image input, "
                              f"not {list(input_shape)}")
    channels, height, width = input_shape[1:]
    origin: list[str] = []
    if mean_file is not None and mean_values:
        raise PreprocessError("give a mean file or mean values, not both (Caffe refuses both too)")
    for value, name in ((crop, "crop"), (scale, "scale")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise PreprocessError(f"{name} must be a number, got {type(value).__name__}")
    if crop is not None and (not float(crop).is_integer() or crop <= 0):
        raise PreprocessError(f"crop must be a positive integer, got {crop}")
    if scale is not None and not np.isfinite(scale):
        raise PreprocessError(f"scale must be a finite number, got {scale}")

    mean, used_file, values = None, None, ()
    if mean_file is not None:
        used_file = Path(mean_file)
        mean = read_mean_binaryproto(used_file)
        origin.append(f"mean image {used_file} (--mean-file)")
    elif mean_values:
        values = tuple(float(v) for v in mean_values)
        if not all(np.isfinite(values)):
            raise PreprocessError(f"mean values must be finite numbers, got {list(values)}")
        origin.append(f"mean values {','.join(f'{v:g}' for v in values)} (given)")
    elif net is not None and net.mean_file:
        if net.mean_values:
            raise PreprocessError(f"{prototxt}: transform_param gives both mean_file and mean_value; "
                                  "Caffe refuses this too")
        found = _find_mean_file(net.mean_file, prototxt)
        if found is None:
            warnings.warn(f"{prototxt}: its mean_file {safe_text(net.mean_file, 120)!r} is not found (looked beside "
                          "the prototxt and in the current folder), so NO mean is subtracted: give --mean-file or "
                          "--mean-values", NinportWarning, stacklevel=2)
            origin.append("no mean (the prototxt's mean_file is missing)")
        else:
            used_file, mean = found, read_mean_binaryproto(found)
            origin.append(f"mean image {found} (the prototxt's mean_file)")
    elif net is not None and net.mean_values:
        values = tuple(float(v) for v in net.mean_values)
        origin.append(f"mean values {','.join(f'{v:g}' for v in values)} (the prototxt's transform_param)")
    else:
        warnings.warn(f"{prototxt}: the net gives no mean and none was given, so raw 0-255 pixels are fed; "
                      "most Caffe models expect a mean subtracted (e.g. --mean-values 104,117,123)",
                      NinportWarning, stacklevel=2)
        origin.append("no mean (raw 0-255 pixels)")
    if mean is not None and (mean.ndim != 3 or mean.shape[0] != channels):
        raise PreprocessError(f"{used_file}: mean image of shape {list(mean.shape)} for a net taking {channels} "
                              "channel(s)")

    if crop is not None:
        crop_size, crop_from = int(crop), "given"
    elif net is not None and net.crop_size:
        crop_size, crop_from = int(net.crop_size), "the prototxt's transform_param"
    else:
        crop_size, crop_from = 0, ""
    if scale is not None:
        used_scale, scale_from = float(scale), "given"
    elif net is not None and net.scale != 1:
        used_scale, scale_from = float(net.scale), "the prototxt's transform_param"
    else:
        used_scale, scale_from = 1.0, "default"

    if resize is not None:
        target, resize_from = (int(resize[0]), int(resize[-1])), "given"
        if min(target) <= 0:
            raise PreprocessError(f"resize must be positive, got {list(resize)}")
    elif mean is not None:
        target, resize_from = (int(mean.shape[1]), int(mean.shape[2])), "the mean image's size"
    elif crop_size:
        target, resize_from = (max(height, crop_size), max(width, crop_size)), "the net's input size"
    else:
        target, resize_from = (height, width), "the net's input size"
    origin.insert(0, f"resize to {target[0]}x{target[1]} ({resize_from})")
    origin.insert(1, f"center crop {crop_size} ({crop_from})" if crop_size else "no crop")
    origin.append(f"scale {used_scale:g} ({scale_from})")
    if crop_size and (crop_size > target[0] or crop_size > target[1]):
        raise PreprocessError(f"crop {crop_size} is larger than the resized image {target[0]}x{target[1]}")
    out_hw = (crop_size, crop_size) if crop_size else target
    if out_hw != (height, width):
        raise PreprocessError(f"{prototxt}: preprocessing gives {out_hw[0]}x{out_hw[1]} images, the net takes "
                              f"{height}x{width}; adjust --resize / --crop")
    return Preprocessing(resize=target, crop=crop_size, mean_values=values,
                         mean_file=str(used_file) if used_file is not None else None, scale=used_scale,
                         origin=tuple(origin), mean=mean)


def _warn_if_squashed(image_path: str, shape: tuple[int, ...], pre: Preprocessing) -> None:
    height, width = shape[:2]
    target_h, target_w = pre.resize
    if not pre.crop and abs(height * target_w - width * target_h) > 0.01 * height * target_w:
        warnings.warn(f"{image_path}: a {height}x{width} image is squashed to {target_h}x{target_w} without a "
                      "crop (its aspect ratio changes); use --resize and --crop to keep it", NinportWarning,
                      stacklevel=3)


def classify(prototxt: str | os.PathLike, images: Sequence[str | os.PathLike], weights: str | os.PathLike | None = None,
            *, mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
            scale: float | None = None, crop: int | None = None, resize: tuple[int, int] | None = None,
            top: int = 5, labels: str | os.PathLike | None = None, draw: str | os.PathLike | None = None,
            progress: Callable[[str], None] | None = None, dialect: str | None = None) -> PredictResult:
    """Classify images as Caffe would have: preprocess (see `resolve_preprocessing`), run, take the top classes.

    For a detector (a net whose output is an SSD DetectionOutput) each prediction carries the detections
    instead, boxes in pixels of the original image; `draw` writes them drawn on the image (one file per image,
    `<draw stem>-<i>` for several).

    Every argument and file (images, labels, mean file) is checked before the net is loaded. Without
    `weights`, `<stem>.caffemodel` beside the prototxt is used, else seeded random weights (a warning).
    The scores are the net's first output, flattened per image. `dialect`: see `ninport.load`.
    """
    from ninport.api import check_int, check_path, default_weights_path, load, load_spec

    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    top = check_int(top, "top", minimum=1)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    image_paths = [check_path(image, "images") for image in images]
    if not image_paths:
        raise PreprocessError("no images given")
    say = progress or (lambda message: None)
    spec = load_spec(prototxt, dialect=dialect)
    (input_name, input_shape), *others = spec.inputs.items()
    if others:
        raise PreprocessError(f"{prototxt}: predict needs a net with one image input, this one has "
                              f"{len(spec.inputs)}")
    pre = resolve_preprocessing(prototxt, input_shape, spec.preprocess, mean_file=mean_file,
                                mean_values=mean_values, scale=scale, crop=crop, resize=resize)
    for path in image_paths:
        check_regular_file(path, "image")
    label_names = read_labels(check_path(labels, "labels")) if labels is not None else None
    weights = weights or default_weights_path(prototxt)

    import torch

    from ninport import detect
    from ninport.description import describe

    say(f"loading {prototxt}")
    module = load(prototxt, weights, dialect=dialect)
    description = describe(module)
    detector = detect.detection_output_blob(description) is not None
    if draw is not None and not detector:
        raise PreprocessError(f"{prototxt}: --draw needs a detector (a net ending in DetectionOutput)")
    predictions = []
    for path in image_paths:
        say(f"classifying {path}")
        image = read_image(path)
        _warn_if_squashed(str(path), image.shape, pre)
        blob = caffe_transform(resize_image(image, *pre.resize), crop_size=pre.crop, mean=pre.mean,
                               mean_values=pre.mean_values, scale=pre.scale)
        if blob.shape[1:] != tuple(input_shape[1:]):
            raise PreprocessError(f"{path}: preprocessing gives {list(blob.shape[1:])}, the net takes "
                                  f"{list(input_shape[1:])}; adjust --resize / --crop")
        with torch.no_grad():
            out = module(torch.from_numpy(blob))
        if detector:
            found = detect.report(str(path), out, description, image, label_names, draw, len(image_paths),
                                  len(predictions))
            predictions.append(Prediction(str(path), (), found.detections, found.drawing))
            continue
        scores = (out[0] if isinstance(out, tuple) else out).numpy()
        predictions.append(Prediction(str(path), tuple(
            ClassScore(index, score, label_names[index] if label_names and index < len(label_names) else None)
            for index, score in top_classes(scores, top))))
    return PredictResult(str(prototxt), str(weights) if weights else None, input_name, pre, tuple(predictions))
