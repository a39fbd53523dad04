"""The other artifacts (.pt2, safetensors) and convert_files' all-or-nothing folder handling."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch

import ninport
from ninport.errors import ExportError
from ninport.export import artifacts
from ninport.export.artifacts import verify_onnx, write_pt2, write_safetensors
from tests.conftest import load_golden, plain_kernels, relative_error


def _load(case, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(case.prototxt, case.weights, **kwargs)


def _torch_inputs(case):
    return tuple(torch.from_numpy(v) for v in case.inputs().values())


def test_safetensors_keys_are_layer_names(tmp_path):
    from safetensors.torch import load_file

    case = load_golden("mini_resnet")
    module = _load(case)
    path = write_safetensors(module, tmp_path / "w.safetensors")
    loaded = load_file(str(path))
    state = module.state_dict()
    assert set(loaded) == set(state)
    assert {"a.weight", "a_bn.running_mean", "a_sc.weight", "a_sc.bias"} <= set(loaded)
    layer_names = {name for name, _ in case.info["layers"]}
    assert {key.rsplit(".", 1)[0] for key in loaded} <= layer_names
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", ["mini_inception", "shape_layers", "innerproduct_axis2_transpose"])
def test_pt2_loads_with_plain_torch_and_matches(name, tmp_path):
    case = load_golden(name)
    module = _load(case)
    path = write_pt2(module, tmp_path / "m.pt2", _torch_inputs(case))
    program = torch.export.load(str(path))
    inputs = _torch_inputs(case)
    with plain_kernels():
        got = program.module()(*inputs)
        with torch.no_grad():
            expected = module(*inputs)
    got = got if isinstance(got, (tuple, list)) else (got,)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    blobs = case.blobs()
    for out_name, g in zip(case.info["outputs"], got):
        assert relative_error(g.detach().numpy(), blobs[out_name]) <= 1e-5


def test_pt2_batch_is_dynamic(tmp_path):
    case = load_golden("mini_inception")
    module = _load(case)
    path = write_pt2(module, tmp_path / "m.pt2")
    x = torch.rand(5, *case.info["inputs"]["data"][1:])
    with plain_kernels(), torch.no_grad():
        expected = module(x)
        assert torch.equal(torch.export.load(str(path)).module()(x), expected)


def test_pt2_loads_without_ninport(tmp_path):
    case = load_golden("conv_rect")
    path = write_pt2(_load(case), tmp_path / "m.pt2")
    x = case.inputs()["data"]
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, torch\n"
            "sys.modules['ninport'] = None  # any import of ninport fails\n"
            f"m = torch.export.load({str(path)!r}).module()\n"
            f"y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy())\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)
    y = np.load(tmp_path / "y.npy")
    assert relative_error(y, case.blobs()[case.info["outputs"][0]]) <= 1e-5


def test_convert_files_writes_all_formats(tmp_path):
    case = load_golden("mini_inception")
    out = tmp_path / "out" / "nested"
    messages = []
    written = ninport.convert_files(case.prototxt, case.weights, out, formats=("onnx", "pt2", "safetensors"),
                                    progress=messages.append, check=False).written
    stem = case.prototxt.stem
    assert written == {f: out / f"{stem}.{f}" for f in ("onnx", "pt2", "safetensors")}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.{f}" for f in written)
    assert messages
    onnx.checker.check_model(onnx.load(str(written["onnx"])), full_check=True)
    (got,) = verify_onnx(written["onnx"], case.inputs())
    assert relative_error(got, case.blobs()[case.info["outputs"][0]]) <= 1e-5


def test_convert_files_finds_caffemodel_beside_prototxt(tmp_path):
    case = load_golden("conv_rect")
    shutil.copy(case.prototxt, tmp_path / "model.prototxt")
    shutil.copy(case.weights, tmp_path / "model.caffemodel")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning: the caffemodel was found
        written = ninport.convert_files(tmp_path / "model.prototxt", out_dir=tmp_path / "o", check=False).written
    props = {p.key: p.value for p in onnx.load(str(written["onnx"])).metadata_props}
    assert props["weights"] == "model.caffemodel"
    (got,) = verify_onnx(written["onnx"], case.inputs())
    assert relative_error(got, case.blobs()[case.info["outputs"][0]]) <= 1e-5


def test_convert_files_without_weights_warns(tmp_path):
    case = load_golden("conv_rect")
    shutil.copy(case.prototxt, tmp_path / "model.prototxt")
    with pytest.warns(UserWarning, match="RANDOM"):
        written = ninport.convert_files(tmp_path / "model.prototxt", out_dir=tmp_path, input_shape="3,3,9,11",
                                        check=False).written
    model = onnx.load(str(written["onnx"]))
    shape = model.graph.input[0].type.tensor_type.shape
    assert [d.dim_value or d.dim_param for d in shape.dim[1:]] == [3, "height", "width"]  # any input size
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["reference_input_shapes"]) == {"data": [3, 3, 9, 11]}


def test_convert_files_is_all_or_nothing(tmp_path, monkeypatch):
    case = load_golden("conv_rect")
    out = tmp_path / "out"
    out.mkdir()
    stem = case.prototxt.stem
    (out / f"{stem}.onnx").write_bytes(b"old onnx")
    (out / "unrelated.txt").write_text("keep")

    def broken(module, path):
        def write(staged):
            staged.write_bytes(b"half")
            raise ExportError(f"{staged}: writing safetensors failed: boom")
        return write

    monkeypatch.setattr(artifacts, "safetensors_writer", broken)
    with pytest.raises(ExportError, match="boom") as info:
        ninport.convert_files(case.prototxt, case.weights, out, formats=("onnx", "pt2", "safetensors"))
    assert "staging" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{stem}.onnx", "unrelated.txt"])
    assert (out / f"{stem}.onnx").read_bytes() == b"old onnx"


def test_convert_files_removes_folder_it_created(tmp_path, monkeypatch):
    case = load_golden("conv_rect")

    def broken(program, path):
        raise ExportError("no")

    monkeypatch.setattr(artifacts, "save_pt2", broken)
    with pytest.raises(ExportError):
        ninport.convert_files(case.prototxt, case.weights, tmp_path / "a" / "b", formats=("onnx", "pt2"))
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(tmp_path):
    case = load_golden("conv_rect")
    with pytest.raises(ExportError, match="unknown output format"):
        ninport.convert_files(case.prototxt, case.weights, tmp_path, formats=("tflite",))
