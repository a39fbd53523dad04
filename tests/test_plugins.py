"""The plugin API: a user's own layer type through `ninport.register_layer` and `--plugin FILE`, with
its parameters, bottom shapes and weights; load, inspect, convert and verify; errors that name the
layer and the plugin instead of a traceback; the example of docs/plugins.md is the shipped plugin file."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import ninport
from ninport import registry
from ninport.caffe import caffe_pb2
from ninport.caffe.spec import LayerSpec
from ninport.cli import main
from ninport.plugins import load_plugin
from tests.caffe_files import input_layer, write_caffemodel
from tests.conftest import REPO

PLUGIN = REPO / "tests" / "fixtures" / "plugins" / "my_layers.py"
NET = REPO / "tests" / "fixtures" / "plugins" / "swish_net.prototxt"
TYPES = ("ChannelSwish", "Twice", "Broken")


@pytest.fixture(autouse=True)
def clean_registry():
    for name in TYPES:
        registry.unregister_layer(name)
    yield
    for name in TYPES:
        registry.unregister_layer(name)


def _swish(x, factor, beta):
    return x / (1 + np.exp(-beta * factor.reshape(1, -1, 1, 1) * x))


def test_plugin_file_gets_params_shapes_and_weights(tmp_path):
    assert load_plugin(PLUGIN) == ["ChannelSwish"]
    assert registry.layer_type("ChannelSwish").origin == "plugin my_layers.py"
    factor = np.array([0.5, -1.0, 2.0], np.float32)
    weights = write_caffemodel(tmp_path / "w.caffemodel", {"act": [factor]})
    model = ninport.load(NET, weights)
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = _swish(x, factor, 2.0)  # beta 2 from swish_param, factor from the caffemodel
    np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    from ninport.export.artifacts import verify_onnx

    (got,) = verify_onnx(ninport.export_onnx(model, tmp_path / "swish.onnx"), {"data": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cli_inspect_convert_verify_with_plugin(tmp_path, capsys):
    assert main(["inspect", str(NET), "--plugin", str(PLUGIN), "--json"]) == 0
    assert '"type": "ChannelSwish"' in capsys.readouterr().out
    assert main(["convert", str(NET), "--plugin", str(PLUGIN), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "swish_net.onnx").is_file()
    assert main(["verify", str(NET), "--plugin", str(PLUGIN), "--no-opencv"]) == 0


def test_cli_without_the_plugin_says_how_to_add_the_type(capsys):
    assert main(["inspect", str(NET)]) == 1
    err = capsys.readouterr().err
    assert 'layer "act" (ChannelSwish): unknown layer type' in err and "--plugin" in err


def _plugin(tmp_path, source: str):
    path = tmp_path / "bad_layers.py"
    path.write_text(source)
    return path


def _net(tmp_path, layer_type="Broken"):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + input_layer((1, 2, 3, 3))
                    + f'layer {{ name: "odd" type: "{layer_type}" bottom: "data" top: "y" }}\n')
    return path


HEAD = "import torch\nimport ninport\n"


@pytest.mark.parametrize("source,message", [
    ("def broken(:\n", r"plugin .*bad_layers.py: line 1: SyntaxError"),
    (HEAD + "\n\nraise RuntimeError('no GPU here')\n",
     r"plugin .*bad_layers.py: line 5: importing it failed: RuntimeError: no GPU here"),
    (HEAD + "ninport.register_layer('Convolution', shape=lambda l, s: s, module=lambda c: None)\n",
     r"plugin .*bad_layers.py: line 3: layer type 'Convolution' is already registered"),
    (HEAD + "x = 1\n", r"plugin .*bad_layers.py: registers no layer type"),
])
def test_plugin_that_fails_to_import_is_one_error_and_leaves_nothing(tmp_path, source, message, capsys):
    path = _plugin(tmp_path, source)
    with pytest.raises(ninport.NinportError, match=message):
        load_plugin(path)
    assert main(["inspect", str(_net(tmp_path)), "--plugin", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ninport: error: plugin") and "Traceback" not in err
    assert registry.layer_type("Convolution").origin == "BVLC Caffe"


def test_half_registered_plugin_is_rolled_back(tmp_path):
    path = _plugin(tmp_path, HEAD + "ninport.register_layer('Twice', shape=lambda l, s: s, module=lambda c: None)\n"
                   "raise ValueError('later line fails')\n")
    with pytest.raises(ninport.NinportError, match="line 4: importing it failed: ValueError"):
        load_plugin(path)
    assert registry.layer_type("Twice") is None


@pytest.mark.parametrize("body,message", [
    ("shape=lambda layer, shapes: 1 / 0, module=lambda ctx: torch.nn.Identity()",
     (r'net.prototxt:\d+: layer "odd" \(Broken\): the shape rule of plugin bad_layers.py type .Broken. failed: '
      r"ZeroDivisionError")),
    ("shape=lambda layer, shapes: shapes, module=lambda ctx: 42",
     r'layer "odd" \(Broken\): the plugin bad_layers.py module function returned int, not a torch.nn.Module'),
    ("shape=lambda layer, shapes: shapes, module=lambda ctx: torch.nn.Flatten()",
     (r'layer "odd" \(Broken\): the plugin bad_layers.py module computes tops \[\(1, 18\)\], its shape rule said '
      r"\[\(1, 2, 3, 3\)\]")),
    ("shape=lambda layer, shapes: shapes, module=lambda ctx: torch.nn.Linear(5, 5)",
     (r'layer "odd" \(Broken\): the plugin bad_layers.py module failed on bottoms of shapes \[1, 2, 3, 3\]: '
      r"RuntimeError")),
])
def test_plugin_errors_name_the_layer_and_the_plugin(tmp_path, body, message, capsys):
    path = _plugin(tmp_path, HEAD + f"ninport.register_layer('Broken', {body})\n")
    net = _net(tmp_path)
    assert main(["convert", str(net), "--plugin", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "out" / "net.onnx").exists()


def test_layer_param_reads_typed_fields_and_kept_unknown_fields():
    proto = caffe_pb2.LayerParameter(name="c", type="Convolution")
    proto.convolution_param.kernel_size.extend([3, 5])
    proto.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    layer = LayerSpec("c", "Convolution", [], [], proto)
    layer.unknown_fields = {"my_param.alpha": [0.5, 0.25], "other_param": [{"inner": [{"depth": [7]}]}]}
    assert ninport.layer_param(layer, "convolution_param.kernel_size") == [3, 5]
    assert ninport.layer_param(layer, "pooling_param.pool") == "AVE"
    assert ninport.layer_param(layer, "convolution_param.num_output", 64) == 64  # not given: the default
    assert ninport.layer_param(layer, "my_param.alpha") == 0.25  # given twice: the last, as protobuf
    assert ninport.layer_param(layer, "other_param.inner.depth") == 7
    assert ninport.layer_param(layer, "my_param.beta", "absent") == "absent"
    assert registry.layer_fields(layer, "my_param") == {"alpha"}
    assert registry.layer_fields(layer, "convolution_param") == {"kernel_size"}


def test_docs_plugin_example_is_the_shipped_plugin_file():
    """The example of docs/plugins.md starts with exactly tests/fixtures/plugins/my_layers.py."""
    docs = (REPO / "docs" / "plugins.md").read_text()
    block = re.search(r"```python\n(.*?)```", docs, flags=re.DOTALL).group(1)
    assert block.startswith(PLUGIN.read_text())


def test_cli_runs_plugin_in_a_fresh_process_without_importing_model_code(tmp_path):
    """The prototxt is data: a layer named like code never runs; only the plugin file does."""
    net = tmp_path / "net.prototxt"
    net.write_text(NET.read_text().replace('name: "act"', 'name: "__import__(\'os\').system(\'touch pwned\')"'))
    result = subprocess.run([sys.executable, "-m", "ninport.cli", "convert", str(net), "--plugin", str(PLUGIN),
                             "-o", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            check=False,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists()


def test_a_plugin_file_can_give_a_dialect_its_own_semantics(tmp_path, capsys):
    """`register_layer(..., dialect=...)` in a plugin file: `--dialect` selects it, other nets keep the default."""
    plugin = tmp_path / "halved_relu.py"
    plugin.write_text("import torch\nimport ninport\n\n"
                      "class Halved(torch.nn.Module):\n"
                      "    def forward(self, x):\n"
                      "        return torch.relu(x) / 2\n\n"
                      "ninport.register_dialect('halved', about='a test fork')\n"
                      "ninport.register_layer('ReLU', shape=lambda layer, shapes: [shapes[0]],\n"
                      "                       module=lambda ctx: Halved(), dialect='halved')\n")
    net = tmp_path / "net.prototxt"
    net.write_text(input_layer((1, 3)) + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    try:
        assert load_plugin(plugin) == ["ReLU"]
        assert registry.layer_type("ReLU", "halved").origin == "plugin halved_relu.py"
        assert registry.layer_type("ReLU").origin == "BVLC Caffe"
        x = torch.tensor([[-2.0, 2.0, 4.0]])
        assert ninport.load(net, dialect="halved")(x).tolist() == [[0.0, 1.0, 2.0]]
        assert ninport.load(net)(x).tolist() == [[0.0, 2.0, 4.0]]
        assert main(["inspect", str(net), "--plugin", str(plugin), "--dialect", "halved"]) == 0
    finally:
        registry.unregister_layer("ReLU", "halved")


def test_a_plugin_file_declares_its_bottom_and_top_counts(tmp_path):
    """`--plugin` re-registers the file's types under its name: their declared counts stay checked."""
    path = _plugin(tmp_path, HEAD + "ninport.register_layer('Twice', shape=lambda l, s: [s[0]], "
                                    "module=lambda c: torch.nn.Identity(), bottoms=1, tops=1)\n")
    assert load_plugin(path) == ["Twice"]
    record = registry.layer_type("Twice")
    assert record.origin == "plugin bad_layers.py" and (record.counts.bottoms, record.counts.tops) == ((1, 1), (1, 1))
    net = tmp_path / "net.prototxt"
    net.write_text(input_layer((1, 2, 3, 3)) + 'layer { name: "t" type: "Twice" bottom: "data" top: "a" top: "b" }\n')
    with pytest.raises(ninport.ShapeError, match='layer "t" \\(Twice\\): has 2 tops, but a Caffe Twice layer produces '
                                                 "exactly 1 top"):
        ninport.load(net)


def test_a_plugin_file_sets_its_types_settings_and_statistics(tmp_path):
    """The LayerType facts a plugin gives (`settings`, `statistics`) reach `inspect`, after `--plugin`
    re-registers the file's types under its name as before; a settings function that fails names the layer."""
    path = _plugin(tmp_path, HEAD + (
        "from ninport import LayerShapes\n"
        "ninport.register_layer('Twice', shape=lambda l, s: LayerShapes(tops=[s[0]], params=[(2,), (2,), (1,)]),\n"
        "    module=lambda c: torch.nn.Identity(), settings=lambda layer: 'running ' + layer.name,\n"
        "    statistics=(1, 2))\n"
        "ninport.register_layer('Broken', shape=lambda l, s: [s[0]], module=lambda c: torch.nn.Identity(),\n"
        "    settings=lambda layer: 1 / 0)\n"))
    assert sorted(load_plugin(path)) == ["Broken", "Twice"]
    assert registry.layer_type("Twice").statistics == (1, 2)
    net = tmp_path / "net.prototxt"
    net.write_text(input_layer((1, 2, 3, 3)) + 'layer { name: "t" type: "Twice" bottom: "data" top: "a" }\n')
    row = ninport.summary(net).layers[0]
    assert (row.settings, row.parameters, row.statistics) == ("running t", 2, 3)
    net.write_text(input_layer((1, 2, 3, 3)) + 'layer { name: "b" type: "Broken" bottom: "data" top: "a" }\n')
    with pytest.raises(ninport.NinportError, match=r"layer 'b' \(Broken\): the settings or statistics function of "
                                                   r"plugin bad_layers.py failed: ZeroDivisionError"):
        ninport.summary(net)
    with pytest.raises(ninport.NinportError, match="statistics must be blob indices"):
        ninport.register_layer("Twice", shape=lambda l, s: s, module=lambda c: None, statistics="mean", replace=True)
