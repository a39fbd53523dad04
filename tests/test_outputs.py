"""Writing outputs (ninport.export.artifacts.write_outputs over ninport.fileio.write_files): permissions,
all-or-nothing when a late rename fails, no staging left after a crash or SIGTERM, a check on the
staged files, refused targets, a full disk while writing .pt2, no torch chatter, no pickle in .pt2."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import ninport
from ninport import fileio
from ninport.errors import ExportError
from ninport.export.artifacts import write_outputs, write_pt2
from tests.conftest import REPO, load_golden, plain_kernels

FORMATS = ("onnx", "pt2", "safetensors")


@pytest.fixture(scope="module")
def module():
    case = load_golden("conv_rect")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(case.prototxt, case.weights)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_002():
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def test_outputs_get_the_umask_permissions(module, tmp_path, umask_002):
    written = write_outputs(module, tmp_path, "net", FORMATS)
    for path in written.values():
        assert _mode(path) == 0o664, path  # what open() gives under umask 002; mkstemp gave 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"net.{f}" for f in FORMATS)


def test_single_file_writers_get_the_umask_permissions(module, tmp_path, umask_002):
    from ninport.export.artifacts import write_safetensors
    from ninport.export.onnx import export_onnx

    assert _mode(export_onnx(module, tmp_path / "a.onnx")) == 0o664
    assert _mode(write_pt2(module, tmp_path / "a.pt2")) == 0o664
    assert _mode(write_safetensors(module, tmp_path / "a.safetensors")) == 0o664
    assert _mode(fileio.write_bytes_atomic(tmp_path / "a.bin", b"x")) == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.onnx", "a.pt2", "a.safetensors"]


def test_a_later_rename_failing_rolls_back_the_earlier_ones(tmp_path, monkeypatch):
    for name in ("a.txt", "c.txt"):
        (tmp_path / name).write_text(f"old {name}")
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if Path(dst) == tmp_path / "c.txt":  # the third file's final rename
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    writers = {name: (lambda staged, n=name: staged.write_text(f"new {n}")) for name in ("a.txt", "b.txt", "c.txt")}
    with pytest.raises(ExportError, match="No space left"):
        fileio.write_files(tmp_path, writers)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt"]
    assert (tmp_path / "a.txt").read_text() == "old a.txt"  # replaced, then restored
    assert (tmp_path / "c.txt").read_text() == "old c.txt"


def test_rollback_without_hard_links(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    real_replace = os.replace

    def no_link(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    def failing_replace(src, dst, *args, **kwargs):
        if Path(dst) == tmp_path / "b.txt" and "staging" in str(src) and ".backups" not in str(src) \
                and ".backups" not in str(dst):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "link", no_link)
    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(ExportError, match="Input/output error"):
        fileio.write_files(tmp_path, {"a.txt": lambda p: p.write_text("new a"),
                                      "b.txt": lambda p: p.write_text("new b")})
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert (tmp_path / "b.txt").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_late_rename_failure_with_real_outputs(module, tmp_path, monkeypatch):
    write_outputs(module, tmp_path, "net", ("onnx", "safetensors"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if Path(dst).name == "net.safetensors":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    # metadata differs from the first write, so a replaced net.onnx would show
    with pytest.raises(ExportError):
        write_outputs(module, tmp_path, "net", ("onnx", "safetensors"),
                      check=lambda staged: staged["onnx"].write_bytes(b"changed"))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_concurrent_writers_to_one_folder_never_mix_their_files(tmp_path, monkeypatch):
    """Run A is paused between its two renames while run B writes the same two files. Without the folder
    lock B's set landed in the middle of A's (a.bin from B, b.bin from A); with it B waits, then replaces
    A's set whole."""
    import threading

    real_replace = os.replace
    b_done = threading.Event()

    def slow_replace(src, dst, *args, **kwargs):
        result = real_replace(src, dst, *args, **kwargs)
        if Path(dst) == tmp_path / "a.bin" and Path(dst).read_bytes() == b"A":
            b_done.wait(1.0)  # A, between its renames: B gets a second to slip in
        return result

    monkeypatch.setattr(fileio.os, "replace", slow_replace)

    def write(tag: bytes) -> None:
        fileio.write_files(tmp_path, {name: (lambda path: path.write_bytes(tag)) for name in ("a.bin", "b.bin")})

    a = threading.Thread(target=write, args=(b"A",))
    a.start()
    while not (tmp_path / "a.bin").exists():
        time.sleep(0.01)
    write(b"B")
    b_done.set()
    a.join()
    assert [(tmp_path / name).read_bytes() for name in ("a.bin", "b.bin")] == [b"B", b"B"]


def test_a_folder_lock_held_too_long_is_a_clear_error(tmp_path):
    with fileio.folder_lock(tmp_path), pytest.raises(ExportError, match="another process has held this output "
                                                                         "folder's lock for 0.2 s"):
        with fileio.folder_lock(tmp_path, wait=0.2):
            pass
    with fileio.folder_lock(tmp_path, wait=0.2):  # released
        pass
    assert list(tmp_path.iterdir()) == []  # the folder itself is locked: no lock file left here


def test_folder_lock_falls_back_to_a_lock_file_where_a_folder_cannot_be_locked(tmp_path, monkeypatch):
    """NFS emulates flock with write locks, which a folder opened read-only cannot take (EBADF)."""
    import errno
    import fcntl

    real_flock = fcntl.flock

    def nfs_flock(fd, operation):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    with fileio.folder_lock(tmp_path):
        assert (tmp_path / fileio.LOCK_FILE).is_file()
        with pytest.raises(ExportError, match="held this output folder's lock"):
            with fileio.folder_lock(tmp_path, wait=0.1):
                pass


def test_check_sees_the_staged_files_and_can_refuse(module, tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"old")
    seen = {}

    def check(staged):
        seen.update(staged)
        for fmt, path in staged.items():
            assert path.is_file() and path.name == f"net.{fmt}"
            assert path.parent != tmp_path  # the staged file, not the final path
        assert fileio.STAGING_PREFIX in str(staged["onnx"])
        raise ExportError("onnxruntime disagrees")

    with pytest.raises(ExportError, match="disagrees"):
        write_outputs(module, tmp_path, "net", ("onnx", "pt2"), check=check)
    assert set(seen) == {"onnx", "pt2"}
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]
    assert (tmp_path / "net.onnx").read_bytes() == b"old"


def test_check_can_run_the_staged_onnx_in_onnxruntime(module, tmp_path):
    from ninport.export.artifacts import verify_onnx

    meta = ninport.describe(module)
    inputs = {name: torch.rand(shape).numpy() for name, shape in meta.inputs.items()}
    results = []
    write_outputs(module, tmp_path, "net", ("onnx",), check=lambda staged: results.append(verify_onnx(staged["onnx"],
                                                                                                    inputs)))
    with torch.no_grad():
        expected = module(*[torch.from_numpy(v) for v in inputs.values()])
    assert torch.allclose(torch.from_numpy(results[0][0]), expected, atol=1e-5)


def test_stale_staging_from_a_dead_process_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{fileio.STAGING_PREFIX}{fileio._host_tag()}-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "net.onnx").write_bytes(b"x" * 100)
    alive = tmp_path / f"{fileio.STAGING_PREFIX}{fileio._host_tag()}-{os.getppid()}-def456"  # pytest's parent runs
    alive.mkdir()
    other_host = tmp_path / f"{fileio.STAGING_PREFIX}otherhost-{dead.pid}-ghi789"
    other_host.mkdir()
    fileio.write_files(tmp_path, {"x.txt": lambda p: p.write_text("x")})
    assert not stale.exists()
    assert alive.exists() and other_host.exists()
    os.utime(other_host, (time.time() - 2 * fileio.STALE_STAGING_SECONDS,) * 2)
    fileio.write_bytes_atomic(tmp_path / "y.txt", b"y")
    assert not other_host.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "x.txt", "y.txt"])


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ninport import fileio
    def slow(path):
        path.write_bytes(b"partial")
        Path(sys.argv[2]).write_text("ready")
        time.sleep(60)
    fileio.write_files(sys.argv[1], {"a.bin": lambda p: p.write_bytes(b"a"), "b.bin": slow})
""")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_no_staging_outlives_a_killed_writer(tmp_path, how):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"old")
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out), str(ready)], env=env,
                             stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), child.stderr.read().decode()
    assert any(p.name.startswith(fileio.STAGING_PREFIX) for p in out.iterdir())
    child.send_signal(getattr(signal, how))
    child.wait(timeout=30)
    assert child.returncode == -getattr(signal, how)  # terminated by the signal, as without ninport
    assert b"Traceback" not in child.stderr.read()
    if how == "SIGKILL":  # nothing can run in the killed process: the next write cleans up
        fileio.write_files(out, {"c.bin": lambda p: p.write_bytes(b"c")})
        assert sorted(p.name for p in out.iterdir()) == ["a.bin", "c.bin"]
    else:
        assert [p.name for p in out.iterdir()] == ["a.bin"]
    assert (out / "a.bin").read_bytes() == b"old"


@pytest.mark.parametrize("target, kind", [("/dev/null", "a device"), ("fifo", "a FIFO"), ("file", "a regular file")])
def test_output_folder_that_is_a_device_fifo_or_file_is_refused(module, tmp_path, target, kind):
    if target == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    elif target == "file":
        target = tmp_path / "plain"
        target.write_text("x")
    with pytest.raises(ExportError, match=f"output path exists and is {kind}") as info:
        fileio.check_output_dir(target)
    assert str(info.value).endswith(", not a folder") and "is not a regular file" not in str(info.value)
    calls = []
    with pytest.raises(ExportError, match="not a folder"):
        write_outputs(module, target, "net", ("onnx",), progress=calls.append)
    assert calls == []  # refused before any export work


def test_output_file_that_is_a_fifo_or_folder_is_refused_up_front(module, tmp_path):
    os.mkfifo(tmp_path / "net.onnx")
    (tmp_path / "net.pt2").mkdir()
    for fmt, kind in (("onnx", "FIFO"), ("pt2", "directory")):
        with pytest.raises(ExportError, match=kind):
            write_outputs(module, tmp_path, "net", (fmt,))
    assert stat.S_ISFIFO(os.lstat(tmp_path / "net.onnx").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.pt2"]


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys, warnings
    import ninport
    from ninport.export.artifacts import write_outputs
    from ninport.errors import NinportError
    warnings.simplefilter("ignore")
    module = ninport.load(sys.argv[1], sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG, as on a full disk
    limit = int(sys.argv[5])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        write_outputs(module, sys.argv[3], "net", [sys.argv[4]])
    except NinportError as exc:
        print("NinportError:", type(exc).__name__, exc)
        sys.exit(1)
""")


@pytest.mark.parametrize("fmt, limit", [("pt2", 2000), ("onnx", 1000), ("safetensors", 200)])
def test_full_disk_is_a_clean_export_error(tmp_path, fmt, limit):
    """Each file is larger than `limit` bytes (conv_rect: about 6.9k, 1.8k, 450)."""
    case = load_golden("conv_rect")
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(case.prototxt), str(case.weights), str(out), fmt,
                             str(limit)],
                            check=False, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # not 134 (abort) from torch's zip writer
    assert "NinportError: ExportError" in result.stdout
    assert "File too large" in result.stdout and "staging" not in result.stdout
    assert "terminate called" not in result.stderr
    assert list(out.iterdir()) == []


_WRITE_ALL = textwrap.dedent("""
    import sys
    import ninport
    from ninport.export.artifacts import write_outputs, write_pt2
    module = ninport.load(sys.argv[1], sys.argv[2])
    write_outputs(module, sys.argv[3], "net", ["onnx", "pt2", "safetensors"])
    write_pt2(module, sys.argv[3] + "/other.pt2")
""")


def test_no_torch_chatter_on_pt2_and_onnx_writes(tmp_path):
    """In a plain process (no pytest log capture): nothing on stdout or stderr, e.g. no
    "Expect archive file to be a file ending in .pt2" from torch's logger."""
    case = load_golden("conv_rect")
    result = subprocess.run([sys.executable, "-c", _WRITE_ALL, str(case.prototxt), str(case.weights), str(tmp_path)],
                            check=False, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "" and result.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.pt2", "net.safetensors", "other.pt2"]


def test_pt2_holds_no_pickle(module, tmp_path):
    path = write_pt2(module, tmp_path / "m.pt2")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    assert any(name.endswith("models/model.json") for name in members)
    for name, data in members.items():
        assert not name.endswith((".pkl", ".pickle")), name
        assert not data.startswith(b"\x80"), f"{name} starts with a pickle protocol opcode"
        assert not data.startswith(b"PK\x03\x04"), f"{name} is a nested zip (torch.save format)"
        if name.endswith(".json"):
            assert b'"use_pickle": true' not in data.replace(b" ", b"").replace(b'":', b'": '), name
    program = torch.export.load(str(path))  # loads and runs without the sample inputs
    shape = next(iter(ninport.describe(module).inputs.values()))
    x = torch.rand(3, *shape[1:])
    with plain_kernels(), torch.no_grad():
        assert torch.equal(program.module()(x), module(x))


def test_the_callers_training_flags_are_kept(module, tmp_path):
    from ninport.export.onnx import export_onnx

    module.train()
    first = next(module.children())
    first.eval()  # a mixed state, restored exactly
    try:
        export_onnx(module, tmp_path / "t.onnx")
        write_pt2(module, tmp_path / "t.pt2")
        write_outputs(module, tmp_path / "o", "net", FORMATS)
        assert module.training and not first.training
        assert all(m.training for m in module.modules() if m is not first and m is not module)
    finally:
        module.eval()
