"""Nets Caffe itself refuses, or names ninport cannot carry, end in one clear NinportError when the
net is read (issue 9): 0-D inputs, topless layers, NUL bytes, unnamed twins, inputs overwritten."""
from __future__ import annotations

import pytest

from ninport.caffe.spec import load_netspec
from ninport.errors import NinportError, ParseError, ShapeError

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'


def read(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return load_netspec(path)


def refused(tmp_path, exc_type, text) -> str:
    with pytest.raises(exc_type) as info:
        read(tmp_path, text)
    message = str(info.value)
    assert isinstance(info.value, NinportError) and "\n" not in message and "net.prototxt:" in message
    return message


def test_zero_d_input_shape(tmp_path):
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { } } }\n'
            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert "0-D" in refused(tmp_path, ShapeError, text)


def test_split_without_top(tmp_path):
    message = refused(tmp_path, ParseError, INPUT + 'layer { name: "s" type: "Split" bottom: "data" }\n')
    assert 'layer "s" (Split)' in message and "no top" in message and "net.prototxt:2" in message


def test_nul_byte_in_names_is_refused_and_shown_escaped(tmp_path):
    message = refused(tmp_path, ParseError, INPUT + 'layer { name: "a\\000b" type: "ReLU" bottom: "data" top: "r" }\n')
    assert "\x00" not in message and "\\x00" in message and "NUL" in message
    message = refused(tmp_path, ParseError, INPUT + 'layer { name: "a" type: "ReLU" bottom: "data" top: "r\\0" }\n')
    assert "\x00" not in message and "'r\\x00'" in message


def test_empty_layer_and_blob_names_work(tmp_path):
    spec = read(tmp_path, INPUT + 'layer { type: "ReLU" bottom: "data" top: "" }\n'
                                  'layer { name: "x" type: "Sigmoid" bottom: "" top: "s" }\n')
    assert [layer.name for layer in spec.layers] == ["", "x"] and spec.outputs == ["s"]


def test_two_unnamed_layers_are_two_layers(tmp_path):
    """Caffe accepts repeated layer names, the empty one included; each layer keeps its own key."""
    spec = read(tmp_path, INPUT + 'layer { type: "ReLU" bottom: "data" top: "a" }\n'
                                  'layer { type: "ReLU" bottom: "a" top: "b" }\n')
    assert [(layer.name, layer.key, layer.repeats_a_name) for layer in spec.layers] == [
        ("", "", False), ("", "\x002", True)]


def test_input_reused_as_a_layer_output(tmp_path):
    message = refused(tmp_path, ParseError, INPUT + 'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\n'
                                                    'layer { name: "b" type: "Sigmoid" bottom: "x" top: "data" }\n')
    assert "'data' is a net input" in message and 'layer "b"' in message
    # In place over an input is what Caffe allows.
    spec = read(tmp_path, INPUT + 'layer { name: "a" type: "ReLU" bottom: "data" top: "data" }\n')
    assert spec.outputs == ["data"]
