"""Names from a model file are data: they never become Python code (issue: a crafted prototxt ran code)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import ninport
from ninport.build.graph import python_identifier

INJECTION = r'''name: "inj"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "P" type: "ReLU" bottom: "data" top: "r1" }
layer { name: 'P" if getattr(__import__("os"), "system")("touch PWNED") == 0 else "P' type: "ReLU" bottom: "r1" top: "r2" }
'''


def test_crafted_layer_name_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proto = tmp_path / "inj.prototxt"
    proto.write_text(INJECTION)
    module = ninport.load(proto)
    out = module(torch.randn(1, 3, 8, 8))
    assert out.shape == (1, 3, 8, 8)
    assert not (tmp_path / "PWNED").exists()
    # no string literal (where the name broke out) is left in the generated source: only identifiers
    assert '"' not in module.code and "'" not in module.code
    # the Caffe name is kept as data
    names = [layer.name for layer in ninport.describe(module).layers]
    assert names[1].startswith('P" if getattr(__import__')


@pytest.mark.parametrize("name", ["forward", "graph", "_modules", "def", "code", "meta", "training", "",
                                  "1x1", "self", "__class__", "a.b", "é", "class", "-", "__init__"])
def test_awkward_layer_and_blob_names_work(tmp_path, name):
    escaped = name.replace("\x00", "\\000")
    proto = tmp_path / "n.prototxt"
    proto.write_text(
        'input: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
        f'layer {{ name: "{escaped}" type: "Power" bottom: "data" top: "{escaped or "t"}" power_param {{ scale: 2 }} }}\n'
        f'layer {{ name: "{escaped}x" type: "AbsVal" bottom: "{escaped or "t"}" top: "y" }}\n')
    module = ninport.load(proto)
    x = torch.randn(1, 2, 3, 3)
    np.testing.assert_allclose(module(x).detach().numpy(), (2 * x).abs().detach().numpy())
    assert ninport.describe(module).layers[0].name == name
    for attribute in (r.module for r in ninport.describe(module).layers):
        assert attribute.isidentifier() and attribute.isascii()


def test_identifiers_are_unique_and_never_reserved():
    used: set[str] = set()
    got = [python_identifier(n, used) for n in ["a-b", "a.b", "a_b", "forward", "def", "", "", "9"]]
    assert len(set(got)) == len(got)
    assert got[:3] == ["a_b", "a_b_2", "a_b_3"]
    assert all(g.isidentifier() for g in got) and "forward" not in got and "def" not in got


def test_description_survives_deepcopy_and_can_be_passed_after_a_transform(tmp_path):
    proto = tmp_path / "inj.prototxt"
    proto.write_text(INJECTION)
    module = ninport.load(proto)
    clone = copy.deepcopy(module)
    assert ninport.describe(clone) == ninport.describe(module)
    transformed = torch.fx.GraphModule(module, module.graph)
    with pytest.raises(ninport.NinportError, match="description="):
        ninport.describe(transformed)


def test_nul_byte_in_a_name_is_a_clear_error(tmp_path):
    proto = tmp_path / "n.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
                     'layer { name: "a\\000b" type: "AbsVal" bottom: "data" top: "y" }\n')
    with pytest.raises(ninport.ParseError, match=r"n\.prototxt:3: .*NUL byte"):
        ninport.load(proto)
