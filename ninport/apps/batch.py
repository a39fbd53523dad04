"""`ninport predict` on many images: find them, read them ahead, run them in batches, stream each result.

A folder of 10,000 photos goes through the net like one photo does (`ninport.apps.predict`: the same
reading, preprocessing and top classes or detections), with four differences:

- **finding**: a source is an image file (always read, whatever its name), a folder (its image files
  by suffix, IMAGE_SUFFIXES; subfolders only with `recursive`) or a glob pattern (`photos/*.jpg`,
  `photos/**/*.png`: Python's glob, `**` crossing folders). Hidden files and folders (a leading dot) are
  left out of folders, as glob does. The order is stable: the sources in the order given, each one's
  files sorted by path (code point order, depth first); a file found twice is read once.
- **batching**: images are stacked into batches of `batch` and run in one forward pass. Every image
  is preprocessed to the net's input size, so a batch always shares one shape; if a net's output
  does not keep the batch axis (dim 0 != batch size, or the batched forward fails), the images run one
  at a time from then on (a warning says so). A detector's rows are split by their image column.
- **reading ahead**: a thread reads, decodes and preprocesses the next images (a queue of two batches)
  while the net runs, so memory stays bounded whatever the number of images.
- **failures**: an image that cannot be read or preprocessed (a NinportError or an OSError) gives an
  outcome with `error` set, and the run goes on.

Results come out as an iterator of ImageOutcome, in the order of the images; the writers here stream
them as JSON Lines, CSV or text, one image at a time, so nothing accumulates.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import queue
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np

from ninport.apps.predict import Prediction, PredictSetup, prepare_prediction, read_image, warn_if_squashed
from ninport.errors import NinportError, NinportWarning, PreprocessError, one_line, safe_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
                            ".pbm", ".pgm", ".ppm", ".pnm", ".pam", ".npy"})
DEFAULT_BATCH = 8
_GLOB_CHARACTERS = "*?["


# --- finding the images ------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundImages:
    """The image files the sources name, in the order they will be read."""

    paths: tuple[Path, ...]
    skipped: int = 0        # files in folders (or glob matches) left out: not an image suffix, hidden, not a file
    unsearched: int = 0     # subfolders not searched (recursive was off)


def is_pattern(source: str | os.PathLike) -> bool:
    """Whether `source` is a glob pattern rather than a path (it has *, ? or [ and names no existing file)."""
    text = os.fspath(source)
    return any(ch in text for ch in _GLOB_CHARACTERS) and not os.path.lexists(text)


def _sort_key(path: str | os.PathLike) -> tuple[str, ...]:
    return Path(path).parts


class _Finder:
    def __init__(self, recursive: bool):
        self.recursive = recursive
        self.paths: list[Path] = []
        self.seen: set[str] = set()
        self.skipped = self.unsearched = 0

    def add(self, path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in self.seen:
            self.seen.add(key)
            self.paths.append(path)

    def folder(self, folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise PreprocessError(f"{folder}: cannot list this folder ({exc.strerror or one_line(exc)})") from None
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith("."):
                self.skipped += 1
            elif entry.is_dir(follow_symlinks=False):
                if self.recursive:
                    self.folder(path)
                else:
                    self.unsearched += 1
            elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                self.add(path)
            else:  # another suffix, a link to a folder (never followed: no cycles), a socket...
                self.skipped += 1

    def pattern(self, pattern: str) -> None:
        matches = sorted(glob.glob(pattern, recursive=True), key=_sort_key)
        if not matches:
            raise PreprocessError(f"{pattern}: no file or folder matches this pattern")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                self.folder(path)
            elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                self.add(path)
            else:
                self.skipped += 1


def find_images(sources: Sequence[str | os.PathLike], *, recursive: bool = False) -> FoundImages:
    """The image files that `sources` (files, folders, glob patterns) name; see the module docstring.

    Raises PreprocessError, before anything is read, for a source that does not exist, a pattern that
    matches nothing, a folder that cannot be listed, or when no image is found at all.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    finder = _Finder(recursive)
    for source in sources:
        if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
            raise PreprocessError(f"images must be file, folder or pattern paths, got {safe_text(repr(source), 60)}")
        path = Path(source)
        if path.is_dir():
            finder.folder(path)
        elif os.path.lexists(path):
            finder.add(path)  # named on purpose: read it, and say so if it is not an image
        elif is_pattern(source):
            finder.pattern(os.fspath(source))
        else:
            raise PreprocessError(f"{path}: no such file or folder")
    if not finder.paths:
        hint = f"; {finder.unsearched} subfolder(s) not searched (recursive is off)" if finder.unsearched else ""
        raise PreprocessError(f"no image files found in {', '.join(safe_text(s, 100) for s in sources)} "
                              f"(image suffixes: {' '.join(sorted(IMAGE_SUFFIXES))}){hint}")
    return FoundImages(tuple(finder.paths), finder.skipped, finder.unsearched)


def needs_many(sources: Sequence[str | os.PathLike]) -> bool:
    """Whether `sources` name a folder or a pattern (so `ninport predict` streams), not only files."""
    return any(Path(s).is_dir() or is_pattern(s) for s in sources)


# --- one image read ahead ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """One image read and preprocessed (blob set), or the reason it could not be (error set)."""

    index: int
    path: Path
    blob: np.ndarray | tuple[np.ndarray, ...] | None = None  # a two-stage net: (image, im_info)
    original: np.ndarray | None = None   # the decoded image, kept for detectors only (boxes, drawing)
    shape: tuple[int, ...] = ()
    error: str | None = None


def _read(index: int, path: Path, setup: PredictSetup) -> _Read:
    keep_original = setup.detector
    try:
        image = read_image(path)
        blob = setup.blob(path, image)
    except NinportError as exc:
        return _Read(index, path, error=str(exc))
    except OSError as exc:
        return _Read(index, path, error=f"{safe_text(path)}: {safe_text(exc.strerror or one_line(exc))}")
    return _Read(index, path, blob, image if keep_original else None, tuple(image.shape))


_END = object()


def _read_ahead(paths: Sequence[Path], read: Callable[[int, Path], _Read], depth: int) -> Iterator[_Read]:
    """`read` over `paths` in a thread, at most `depth` reads ahead of the consumer, in order."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def hand(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for index, path in enumerate(paths):
                if not hand(read(index, path)):
                    return
        except BaseException as exc:  # a bug: raised again in the consumer's thread
            hand(exc)
            return
        hand(_END)

    thread = threading.Thread(target=work, name="ninport-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageOutcome:
    """One image's result: its prediction, or why it has none."""

    index: int                          # its place in the run (0-based), the order of `PredictionStream.images`
    image: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _NotBatched(Exception):
    """The net's outputs do not keep one entry per image of the batch."""


class PredictionStream:
    """A `predict_many` run, set up: iterate it (once) for each image's ImageOutcome, in order."""

    def __init__(self, setup: PredictSetup, found: FoundImages, *, batch: int, read_ahead: bool):
        self.setup = setup
        self.prototxt, self.weights, self.input = setup.prototxt, setup.weights, setup.input_name
        self.preprocessing = setup.preprocessing
        self.images = found.paths
        self.found = found
        self.detector = setup.detector
        self.batch = batch
        self._module, self._description = setup.module, setup.description
        self._read_ahead = read_ahead
        self._batched = batch > 1 and setup.two_stage is None  # two-stage: each image at its own scale
        self._started = False
        self._outcomes: Iterator[ImageOutcome] | None = None
        self._warned: list[str] = []     # per-image preprocessing warnings, said once at the end

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[ImageOutcome]:
        if self._started:
            raise NinportError("a PredictionStream can be iterated only once")
        self._started = True
        self._outcomes = self._run_all()
        return self._outcomes

    def close(self) -> None:
        """Stop early: the read-ahead thread ends (it also ends when the stream is garbage collected)."""
        if self._outcomes is not None:
            self._outcomes.close()

    def __enter__(self) -> PredictionStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run_all(self) -> Iterator[ImageOutcome]:
        def read(index: int, path: Path) -> _Read:
            return _read(index, path, self.setup)

        reads = (_read_ahead(self.images, read, 2 * self.batch) if self._read_ahead
                 else (read(i, p) for i, p in enumerate(self.images)))
        pending: list[_Read] = []   # in image order; failures wait here too, so outcomes stay in order
        loaded, shape = 0, None
        for item in reads:
            if item.blob is not None:
                item_shape = item.blob[0].shape if isinstance(item.blob, tuple) else item.blob.shape
                if loaded and item_shape != shape:
                    yield from self._run(pending)  # another input shape: close this batch first
                    pending, loaded = [], 0
                loaded, shape = loaded + 1, item_shape
            pending.append(item)
            if loaded == self.batch:
                yield from self._run(pending)
                pending, loaded = [], 0
        yield from self._run(pending)
        self._say_warnings()

    def _run(self, pending: list[_Read]) -> Iterator[ImageOutcome]:
        loaded = [r for r in pending if r.blob is not None]
        for r in loaded:
            self._note_warnings(r)
        results = dict(zip((r.index for r in loaded), self._forward(loaded)))
        for r in pending:
            if r.error is not None:
                yield ImageOutcome(r.index, str(r.path), error=r.error)
                continue
            try:
                yield ImageOutcome(r.index, str(r.path), prediction=self._prediction(r, results[r.index]))
            except NinportError as exc:  # e.g. its drawing cannot be written
                yield ImageOutcome(r.index, str(r.path), error=str(exc))

    def _forward(self, loaded: list[_Read]) -> list:
        """Each image's outputs (as the net returns them for that image alone)."""
        import torch

        if not loaded:
            return []
        if self._batched and len(loaded) > 1:
            try:
                with torch.no_grad():
                    outputs = self._module(torch.from_numpy(np.concatenate([r.blob for r in loaded])))
                return self._split(outputs, len(loaded))
            except (_NotBatched, RuntimeError) as exc:
                self._batched = False
                warnings.warn(f"{self.prototxt}: images run one at a time: the net does not run them in batches "
                              f"({safe_text(one_line(exc), 200)})", NinportWarning, stacklevel=2)
        return [self.setup.run(r.blob) for r in loaded]

    def _split(self, outputs, count: int) -> list:
        values = outputs if isinstance(outputs, tuple) else (outputs,)
        if self.detector:
            from ninport.apps.detect import ROW_WIDTH, detection_output_blob

            position = list(self._description.outputs).index(detection_output_blob(self._description))
            rows = values[position].reshape(-1, ROW_WIDTH)
            per_image = []
            for i in range(count):
                mine = rows[rows[:, 0] == i].clone()
                mine[:, 0] = 0  # as if it had run alone
                image_values = list(values)
                image_values[position] = mine.reshape(1, 1, -1, ROW_WIDTH)
                per_image.append(tuple(image_values) if isinstance(outputs, tuple) else image_values[0])
            return per_image
        first = values[0]
        if first.ndim == 0 or first.shape[0] != count:
            raise _NotBatched(f"its first output has shape {list(first.shape)} for {count} images")
        return [first[i:i + 1] for i in range(count)]

    def _prediction(self, read: _Read, outputs) -> Prediction:
        return self.setup.prediction(str(read.path), read.original, outputs, len(self.images), read.index)

    def _note_warnings(self, read: _Read) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_if_squashed(str(read.path), read.shape, self.preprocessing)
        self._warned.extend(str(w.message) for w in caught if issubclass(w.category, NinportWarning))

    def _say_warnings(self) -> None:
        """Per-image warnings once each kind, not 10,000 lines: the first in full, then how many more."""
        if not self._warned:
            return
        warnings.warn(self._warned[0], NinportWarning, stacklevel=3)
        if len(self._warned) > 1:
            warnings.warn(f"and {len(self._warned) - 1:,} more image(s) with preprocessing warnings like it",
                          NinportWarning, stacklevel=3)


def predict_many(prototxt: str | os.PathLike, sources: Sequence[str | os.PathLike],
                 weights: str | os.PathLike | None = None, *, recursive: bool = False, batch: int = DEFAULT_BATCH,
                 mean_file: str | os.PathLike | None = None, mean_values: Sequence[float] | None = None,
                 scale: float | None = None, crop: int | None = None, resize: tuple[int, int] | None = None,
                 channel_order: str | None = None, top: int | None = None, threshold: float | None = None,
                 labels: str | os.PathLike | None = None, draw: str | os.PathLike | None = None,
                 read_ahead: bool = True, progress: Callable[[str], None] | None = None,
                 dialect: str | None = None) -> PredictionStream:
    """Set up `ninport.classify` for many images; iterate the result for each image's outcome as it is ready.

    `sources` are image files, folders and glob patterns (see `find_images`). The images are found, the
    arguments and the labels/mean/preprocess files checked, then the net is loaded (`prepare_prediction`,
    as `classify`); nothing is read from an image before iteration. The results are those `classify` gives
    each image alone (to float rounding of a batched forward), with `batch` images per forward pass and the
    next ones read ahead in a thread (`read_ahead=False`: in this thread). An unreadable image gives an
    outcome with `error`, not an exception.
    """
    from ninport.api import check_int

    batch = check_int(batch, "batch", minimum=1)
    found = find_images(sources, recursive=recursive)
    setup = prepare_prediction(prototxt, weights, mean_file=mean_file, mean_values=mean_values, scale=scale,
                               crop=crop, resize=resize, channel_order=channel_order, top=top, threshold=threshold,
                               labels=labels, draw=draw, progress=progress, dialect=dialect)
    return PredictionStream(setup, found, batch=batch, read_ahead=read_ahead)


# --- writing results as they come ----------------------------------------------------------------


def outcome_json(outcome: ImageOutcome) -> dict:
    """One JSON Lines record: {"image", "top"} for a classifier, {"image", "detections"} for a detector,
    {"image", "error"} for an image that failed."""
    if outcome.error is not None:
        return {"image": outcome.image, "error": outcome.error}
    p = outcome.prediction
    if p.detections is not None:
        record = {"image": outcome.image,
                  "detections": [{k: v for k, v in d.as_dict().items() if k != "image"} for d in p.detections]}
        if p.drawing:
            record["drawing"] = p.drawing
        return record
    return {"image": outcome.image, "top": [{"class": c.index, "score": c.score,
                                             **({"label": c.label} if c.label is not None else {})}
                                            for c in p.top]}


CLASSIFIER_CSV = ("image", "rank", "class", "score", "label", "error")
DETECTOR_CSV = ("image", "label", "name", "score", "xmin", "ymin", "xmax", "ymax", "error")


def _cell(value) -> str:
    """A CSV cell: text with control characters escaped (a spreadsheet cell is no place for them)."""
    return safe_text(value, 100_000) if isinstance(value, str) else value


def outcome_csv_rows(outcome: ImageOutcome, detector: bool) -> list[list]:
    """The CSV rows of one image: one per top class (or detection); one row with only `image` for a
    detector that found nothing, and one with `image` and `error` for an image that failed."""
    columns = DETECTOR_CSV if detector else CLASSIFIER_CSV
    if outcome.error is not None:
        return [[_cell(outcome.image)] + [""] * (len(columns) - 2) + [_cell(outcome.error)]]
    p = outcome.prediction
    if detector:
        rows = [[outcome.image, d.label, d.name or "", d.score, d.xmin, d.ymin, d.xmax, d.ymax, ""]
                for d in p.detections] or [[outcome.image] + [""] * (len(columns) - 1)]
    else:
        rows = [[outcome.image, rank, c.index, c.score, c.label or "", ""] for rank, c in enumerate(p.top, 1)]
    return [[_cell(v) for v in row] for row in rows]


def outcome_text(outcome: ImageOutcome) -> str:
    """The lines `ninport predict` prints for one image (as for a single image)."""
    if outcome.error is not None:
        return f"{safe_text(outcome.image)}\n  error: {safe_text(outcome.error, 1000)}"
    p = outcome.prediction
    if p.detections is not None:
        from ninport.apps.detect import format_detections

        text = format_detections(p.image, p.detections)
        return text + (f"\n  boxes drawn on {safe_text(p.drawing)}" if p.drawing else "")
    lines = [safe_text(p.image)]
    for rank, c in enumerate(p.top, 1):
        label = f"  {safe_text(c.label)}" if c.label is not None else ""
        lines.append(f"  {rank}. class {c.index:<5d} score {c.score:.6g}{label}")
    return "\n".join(lines)


class OutcomeWriter:
    """Writes outcomes to a text stream as they come: "jsonl", "csv" or "text"."""

    def __init__(self, stream: TextIO, kind: str, detector: bool):
        if kind not in ("jsonl", "csv", "text"):
            raise NinportError(f"unknown output format {kind!r} (jsonl, csv, text)")
        self.stream, self.kind, self.detector = stream, kind, detector
        self._csv = None
        if kind == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            self._csv.writerow(DETECTOR_CSV if detector else CLASSIFIER_CSV)

    def write(self, outcome: ImageOutcome) -> None:
        if self.kind == "jsonl":
            self.stream.write(json.dumps(outcome_json(outcome)) + "\n")  # ASCII: control characters escaped
        elif self.kind == "csv":
            self._csv.writerows(outcome_csv_rows(outcome, self.detector))
        else:
            self.stream.write(outcome_text(outcome) + "\n")


# --- progress and summary ----------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """Progress through `total` images on `stream` (stderr): a live bar with rate and ETA on a terminal,
    else a plain `ninport: ...` line after the first batch and then every `interval` seconds."""

    def __init__(self, total: int, stream: TextIO | None = None, *, live: bool | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.stream = total, stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval, self.clock = interval, clock
        self.start = clock()
        self.done = self.failed = 0
        self._last_shown: float | None = None
        self._drawn = False

    def status(self) -> str:
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
        failed = f", {self.failed:,} failed" if self.failed else ""
        return (f"{self.done:,}/{self.total:,} images ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f} images/s, ETA {eta}{failed}")

    def update(self, done: int, failed: int = 0) -> None:
        self.done, self.failed = done, failed
        now = self.clock()
        if self.live:
            if self._last_shown is None or now - self._last_shown >= 0.1 or done == self.total:
                self._draw()
                self._last_shown = now
        elif self._last_shown is None or now - self._last_shown >= self.interval:
            self.stream.write(f"ninport: {self.status()}\n")
            self.stream.flush()
            self._last_shown = now

    def _draw(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        text = self.status()
        room = width - len(text) - 4
        bar = ""
        if room >= 10:
            size = min(room, 40)
            filled = size * self.done // max(self.total, 1)
            bar = "[" + "#" * filled + "-" * (size - filled) + "] "
        self.stream.write("\r\x1b[K" + (bar + text)[: width - 1])
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Take the live bar off the line (before other output goes to the same terminal)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
            self._last_shown = None  # redraw at the next update

    close = clear


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the line `ninport predict` ends with."""

    images: int
    failed: int
    seconds: float
    first_failure: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        took = f"{self.seconds:.1f} s" if self.seconds < 60 else _duration(self.seconds)
        text = (f"{self.images:,} images in {took} ({self.images_per_second:.1f} images/s): "
                f"{self.images - self.failed:,} ok, {self.failed:,} failed")
        if self.first_failure:
            text += f" (first: {safe_text(self.first_failure, 300)})"
        return text
