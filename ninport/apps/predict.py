"""`ninport predict`: classify images with a converted net, preprocessing them the way Caffe did.

Images are read as BGR 0-255 (OpenCV when installed, else Pillow, or a saved HxWxC `.npy` array),
resized to the mean image's size (or to `resize`), then `ninport.apps.preprocess.caffe_transform`
crops, subtracts the mean and scales exactly as Caffe's DataTransformer. The scores are the net's
first output, flattened per image (e.g. NIN's 1000x1x1 `pool4`, or a Softmax `prob`).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ninport.apps.preprocess import (  # noqa: F401 - resize_image re-exported
    CHANNEL_ORDERS,
    MAX_IMAGE_PIXELS,
    DeclaredPreprocessing,
    caffe_transform,
    preprocess_file_for,
    resize_image,
)
from ninport.apps.two_stage import TwoStageBlobs, two_stage_blobs
from ninport.caffe.spec import Preprocess
from ninport.errors import NinportWarning, ParseError, PreprocessError, safe_text
from ninport.fileio import check_regular_file

if TYPE_CHECKING:
    from ninport.apps.detect import DetectionSelection
    from ninport.build.description import NetDescription

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
    ninport.apps.image_header: a small file can declare a huge image).
    """
    from ninport.apps.image_header import HeaderError, image_size
    from ninport.fileio import load_npy, read_bounded

    path = Path(path)
    if path.suffix == ".npy":
        array = load_npy(path)
        if array.dtype.kind not in "uif":  # bool, complex, structured, text, dates: not pixels
            raise PreprocessError(f"{path}: an image array must hold real numbers (e.g. uint8 or float32), "
                                  f"not {safe_text(array.dtype, 80)}")
        if array.ndim not in (2, 3):
            raise PreprocessError(f"{path}: expected an HxW or HxWxC image array, got shape {list(array.shape)}")
        _check_image_size(path, array.shape[0], array.shape[1], array.shape[2] if array.ndim == 3 else 1)
        return array.astype(array.dtype.newbyteorder("="), copy=False)
    data = read_bounded(path, MAX_IMAGE_FILE_BYTES, "image file")
    try:
        width, height = image_size(data)
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


def read_labels(path: str | os.PathLike) -> list[str]:
    """One label per line (e.g. Caffe's synset_words.txt); a regular UTF-8 file of bounded size.

    Lines end at LF only, as Caffe's classification tools read them (std::getline): a form feed,
    U+2028 or NEL inside a label stays in it rather than shifting every later label. A CR before
    the LF (a Windows file) is dropped, and so is the empty piece after a final LF.
    """
    from ninport.fileio import read_text_bounded

    lines = read_text_bounded(path, "labels file").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _warn_label_count(labels: str | os.PathLike, count: int, classes: int) -> None:
    if count != classes:
        warnings.warn(f"{labels}: {count:,} labels for the net's {classes:,} classes; the labels shown may not "
                      "belong to their classes", NinportWarning, stacklevel=3)


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
    mean_values: tuple[float, ...]    # per-channel means (net's channel order), or () for a mean image or none
    mean_file: str | None             # the .binaryproto mean image used, if any
    scale: float
    origin: tuple[str, ...]           # one note per setting, e.g. "crop 224 from the prototxt's transform_param"
    mean: np.ndarray | None = field(default=None, repr=False, compare=False)
    channel_order: str = "BGR"        # the order the net takes; "RGB" flips the BGR image read from disk
    declared: str | None = None       # the <stem>.preprocess.json used, if any
    warn_on_squash: bool = False      # nobody chose the resize and there is no crop: say when it changes the aspect

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
    detections: tuple | None = None  # a detector's kept boxes (ninport.apps.detect.Detection), in the image's pixels
    drawing: str | None = None        # where the boxes were drawn, if asked
    selection: DetectionSelection | None = field(default=None, repr=False)  # detectors: kept, left out, raw rows


@dataclass(frozen=True)
class PredictResult:
    prototxt: str
    weights: str | None           # None: seeded random weights (a NinportWarning said so)
    input: str                    # the net's image input blob
    preprocessing: Preprocessing
    predictions: tuple[Prediction, ...]
    threshold: float | None = None      # detectors: the score threshold the detections were kept at
    net_threshold: float | None = None  # detectors: the prototxt's own confidence_threshold, if it sets one
    labels: str | None = None           # the file the label names came from, if any


def _find_mean_file(name: str, prototxt: Path) -> Path | None:
    """A transform_param mean_file: beside the prototxt first, then as given (Caffe's working folder)."""
    path = Path(name)
    for candidate in ([path] if path.is_absolute() else [prototxt.parent / path, path]):
        if candidate.is_file():
            return candidate
    return None


def _values_text(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def resolve_preprocessing(prototxt: str | os.PathLike, input_shape: tuple[int, ...], net: Preprocess | None, *,
                          mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
                          scale: float | None = None, crop: int | None = None,
                          resize: tuple[int, int] | None = None, channel_order: str | None = None,
                          declared: DeclaredPreprocessing | None = None, detector: bool = False) -> Preprocessing:
    """The settings `predict` uses, each from the first that gives it: the arguments, the `declared`
    preprocess file (`<stem>.preprocess.json`, see ninport.apps.preprocess), the net's transform_param, defaults.

    Warns (NinportWarning) only where the choice is a guess: no mean anywhere; a mean_file the prototxt
    names but that is not found; a preprocess file and the transform_param that disagree (the file wins).
    With `detector` (an SSD net, trained on whole images warped to its input) the no-mean warning gives
    no ImageNet hint. Raises PreprocessError for settings Caffe would refuse (a mean file and mean values
    together, a crop larger than the resize, ...).
    """
    from ninport.caffe.io import read_mean_binaryproto, read_named_mean_file

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
    if channel_order is not None and channel_order not in CHANNEL_ORDERS:
        raise PreprocessError(f"channel order must be BGR or RGB, got {safe_text(channel_order, 20)!r}")
    declared_name = declared.path.name if declared is not None else ""
    file_says = declared or DeclaredPreprocessing(Path())

    def disagree(what: str, ours: str, theirs: str) -> None:
        warnings.warn(f"{declared.path}: {what} {ours} differs from the prototxt's transform_param ({theirs}); "
                      f"using the preprocess file's", NinportWarning, stacklevel=3)

    net_mean = None
    if net is not None and (net.mean_file or net.mean_values):
        if net.mean_file and net.mean_values:
            raise PreprocessError(f"{prototxt}: transform_param gives both mean_file and mean_value; "
                                  "Caffe refuses this too")
        net_mean = f"mean_file {net.mean_file}" if net.mean_file else f"mean values {_values_text(net.mean_values)}"
    mean, used_file, values = None, None, ()
    if mean_file is not None:
        used_file = Path(mean_file)
        mean = read_mean_binaryproto(used_file)
        origin.append(f"mean image {used_file} (--mean-file)")
    elif mean_values:
        values = tuple(float(v) for v in mean_values)
        if not all(np.isfinite(values)):
            raise PreprocessError(f"mean values must be finite numbers, got {list(values)}")
        origin.append(f"mean values {_values_text(values)} (given)")
    elif file_says.mean_file is not None or file_says.mean_values is not None:
        if file_says.mean_file is not None:
            used_file, mean = file_says.mean_file, read_mean_binaryproto(file_says.mean_file)
            ours = f"mean_file {file_says.mean_file.name}"
            origin.append(f"mean image {used_file} ({declared_name})")
        else:
            values = file_says.mean_values
            ours = f"mean values {_values_text(values)}" if values else "no mean"
            origin.append(f"{ours} ({declared_name})")
        if net_mean is not None and net_mean != ours:
            disagree("its", ours, net_mean)
    elif net is not None and net.mean_file:
        found = _find_mean_file(net.mean_file, prototxt)
        if found is None:
            warnings.warn(f"{prototxt}: its mean_file {safe_text(net.mean_file, 120)!r} is not found (looked beside "
                          "the prototxt and in the current folder), so NO mean is subtracted: give --mean-file or "
                          "--mean-values", NinportWarning, stacklevel=2)
            origin.append("no mean (the prototxt's mean_file is missing)")
        else:
            used_file, mean = found, read_named_mean_file(found, prototxt, net.mean_file)
            origin.append(f"mean image {found} (the prototxt's mean_file)")
    elif net is not None and net.mean_values:
        values = tuple(float(v) for v in net.mean_values)
        origin.append(f"mean values {_values_text(values)} (the prototxt's transform_param)")
    else:
        hint = "" if detector else " (ImageNet classifiers commonly take 104,117,123)"
        warnings.warn(f"{prototxt}: the net gives no mean and none was given, so raw 0-255 pixels are fed; most "
                      f"Caffe models expect their training mean subtracted: give --mean-values B,G,R from the "
                      f"model's documentation{hint}, or declare it in {preprocess_file_for(prototxt).name} beside "
                      "the prototxt", NinportWarning, stacklevel=2)
        origin.append("no mean (raw 0-255 pixels)")
    if mean is not None and (mean.ndim != 3 or mean.shape[0] != channels):
        raise PreprocessError(f"{used_file}: mean image of shape {list(mean.shape)} for a net taking {channels} "
                              "channel(s)")

    net_crop = int(net.crop_size) if net is not None and net.crop_size else 0
    if crop is not None:
        crop_size, crop_from = int(crop), "given"
    elif file_says.crop is not None:
        crop_size, crop_from = file_says.crop, declared_name
        if net_crop and net_crop != crop_size:
            disagree("its crop", str(crop_size), f"crop_size {net_crop}")
    elif net_crop:
        crop_size, crop_from = net_crop, "the prototxt's transform_param"
    else:
        crop_size, crop_from = 0, ""
    net_scale = float(net.scale) if net is not None and net.scale != 1 else None
    if scale is not None:
        used_scale, scale_from = float(scale), "given"
    elif file_says.scale is not None:
        used_scale, scale_from = file_says.scale, declared_name
        if net_scale is not None and net_scale != used_scale:
            disagree("its scale", f"{used_scale:g}", f"scale {net_scale:g}")
    elif net_scale is not None:
        used_scale, scale_from = net_scale, "the prototxt's transform_param"
    else:
        used_scale, scale_from = 1.0, "default"
    if channel_order is not None:
        order, order_from = channel_order, "given"
    elif file_says.channel_order is not None:
        order, order_from = file_says.channel_order, declared_name
    else:
        order, order_from = "BGR", "Caffe's"

    chosen = True
    if resize is not None:
        target, resize_from = (int(resize[0]), int(resize[-1])), "given"
        if min(target) <= 0:
            raise PreprocessError(f"resize must be positive, got {list(resize)}")
    elif file_says.resize is not None:
        target, resize_from = file_says.resize, declared_name
    elif mean is not None:
        target, resize_from = (int(mean.shape[1]), int(mean.shape[2])), "the mean image's size"
    elif crop_size:
        target, resize_from, chosen = (max(height, crop_size), max(width, crop_size)), "the net's input size", False
    else:
        target, resize_from, chosen = (height, width), "the net's input size", False
    what = "the whole image, as SSD nets are trained" if detector and not crop_size and not chosen else resize_from
    origin.insert(0, f"resize to {target[0]}x{target[1]} ({what})")
    origin.insert(1, f"center crop {crop_size} ({crop_from})" if crop_size else
                  ("no crop" + (f" ({crop_from})" if crop_from else "")))
    origin.append(f"scale {used_scale:g} ({scale_from})")
    if order != "BGR" or order_from != "Caffe's":
        origin.append(f"channels {order} ({order_from})")
    if crop_size and (crop_size > target[0] or crop_size > target[1]):
        raise PreprocessError(f"crop {crop_size} is larger than the resized image {target[0]}x{target[1]}")
    out_hw = (crop_size, crop_size) if crop_size else target
    if out_hw != (height, width):
        raise PreprocessError(f"{prototxt}: preprocessing gives {out_hw[0]}x{out_hw[1]} images, the net takes "
                              f"{height}x{width}; adjust --resize / --crop"
                              + (f" (or {declared.path})" if declared is not None else ""))
    if order == "RGB" and channels != 3:
        raise PreprocessError(f"{prototxt}: channel order RGB needs a 3-channel net, this one takes {channels}")
    return Preprocessing(resize=target, crop=crop_size, mean_values=values,
                         mean_file=str(used_file) if used_file is not None else None, scale=used_scale,
                         origin=tuple(origin), mean=mean, channel_order=order,
                         declared=str(declared.path) if declared is not None else None,
                         warn_on_squash=not chosen and not crop_size and not detector)


def two_stage_preprocessing(prototxt: str | os.PathLike, *, mean_file=None, mean_values=None, scale=None, crop=None,
                            resize=None, channel_order=None) -> Preprocessing:
    """A two-stage detector's preprocessing: py-faster-rcnn's (BGR, its pixel means unless `mean_values`, the
    image scaled per image: shorter side 600, longer side at most 1000); the other settings do not apply."""
    from ninport.apps import two_stage

    given = {"mean_file": mean_file, "scale": scale, "crop": crop, "resize": resize, "channel_order": channel_order}
    refused = [name.replace("_", "-") for name, value in given.items() if value is not None]
    if refused:
        raise PreprocessError(f"{prototxt}: a two-stage detector (image + im_info) is scaled as py-faster-rcnn "
                              f"does; --{', --'.join(refused)} do not apply (--mean-values does)")
    means = tuple(float(v) for v in mean_values) if mean_values is not None else two_stage.PIXEL_MEANS_BGR
    if len(means) != 3:
        raise PreprocessError(f"{prototxt}: --mean-values needs 3 values (B,G,R), got {len(means)}")
    origin = (f"scaled per image: shorter side {two_stage.SHORTER_SIDE}, longer side at most {two_stage.MAX_SIDE} "
              "(py-faster-rcnn's TEST.SCALES, TEST.MAX_SIZE), im_info = [height, width, scale]",
              f"mean values {_values_text(means)} " + ("(--mean-values)" if mean_values is not None
                                                      else "(py-faster-rcnn's PIXEL_MEANS)"), "scale 1")
    return Preprocessing((0, 0), 0, means, None, 1.0, origin)


def warn_if_squashed(image_path: str, shape: tuple[int, ...], pre: Preprocessing) -> None:
    height, width = shape[:2]
    target_h, target_w = pre.resize
    if pre.warn_on_squash and abs(height * target_w - width * target_h) > 0.01 * height * target_w:
        warnings.warn(f"{image_path}: a {height}x{width} image is squashed to {target_h}x{target_w} without a "
                      "crop (its aspect ratio changes); if the net was not trained so, use --resize and --crop",
                      NinportWarning, stacklevel=3)


@dataclass(frozen=True)
class PredictSetup:
    """Everything `classify` and `ninport.apps.batch.predict_many` settle before the first image: the checked
    arguments, the preprocessing, the detector settings, the labels and the loaded net."""

    prototxt: Path
    weights: Path | None
    input_name: str
    input_shape: tuple[int, ...]
    preprocessing: Preprocessing
    module: object                   # the torch module (typed loosely: this module does not import torch)
    description: NetDescription
    detector: bool
    top: int | None
    threshold: float | None          # detectors: the score a box needs to be shown
    net_threshold: float | None      # detectors: the prototxt's own confidence_threshold
    labels: list[str] | None
    labels_from: str | None
    draw: Path | None
    two_stage: TwoStageBlobs | None = None  # a Faster R-CNN / R-FCN net: where its results are

    def blob(self, path: str | os.PathLike, image: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The net's input for one decoded image, transformed as Caffe's DataTransformer; for a two-stage
        detector, the image scaled as py-faster-rcnn does and its im_info."""
        pre = self.preprocessing
        if self.two_stage is not None:
            from ninport.apps.two_stage import image_blob

            data, info, _ = image_blob(image, pre.mean_values)
            return data, info
        net_image = image[:, :, ::-1] if pre.channel_order == "RGB" else image
        blob = caffe_transform(resize_image(net_image, *pre.resize), crop_size=pre.crop, mean=pre.mean,
                               mean_values=pre.mean_values, scale=pre.scale)
        if blob.shape[1:] != tuple(self.input_shape[1:]):
            raise PreprocessError(f"{path}: preprocessing gives {list(blob.shape[1:])}, the net takes "
                                  f"{list(self.input_shape[1:])}; adjust --resize / --crop")
        return blob

    def run(self, blob: np.ndarray | tuple[np.ndarray, ...]):
        """The net's outputs for what `blob` gave (one array, or a two-stage net's image and im_info)."""
        import torch

        arrays = blob if isinstance(blob, tuple) else (blob,)
        with torch.no_grad():
            return self.module(*(torch.from_numpy(a) for a in arrays))

    def prediction(self, path: str, image: np.ndarray, outputs, count: int = 1, index: int = 0) -> Prediction:
        """One image's prediction from the net's outputs for that image alone."""
        if self.two_stage is not None:
            from ninport.apps import detect
            from ninport.apps.two_stage import two_stage_selection

            selection = two_stage_selection(self.two_stage, outputs, image, threshold=self.threshold,
                                            top=self.top, labels=self.labels)
            drawing = None
            if self.draw is not None:
                drawing = str(detect.write_image(detect.draw_path(self.draw, index, count),
                                                 detect.draw_detections(image, selection.detections)))
            return Prediction(path, (), selection.detections, drawing, selection)
        if self.detector:
            from ninport.apps import detect

            found = detect.report(path, outputs, self.description, image, threshold=self.threshold, top=self.top,
                                  labels=self.labels, draw=self.draw, count=count, index=index)
            return Prediction(path, (), found.detections, found.drawing, found.selection)
        scores = (outputs[0] if isinstance(outputs, tuple) else outputs).numpy()
        labels = self.labels
        if labels is not None and index == 0:
            _warn_label_count(self.labels_from, len(labels), scores.size)
        return Prediction(path, tuple(
            ClassScore(index, score, labels[index] if labels and index < len(labels) else None)
            for index, score in top_classes(scores, self.top or 5)))


def prepare_prediction(prototxt: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                       mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
                       scale: float | None = None, crop: int | None = None, resize: tuple[int, int] | None = None,
                       channel_order: str | None = None, top: int | None = None, threshold: float | None = None,
                       labels: str | os.PathLike | None = None, draw: str | os.PathLike | None = None,
                       before_loading: Callable[[], None] | None = None,
                       progress: Callable[[str], None] | None = None, dialect: str | None = None) -> PredictSetup:
    """Check the arguments and files, settle preprocessing, detector settings and labels, then load the
    net (`before_loading` runs just before, for the caller's own checks); see `classify`."""
    from ninport.api import check_int, check_path, default_weights_path, load, load_spec
    from ninport.apps import detect
    from ninport.apps.preprocess import read_preprocess_file

    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    if top is not None:
        top = check_int(top, "top", minimum=1)
    spec = load_spec(prototxt, dialect=dialect)
    stages = two_stage_blobs(spec)
    if stages is not None:
        input_name, input_shape = stages.image_input, tuple(spec.inputs[stages.image_input])
        pre = two_stage_preprocessing(prototxt, mean_file=mean_file, mean_values=mean_values, scale=scale,
                                      crop=crop, resize=resize, channel_order=channel_order)
    else:
        (input_name, input_shape), *others = spec.inputs.items()
        if others:
            raise PreprocessError(f"{prototxt}: predict needs a net with one image input (or a two-stage "
                                  f"detector's image and im_info), this one has {len(spec.inputs)}")
    is_detector = detect.is_detector(spec) or stages is not None
    if stages is None:
        declared_path = preprocess_file_for(prototxt)
        declared = read_preprocess_file(declared_path) if declared_path.exists() else None
        pre = resolve_preprocessing(prototxt, input_shape, spec.preprocess, mean_file=mean_file,
                                    mean_values=mean_values, scale=scale, crop=crop, resize=resize,
                                    channel_order=channel_order, declared=declared, detector=is_detector)
    if is_detector:
        net_threshold = detect.net_confidence_threshold(spec)
        used_threshold = detect.detection_threshold(threshold, net_threshold)
    else:
        for value, flag in ((threshold, "threshold"), (draw, "draw")):
            if value is not None:
                raise PreprocessError(f"{prototxt}: {flag} applies to detectors (a net ending in DetectionOutput)")
        net_threshold = used_threshold = None
    labels_from = None
    if labels is not None:
        label_names = read_labels(check_path(labels, "labels"))
        labels_from = str(labels)
    elif is_detector:
        found_map = detect.label_map_of(spec, prototxt)
        labels_from, label_names = (str(found_map[0]), found_map[1]) if found_map else (None, None)
    else:
        label_names = None
    draw = check_path(draw, "draw", optional=True)
    weights = weights or default_weights_path(prototxt)
    if before_loading is not None:
        before_loading()

    from ninport.build.description import describe

    (progress or (lambda message: None))(f"loading {prototxt}")
    module = load(prototxt, weights, dialect=dialect)
    description = describe(module)
    from ninport import memory

    memory.require(memory.forward_bytes(description, batch=1), f"{prototxt}: running the net on one "
                   f"{input_shape[2]}x{input_shape[3]} image", "give a net or an input size that fits")
    if stages is not None:
        if stages.rows is None:  # the proposals are not an output: ask for them beside the heads
            from ninport.build.graph import with_outputs

            module = with_outputs(module, stages.outputs)
        return PredictSetup(prototxt, weights, input_name, tuple(input_shape), pre, module, description, True, top,
                            used_threshold, net_threshold, label_names, labels_from, draw, stages)
    detections = detect.detection_output_blob(description)
    detector = detections is not None
    if label_names is not None and detector:
        layer = next(r for r in description.layers if r.type == "DetectionOutput" and detections in r.tops)
        _warn_label_count(labels_from, len(label_names), int(module.get_submodule(layer.module).num_classes))
    if draw is not None and not detector:
        raise PreprocessError(f"{prototxt}: --draw needs a detector (a net ending in DetectionOutput)")
    return PredictSetup(prototxt, weights, input_name, tuple(input_shape), pre, module, description, detector, top,
                        used_threshold, net_threshold, label_names, labels_from, draw)


def classify(prototxt: str | os.PathLike, images: Sequence[str | os.PathLike], weights: str | os.PathLike | None = None,
             *, mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
             scale: float | None = None, crop: int | None = None, resize: tuple[int, int] | None = None,
             channel_order: str | None = None, top: int | None = None, threshold: float | None = None,
             labels: str | os.PathLike | None = None, draw: str | os.PathLike | None = None,
             progress: Callable[[str], None] | None = None, dialect: str | None = None) -> PredictResult:
    """Classify images as Caffe would have: preprocess (see `resolve_preprocessing`), run, take the top classes.

    The preprocessing a `<stem>.preprocess.json` beside the prototxt declares is used where no argument
    overrides it. For a classifier, `top` classes (default 5) of the net's first output, flattened per image.
    For a detector (a net whose output is an SSD DetectionOutput) each prediction carries the detections
    instead (`ninport.apps.detect.select_detections`): scores >= `threshold` (default 0.5, never below the
    prototxt's confidence_threshold), boxes clipped to the original image, empty ones dropped, best first,
    at most `top` (default all); `draw` writes the kept boxes drawn on the image (one file per image,
    `<draw stem>-<i>` for several). Label names come from `labels` (one per line, index = label), else from
    the prototxt's label_map_file when it names one that is found.

    Every argument and file (images, labels, mean file, preprocess file) is checked before the net is loaded.
    Without `weights`, `<stem>.caffemodel` beside the prototxt is used, else seeded random weights (a warning).
    For many images, `ninport.apps.batch.predict_many` streams them in batches. `dialect`: see `ninport.load`.
    """
    from ninport.api import check_path

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    image_paths = [check_path(image, "images") for image in images]
    if not image_paths:
        raise PreprocessError("no images given")

    def check_images() -> None:
        for path in image_paths:
            check_regular_file(path, "image")

    setup = prepare_prediction(prototxt, weights, mean_file=mean_file, mean_values=mean_values, scale=scale,
                               crop=crop, resize=resize, channel_order=channel_order, top=top, threshold=threshold,
                               labels=labels, draw=draw, before_loading=check_images, progress=progress,
                               dialect=dialect)
    say = progress or (lambda message: None)
    predictions = []
    for index, path in enumerate(image_paths):
        say(f"classifying {path}")
        image = read_image(path)
        warn_if_squashed(str(path), image.shape, setup.preprocessing)
        out = setup.run(setup.blob(path, image))
        predictions.append(setup.prediction(str(path), image, out, len(image_paths), index))
    return PredictResult(str(setup.prototxt), str(setup.weights) if setup.weights else None, setup.input_name,
                         setup.preprocessing, tuple(predictions), setup.threshold, setup.net_threshold,
                         setup.labels_from)
