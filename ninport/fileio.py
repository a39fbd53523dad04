"""Atomic output: write beside the target, then rename, so a failure never leaves half a file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ninport.errors import ExportError, NinportError, one_line


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and make sure it is a writable directory."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder}: output path exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{folder}: cannot create output folder: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"{folder}: output folder is not writable")
    return folder


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it vanishes."""
    target = Path(target)
    check_output_dir(target.parent if str(target.parent) else ".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write: {exc.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_atomic(target: str | os.PathLike, write: Callable[[Path], None], what: str) -> Path:
    """Call `write(tmp)` on a temporary file beside `target`, then rename it over `target`.

    Any failure removes the temporary file and becomes one ExportError line naming `target`.
    """
    try:
        with atomic_path(target) as tmp:
            write(tmp)
    except ExportError as exc:
        message = str(exc)
        raise ExportError(message if message.startswith(str(target)) else f"{target}: {what} failed: {message}") \
            from None
    except NinportError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one ExportError line
        raise ExportError(f"{target}: {what} failed: {one_line(exc)}") from exc
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(target, lambda tmp: tmp.write_bytes(data), "writing")
