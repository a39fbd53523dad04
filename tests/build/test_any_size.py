"""Any input size (issue 11): one module and one ONNX file per net reproduce real Caffe at every size
(tests/fixtures/caffe-golden-sizes), and a size the net cannot take is refused naming the layer."""
from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ninport
from ninport.errors import NinportError, ShapeError
from ninport.export.artifacts import verify_onnx, write_pt2
from tests.conftest import REPO, SIZES_GOLDEN, load_golden, relative_error
from tests.generated import generated_twin

TOLERANCE = 1e-5
NETS = ("fcn_mini", "pnet_like", "nin_mini", "spp_fc")
# Made with BVLC Caffe by its make_*.py (../shared/oracles): committed, so CI needs no Caffe.
SECOND_BOTTOMS = REPO / "tests" / "fixtures" / "caffe-sizes-extra" / "scale_bias_second_bottom"
CAFFE_SPLIT_BLOB = re.compile(r".+_split_\d+$")


def _cases(net: str) -> list[Path]:
    folders = sorted(SIZES_GOLDEN.glob(f"sz_{net}_*"))
    assert len(folders) == 4
    return folders


def _load_net(net: str):
    folders = _cases(net)
    info = json.loads((folders[0] / "case.json").read_text())
    first = folders[0]
    declared = next(f for f in folders if (f / "weights.caffemodel").is_file())
    assert (first / info["weights"]).resolve() == (declared / "weights.caffemodel").resolve()
    return ninport.load(declared / "net.prototxt", declared / "weights.caffemodel"), folders


def _read(folder: Path):
    info = json.loads((folder / "case.json").read_text())
    return info, dict(np.load(folder / "inputs.npz")), dict(np.load(folder / "blobs.npz"))


def _tolerance(module, name: str, ours: dict, caffe: dict) -> float:
    """1e-5, except for a Softmax top, which float32 rounding of its (large) logits moves further:
    softmax's Jacobian bounds the change by half the logits' absolute difference (pnet_like's `cls`
    reaches 295, so Caffe's and torch's float32 convolutions differ by ~1e-4 there)."""
    layer = next((rec for rec in ninport.describe(module).layers if name in rec.tops), None)
    if layer is None or layer.type != "Softmax":
        return TOLERANCE
    logits = layer.bottoms[0]
    return max(TOLERANCE, 0.5 * float(np.abs(ours[logits].numpy() - caffe[logits]).max()) * 1.01)


@pytest.mark.parametrize("net", NETS)
def test_one_module_matches_caffe_at_every_size(net):
    module, folders = _load_net(net)
    for folder in folders:
        info, inputs, expected = _read(folder)
        blobs = ninport.forward_blobs(module, *[torch.from_numpy(v) for v in inputs.values()])
        checked = 0
        for name, value in expected.items():
            if CAFFE_SPLIT_BLOB.match(name) and name not in blobs:
                continue
            actual = blobs[name].numpy()
            assert actual.shape == value.shape, f"{folder.name}: blob {name} {actual.shape} != Caffe's {value.shape}"
            err = relative_error(actual, value)
            assert err <= _tolerance(module, name, blobs, expected), f"{folder.name}: blob {name}: {err:.2e}"
            checked += 1
        assert checked >= 4


def test_nin_224_module_runs_the_227_fixture():
    case224, case227 = load_golden("nin_v1_224"), load_golden("nin_v1_227")
    module = ninport.load(case224.prototxt, case224.weights)
    for case in (case224, case227):
        blobs = ninport.forward_blobs(module, torch.from_numpy(case.inputs()["data"]))
        for name, value in case.blobs().items():
            assert blobs[name].shape == value.shape, (case.name, name)
            assert relative_error(blobs[name].numpy(), value) <= TOLERANCE, (case.name, name)


@pytest.mark.parametrize("net", NETS)
def test_one_onnx_file_matches_caffe_at_every_size(net, tmp_path):
    module, folders = _load_net(net)
    path = ninport.export_onnx(module, tmp_path / f"{net}.onnx")
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["input_size"] == "dynamic"
    assert json.loads(props["input_shapes"])["data"] == ["batch", 3, "height", "width"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    for folder in folders:
        info, inputs, expected = _read(folder)
        outputs = verify_onnx(path, inputs)
        for name, got in zip(info["outputs"], outputs):
            assert got.shape == expected[name].shape, f"{folder.name}: {name}"
            allowed = TOLERANCE if net != "pnet_like" or name != "prob" else 5e-5  # see _tolerance
            assert relative_error(got, expected[name]) <= allowed, f"{folder.name}: {name}"


def test_nin_one_onnx_file_runs_224_and_227(tmp_path):
    case224, case227 = load_golden("nin_v1_224"), load_golden("nin_v1_227")
    path = ninport.export_onnx(ninport.load(case224.prototxt, case224.weights), tmp_path / "nin.onnx")
    for case in (case224, case227):
        (out,) = verify_onnx(path, case.inputs())
        assert relative_error(out, case.blobs()["pool4"]) <= TOLERANCE, case.name


def test_static_export_fixes_height_and_width(tmp_path):
    module, folders = _load_net("fcn_mini")
    path = ninport.export_onnx(module, tmp_path / "static.onnx", dynamic_size=False)
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["input_size"] == "static"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][2:] == [32, 32]
    info, inputs, expected = _read(folders[0])
    (out,) = verify_onnx(path, inputs)
    assert relative_error(out, expected["out"]) <= TOLERANCE
    with pytest.raises(NinportError, match="onnxruntime failed"):
        verify_onnx(path, {"data": np.zeros((1, 3, 37, 37), np.float32)})


def test_a_net_that_fixes_its_size_exports_static_by_default(tmp_path):
    case = load_golden("innerproduct_softmax")
    module = ninport.load(case.prototxt, case.weights)
    model = onnx.load(ninport.export_onnx(module, tmp_path / "ip.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["input_size"] == "static"
    # forced symbolic sizes: the file is right wherever K still fits, and onnxruntime refuses the rest
    forced = ninport.export_onnx(module, tmp_path / "forced.onnx", dynamic_size=True)
    assert {p.key: p.value for p in onnx.load(forced).metadata_props}["input_size"] == "dynamic"
    (out,) = verify_onnx(forced, case.inputs())
    assert relative_error(out, case.blobs()[case.info["outputs"][0]]) <= TOLERANCE
    with pytest.raises(NinportError, match="onnxruntime failed"):
        verify_onnx(forced, {"data": np.zeros((2, 3, 5, 5), np.float32)})


def test_scale_and_bias_second_bottoms_follow_the_input_like_caffe(tmp_path):
    """Scale/Bias whose scale or bias is a second bottom (SENet's channel attention, a full-size mask):
    Caffe ran the net at 3 sizes and batches; one module, one ONNX file and the generated .py reproduce
    every blob (the scale once kept its build-time shape and failed at any other size or batch)."""
    info = json.loads((SECOND_BOTTOMS / "case.json").read_text())
    module = ninport.load(SECOND_BOTTOMS / "net.prototxt", SECOND_BOTTOMS / "weights.caffemodel")
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    twin = generated_twin(module)
    assert len(info["sizes"]) == 3
    for size in info["sizes"]:
        x = np.load(SECOND_BOTTOMS / f"inputs_{size}.npz")["data"]
        caffe = np.load(SECOND_BOTTOMS / f"blobs_{size}.npz")
        blobs = ninport.forward_blobs(module, torch.from_numpy(x))
        compared = [name for name in caffe.files if not CAFFE_SPLIT_BLOB.match(name)]
        assert len(compared) == 9
        for name in compared:
            assert relative_error(blobs[name].numpy(), caffe[name]) <= TOLERANCE, (size, name)
        (onnx_out,) = verify_onnx(path, {"data": x})
        with torch.no_grad():
            py_out = twin(torch.from_numpy(x)).numpy()
        for what, out in (("onnxruntime", onnx_out), ("generated .py", py_out)):
            assert relative_error(out, caffe["affine"]) <= TOLERANCE, (size, what)


def test_a_scale_spanning_height_fixes_the_size(tmp_path):
    """Learned Scale parameters over C and H: another height is one ShapeError naming the layer, as
    Caffe's CHECK; `inspect` names it, and the ONNX file has the fixed size."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('name: "s"\ninput: "data"\ninput_shape { dim: 1 dim: 4 dim: 4 dim: 5 }\n'
                        'layer { name: "sc" type: "Scale" bottom: "data" top: "sc" '
                        'scale_param { axis: 1 num_axes: 2 } }\n')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(prototxt)
        fixed_by = ninport.summary(prototxt).size_fixed_by
    assert [name for name, _ in fixed_by] == ["sc"]
    message = _shape_error(module, torch.rand(1, 4, 8, 10))
    assert "layer 'sc' (Scale)" in message and "[1, 4, 8, 10]" in message and "[4, 4]" in message
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == [4, 5]
    reason = {p.key: p.value for p in onnx.load(path).metadata_props}["input_size_reason"]
    assert reason.startswith("the net runs only at its input size (layer 'sc': ")


class _TimesFixedMap(torch.nn.Module):
    """A plugin layer that only takes its build size (torch itself refuses other sizes, no ShapeError)."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("weight", torch.ones(shape))

    def forward(self, x):
        return x * self.weight


@pytest.fixture
def times_fixed_map_net(tmp_path):
    """A net of one plugin layer whose shape rule takes any size while its module does not."""
    ninport.register_layer("TimesFixedMap", shape=lambda layer, shapes: [shapes[0]],
                           module=lambda ctx: _TimesFixedMap(ctx.bottom_shapes[0]))
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('name: "p"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 5 }\n'
                        'layer { name: "m" type: "TimesFixedMap" bottom: "data" top: "y" }\n')
    yield prototxt
    ninport.unregister_layer("TimesFixedMap")


def test_probing_other_sizes_prints_no_torch_log(tmp_path, times_fixed_map_net):
    """A plugin whose shape rule takes any size while its module does not: the symbolic export fails and
    torch logs that at ERROR level; ninport expects it, so the export stays free of torch's log, comes out
    static, and says why in a NinportWarning and in the file's metadata (never a silent fallback)."""
    prototxt = times_fixed_map_net
    module = ninport.load(prototxt)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    fake_tensor_log = logging.getLogger("torch._subclasses.fake_tensor")
    fake_tensor_log.addHandler(handler)
    try:
        with pytest.warns(ninport.NinportWarning, match="height and width fixed .* torch could not keep"):
            path = ninport.export_onnx(module, tmp_path / "net.onnx")
    finally:
        fake_tensor_log.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == [4, 5]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["input_size"] == "static" and props["input_size_reason"].startswith("torch could not keep")


def _shape_error(module, *inputs) -> str:
    with pytest.raises(ShapeError) as info:
        module(*inputs)
    return str(info.value)


def test_wrong_sizes_raise_one_shape_error_naming_the_layer():
    module, _ = _load_net("spp_fc")
    message = _shape_error(module, torch.rand(1, 3, 5, 5))
    assert "layer 'spp' (SPP)" in message and "[1, 6, 5, 5]" in message and "[1, 6, 13, 13]" in message
    module, _ = _load_net("nin_mini")
    message = _shape_error(module, torch.rand(1, 3, 20, 20))
    assert "layer 'pool4' (Pooling)" in message and "[1, 10, 4, 4]" in message and "output size -1x-1" in message
    message = _shape_error(module, torch.rand(1, 4, 35, 35))
    assert "layer 'conv1' (Convolution)" in message and "weights [16, 3, 5, 5] do not fit" in message
    assert "need weights [16, 4, 5, 5]" in message


def test_inner_product_refuses_a_size_that_changes_k():
    case = load_golden("innerproduct_softmax")
    module = ninport.load(case.prototxt, case.weights)
    message = _shape_error(module, torch.rand(2, 3, 5, 5))
    assert "layer 'fc' (InnerProduct)" in message and "[2, 3, 5, 5]" in message and "[2, 3, 4, 4]" in message
    assert re.search(r"weights \[\d+, 48\] do not fit these bottoms, which need weights \[\d+, 75\]", message)


ELTWISE_CROP_NET = """
name: "branches"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "down" type: "Pooling" bottom: "data" top: "down" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "down" top: "up"
        convolution_param { num_output: 2 kernel_size: 2 stride: 2 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "up" bottom: "data" top: "sum" }
layer { name: "cat" type: "Concat" bottom: "up" bottom: "data" top: "cat" }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "down" top: "crop" crop_param { axis: 2 offset: 1 } }
"""


def test_bottoms_that_stop_agreeing_are_refused(tmp_path):
    prototxt = tmp_path / "branches.prototxt"
    prototxt.write_text(ELTWISE_CROP_NET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights: only the shapes matter here
        module = ninport.load(prototxt)
    out = module(torch.rand(1, 2, 10, 12))  # even sizes: the branches meet again
    assert [tuple(o.shape) for o in out] == [(1, 4, 10, 12), (1, 2, 5, 6), (1, 2, 10, 12)]
    # 9 x 9: pooling gives 5 x 5 (ceil), the deconvolution 10 x 10, which no longer meets the 9 x 9 input
    message = _shape_error(module, torch.rand(1, 2, 9, 9))
    assert re.search(r"layer '(sum|cat|crop)' \((Eltwise|Concat|Crop)\)", message)
    assert "[1, 2, 10, 10]" in message and "[1, 2, 9, 9]" in message
    sub = dict(module.named_children())
    for name, args, words in [("cat", (torch.rand(1, 2, 10, 10), torch.rand(1, 2, 9, 9)), "outside the concat axis 1"),
                              ("sum", (torch.rand(1, 2, 10, 10), torch.rand(1, 2, 9, 9)), "the same shape"),
                              ("crop", (torch.rand(1, 2, 9, 9), torch.rand(1, 2, 9, 9)), "does not fit axis 2")]:
        with pytest.raises(ShapeError, match=words):
            sub[ninport.describe(module).module_of(name)](*args)


def test_pt2_runs_every_size(tmp_path):
    module, folders = _load_net("fcn_mini")
    program = torch.export.load(write_pt2(module, tmp_path / "fcn.pt2")).module()
    for folder in folders:
        info, inputs, expected = _read(folder)
        out = program(torch.from_numpy(inputs["data"]))
        assert relative_error(out.detach().numpy(), expected["out"]) <= TOLERANCE, folder.name
    # torch's own guard: the smallest size the layers take
    with pytest.raises(Exception, match=r"data.size|shape\[2\]"):
        program(torch.rand(1, 3, 4, 4))


def test_convert_files_says_when_torch_cannot_keep_the_size_symbolic(tmp_path, times_fixed_map_net):
    """The shape rule of the plugin takes any size, its module does not: convert_files falls back to fixed
    sizes in both files, warns, and `result.input_size` carries the reason the summary line prints."""
    prototxt = times_fixed_map_net
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ninport.convert_files(prototxt, out_dir=tmp_path / "o", formats="onnx,pt2")
    said = [str(w.message) for w in caught if "height and width fixed at the input shape" in str(w.message)]
    assert len(said) == 1 and "torch could not keep them symbolic" in said[0]
    assert not result.input_size.dynamic and result.input_size.reason.startswith("torch could not keep")
    assert result.input_size.describe().startswith("batch dynamic; height and width fixed: torch could not")
    assert result.passed and set(result.checks) == {"onnx", "pt2"}
    dims = [d.dim_value for d in onnx.load(result.written["onnx"]).graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == [4, 5]
