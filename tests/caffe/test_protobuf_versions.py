"""The checked-in caffe_pb2 works with every protobuf runtime people have: 4.x, 5.x, 6.x and 7.x.

Each version is installed into a throwaway folder (pip --target) and the reader runs against it in
a subprocess: parse a V1 prototxt, upgrade it, build the NetSpec, read a V1 caffemodel.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, VENDORED_GOLDEN

VERSIONS = ["4.25.8", "5.29.5", "6.33.1", "7.36.2"]

PROBE = """
import google.protobuf, sys
from ninport.caffe.spec import load_netspec
from ninport.build.shapes import infer_shapes
from ninport.caffe.io import read_caffemodel
case = sys.argv[1]
spec = load_netspec(case + "/net.prototxt")
table = infer_shapes(spec)
blobs = read_caffemodel(case + "/weights.caffemodel")
print(google.protobuf.__version__, spec.source_format, table.blobs["prob"], len(blobs))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_reader_works_with_protobuf(version, tmp_path_factory):
    target = tmp_path_factory.mktemp(f"protobuf-{version}")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-deps", "--target", str(target), f"protobuf=={version}"],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"cannot install protobuf=={version} here: {install.stderr.strip().splitlines()[-1:]}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO)]))
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    result = subprocess.run([sys.executable, "-c", PROBE, str(VENDORED_GOLDEN / "legacy_v1")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [version, "V1", "(2,", "5)", "5"]
