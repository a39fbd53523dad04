"""The public Python API's argument handling."""
from __future__ import annotations

import pytest

import ninport
from tests.conftest import NIN_DEPLOY, VENDORED_GOLDEN


def test_input_shape_forms_agree():
    expected = {"data": (2, 3, 227, 227)}
    for given in [(2, 3, 227, 227), "2,3,227,227", "2x3x227x227", {"data": "2,3,227,227"}, {"data": [2, 3, 227, 227]}]:
        assert ninport.load_spec(NIN_DEPLOY, given).inputs == expected, given


def test_the_command_lines_named_shapes_are_parsed_by_the_cli():
    """`--input-shape [NAME=]dims` is the CLI's text: cli.py turns it into a shape or a dict; the library's
    InputShape takes no "name=dims" strings."""
    from ninport.cli import input_shape, input_shapes

    assert input_shapes([input_shape("2,3,227,227")], str(NIN_DEPLOY), None) == (2, 3, 227, 227)
    assert input_shapes([input_shape(" data = 2x3x227x227")], str(NIN_DEPLOY), None) == {"data": (2, 3, 227, 227)}
    assert input_shapes([input_shape("2,3,9,9"), input_shape("other=1,1")], str(NIN_DEPLOY), None) == {
        "data": (2, 3, 9, 9), "other": (1, 1)}
    assert input_shapes(None, str(NIN_DEPLOY), None) is None
    with pytest.raises(ninport.ShapeError, match="dimensions must be integers"):
        ninport.load_spec(NIN_DEPLOY, ["data=2,3,227,227"])


@pytest.mark.parametrize("bad", ["", "1,3,-2,4", "a,b", {"nope": "1,3,8,8"}, (0, 3, 8, 8)])
def test_bad_input_shapes_are_clear_errors(bad):
    with pytest.raises(ninport.NinportError):
        ninport.load_spec(NIN_DEPLOY, bad)


def test_named_input_shape_on_the_command_line(tmp_path):
    from tests.test_cli import run_cli

    result = run_cli("inspect", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "--input-shape",
                     "data=2,4,15,15")
    assert result.returncode == 0, result.stderr
    assert "data [2, 4, 15, 15]" in result.stdout


def test_reading_does_not_import_torch():
    """Reading a net (and building the CLI's parser) never imports torch, so a bad file or argument answers
    in a fraction of torch's import time. Shape rules live beside their torch modules (one file per layer
    family), so `infer_shapes` and `inspect` do import torch."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, ninport, ninport.cli\n"
            "spec = ninport.load_spec(sys.argv[1])\n"
            "ninport.cli.build_parser()\n"
            "print('torch' in sys.modules, len(spec.layers))")
    result = subprocess.run([sys.executable, "-c", code, str(NIN_DEPLOY)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "29"]


@pytest.mark.parametrize("call,needle", [
    (lambda: ninport.load(123), "prototxt must be a file path"),
    (lambda: ninport.load(NIN_DEPLOY, weights=b"x.caffemodel"), "weights must be a file path"),
    (lambda: ninport.load(NIN_DEPLOY, seed=1.5), "seed must be an integer"),
    (lambda: ninport.load_spec(None), "prototxt must be a file path"),
    (lambda: ninport.load_spec(NIN_DEPLOY, (1, 3, 2.5, 4)), "dimensions must be integers, got float"),
    (lambda: ninport.load_spec(NIN_DEPLOY, (1, 3, True, 4)), "dimensions must be integers, got bool"),
    (lambda: ninport.load_spec(NIN_DEPLOY, 224), "input_shape must be"),
    (lambda: ninport.convert_files(NIN_DEPLOY, out_dir=5), "out_dir must be a file path"),
])
def test_wrong_argument_types_name_the_argument(call, needle):
    with pytest.raises(ninport.NinportError, match=needle):
        call()


def test_float_input_shape_is_refused_not_truncated():
    """(1, 3, 227.9, 227.9) once became 227x227 silently."""
    with pytest.raises(ninport.ShapeError):
        ninport.load_spec(NIN_DEPLOY, (1, 3, 227.9, 227.9))
    assert ninport.load_spec(NIN_DEPLOY, "1,3,227,227").inputs["data"] == (1, 3, 227, 227)
    import numpy as np

    assert ninport.load_spec(NIN_DEPLOY, np.array([1, 3, 227, 227])).inputs["data"] == (1, 3, 227, 227)


def test_a_missing_optional_package_is_refused_before_the_export(tmp_path, monkeypatch):
    """--format safetensors must not fail after a long export: the package is checked first."""
    import importlib.util

    import ninport.export.conversion

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    monkeypatch.setattr(ninport, "load", lambda *a, **k: pytest.fail("the net was loaded first"))
    with pytest.raises(ninport.ExportError, match="needs the `safetensors` package"):
        ninport.convert_files(NIN_DEPLOY, out_dir=tmp_path, formats=("onnx", "safetensors"))
    assert list(tmp_path.iterdir()) == []


def test_convert_files_returns_what_it_did(tmp_path):
    pytest.importorskip("onnxruntime")
    case = VENDORED_GOLDEN / "conv_group2"
    stages = []
    result = ninport.convert_files(case / "net.prototxt", case / "weights.caffemodel", tmp_path,
                                   progress=stages.append)
    assert isinstance(result, ninport.ConversionResult)
    assert result.written == {"onnx": tmp_path / "net.onnx"} and result.weights == case / "weights.caffemodel"
    assert result.description.outputs == ("out",) and result.check.passed
    assert [s.split()[0] for s in stages] == ["reading", "exporting", "checking"]


def test_the_wheel_ships_py_typed(tmp_path):
    """PEP 561: the installed package carries `py.typed`, so type checkers use ninport's annotations."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from tests.conftest import REPO

    source = tmp_path / "src"
    shutil.copytree(REPO / "ninport", source / "ninport", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("ninport-*.whl"))
    assert "ninport/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_every_lazy_name_is_typed_and_importable():
    """Each name `ninport.__getattr__` serves lazily is imported under TYPE_CHECKING too (so type checkers see
    `ninport.load`'s real signature), from the same module, and resolves at run time."""
    import ast

    from tests.conftest import REPO

    tree = ast.parse((REPO / "ninport" / "__init__.py").read_text())
    typed = {alias.asname or alias.name: node.module for block in ast.walk(tree) if isinstance(block, ast.If)
             and ast.unparse(block.test) == "TYPE_CHECKING" for node in block.body
             if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert typed == ninport._LAZY
    for name in ninport._LAZY:
        assert getattr(ninport, name) is not None
    assert ninport.LayerContext.__name__ == "LayerContext"
