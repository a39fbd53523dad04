#!/usr/bin/env python3
"""Regenerate ``ninport/caffe/caffe_pb2.py`` from ``proto/caffe.proto``.

Pinned generator: ``grpcio-tools==1.62.3`` (bundles protoc 25.1, i.e. the
protobuf 4.25 code generator), invoked as ``python -m grpc_tools.protoc``.

Why this version: its output does not call
``runtime_version.ValidateProtobufRuntimeVersion`` (added by protoc 26+), so
the checked-in module imports and works unchanged on protobuf Python runtimes
4.25.x, 5.29.x, 6.33.x and 7.36.x (both upb and pure-python backends).

grpcio-tools 1.62.3 itself requires ``protobuf<5``; if your working
environment has a newer protobuf, install the generator into a throwaway venv
and point ``--python`` at it::

    python3 -m venv /tmp/pbgen && /tmp/pbgen/bin/pip install grpcio-tools==1.62.3
    python tools/generate_proto.py --python /tmp/pbgen/bin/python

Output is deterministic: the same proto and the same pinned protoc always give
byte-identical output (protoc is run from inside ``proto/`` so the embedded
source path is just ``caffe.proto``).  No torch or other project imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED_GRPCIO_TOOLS = "1.62.3"
PINNED_REQUIREMENT = f"grpcio-tools=={PINNED_GRPCIO_TOOLS}"
PINNED_PROTOC = "libprotoc 25.1"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROTO = REPO_ROOT / "proto" / "caffe.proto"
DEFAULT_OUTPUT = REPO_ROOT / "ninport" / "caffe" / "caffe_pb2.py"


class GeneratorUnavailable(RuntimeError):
    """The pinned generator is not installed for the chosen interpreter."""


def _run(python: str, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "grpc_tools.protoc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def check_generator(python: str = sys.executable) -> str:
    """Return the protoc version string, or raise GeneratorUnavailable."""
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, grpc_tools.protoc; "
            "print(m.version('grpcio-tools'))",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise GeneratorUnavailable(
            f"grpc_tools is not importable by {python}; install {PINNED_REQUIREMENT}"
        )
    version = probe.stdout.strip()
    if version != PINNED_GRPCIO_TOOLS:
        raise GeneratorUnavailable(
            f"{python} has grpcio-tools {version}, need {PINNED_REQUIREMENT}"
        )
    res = _run(python, ["--version"])
    protoc = (res.stdout or res.stderr).strip()
    if res.returncode != 0 or protoc != PINNED_PROTOC:
        raise GeneratorUnavailable(f"unexpected bundled protoc: {protoc!r}, want {PINNED_PROTOC!r}")
    return protoc


def generate(
    output: Path = DEFAULT_OUTPUT,
    proto: Path = DEFAULT_PROTO,
    python: str = sys.executable,
) -> Path:
    """Compile ``proto`` with the pinned protoc and write the module to ``output``."""
    check_generator(python)
    proto = Path(proto).resolve()
    output = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        res = _run(python, ["-I.", f"--python_out={tmp}", proto.name], cwd=proto.parent)
        if res.returncode != 0:
            raise RuntimeError(f"protoc failed:\n{res.stdout}{res.stderr}")
        generated = Path(tmp) / (proto.stem + "_pb2.py")
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(generated, output)
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT,
                    help=f"output .py path (default: {os.path.relpath(DEFAULT_OUTPUT)})")
    ap.add_argument("--proto", type=Path, default=DEFAULT_PROTO, help="input .proto file")
    ap.add_argument("--python", default=sys.executable,
                    help=f"interpreter that has {PINNED_REQUIREMENT} installed")
    ns = ap.parse_args(argv)
    try:
        out = generate(ns.output, ns.proto, ns.python)
    except GeneratorUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
