"""The public Python API's argument handling."""
from __future__ import annotations

import pytest

import ninport
from tests.conftest import NIN_DEPLOY, VENDORED_GOLDEN


def test_input_shape_forms_agree():
    expected = {"data": (2, 3, 227, 227)}
    for given in [(2, 3, 227, 227), "2,3,227,227", "2x3x227x227", {"data": "2,3,227,227"},
                  ["2,3,227,227"], ["data=2,3,227,227"]]:
        assert ninport.load_spec(NIN_DEPLOY, given).inputs == expected, given


@pytest.mark.parametrize("bad", ["", "1,3,-2,4", "a,b", ["nope=1,3,8,8"], (0, 3, 8, 8)])
def test_bad_input_shapes_are_clear_errors(bad):
    with pytest.raises(ninport.NinportError):
        ninport.load_spec(NIN_DEPLOY, bad)


def test_named_input_shape_on_the_command_line(tmp_path):
    from tests.test_cli import run_cli

    result = run_cli("inspect", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "--input-shape",
                     "data=2,4,15,15")
    assert result.returncode == 0, result.stderr
    assert "data [2, 4, 15, 15]" in result.stdout


def test_reading_and_inspecting_do_not_import_torch():
    """`ninport inspect` and `upgrade` start in a fraction of torch's import time; keep it so."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, ninport, ninport.cli\n"
            "from ninport.caffe.shapes import infer_shapes\n"
            "infer_shapes(ninport.load_spec(sys.argv[1]))\n"
            "ninport.cli.build_parser()\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(NIN_DEPLOY)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
