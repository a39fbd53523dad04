"""Caffe's TEST-time input preprocessing (`transform_param`) in numpy, without Caffe.

ninport's converted model takes exactly what Caffe's net took: the preprocessed NCHW float blob.
This module produces that blob from an image the way Caffe's `DataTransformer::Transform` does in
the TEST phase:

- the image is HxWxC (or HxW for one channel), uint8 or float, already in **BGR** channel order
  with values 0-255, as Caffe stores images (OpenCV's `cv2.imread` gives exactly that; an RGB image
  from PIL needs `image[..., ::-1]` first);
- center crop to `crop_size` with Caffe's offsets `h_off = (H - crop) // 2`, `w_off = (W - crop) // 2`;
- a mean image (C, H, W) from a `.binaryproto` mean file is subtracted at the *uncropped* position
  (so it must have the image's full size, as Caffe checks), or else per-channel `mean_value`s
  (one value is used for every channel); Caffe refuses both at once, and so does this module;
- then the result is multiplied by `scale`;
- the result is float32 (1, C, crop, crop), or (1, C, H, W) without crop.

`mirror` is ignored: Caffe flips at random when it is set, which has no deterministic equivalent.
Resizing is not part of `transform_param` (Caffe's image tools resize beforehand, typically to 256x256
for ImageNet models whose mean file is 256x256); do it before calling these functions.

Usage::

    import cv2, torch, ninport
    from ninport.apps.preprocess import caffe_transform, transform_for

    image = cv2.resize(cv2.imread("cat.jpg"), (256, 256))      # BGR, uint8, HxWxC
    model = ninport.load("deploy.prototxt", "nin_imagenet.caffemodel")
    # from a prototxt's data layer (mean_file read relative to `mean_file_base_dir`):
    spec = ninport.load_spec("train_val.prototxt")
    blob = transform_for(spec.preprocess, image, mean_file_base_dir="reference_models/nin_imagenet")
    # or explicitly:
    blob = caffe_transform(image, crop_size=224, mean_values=(104, 117, 123))
    scores = model(torch.from_numpy(blob))

Where a prototxt says nothing about its preprocessing (most deploy files), a `<stem>.preprocess.json`
beside it can declare it (`read_preprocess_file`; ninport's reference models ship one): `predict`
uses its values unless arguments override them. All fields are optional (the # notes are not JSON):

    {
      "comment": "OpenCV's res10 face detector, as OpenCV's samples feed it",
      "mean_values": [104, 177, 123],   # per-channel means in the net's channel order ([] = none, on purpose)
      "mean_file": "mean.binaryproto",  # or a mean image, a file in the same folder (not with mean_values)
      "scale": 1.0,                     # multiplies after the mean subtraction
      "resize": [300, 300],             # H, W every image is resized to first (bilinear), or one number
      "crop": 0,                        # center crop size after the resize; 0 = none, on purpose
      "channel_order": "BGR"            # "BGR" (Caffe's, default) or "RGB": the order the net takes
    }

It is read as data: plain JSON of at most MAX_PREPROCESS_FILE_BYTES, unknown or repeated keys refused.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ninport.errors import ParseError, PreprocessError, safe_text

__all__ = ["PreprocessError", "DeclaredPreprocessing", "caffe_transform", "preprocess_file_for",
           "read_preprocess_file", "transform_for"]

PREPROCESS_SUFFIX = ".preprocess.json"
MAX_PREPROCESS_FILE_BYTES = 64 * 1024
MAX_RESIZE_SIDE = 1 << 15
CHANNEL_ORDERS = ("BGR", "RGB")


MAX_IMAGE_PIXELS = 2 ** 27          # width x height of one image (e.g. 11,585 x 11,585)
_RESIZABLE = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "float32", "float64"))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, as Caffe's tools do with OpenCV (cv2.resize) before the transform."""
    if image.shape[:2] == (height, width):
        return image
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        raise PreprocessError(f"cannot resize to {height}x{width}: more than the {MAX_IMAGE_PIXELS:,} pixels "
                              "ninport handles, or empty")
    if image.dtype not in _RESIZABLE:  # OpenCV has no int32/int64/float16 resize; Caffe takes float32 anyway
        image = image.astype(np.float32)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        if image.ndim == 2:
            return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        # OpenCV resizes at most 512 channels at once (CV_CN_MAX)
        parts = [cv2.resize(image[:, :, c:c + 512], (width, height), interpolation=cv2.INTER_LINEAR)
                 for c in range(0, image.shape[2], 512)]
        return np.concatenate([p.reshape(height, width, -1) for p in parts], axis=2)
    try:
        from PIL import Image
    except ImportError:
        raise PreprocessError("resizing images needs OpenCV or Pillow; give an image of the net's input "
                              f"size ({height}x{width}) or install one of them") from None
    planes = image if image.ndim == 3 else image[:, :, None]
    if planes.dtype != np.uint8:
        planes = planes.astype(np.float32)  # Pillow's "F" mode; it has no 16-bit or float64 planes
    channels = [Image.fromarray(np.ascontiguousarray(planes[:, :, c])) for c in range(planes.shape[2])]
    resized = np.stack([np.asarray(ch.resize((width, height), Image.BILINEAR)) for ch in channels], axis=2)
    return resized if image.ndim == 3 else resized[:, :, 0]


def _as_chw(image) -> np.ndarray:
    """HxWxC (or HxW) image -> float32 CxHxW, as Caffe reads uint8 or float pixels."""
    array = np.asarray(image)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise PreprocessError(f"image must be a uint8 or float array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise PreprocessError(f"image must be HxWxC (or HxW), got shape {list(array.shape)}")
    if min(array.shape) == 0:
        raise PreprocessError(f"image is empty: shape {list(array.shape)}")
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def caffe_transform(image, *, crop_size: int = 0, mean: np.ndarray | None = None,
                    mean_values: Sequence[float] = (), scale: float = 1.0) -> np.ndarray:
    """Caffe's TEST-phase DataTransformer on one **BGR** HxWxC image; returns float32 (1, C, h, w).

    `mean` is a (C, H, W) mean image of the image's full, uncropped size (a `.binaryproto` read by
    `ninport.caffe.io.read_mean_binaryproto`, BGR like the image); `mean_values` are per-channel
    means in BGR order, or one value for all channels. Each output value is
    `(pixel - mean) * scale` in float32, as in Caffe. Raises PreprocessError for what Caffe refuses:
    an image smaller than the crop, a mean of another size or channel count, 2+ mean values that do
    not match the channels, and a mean image together with mean values.
    """
    data = _as_chw(image)
    channels, height, width = data.shape
    crop_size = int(crop_size)
    if crop_size < 0:
        raise PreprocessError(f"crop_size must be >= 0, got {crop_size}")
    values = [float(v) for v in np.asarray(mean_values, dtype=np.float64).reshape(-1)]
    if mean is not None and values:
        raise PreprocessError("cannot use a mean file and mean_value at the same time (Caffe refuses this too)")
    if crop_size and (height < crop_size or width < crop_size):
        raise PreprocessError(f"image is {height}x{width}, smaller than crop_size {crop_size}")

    if mean is not None:
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 4 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.ndim != 3:
            raise PreprocessError(f"mean image must be (C, H, W), got shape {list(mean.shape)}")
        if mean.shape[0] != channels:
            raise PreprocessError(f"image has {channels} channel(s) but the mean image has {mean.shape[0]}")
        if mean.shape[1:] != (height, width):
            raise PreprocessError(f"image is {height}x{width} but the mean image is {mean.shape[1]}x{mean.shape[2]}; "
                                  "Caffe subtracts the mean before cropping, so resize the image to the mean's size")
    if values and len(values) not in (1, channels):
        raise PreprocessError(f"{len(values)} mean values for an image with {channels} channel(s); "
                              f"give 1 or {channels}")

    h_off = w_off = 0
    if crop_size:
        h_off, w_off = (height - crop_size) // 2, (width - crop_size) // 2
        out_h = out_w = crop_size
    else:
        out_h, out_w = height, width
    window = (slice(None), slice(h_off, h_off + out_h), slice(w_off, w_off + out_w))
    out = data[window]
    if mean is not None:
        # Caffe indexes the mean with the uncropped data index: same window of the mean image.
        out = out - mean[window]
    elif values:
        out = out - np.asarray(values * (channels if len(values) == 1 else 1), dtype=np.float32)[:, None, None]
    out = out * np.float32(scale)
    return np.ascontiguousarray(out, dtype=np.float32)[None]


def transform_for(spec_preprocess, image, mean_file_base_dir: str | os.PathLike | None = None) -> np.ndarray:
    """`caffe_transform` with the settings of a `ninport.caffe.spec.Preprocess` (a net's transform_param).

    A relative `mean_file` is looked up in `mean_file_base_dir` (e.g. the prototxt's folder), or
    the current directory when that is None, as Caffe does. `spec_preprocess=None` (a net without
    transform_param) only converts the **BGR** HxWxC image to float32 (1, C, H, W).
    """
    if spec_preprocess is None:
        return caffe_transform(image)
    mean = None
    if spec_preprocess.mean_file:
        if spec_preprocess.mean_values:
            raise PreprocessError(f"transform_param gives both mean_file {spec_preprocess.mean_file!r} and "
                                  "mean_value; Caffe refuses this too")
        from ninport.caffe.io import read_mean_binaryproto

        path = Path(spec_preprocess.mean_file)
        if not path.is_absolute() and mean_file_base_dir is not None:
            path = Path(mean_file_base_dir) / path
        mean = read_mean_binaryproto(path)
    return caffe_transform(image, crop_size=spec_preprocess.crop_size, mean=mean,
                           mean_values=spec_preprocess.mean_values, scale=spec_preprocess.scale)


# --- declared preprocessing: <stem>.preprocess.json beside a prototxt -----------------------------


@dataclass(frozen=True)
class DeclaredPreprocessing:
    """The preprocessing a `<stem>.preprocess.json` declares; None = the file does not say."""

    path: Path
    mean_values: tuple[float, ...] | None = None  # () declares "no mean" on purpose
    mean_file: Path | None = None                 # inside the file's folder
    scale: float | None = None
    resize: tuple[int, int] | None = None         # (H, W)
    crop: int | None = None                       # 0 declares "no crop" on purpose
    channel_order: str | None = None              # "BGR" or "RGB"
    comment: str = ""


def preprocess_file_for(prototxt: str | os.PathLike) -> Path:
    """Where a prototxt's declared preprocessing lives: `deploy.prototxt` -> `deploy.preprocess.json`."""
    prototxt = Path(prototxt)
    return prototxt.with_name(prototxt.stem + PREPROCESS_SUFFIX)


def _number(path: Path, key: str, value, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParseError(f"{path}: {key} must be a finite number, got {safe_text(json.dumps(value), 60)}")
    if integer:
        if not float(value).is_integer():
            raise ParseError(f"{path}: {key} must be a whole number, got {value}")
        return int(value)
    return float(value)


def _refuse_duplicates(path: Path):
    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for key, value in items:
            if key in seen:
                raise ParseError(f"{path}: key {safe_text(key, 60)!r} appears twice")
            seen[key] = value
        return seen
    return pairs


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_preprocess_file(path: str | os.PathLike) -> DeclaredPreprocessing:
    """A `<stem>.preprocess.json` (see this module's docstring), checked field by field.

    Raises ParseError naming the file (and the line, for JSON syntax) for anything else: not a regular
    UTF-8 file of at most MAX_PREPROCESS_FILE_BYTES, not a JSON object, an unknown or repeated key, a
    value of the wrong kind, or a mean_file outside the file's folder.
    """
    from ninport.fileio import confined_path, read_text_bounded

    path = Path(path)
    text = read_text_bounded(path, "preprocess file", MAX_PREPROCESS_FILE_BYTES)
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates(path), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{path}: not plain JSON: {safe_text(exc, 120)}") from None
    if not isinstance(data, dict):
        raise ParseError(f"{path}: expected a JSON object {{...}}, got {type(data).__name__}")
    known = ("comment", "mean_values", "mean_file", "scale", "resize", "crop", "channel_order")
    for key in data:
        if key not in known:
            raise ParseError(f"{path}: unknown key {safe_text(key, 60)!r} (known: {', '.join(known)})")
    fields: dict[str, object] = {}
    if "comment" in data:
        if not isinstance(data["comment"], str):
            raise ParseError(f"{path}: comment must be a string")
        fields["comment"] = data["comment"]
    if "mean_values" in data:
        values = data["mean_values"]
        if not isinstance(values, list):
            raise ParseError(f"{path}: mean_values must be a list of numbers, e.g. [104, 117, 123]")
        fields["mean_values"] = tuple(_number(path, "mean_values", v) for v in values)
    if "mean_file" in data:
        if "mean_values" in data:
            raise ParseError(f"{path}: give mean_values or mean_file, not both (Caffe refuses both too)")
        try:
            fields["mean_file"] = confined_path(path.parent, data["mean_file"], "mean_file")
        except ParseError as exc:
            raise ParseError(f"{path}: {exc}") from None
    if "scale" in data:
        fields["scale"] = _number(path, "scale", data["scale"])
    if "resize" in data:
        sides = data["resize"] if isinstance(data["resize"], list) else [data["resize"]]
        sides = [_number(path, "resize", v, integer=True) for v in sides]
        if len(sides) not in (1, 2) or not all(0 < v <= MAX_RESIZE_SIDE for v in sides):
            raise ParseError(f"{path}: resize must be [H, W] or one size, each 1..{MAX_RESIZE_SIDE}, "
                             f"got {safe_text(json.dumps(data['resize']), 60)}")
        fields["resize"] = (sides[0], sides[-1])
    if "crop" in data:
        crop = _number(path, "crop", data["crop"], integer=True)
        if not 0 <= crop <= MAX_RESIZE_SIDE:
            raise ParseError(f"{path}: crop must be 0 (none) or a size up to {MAX_RESIZE_SIDE}, got {crop}")
        fields["crop"] = crop
    if "channel_order" in data:
        if data["channel_order"] not in CHANNEL_ORDERS:
            raise ParseError(f"{path}: channel_order must be \"BGR\" or \"RGB\", got "
                             f"{safe_text(json.dumps(data['channel_order']), 60)}")
        fields["channel_order"] = data["channel_order"]
    return DeclaredPreprocessing(path, **fields)
