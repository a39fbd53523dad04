"""Files in and out, safely.

Reading: a user's path is opened only if it is a regular file (a FIFO would block, `/dev/zero` never
ends, a device may do anything), and no more than a stated limit is read or allocated; numpy files
are checked from their headers (shape, dtype, declared sizes) before an array is allocated.

Writing: outputs are staged in a private folder inside the output folder (same filesystem, so the
final step is a rename), with the permissions a plain `open()` gives (the umask is honoured). Only
when every file is complete, and an optional check has run on the staged files, do they replace
their targets; if a later rename fails, the earlier ones are rolled back from hard-link backups, so
the folder holds either all the new files or all the old ones. The renames hold an exclusive lock on
the output folder (flock on the folder itself, or on a `.ninport.lock` file in it where the filesystem
cannot lock a folder), so two processes writing the same folder at once replace their sets one after
the other, never interleaved: the folder ends with one run's files, not a mix. A staging folder is named after the
host and the process id; one left by a process that died (SIGKILL, power loss) is removed the next
time ninport writes to that folder, and SIGTERM during a write cleans up before the process exits.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ninport.errors import ExportError, NinportError, ParseError, one_line, safe_text, shape_text

# Reading limits: far above any real net's inputs, far below what would exhaust a machine.
MAX_ARRAY_BYTES = 2 ** 31          # one array (an npy file, one npz member, a mean image)
MAX_NPZ_BYTES = 2 ** 33            # all members of an npz together, as declared and as decoded
MAX_NPY_HEADER_BYTES = 2 ** 16
MAX_TEXT_BYTES = 64 * 2 ** 20      # a labels file, a case.json

STAGING_PREFIX = ".ninport-staging-"
LOCK_FILE = ".ninport.lock"          # only where a folder itself cannot be locked (e.g. NFS)
LOCK_WAIT_SECONDS = 60.0           # renames take milliseconds: a lock held longer is a stuck process
STALE_STAGING_SECONDS = 24 * 3600  # a staging folder this old is stale whatever its process


# --- reading ---------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "of an unusual type (not a regular file)"


def check_regular_file(path: str | os.PathLike, what: str = "file", error: type[NinportError] = ParseError) -> Path:
    """`path` if it is a regular file (symlinks followed); else one error line saying what it is."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {_kind(mode)}; expected a regular file ({what})")
    return path


def open_regular(path: str | os.PathLike, what: str = "file", error: type[NinportError] = ParseError) -> BinaryIO:
    """Open a regular file for binary reading without ever blocking on a FIFO.

    The file is opened non-blocking and checked with fstat on the open descriptor, so a path swapped
    for a FIFO or device between a check and the open is still refused.
    """
    path = check_regular_file(path, what, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path}: is {_kind(mode)}; expected a regular file ({what})")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file",
                 error: type[NinportError] = ParseError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before reading)."""
    with open_regular(path, what, error) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes, more than the {limit:,} ninport reads ({what})")
        data = fh.read(limit + 1)
    if len(data) > limit:  # the file grew while being read
        raise error(f"{path}: more than the {limit:,} bytes ninport reads ({what})")
    return data


def _npy_header(fh: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) from an .npy stream, refusing object dtypes and bad headers."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise ParseError(f"{name}: not a numpy array ({safe_text(one_line(exc))})") from None
    if dtype.hasobject:
        raise ParseError(f"{name}: holds Python objects (pickle); ninport reads numeric arrays only")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ParseError(f"{name}: invalid array shape in its header")
    return tuple(shape), dtype, fortran


def _array_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    count = 1
    for d in shape:
        count *= d
    return count * dtype.itemsize


def _check_npy_header(fh: BinaryIO, name: str, available: int, limit: int) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Read and check an .npy header: the declared array fits `limit` and the `available` bytes."""
    start = fh.tell()
    shape, dtype, fortran = _npy_header(fh, name)
    nbytes = _array_bytes(shape, dtype)
    if nbytes > limit:
        raise ParseError(f"{name}: its header declares a {dtype} array of shape {safe_text(list(shape), 120)} "
                         f"({nbytes:,} bytes), more than the {limit:,} ninport reads")
    if nbytes > available - (fh.tell() - start):
        raise ParseError(f"{name}: truncated: its header declares {nbytes:,} bytes of data, "
                         f"the file holds {max(0, available - (fh.tell() - start)):,}")
    return shape, dtype, fortran


def _read_array_data(fh: BinaryIO, name: str, shape, dtype: np.dtype, fortran: bool) -> np.ndarray:
    nbytes = _array_bytes(shape, dtype)
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise ParseError(f"{name}: truncated: {len(data):,} of {nbytes:,} bytes of array data")
    array = np.frombuffer(data, dtype=dtype).copy()
    order = "F" if fortran else "C"
    return array.reshape(shape, order=order)


def load_npy(path: str | os.PathLike, limit: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """An .npy array, its header checked (shape x dtype within `limit`, data present) before allocation."""
    with open_regular(path, "numpy .npy file") as fh:
        size = os.fstat(fh.fileno()).st_size
        shape, dtype, fortran = _check_npy_header(fh, str(path), size, limit)
        return _read_array_data(fh, str(path), shape, dtype, fortran)


def _open_npz(fh: BinaryIO, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ParseError(f"{name}: not a numpy .npz archive ({safe_text(one_line(exc))})") from None


def _npz_keys(archive: zipfile.ZipFile, name: str) -> dict[str, zipfile.ZipInfo]:
    """Array name -> member, from the zip's central directory (nothing inflated)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for member in archive.infolist():
        key = member.filename.removesuffix(".npy")
        if member.is_dir() or key in members:
            raise ParseError(f"{name}: member {safe_text(member.filename, 80)!s}: not an array, or listed twice")
        members[key] = member
    return members


def npz_names(path: str | os.PathLike) -> list[str]:
    """The array names an .npz holds, read from its central directory without inflating anything."""
    with open_regular(path, "numpy .npz file") as fh, _open_npz(fh, str(path)) as archive:
        return list(_npz_keys(archive, str(path)))


def load_npz(path: str | os.PathLike, limit: int = MAX_ARRAY_BYTES, total_limit: int = MAX_NPZ_BYTES, *,
             shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each member checked before it is decompressed or allocated.

    Checked per member: the zip's declared uncompressed size (zipfile never inflates past it), the
    .npy header's shape and dtype (no object arrays), and that the data the header declares is
    there; and the sum of declared sizes against `total_limit` (a zip bomb declares huge sizes).

    With `shapes` (array name -> the shape the caller needs), only the members named there are read,
    each only after its declared size was checked against what that shape can take (at most 16 bytes
    an element, plus the .npy header) and its .npy header against the shape: a member declaring more
    is refused, and one whose header gives another shape is not inflated but comes back as a
    read-only placeholder of its declared shape and dtype (broadcast zeros, no memory), so that the
    caller reports the mismatch. Members not named are never inflated (`npz_names` lists them all).
    """
    name = str(path)
    arrays: dict[str, np.ndarray] = {}
    with open_regular(path, "numpy .npz file") as fh, _open_npz(fh, name) as archive:
        members = _npz_keys(archive, name)
        if shapes is not None:
            members = {key: member for key, member in members.items() if key in shapes}
        declared = sum(m.file_size for m in members.values())
        if declared > total_limit:
            raise ParseError(f"{name}: its members declare {declared:,} bytes uncompressed, more than the "
                             f"{total_limit:,} ninport reads")
        for key, member in members.items():
            where = f"{name}: member {safe_text(member.filename, 80)!s}"
            if member.file_size > limit + MAX_NPY_HEADER_BYTES:
                raise ParseError(f"{where}: declares {member.file_size:,} bytes uncompressed, more than the "
                                 f"{limit:,} ninport reads for one array")
            need = None if shapes is None else tuple(int(d) for d in shapes[key])
            if need is not None and member.file_size > _array_bytes(need, np.dtype(np.complex128)) \
                    + MAX_NPY_HEADER_BYTES:
                raise ParseError(f"{where}: declares {member.file_size:,} bytes uncompressed, more than an array "
                                 f"of shape {shape_text(need)} takes")
            try:
                with archive.open(member) as stream:
                    shape, dtype, fortran = _check_npy_header(stream, where, member.file_size, limit)
                    if need is not None and shape != need:
                        arrays[key] = np.broadcast_to(np.zeros((), dtype), shape)  # the mismatch, not the data
                        continue
                    arrays[key] = _read_array_data(stream, where, shape, dtype, fortran)
            except ParseError:
                raise
            except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError,
                    RuntimeError) as exc:  # bad CRC, unsupported compression, encrypted, corrupt stream
                raise ParseError(f"{where}: cannot be read ({safe_text(one_line(exc))})") from None
    return arrays


def read_text_bounded(path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file of at most `limit` bytes (regular files only)."""
    data = read_bounded(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


def confined_path(folder: str | os.PathLike, relative: object, what: str) -> Path:
    """`folder / relative`, refusing absolute paths, `..`, and symlinks that lead out of `folder`."""
    folder = Path(folder)
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ParseError(f"{folder}: {what} must be a non-empty file name, got {safe_text(repr(relative), 80)}")
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ParseError(f"{folder}: {what} {safe_text(relative, 120)!r} must name a file inside the folder "
                         "(no absolute path, no '..')")
    path = folder / candidate
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as exc:  # symlink loop
        raise ParseError(f"{path}: cannot resolve {what}: {safe_text(one_line(exc))}") from None
    if not inside:
        raise ParseError(f"{path}: {what} is a link that leads outside {folder}")
    return path


# --- writing ---------------------------------------------------------------------------------------


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and make sure it is a writable directory (not a file, FIFO or device)."""
    folder = Path(folder)
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ExportError(f"{folder}: cannot use as output folder: {exc.strerror}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise ExportError(f"{folder}: output path exists and is {_kind(mode)}, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{folder}: cannot create output folder: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"{folder}: output folder is not writable")
    return folder


def check_output_dir_usable(folder: str | os.PathLike) -> Path:
    """What `check_output_dir` would refuse, found without creating anything: `folder` is a writable
    folder, or the nearest part of its path that exists is one (so that it can be created). Lets a
    command refuse a bad `-o` before its long work starts."""
    folder = Path(folder)
    existing = folder
    while True:
        try:
            mode = os.stat(existing).st_mode
            break
        except FileNotFoundError:
            if existing == existing.parent:
                raise ExportError(f"{folder}: cannot create output folder") from None
            existing = existing.parent if str(existing.parent) else Path(".")
        except OSError as exc:
            raise ExportError(f"{folder}: cannot use as output folder: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        if existing == folder:
            raise ExportError(f"{folder}: output path exists and is {_kind(mode)}, not a folder")
        raise ExportError(f"{folder}: cannot create output folder: {existing} is {_kind(mode)}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"{folder}: output folder is not writable" if existing == folder else
                          f"{folder}: cannot create output folder: {existing} is not writable")
    return folder


def check_output_target(target: Path) -> None:
    """Refuse a target that exists and could not simply be replaced by a file (a folder, FIFO, device)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ExportError(f"{target}: cannot write: {exc.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise ExportError(f"{target}: exists and is {_kind(mode)}; refusing to replace it with a file")


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def clean_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove staging folders that a dead ninport process on this host left in `folder`; return them.

    A staging folder is `.ninport-staging-<host>-<pid>-<random>`; it is stale when that process no
    longer runs on this host, or when it is older than a day whatever its host.
    """
    folder = Path(folder)
    removed = []
    pattern = re.compile(re.escape(STAGING_PREFIX) + r"(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = match["host"] == host and not _process_alive(int(match["pid"])) and int(match["pid"]) != os.getpid()
        if dead or age > STALE_STAGING_SECONDS:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_fd(folder: Path) -> tuple[int, bool]:
    """An open descriptor to lock for `folder`, and whether it was locked at once: the folder itself, or
    its lock file where the filesystem refuses to lock a folder opened read-only (NFS emulates flock
    with write locks)."""
    fd = -1
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        return fd, _try_lock(fd)
    except OSError:  # an unreadable folder, or a filesystem that cannot lock one
        if fd >= 0:
            os.close(fd)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        return fd, _try_lock(fd)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on an output folder, waiting up to `wait` seconds for another process's.

    Taken around the renames that put a set of outputs in place; see the module docstring. Without
    fcntl (Windows) there is no lock.
    """
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    try:
        fd, locked = _lock_fd(folder)
    except OSError as exc:
        raise ExportError(f"{folder}: cannot lock the output folder: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while not locked:
            if time.monotonic() > deadline:
                raise ExportError(f"{folder}: another process has held this output folder's lock for {wait:g} s "
                                  "(writing its files); nothing was written")
            time.sleep(0.05)
            locked = _try_lock(fd)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class _Terminated(BaseException):
    """SIGTERM arrived while files were staged: unwind (cleaning up), then terminate."""


@contextlib.contextmanager
def _terminate_after_cleanup() -> Iterator[None]:
    """While writing, turn SIGTERM into an exception so staging is removed; then deliver it as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        yield
        return

    def on_term(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signal.SIGTERM, None)
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        raise ExportError("interrupted by SIGTERM; nothing was written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


class Staging:
    """A private staging folder inside an output folder; see the module docstring."""

    def __init__(self, folder: Path):
        clean_stale_staging(folder)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host_tag()}-{os.getpid()}-", dir=folder))
        except OSError as exc:
            raise ExportError(f"{folder}: cannot write: {exc.strerror}") from None

    def file(self, name: str) -> Path:
        return self.path / name

    def plain_file_mode(self) -> int:
        """The permissions a plain open() gives a new file here (0o666 less the umask), read from a probe
        file rather than by setting the process-wide umask."""
        probe = self.path / ".mode-probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            return stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
            os.unlink(probe)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def replace_all(pairs: list[tuple[Path, Path]], backups: Path) -> None:
    """Rename each staged file over its target, all or nothing.

    An existing target is first hard-linked into `backups` (so it never disappears from its folder);
    if any rename fails, the targets already replaced get their backups back (or are removed if they
    did not exist) and the error propagates.
    """
    done: list[tuple[Path, Path | None]] = []  # (target, backup) for every target replaced
    try:
        for i, (staged, target) in enumerate(pairs):
            backup = None
            if os.path.lexists(target):
                backup = backups / f"previous-{i}"
                try:
                    os.link(target, backup, follow_symlinks=False)
                except OSError:  # no hard links here (some network filesystems): move it aside
                    os.replace(target, backup)
                    done.append((target, backup))
                    os.replace(staged, target)
                    continue
            os.replace(staged, target)
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    os.unlink(target)
        raise


def write_files(folder: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]],
                check: Callable[[dict[str, Path]], None] | None = None) -> dict[str, Path]:
    """Write several files into `folder` all or nothing: `writers` maps a file name to a function that
    writes that file at the path it is given (a staging path with the same name).

    `check(staged)` (file name -> staged path), if given, runs once every file is complete and before
    any target is touched: raising there leaves the folder as it was. On any failure the staging
    folder, and `folder` itself if this call created it, are removed.
    """
    folder = Path(folder)
    created: list[Path] = []
    parent = folder
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    check_output_dir(folder)
    targets = {name: folder / name for name in writers}
    for target in targets.values():
        check_output_target(target)
    staging = None
    with _terminate_after_cleanup():
        try:
            staging = Staging(folder)
            staged = {name: staging.file(name) for name in writers}
            mode = staging.plain_file_mode()
            for name, write in writers.items():
                write(staged[name])
                os.chmod(staged[name], mode)  # some writers (safetensors) create files 0600
            if check is not None:
                check(dict(staged))
            backups = staging.path / ".backups"
            backups.mkdir()
            with folder_lock(folder):  # another process's set goes in wholly before or after this one
                replace_all([(staged[name], targets[name]) for name in writers], backups)
        except BaseException as exc:
            if staging is not None:
                staging.remove()
                staging = None
            for made in created:  # innermost first; only folders this call made, and only if empty
                try:
                    made.rmdir()
                except OSError:
                    break
            if isinstance(exc, OSError):
                raise ExportError(f"{folder}: writing failed: {safe_text(exc.strerror or one_line(exc))}") from exc
            raise
        finally:
            if staging is not None:
                staging.remove()
    return targets


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path with `target`'s name; on success it replaces `target`, on error it vanishes."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    check_output_dir(folder)
    check_output_target(target)
    with _terminate_after_cleanup():
        staging = Staging(folder)
        try:
            mode = staging.plain_file_mode()
            yield staging.file(target.name)
            os.chmod(staging.file(target.name), mode)
            with folder_lock(folder):  # never in the middle of another process's set of renames
                os.replace(staging.file(target.name), target)
        finally:
            staging.remove()


def write_atomic(target: str | os.PathLike, write: Callable[[Path], None], what: str) -> Path:
    """Call `write(tmp)` on a staging path with `target`'s name, then rename it over `target`.

    Any failure removes the staging file and becomes one ExportError line naming `target`.
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
    except Exception as exc:
        raise ExportError(f"{target}: {what} failed: {one_line(exc)}") from exc
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(target, lambda tmp: tmp.write_bytes(data), "writing")


class LatchingWriter(io.RawIOBase):
    """A write-only stream over a real file that remembers the first write error instead of raising it.

    For C++ writers (torch's zip writer) that abort the process when a write fails inside a
    destructor: they see every write succeed, and `raise_error()` reports the real failure after.
    """

    def __init__(self, fh: BinaryIO):
        super().__init__()
        self._fh = fh
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                self._fh.write(data)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        if self.error is None:
            try:
                self._fh.flush()
            except OSError as exc:
                self.error = exc

    def raise_error(self, target: object) -> None:
        if self.error is not None:
            raise ExportError(f"{target}: writing failed: {self.error.strerror or one_line(self.error)}")
