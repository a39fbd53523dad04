"""Detections of an SSD net (its DetectionOutput rows) as boxes in pixels of the original image.

A DetectionOutput top holds rows [image, label, score, xmin, ymin, xmax, ymax] with corners
normalised to the net's input; SSD nets warp the whole image to that input, so a corner maps back to
the original image by its width and height. As SSD Caffe's OutputBBox does, corners are clipped to
[0, 1] first. Rows with label -1 are Caffe's "nothing found" rows and give no detection.

Drawing uses OpenCV when installed, else Pillow. Label names come from a user's file: they are
drawn as ASCII only (OpenCV's fonts have no other glyphs) and printed escaped.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ninport.description import NetDescription
from ninport.errors import PreprocessError, safe_text
from ninport.fileio import write_atomic

ROW_WIDTH = 7


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


def detections_from_rows(rows, image_sizes: Sequence[tuple[int, int]], *, labels: Sequence[str] | None = None,
                         threshold: float = 0.0) -> list[list[Detection]]:
    """Rows (1, 1, R, 7) or (R, 7) -> per image, its detections with score >= `threshold`, in row order.

    `image_sizes` are the original images' (height, width), one per image of the batch.
    """
    array = np.asarray(rows, dtype=np.float64)
    if array.size % ROW_WIDTH or (array.ndim and array.shape[-1] != ROW_WIDTH):
        raise PreprocessError(f"detection rows must have {ROW_WIDTH} values each, got shape {list(array.shape)}")
    found: list[list[Detection]] = [[] for _ in image_sizes]
    for image, label, score, *corners in array.reshape(-1, ROW_WIDTH):
        if label < 0 or score < threshold:
            continue
        index = int(image)
        if not 0 <= index < len(image_sizes):
            raise PreprocessError(f"a detection row names image {index}, but {len(image_sizes)} image(s) were given")
        height, width = image_sizes[index]
        xmin, ymin, xmax, ymax = (min(max(v, 0.0), 1.0) for v in corners)
        label = int(label)
        name = labels[label] if labels is not None and 0 <= label < len(labels) else None
        found[index].append(Detection(index, label, float(score), xmin * width, ymin * height,
                                      xmax * width, ymax * height, name))
    return found


def format_detections(image: str, detections: Sequence[Detection]) -> str:
    """Human-readable lines: the image, then one line per detection."""
    lines = [safe_text(image)]
    if not detections:
        lines.append("  no detections")
    for d in detections:
        name = f" {safe_text(d.name, 60)}" if d.name else ""
        lines.append(f"  label {d.label:<3d}{name:<16} score {d.score:.4f}  box x {d.xmin:.1f}..{d.xmax:.1f} "
                     f"y {d.ymin:.1f}..{d.ymax:.1f}")
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
    detections: tuple[Detection, ...]
    drawing: str | None = None

    def __str__(self) -> str:
        text = format_detections(self.image, self.detections)
        return text + (f"\n  boxes drawn on {safe_text(self.drawing)}" if self.drawing else "")

    def as_dict(self) -> dict:
        return {"image": self.image, "detections": [d.as_dict() for d in self.detections],
                **({"drawing": self.drawing} if self.drawing else {})}


def report(image: str, outputs, description: NetDescription, original: np.ndarray, labels: Sequence[str] | None = None,
           draw: str | os.PathLike | None = None, count: int = 1, index: int = 0) -> ImageDetections:
    """The detections of one image (the net's outputs for it), drawn on the original image if `draw` is given."""
    blob = detection_output_blob(description)
    if blob is None:
        raise PreprocessError(f"{description.source}: the net has no DetectionOutput output")
    values = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    rows = values[list(description.outputs).index(blob)]
    rows = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
    found = detections_from_rows(rows, [tuple(original.shape[:2])], labels=labels)[0]
    drawing = None
    if draw is not None:
        drawing = str(write_image(draw_path(draw, index, count), draw_detections(original, found)))
    return ImageDetections(image, tuple(found), drawing)
