"""ONNX export: checked, named after Caffe, dynamic batch, and onnxruntime reproduces real Caffe."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ninport
from ninport.errors import ExportError
from ninport.export.artifacts import verify_onnx
from ninport.export.onnx import DEFAULT_OPSET, ExporterFailure, OnnxModel, export_onnx
from tests.conftest import REPO, load_golden, relative_error

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-5


def _load(case, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(case.prototxt, case.weights, **kwargs)


def test_golden_case_in_onnxruntime_matches_caffe(golden_case, tmp_path):
    """Through the command line, as a user runs it: `ninport convert ... --input-shape <its shape>`."""
    from ninport.cli import main

    (shape,) = golden_case.info["inputs"].values()
    args = ["convert", str(golden_case.prototxt), "--input-shape", ",".join(map(str, shape)), "-o", str(tmp_path)]
    if golden_case.weights:
        args += ["--weights", str(golden_case.weights)]
    assert main(args) == 0
    path = tmp_path / f"{golden_case.prototxt.stem}.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(golden_case.info["inputs"])
    assert [o.name for o in model.graph.output] == golden_case.info["outputs"]
    assert {op.domain: op.version for op in model.opset_import}.get("", DEFAULT_OPSET) == DEFAULT_OPSET
    # no pooling reaches ONNX with ceil_mode, nor MaxPool with pads: runtimes disagree on those edges
    # (LRN WITHIN_CHANNEL's stride-1 AveragePool with count_include_pad pads is well defined)
    for node in model.graph.node:
        if node.op_type in ("MaxPool", "AveragePool"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert not attrs.get("ceil_mode", 0), node.name
            if node.op_type == "MaxPool" or not attrs.get("count_include_pad", 0):
                assert not any(attrs.get("pads", [])), node.name
    outputs = verify_onnx(path, golden_case.inputs())
    blobs = golden_case.blobs()
    for name, got in zip(golden_case.info["outputs"], outputs):
        assert got.shape == blobs[name].shape, name
        err = relative_error(got, blobs[name])
        assert err <= TOLERANCE, f"{golden_case.name}: output {name}: relative error {err:.2e}"
    # the batch is dynamic: the same file runs at 3x Caffe's batch, giving the tiled result
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    tiled = {k: np.concatenate([v] * 3) for k, v in golden_case.inputs().items()}
    for name, got in zip(golden_case.info["outputs"], verify_onnx(path, tiled)):
        err = relative_error(got, np.concatenate([blobs[name]] * 3))
        assert err <= TOLERANCE, f"{golden_case.name}: batch x3: output {name}: relative error {err:.2e}"


def test_node_names_follow_caffe_layers(tmp_path):
    case = load_golden("mini_inception")
    module = _load(case)
    model = onnx.load(str(export_onnx(module, tmp_path / "m.onnx")))
    names = [n.name for n in model.graph.node]
    layers = {name for name, kind in case.info["layers"] if kind not in ("Input",)}
    for node in model.graph.node:
        assert node.name.split("/")[0] in layers, node.name
        assert not node.metadata_props  # torch's stack traces are not shipped
    assert len(set(names)) == len(names)
    assert "b1" in names and "prob" in names
    pool_ops = {n.op_type for n in model.graph.node if n.name.startswith("b4p/")}
    assert {"Pad", "MaxPool"} <= pool_ops and not pool_ops & {"AveragePool", "Conv"}  # + shape arithmetic


def test_batchnorm_is_not_fused_into_conv(tmp_path):
    case = load_golden("mini_resnet")
    model = onnx.load(str(export_onnx(_load(case), tmp_path / "r.onnx")))
    by_name = {n.name: n.op_type for n in model.graph.node}
    assert by_name["a"] == "Conv" and by_name["a_bn"] == "BatchNormalization"


def test_metadata_props(tmp_path):
    case = load_golden("mini_inception")
    module = _load(case)
    path = export_onnx(module, tmp_path / "m.onnx", metadata={"license": "BSD"})
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["source"] == case.prototxt.name
    assert props["weights"] == case.weights.name
    assert props["weights_sha256"] == hashlib.sha256(case.weights.read_bytes()).hexdigest()
    assert props["ninport_version"] == ninport.__version__
    assert json.loads(props["input_names"]) == list(case.info["inputs"])
    assert json.loads(props["input_layout"]) == {"data": "NCHW"}
    shape = case.info["inputs"]["data"]
    assert json.loads(props["input_shapes"]) == {"data": ["batch", shape[1], "height", "width"]}
    assert props["input_size"] == "dynamic" and json.loads(props["reference_input_shapes"]) == {"data": shape}
    assert json.loads(props["output_names"]) == case.info["outputs"]
    assert props["license"] == "BSD"
    assert "channel_order" not in props  # this prototxt says nothing about preprocessing


def test_metadata_preprocessing_from_data_layer(tmp_path):
    from tests.conftest import NIN_TRAIN_VAL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(NIN_TRAIN_VAL)  # random weights: only the metadata matters here
    path = export_onnx(module, tmp_path / "nin.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["channel_order"] == "BGR"
    assert props["value_range"] == "0-255"
    assert props["mean_file"] == "/path/to/imagenet-train-mean"
    assert props["crop_size"] == "224"
    assert "prototxt_crop_size" not in props
    assert float(props["scale"]) == 1.0
    assert props["weights"].startswith("(none")
    assert "weights_sha256" not in props


def test_metadata_mean_file_outside_the_prototxt_folder_warns_naming_it(tmp_path):
    """convert reads the mean file for `mean_file_channel_means`: one the prototxt names outside its folder is
    still read (as Caffe would) but said."""
    from tests.test_predict import _mean_file

    outside = _mean_file(tmp_path / "elsewhere" / "mean.binaryproto")
    prototxt = tmp_path / "net" / "net.prototxt"
    prototxt.parent.mkdir()
    prototxt.write_text('layer { name: "data" type: "Data" top: "data" transform_param { mean_file: "MEAN" } '
                        'data_param { batch_size: 1 } }\n'
                        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                        'inner_product_param { num_output: 2 } }\n'.replace("MEAN", str(outside)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(prototxt, input_shape=(1, 3, 8, 8))
    with pytest.warns(ninport.NinportWarning, match=f"is {outside}, outside the prototxt's folder"):
        path = export_onnx(module, tmp_path / "net.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["mean_file_channel_means"]) == [7.0, 7.0, 7.0]


def test_metadata_crop_size_never_contradicts_the_input(tmp_path):
    """NIN's train_val crops 224; exported at 227 the file must not say crop_size 224."""
    from tests.conftest import NIN_TRAIN_VAL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(NIN_TRAIN_VAL, input_shape=(1, 3, 227, 227))
    model = onnx.load(str(export_onnx(module, tmp_path / "nin227.onnx", dynamic_size=False)))
    props = {p.key: p.value for p in model.metadata_props}
    assert "crop_size" not in props
    assert props["prototxt_crop_size"] == "224"
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == [227, 227]
    dynamic = onnx.load(str(export_onnx(module, tmp_path / "nin_any.onnx")))  # reference size 227: same rule
    props = {p.key: p.value for p in dynamic.metadata_props}
    assert "crop_size" not in props and props["input_size"] == "dynamic"


def test_quiet_torch_leaves_stdout_and_other_warnings_alone(capsys):
    import sys

    from ninport.export.onnx import quiet_torch

    stdout, stderr = sys.stdout, sys.stderr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_torch():
            assert sys.stdout is stdout and sys.stderr is stderr
            print("the caller's own output")
            warnings.warn("the caller's own warning", UserWarning, stacklevel=1)
            warnings.warn_explicit("torch's chatter", FutureWarning, "x.py", 1, module="torch.onnx._internal")
    assert "the caller's own output" in capsys.readouterr().out
    assert [str(w.message) for w in caught] == ["the caller's own warning"]


def test_rewrite_rules_are_a_whitelist_that_warns_when_empty(monkeypatch):
    from onnxscript.rewriter.rules import common

    from ninport.export import onnx as ninport_onnx

    rules = ninport_onnx._rewrite_rules()
    fusing = set()
    for name in ("fuse_batchnorm_into_conv_rule", "fuse_pad_into_conv_rule", "successive_relu_rule"):
        rule = getattr(common, name)
        fusing |= {id(r) for r in getattr(rule, "rules", [rule])}
    assert rules and not fusing & {id(r) for r in rules}
    assert len(rules) >= len(ninport_onnx.KEPT_REWRITE_RULES)
    monkeypatch.setattr(ninport_onnx, "KEPT_REWRITE_RULES", ("no_such_rule",))
    with pytest.warns(ninport.NinportWarning, match="rewrite rules"):
        assert ninport_onnx._rewrite_rules() == []


def test_static_batch_when_asked(tmp_path):
    case = load_golden("conv_rect")
    path = export_onnx(_load(case), tmp_path / "s.onnx", dynamic_batch=False)
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == case.info["inputs"]["data"][0] and not dim.dim_param


def test_failure_mid_export_leaves_no_file(tmp_path, monkeypatch):
    """A checker failure on a net ninport built is a bug: an internal error (not an ExportError, which
    would tell the user to fix something), on one line, and no file."""
    case = load_golden("conv_rect")
    module = _load(case)
    target = tmp_path / "out.onnx"

    def broken_check(*args, **kwargs):
        raise onnx.checker.ValidationError("boom\nsecond line")

    monkeypatch.setattr(onnx.checker, "check_model", broken_check)
    with pytest.raises(ExporterFailure) as info:
        export_onnx(module, target)
    assert not isinstance(info.value, ninport.NinportError)
    assert "\n" not in str(info.value) and "boom" in str(info.value) and str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_exporter_failure_is_internal_and_without_colour_codes(tmp_path, monkeypatch):
    module = _load(load_golden("conv_rect"))

    def broken_export(*args, **kwargs):
        raise RuntimeError("Failed to decompose. \x1b[96mThis is step 2/3\x1b[0m of exporting\x1b]8;;http://x\x07link"
                           "\x1b]8;;\x07\nnext line")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(ExporterFailure) as info:
        export_onnx(module, tmp_path / "x.onnx")
    message = str(info.value)
    assert "This is step 2/3 of exporting" in message and "link" in message
    assert "\x1b" not in message and "[96m" not in message and "\\x1b" not in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_fixed_batch_exported_as_dynamic_is_a_user_error(tmp_path, monkeypatch):
    module = _load(load_golden("conv_rect"))

    def constrained(*args, **kwargs):
        raise RuntimeError("Constraints violated (batch)! ...")

    monkeypatch.setattr(torch.onnx, "export", constrained)
    with pytest.raises(ExportError, match="dynamic_batch=False"):
        export_onnx(module, tmp_path / "x.onnx")


def test_failure_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    case = load_golden("conv_rect")
    module = _load(case)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def broken_write(model, path):
        with open(path, "wb") as f:
            f.write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(OnnxModel, "write", broken_write)
    with pytest.raises(ExportError, match="disk full"):
        export_onnx(module, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


@pytest.mark.parametrize("refusal", ["access", "create"])
def test_unwritable_folder(tmp_path, monkeypatch, refusal):
    """A folder the OS will not write into is an ExportError and stays empty. CI runs as root, where
    chmod 0o500 refuses nothing, so the OS's refusal is simulated at the two places it shows: the
    writability check (a read-only folder) and the staging folder's creation (a read-only filesystem)."""
    import tempfile

    from ninport import fileio
    module = _load(load_golden("conv_rect"))
    folder = tmp_path / "ro"
    folder.mkdir()
    if refusal == "access":
        monkeypatch.setattr(fileio.os, "access", lambda path, mode: Path(path) != folder)
    else:
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(ExportError, match="ro"):
        export_onnx(module, folder / "x.onnx")
    assert list(folder.iterdir()) == []


def test_missing_folder_is_an_export_error(tmp_path):
    module = _load(load_golden("conv_rect"))
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(module, tmp_path / "nope" / "x.onnx")


def test_export_is_quiet(tmp_path, capfd):
    module = _load(load_golden("conv_rect"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_onnx(module, tmp_path / "q.onnx")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("crop", [224, 227])
def test_nin_onnxruntime_matches_torch_at_batch_1_and_8(crop, tmp_path):
    case = load_golden("nin_v1_224")
    module = _load(case, input_shape=(1, 3, crop, crop))
    path = export_onnx(module, tmp_path / f"nin{crop}.onnx")
    rng = np.random.default_rng(crop)
    for batch in (1, 8):
        x = (rng.random((batch, 3, crop, crop), dtype=np.float32) * 255 - 120).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).detach().numpy()
        (got,) = verify_onnx(path, {"data": x})
        assert got.shape == expected.shape == (batch, 1000, 1, 1)
        err = relative_error(got, expected)
        assert err <= TOLERANCE, f"crop {crop} batch {batch}: relative error {err:.2e}"
    if crop == 224:  # and real Caffe's numbers at its own input
        (got,) = verify_onnx(path, case.inputs())
        assert relative_error(got, case.blobs()[case.info["outputs"][0]]) <= TOLERANCE


def test_output_computed_in_place_over_the_input_exports(tmp_path):
    """`bottom: "data" top: "data"`: Caffe's output is named like the input; ONNX names each value once."""
    proto = tmp_path / "ip.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
                     'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n')
    module = ninport.load(proto)
    model = onnx.load(str(export_onnx(module, tmp_path / "ip.onnx")))
    assert [o.name for o in model.graph.output] == ["data/output"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["output_names"]) == ["data"] and json.loads(props["onnx_output_names"]) == ["data/output"]
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    (got,) = verify_onnx(tmp_path / "ip.onnx", {"data": x})
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def test_a_net_declared_1x1_exports_symbolic_sizes(tmp_path):
    """OpenPose declares a 1x1 placeholder input: the default export traces at 2x2 (torch.export would
    specialize a size it sees as 1) and keeps height and width symbolic, so the file runs at the real size."""
    case = load_golden("conv_pool_1x1")
    module = _load(case)
    path = export_onnx(module, tmp_path / "net.onnx")
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["reference_input_shapes"]) == {"image": [1, 3, 1, 1]}
    (output,) = verify_onnx(path, case.inputs())  # at the declared 1x1: Caffe's own blob
    assert relative_error(output, case.blobs()["stage2_ave"]) <= TOLERANCE
    x = np.random.default_rng(0).normal(size=(2, 3, 20, 13)).astype(np.float32)
    (output,) = verify_onnx(path, {"image": x})
    assert relative_error(output, module(torch.from_numpy(x)).detach().numpy()) <= TOLERANCE


def _with_outputs(path, layers: list[str]) -> bytes:
    """The ONNX model at `path` with the values the nodes of `layers` compute last added as outputs."""
    model = onnx.load(str(path))
    for layer in layers:
        group = [n for n in model.graph.node if n.name == layer or n.name.startswith(layer + "/")]
        model.graph.output.append(onnx.ValueInfoProto(name=group[-1].output[0]))
    return model.SerializeToString()


SSD_HEADS = ["mbox_loc", "mbox_conf", "mbox_priorbox"]  # the logits: softmax of float noise is noisier


@pytest.mark.parametrize("net", ["opencv_face_detector", "mobilenet_ssd"])
def test_ssd_onnx_runs_at_other_sizes(net, tmp_path):
    """An SSD runs at any size (PriorBox and DetectionOutput compute from the input's shape), so its ONNX file
    has symbolic height and width, as `inspect` says, and matches the torch module at a size other than 300:
    the detection rows and the loc, conf (logits) and prior blobs that feed them."""
    import onnxruntime as ort

    from ninport.export.onnx import input_size_for

    prototxt = REPO / "reference_models" / net / "deploy.prototxt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights
        if net == "opencv_face_detector":  # through convert_files, as `ninport convert` runs it
            result = ninport.convert_files(prototxt, out_dir=tmp_path)
            module, path = ninport.load(prototxt), result.written["onnx"]
            assert result.input_size.dynamic and result.check.passed, result
        else:
            module = ninport.load(prototxt)
            path = export_onnx(module, tmp_path / f"{net}.onnx")
    meta = ninport.describe(module)
    assert meta.size_fixed_by == () == ninport.summary(prototxt).size_fixed_by and input_size_for(meta).dynamic
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert {p.key: p.value for p in model.metadata_props}["input_size"] == "dynamic"
    session = ort.InferenceSession(_with_outputs(path, SSD_HEADS), providers=["CPUExecutionProvider"])
    for hw in [(240, 320), (180, 180)]:
        # small inputs: with random weights, +-128 (a mean-subtracted image) overflows the box decoding
        x = np.random.default_rng(1).uniform(-1, 1, (1, 3, *hw)).astype(np.float32)
        got = session.run(None, {"data": x})
        blobs = ninport.forward_blobs(module, torch.from_numpy(x))
        for name, value in zip(["detection_out", *SSD_HEADS], got):
            expected = blobs[name].numpy()
            assert value.shape == expected.shape, (hw, name)
            assert relative_error(value, expected) <= 1e-4, (hw, name)
        assert blobs["mbox_priorbox"].shape[2] != ninport.forward_blobs(
            module, torch.zeros(1, 3, 300, 300))["mbox_priorbox"].shape[2]  # really another size


def _big_fc(tmp_path, batch: int = 1):
    """A net whose InnerProduct weight (200 x 300 floats) is large enough to be streamed, its bias (200) is not."""
    from tests.caffe_files import input_layer

    path = tmp_path / "fc.prototxt"
    path.write_text(input_layer((batch, 300)) + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                    'inner_product_param { num_output: 200 } }\n')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        return ninport.load(path)


def test_the_file_is_written_from_the_module_tensors_and_reads_back_whole(tmp_path):
    """The large initializers are not copied into the model proto: their bytes go from the module's own memory to
    the file, after the rest of the graph. The file is one ordinary ONNX file: onnx reads it back as the whole
    model, its checker takes it, and it holds the module's weights."""
    from onnx import numpy_helper

    from ninport.export.onnx import _tensor_bytes, to_onnx_model

    module = _big_fc(tmp_path)
    model = to_onnx_model(module)
    [(header, tensor)] = model.streamed
    assert list(header.dims) == [200, 300] and not header.raw_data
    view = np.frombuffer(_tensor_bytes(tensor), np.uint8)
    assert view.ctypes.data == module.fc.weight.data_ptr()  # a view of the parameter, not a copy
    assert [list(t.dims) for t in model.proto.graph.initializer] == [[200]]  # the bias stays in the proto
    path = tmp_path / "fc.onnx"
    model.write(path)
    assert path.stat().st_size == model.nbytes
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == model.model_proto().SerializeToString()
    onnx.checker.check_model(str(path), full_check=True)
    weight = next(t for t in loaded.graph.initializer if list(t.dims) == [200, 300])
    np.testing.assert_array_equal(numpy_helper.to_array(weight), module.fc.weight.detach().numpy())
