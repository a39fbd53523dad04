"""`ninport.check_onnx`: onnxruntime against the torch module, on every output and the logits of a Softmax."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ninport
from ninport.check.selfcheck import compare_one, reference_inputs
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
    assert [(b.name, b.role) for b in check.blobs] == [("prob", "output"), ("fc", "logits of Softmax layer prob")]
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
    assert [(b.name, b.role) for b in check.blobs] == [("prob", "output"), ("fc", f"logits of Softmax layer {name}")]


def test_softmax_node_found_by_identifier_when_it_does_not_write_the_output():
    from onnx import helper

    from ninport.check.selfcheck import _softmax_node

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
    rows = {b.name: b for b in check.blobs}
    assert set(rows) == {"prob", "side", "fc"}  # every output, and the logits
    assert rows["prob"].passed and rows["side"].passed  # the outputs alone would have said PASS
    assert not rows["fc"].passed and check.status == "failed"


def test_cli_convert_fails_with_exit_3_naming_the_blob(tmp_path, monkeypatch):
    from ninport import cli
    from ninport.check import selfcheck

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
    from ninport import cli
    from ninport.check import selfcheck

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
    result = cli._report_checks([check])
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


OVERFLOW_NET = ('layer { name: "big" type: "Power" bottom: "data" top: "big" power_param { scale: 10 } }\n'
                'layer { name: "e" type: "Exp" bottom: "big" top: "e" }\n'
                'layer { name: "sum" type: "Reduction" bottom: "e" top: "sum" }\n'
                'layer { name: "side" type: "ReLU" bottom: "data" top: "side" }\n')


def test_forward_values_names_the_layer_where_the_net_overflowed(tmp_path):
    """Exp of 10x the seeded input (up to 1280) gives inf: the Exp layer is named, the Reduction that reads it
    inherits the overflow, the branch that does not is clean."""
    from ninport.check.selfcheck import forward_values

    module = _load(_net(tmp_path, OVERFLOW_NET))
    meta = ninport.describe(module)
    values, overflowed = forward_values(module, reference_inputs(module), meta)
    nodes = {blob: meta.blobs[blob].node for blob in ("big", "e", "sum", "side")}
    assert nodes["big"] not in overflowed and nodes["side"] not in overflowed
    assert overflowed[nodes["e"]] == "layer 'e' (exp turned finite values into inf/NaN)"
    assert overflowed[nodes["sum"]] == overflowed[nodes["e"]] and np.isinf(values[nodes["sum"]]).all()


def test_a_mismatch_downstream_of_an_overflow_is_inconclusive(tmp_path, monkeypatch):
    """The Reduction of an overflowed Exp: a runtime that gives a finite value there is not a bug report."""
    from ninport.check import selfcheck

    module = _load(_net(tmp_path, OVERFLOW_NET))
    onnx_path = ninport.export_onnx(module, tmp_path / "net.onnx")
    original = selfcheck._onnx_values

    def finite(path, inputs, layers):
        outputs, logits = original(path, inputs, layers)
        return {k: np.nan_to_num(v, posinf=3.0) if k == "sum" else v for k, v in outputs.items()}, logits

    monkeypatch.setattr(selfcheck, "_onnx_values", finite)
    check = ninport.check_onnx(module, onnx_path)
    rows = {b.name: b for b in check.blobs}
    assert rows["side"].passed and rows["sum"].overflow.startswith("layer 'e'")
    assert check.status == "inconclusive" and "sum (from layer 'e'" in check.message
    # without the overflow the same mismatch is a failure
    assert not compare_one("sum", "output", np.array([3.0]), np.array([4.0]), 1e-4).passed
    assert compare_one("sum", "output", np.array([3.0]), np.array([4.0]), 1e-4, "layer 'e'").note == "non-finite"


def _written(tmp_path, module):
    from ninport.export.artifacts import write_pt2
    from ninport.export.codegen import write_python

    return {"pt2": write_pt2(module, tmp_path / "net.pt2"), "py": write_python(module, tmp_path / "net.py"),
            "safetensors": tmp_path / "net.safetensors"}  # written with the .py, which loads it


def test_pt2_py_and_safetensors_files_are_checked_against_the_module(tmp_path):
    from ninport.check.selfcheck import check_file

    module = _load(_net(tmp_path, SOFTMAX_NET))
    files = _written(tmp_path, module)
    checks = {fmt: check_file(fmt, module, path) for fmt, path in files.items()}
    assert all(c.passed and c.format == fmt for fmt, c in checks.items()), checks
    assert [(b.name, b.role) for b in checks["py"].blobs] == [
        ("prob", "output"), ("side", "output"), ("prob", "log of Softmax layer prob")]
    assert checks["safetensors"].message == "2 tensors of the module's state dict, bit for bit"


def test_a_changed_weight_fails_the_py_and_safetensors_checks(tmp_path):
    """One bias value moved by 0.01: the nearly one-hot `prob` hides it, its logarithm does not; the
    .safetensors file no longer holds the module's tensors."""
    from safetensors.numpy import load_file, save_file

    from ninport.check.selfcheck import check_file

    module = _load(_net(tmp_path, SOFTMAX_NET))
    files = _written(tmp_path, module)
    tensors = load_file(str(files["safetensors"]))
    [bias] = [k for k in tensors if k.endswith("bias")]
    tensors[bias][0] += np.float32(0.01)
    save_file(tensors, str(files["safetensors"]))
    py = check_file("py", module, files["py"])
    rows = {(b.name, b.role): b for b in py.blobs}
    assert py.status == "failed" and not rows[("prob", "log of Softmax layer prob")].passed
    stored = check_file("safetensors", module, files["safetensors"])
    assert stored.status == "failed" and f"{bias} differs" in stored.message


def test_the_py_check_runs_without_ninport(tmp_path):
    from ninport.check.selfcheck import check_file

    module = _load(_net(tmp_path, SOFTMAX_NET))
    files = _written(tmp_path, module)
    source = files["py"].read_text()
    assert "\nimport torch\n" in source
    files["py"].write_text(source.replace("\nimport torch\n", "\nimport torch\nimport ninport  # not needed\n", 1))
    check = check_file("py", module, files["py"])
    assert check.status == "failed" and "without ninport failed" in check.message
    assert "ModuleNotFoundError" in check.message or "ImportError" in check.message, check.message


def test_a_pt2_of_other_weights_fails(tmp_path):
    from ninport.check.selfcheck import check_file
    from ninport.export.artifacts import write_pt2

    path = _net(tmp_path, SOFTMAX_NET)
    other = write_pt2(_load_seeded(path, 1), tmp_path / "other.pt2")
    check = check_file("pt2", _load(path), other)
    assert check.status == "failed" and not all(b.passed for b in check.blobs)


def _load_seeded(path, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        return ninport.load(path, seed=seed)


BIG_NET = ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
           'inner_product_param { num_output: 300 } }\n'
           'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n')


def test_the_onnx_check_reads_the_large_weights_from_the_file(tmp_path):
    """onnxruntime maps the large initializers from the file (check/onnx_session.py): a weight changed in the
    file, not in the module, fails the check."""
    from onnx import numpy_helper

    module = _load(_net(tmp_path, BIG_NET, dims="dim: 1 dim: 200"))
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    assert ninport.check_onnx(module, path).passed
    model = onnx.load(str(path))
    [weight] = [t for t in model.graph.initializer if list(t.dims) == [300, 200]]
    values = numpy_helper.to_array(weight).copy()
    values[7, :] += np.float32(0.5)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    check = ninport.check_onnx(module, path)
    assert check.status == "failed" and not {b.role: b for b in check.blobs}["logits of Softmax layer prob"].passed


def test_the_safetensors_check_compares_every_byte_in_pieces(tmp_path, monkeypatch):
    """The file is read a piece at a time (here 4 KiB) and compared as bytes: a change in a late piece fails,
    and so does -0.0 for 0.0, which compare equal as numbers."""
    import torch
    from safetensors.numpy import load_file, save_file

    from ninport.check import selfcheck
    from ninport.export.safetensors import write_safetensors

    monkeypatch.setattr(selfcheck, "COMPARE_CHUNK_BYTES", 4096)
    module = _load(_net(tmp_path, BIG_NET, dims="dim: 1 dim: 200"))
    with torch.no_grad():
        module.fc.weight[0, 0] = 0.0
    path = write_safetensors(module, tmp_path / "net.safetensors")
    assert selfcheck.check_safetensors(module, path).passed
    for row, value in ((299, 1e-3), (0, -0.0)):
        tensors = load_file(str(path))
        tensors["fc.weight"][row, 0] = value if row == 0 else tensors["fc.weight"][row, 0] + np.float32(value)
        save_file(tensors, str(path))
        check = selfcheck.check_safetensors(module, path)
        assert check.status == "failed" and check.message == "fc.weight differs", (row, check)
        write_safetensors(module, path)


def test_convert_checks_at_batch_1_a_net_declared_at_another(tmp_path):
    """A deploy batch of 4 (VGG16 declares 10): the exported files have a dynamic batch, and the check runs at 1
    (the exporters traced at 4); with no exported file (.py, .safetensors) the net's own batch is kept."""
    path = _net(tmp_path, BIG_NET, dims="dim: 4 dim: 200")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        exported = ninport.convert_files(path, None, tmp_path / "a", formats=["onnx", "pt2"])
        kept = ninport.convert_files(path, None, tmp_path / "b", formats=["py"])
    assert exported.passed and {b.shape for c in exported.checks.values() for b in c.blobs} == {(1, 300)}
    assert kept.passed and {b.shape for b in kept.checks["py"].blobs} == {(4, 300)}
