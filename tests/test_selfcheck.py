"""`ninport.check_onnx`: onnxruntime against the torch module, on every output and the logits of a Softmax."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ninport
from ninport.selfcheck import compare_one, reference_inputs
from tests.conftest import VENDORED_GOLDEN
from tests.test_cli import messages, run_cli

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'


def _net(tmp_path, body: str, dims: str = "dim: 2 dim: 6"):
    path = tmp_path / "net.prototxt"
    path.write_text(INPUT.format(dims=dims) + body)
    return path


def _load(path, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        return ninport.load(path, weights)


def test_every_output_and_the_logits_are_compared(tmp_path):
    case = VENDORED_GOLDEN / "mini_inception"
    module = _load(case / "net.prototxt", case / "weights.caffemodel")
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    check = ninport.check_onnx(module, path)
    assert check.passed and check.status == "passed"
    assert [(b.blob, b.role) for b in check.blobs] == [("prob", "output"), ("fc", "logits of Softmax layer prob")]
    assert check.compared == "prob (output), fc (logits of Softmax layer prob)"


@pytest.mark.parametrize("name", ["prob-1", "1prob", "class", "prob.x", "a/b", "prob 2"])
def test_logits_found_whatever_the_softmax_layer_is_named(tmp_path, name):
    """The ONNX nodes are named after the layer's submodule identifier (`prob-1` becomes `prob_1`), not the
    Caffe name: `prob-1` lost its logits ("could not locate fc ... outputs only")."""
    path = _net(tmp_path, 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                          'inner_product_param { num_output: 4 } }\n'
                          f'layer {{ name: "{name}" type: "Softmax" bottom: "fc" top: "prob" }}\n')
    module = _load(path)
    check = ninport.check_onnx(module, ninport.export_onnx(module, tmp_path / "net.onnx"))
    assert check.passed and check.message == ""
    assert [(b.blob, b.role) for b in check.blobs] == [("prob", "output"), ("fc", f"logits of Softmax layer {name}")]


def test_softmax_node_found_by_identifier_when_it_does_not_write_the_output():
    from onnx import helper

    from ninport.selfcheck import _softmax_node

    nodes = [helper.make_node("Softmax", ["fc"], ["p"], name="prob_1"),
             helper.make_node("Mul", ["p", "p"], ["prob"], name="prob_1/mul")]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert _softmax_node(model, "prob", "prob_1").name == "prob_1"
    assert _softmax_node(model, "prob", "prob") is None


SOFTMAX_NET = ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
               'inner_product_param { num_output: 4 } }\n'
               'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
               'layer { name: "side" type: "ReLU" bottom: "data" top: "side" }\n')


def _tamper_bias(path, delta: float) -> None:
    """Add `delta` to the InnerProduct bias stored in the ONNX file."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    [bias] = [init for init in model.graph.initializer if list(init.dims) == [4]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(delta), bias.name))
    onnx.save(model, str(path))


def test_a_wrong_logit_is_caught_where_the_softmax_output_hides_it(tmp_path):
    """Softmax is shift-invariant: the same constant added to every logit leaves `prob` as it was, but a
    model that computes such logits is wrong. Only comparing the logits catches it."""
    module = _load(_net(tmp_path, SOFTMAX_NET))
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    assert ninport.check_onnx(module, path).passed
    _tamper_bias(path, 5.0)
    check = ninport.check_onnx(module, path)
    rows = {b.blob: b for b in check.blobs}
    assert set(rows) == {"prob", "side", "fc"}  # every output, and the logits
    assert rows["prob"].passed and rows["side"].passed  # the outputs alone would have said PASS
    assert not rows["fc"].passed and check.status == "failed"


def test_cli_convert_fails_with_exit_3_naming_the_blob(tmp_path, monkeypatch):
    from ninport import cli, selfcheck

    original = selfcheck._onnx_values

    def tampered(path, inputs, layers):
        outputs, logits = original(path, inputs, layers)
        return outputs, {blob: value + 1.0 for blob, value in logits.items()}

    monkeypatch.setattr(selfcheck, "_onnx_values", tampered)
    code = cli.main(["convert", str(_net(tmp_path, SOFTMAX_NET)), "-o", str(tmp_path / "o"), "--quiet"])
    assert code == cli.EXIT_FAILED_PARITY


def test_nan_and_inf_are_inconclusive_not_a_mismatch():
    expected = np.array([1.0, np.inf, 3.0])
    same = compare_one("x", "output", expected.copy(), expected, 1e-4)
    assert same.passed and "the same in both" in same.note
    other = compare_one("x", "output", np.array([1.0, 5.0, 3.0]), expected, 1e-4)
    assert not other.passed and other.note == "non-finite"
    nothing = compare_one("x", "output", np.full(3, np.nan), np.full(3, np.nan), 1e-4)
    assert not nothing.passed and nothing.note == "non-finite"  # nothing finite left to compare


def test_overflowing_net_is_reported_as_inconclusive(tmp_path, monkeypatch):
    """Exp of a large input overflows: both runtimes give inf. Placed differently, that is not a bug report."""
    from ninport import cli, selfcheck

    path = _net(tmp_path, 'layer { name: "e" type: "Exp" bottom: "data" top: "e" }\n')
    module = _load(path)
    onnx_path = ninport.export_onnx(module, tmp_path / "net.onnx")
    check = ninport.check_onnx(module, onnx_path)
    assert check.status == "passed" and "NaN/inf" in check.blobs[0].note  # inf in the same places: the rest compared

    original = selfcheck._onnx_values

    def shifted(path, inputs, layers):
        outputs, logits = original(path, inputs, layers)
        return {k: np.nan_to_num(v, posinf=1e30) for k, v in outputs.items()}, logits

    monkeypatch.setattr(selfcheck, "_onnx_values", shifted)
    check = ninport.check_onnx(module, onnx_path)
    assert check.status == "inconclusive" and "NaN/inf" in check.message and "please report" not in check.message
    result = cli._report_check(check)
    assert result == cli.EXIT_OK


def test_embed_inputs_get_indices_in_range(tmp_path):
    path = _net(tmp_path, 'layer { name: "emb" type: "Embed" bottom: "data" top: "emb" '
                          'embed_param { input_dim: 7 num_output: 3 } }\n')
    module = _load(path)
    inputs = reference_inputs(module)
    assert inputs["data"].min() >= 0 and inputs["data"].max() <= 6
    assert np.array_equal(inputs["data"], np.round(inputs["data"]))
    check = ninport.check_onnx(module, ninport.export_onnx(module, tmp_path / "net.onnx"))
    assert check.passed


def test_embed_index_out_of_range_is_a_clear_message(tmp_path):
    """An Embed fed by another layer's output cannot be given in-range indices by construction."""
    path = _net(tmp_path, 'layer { name: "p" type: "Power" bottom: "data" top: "p" power_param { scale: 1000 } }\n'
                          'layer { name: "emb" type: "Embed" bottom: "p" top: "emb" '
                          'embed_param { input_dim: 7 num_output: 3 } }\n')
    result = run_cli("convert", str(path), "-o", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in messages(result.stderr) if "not checked" in line]
    assert "Embed" in warning and "input_dim" in warning and "internal error" not in result.stderr


def test_onnxruntime_missing_is_skipped_not_failed(tmp_path, monkeypatch):
    import builtins

    module = _load(_net(tmp_path, SOFTMAX_NET))
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    check = ninport.check_onnx(module, path)
    assert check.status == "skipped" and "onnxruntime is not installed" in check.message
