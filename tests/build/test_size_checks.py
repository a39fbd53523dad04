"""Run-time size refusals come from the layers' shape rules (ninport.build.size_checks), decided once
per distinct bottom shapes."""
from __future__ import annotations

import warnings

import onnx
import pytest
import torch

import ninport
from ninport.api import load_spec
from ninport.build.size_checks import size_guard
from ninport.caffe.geometry import GeometryError
from ninport.errors import ShapeError
from ninport.registry import layer_type
from tests.conftest import REPO

NET = """
name: "sizes"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 5 stride: 1 } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "pool" top: "crop" crop_param { axis: 2 offset: 3 } }
"""


def _load(tmp_path, text: str = NET):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights: only the sizes matter here
        return ninport.load(prototxt)


def _rule_says(prototxt, layer_name: str, *bottoms) -> str:
    """What the layer's shape rule itself says about these bottoms (no torch involved)."""
    layer = next(layer for layer in load_spec(prototxt).layers if layer.name == layer_name)
    with pytest.raises(GeometryError) as info:
        layer_type(layer.type).shapes(layer, [tuple(b) for b in bottoms])
    return str(info.value)


def test_a_run_time_refusal_is_the_shape_rules_message(tmp_path):
    module = _load(tmp_path)
    with pytest.raises(ShapeError) as info:
        module(torch.rand(1, 2, 4, 4))  # a 5x5 window does not fit a 4x4 plane
    assert str(info.value) == ("layer 'pool' (Pooling) cannot take bottom [1, 2, 4, 4] (it was built for "
                               f"[1, 2, 8, 8]): {_rule_says(tmp_path / 'net.prototxt', 'pool', (1, 2, 4, 4))}")
    crop = dict(module.named_children())[ninport.describe(module).module_of("crop")]
    with pytest.raises(ShapeError) as info:  # offset 3 + 6 runs past the 8 of the first bottom
        crop(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 6, 6))
    assert str(info.value).endswith("(it was built for [1, 2, 8, 8], [1, 2, 4, 4]): "
                                    + _rule_says(tmp_path / "net.prototxt", "crop", (1, 2, 8, 8), (1, 2, 6, 6)))


def test_a_size_is_decided_once(tmp_path):
    module = _load(tmp_path)
    guard = size_guard(dict(module.named_children())[ninport.describe(module).module_of("pool")])
    module(torch.rand(1, 2, 8, 8))
    assert guard.rule_runs == 0  # the reference size was decided at build time
    for _ in range(3):
        module(torch.rand(1, 2, 12, 12))
    assert guard.rule_runs == 1
    for _ in range(2):
        with pytest.raises(ShapeError):
            module(torch.rand(1, 2, 3, 3))
    assert guard.rule_runs == 2  # a refusal is remembered too


def test_a_plugins_shape_rule_decides_its_run_time_sizes_once(tmp_path):
    calls = []

    def shape(layer, shapes):
        calls.append(tuple(shapes[0]))
        if shapes[0][2] % 2:
            raise ValueError("odd heights are not taken")
        return [shapes[0]]

    ninport.register_layer("EvenOnly", shape=shape, module=lambda ctx: torch.nn.Identity())
    try:
        module = _load(tmp_path, 'name: "p"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                                 'layer { name: "e" type: "EvenOnly" bottom: "data" top: "y" }\n')
    finally:
        ninport.unregister_layer("EvenOnly")
    built = len(calls)
    for _ in range(3):
        module(torch.rand(1, 2, 6, 6))
    assert calls[built:] == [(1, 2, 6, 6)]
    with pytest.raises(ShapeError, match=r"layer 'e' \(EvenOnly\) cannot take bottom \[1, 2, 5, 5\] .*"
                                         r"ValueError: odd heights are not taken"):
        module(torch.rand(1, 2, 5, 5))


INTERP_NET = """
name: "interp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 7 dim: 9 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "small" pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
layer { name: "ip" type: "Interp" bottom: "small" bottom: "data" top: "y" }
"""


def test_tracing_checks_nothing_and_keeps_the_sizes_symbolic(tmp_path):
    """The guards stay out of the exporter's way: not one size looked at, height and width stay symbolic
    (no NinportWarning about fixing them)."""
    module = _load(tmp_path, INTERP_NET)
    guards = [size_guard(sub) for sub in module.children()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ninport.NinportWarning)
        path = ninport.export_onnx(module, tmp_path / "net.onnx")
    assert [guard.rule_runs for guard in guards] == [0, 0]
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 6, "height", "width"]


def test_fx_symbolic_trace_passes_the_guards():
    """torch.fx's own tracer (fx passes such as optimize_for_inference run it) sees no sizes: the guards
    let its proxies through, and the traced graph computes the module's numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights
        module = ninport.load(REPO / "reference_models" / "nin_imagenet" / "deploy.prototxt")
    traced = torch.fx.symbolic_trace(module)
    x = torch.rand(1, 3, 224, 224) * 255 - 117
    with torch.no_grad():
        assert torch.allclose(traced(x), module(x), rtol=1e-5, atol=1e-6)
