"""SegNet's unpooling: BVLC Pooling MAX with its second top (the argmax mask) and SegNet's Upsample with the
mask as its second bottom (alexgkendall/caffe-segnet upsample_layer.cpp).

Two references. Real Caffe (tests/fixtures/caffe-golden-fork: pooling_mask*, upsample_mask*): every blob, in
torch, through the generated .py and in onnxruntime, masks exactly. And tests/layers/segnet_caffe_numpy.py, a
loop-for-loop transcription of both layers' C++ (commits named there; it reproduces those fixtures bit for bit),
applied layer by layer to the bottoms ninport computed, for what the fixtures do not hold: ties in every
geometry, NaN, -inf and -FLT_MAX, windows past the input, pad_out, repeated and out-of-range mask entries, the
fork's refusals. Those tops are data movement, so they must be equal, not close. Each net runs in torch at two
input sizes, through the generated .py file and in onnxruntime (one dynamic-size file at both sizes).
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import onnx
import pytest
import torch

import ninport
from ninport.build.shapes import infer_shapes
from ninport.errors import ShapeError
from ninport.export.artifacts import verify_onnx
from ninport.export.onnx import export_onnx
from tests.conftest import FIXTURES, GoldenCase, relative_error
from tests.generated import generated_twin
from tests.layers import segnet_caffe_numpy as caffe

FLT_MAX = caffe.FLT_MAX


def _net(tmp_path, inputs: dict[str, tuple], body: str):
    lines = ['name: "segnet_mini"\n']
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text("".join(lines) + body)
    return path


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded random weights
        return ninport.load(path, **kwargs)


def conv(name, bottom, top, params="num_output: 4 kernel_size: 3 pad: 1"):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ {params} weight_filler {{ type: "gaussian" std: 0.5 }} }} }}\n')


def pool(name, bottom, params, tops=None):
    tops = tops or [name, name + "_mask"]
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" '
            + " ".join(f'top: "{t}"' for t in tops) + f" pooling_param {{ pool: MAX {params} }} }}\n")


def upsample(name, data, mask, params):
    return (f'layer {{ name: "{name}" type: "Upsample" bottom: "{data}" bottom: "{mask}" top: "{name}" '
            f"upsample_param {{ {params} }} }}\n")


_BOOLS = {"true": True, "t": True, "false": False, "f": False}


def _fields(text: str) -> dict:
    """'scale: 2 pad_out_h: true' -> {'scale': 2, 'pad_out_h': True}: the fields as the fork's LayerSetUp gets them."""
    words = text.split()
    return {key.rstrip(":"): _BOOLS[value] if value in _BOOLS else int(value)
            for key, value in zip(words[::2], words[1::2])}


def _shapes(path) -> dict[str, tuple]:
    return infer_shapes(ninport.load_spec(path)).blobs


def _pool_args(layer):
    """The geometry of a Pooling layer as the transcription takes it."""
    p = layer.proto.pooling_param
    if p.global_pooling:
        return {"kernel": None}
    kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size, p.kernel_size)
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
    return {"kernel": kernel, "pad": pad, "stride": stride, "ceil": p.round_mode != p.FLOOR}


def _upsample_fields(layer) -> dict:
    fields = {}
    for entry in layer.unknown_fields.get("upsample_param", []):
        fields.update({k: v[-1] for k, v in entry.items()})
    fields.update({k.split(".", 1)[1]: v[-1] for k, v in layer.unknown_fields.items() if "." in k})
    return fields


def check_against_the_transcription(module, path, *inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every Pooling (two tops) and Upsample (two bottoms) layer's tops equal the transcription applied to
    the bottoms ninport computed; returns every blob."""
    spec = ninport.load_spec(path, {n: x.shape for n, x in zip(ninport.describe(module).inputs, inputs)})
    blobs = {k: v.numpy() for k, v in ninport.forward_blobs(module, *map(torch.from_numpy, inputs)).items()}
    checked = 0
    for layer in spec.layers:
        if layer.type == "Pooling" and len(layer.tops) == 2:
            top, mask = caffe.max_pool_with_mask(blobs[layer.bottoms[0]], **_pool_args(layer))
            np.testing.assert_array_equal(blobs[layer.tops[0]], top, err_msg=layer.name)
            np.testing.assert_array_equal(blobs[layer.tops[1]], mask, err_msg=layer.name)
            checked += 1
        elif layer.type == "Upsample":
            data, mask = (blobs[b] for b in layer.bottoms)
            expected = caffe.upsample_forward(_upsample_fields(layer), data, mask)
            np.testing.assert_array_equal(blobs[layer.tops[0]], expected, err_msg=layer.name)
            checked += 1
    assert checked, "no layer checked"
    return blobs


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def check_generated_py(module, *inputs: np.ndarray) -> None:
    """The generated .py file computes what the module computes: exactly for a net of pooling and upsampling
    only (data movement), within 1e-6 relative where convolutions run (a convolution may pick another
    kernel in the file than in the module: issue 22's oneDNN packing); every mask exactly either way."""
    xs = [torch.from_numpy(x) for x in inputs]
    exact = not any(r.type == "Convolution" for r in ninport.describe(module).layers)
    with torch.no_grad():
        expected = _as_tuple(module(*xs))
        got = _as_tuple(generated_twin(module)(*xs))
    for name, a, b in zip(ninport.describe(module).outputs, got, expected, strict=True):
        if exact or name.endswith("mask"):
            assert torch.equal(a, b), f"the generated .py differs at {name}"
        else:
            assert relative_error(a.numpy(), b.numpy()) <= 1e-6, f"the generated .py differs at {name}"


def check_onnx(module, tmp_path, input_sets: list[list[np.ndarray]], exact: bool = False,
               dynamic_size: bool | None = None) -> onnx.ModelProto:
    """One ONNX file (dynamic size where the net allows it, or as `dynamic_size` says) run in onnxruntime on
    each input set: every output as torch gives it (masks exactly)."""
    path = export_onnx(module, tmp_path / "net.onnx", dynamic_size=dynamic_size)
    run_onnx(module, path, input_sets, exact)
    return onnx.load(path)


def run_onnx(module, path, input_sets: list[list[np.ndarray]], exact: bool = False) -> None:
    """`module`'s ONNX file at `path` in onnxruntime: every output as torch gives it (masks exactly), and
    standard operators only."""
    model = onnx.load(path)
    names = ninport.describe(module).inputs
    for inputs in input_sets:
        expected = _as_tuple(module(*map(torch.from_numpy, inputs)))
        got = verify_onnx(path, dict(zip(names, inputs)))
        for output, want, have in zip(model.graph.output, expected, got, strict=True):
            want = want.detach().numpy()
            assert have.shape == want.shape, output.name
            if exact or output.name.endswith("mask"):
                np.testing.assert_array_equal(have, want, err_msg=output.name)
            else:
                np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()),
                                           err_msg=output.name)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}, "only standard operators"


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def ties(shape, seed=0):
    """Integers in {-1, 0, 1}: most windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(-1, 2, size=shape).astype(np.float32)


def specials(shape, seed=0):
    """Random values with NaN, -inf, +inf and -FLT_MAX sprinkled in, and one plane all -inf and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    picks = rng.integers(0, 5, size=shape)
    x[picks == 0] = np.nan
    x[picks == 1] = -np.inf
    x[picks == 2] = -FLT_MAX
    x[(picks == 3) & (rng.random(shape) < 0.1)] = np.inf
    x[0, 0] = np.where(rng.random(shape[2:]) < 0.5, -np.inf, np.nan)
    return x


# --- Pooling's mask top ----------------------------------------------------------------------------------

GEOMETRIES = {
    "k2s2": "kernel_size: 2 stride: 2",
    "k3s2p1": "kernel_size: 3 stride: 2 pad: 1",
    "rect": "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
    "k3s3p2": "kernel_size: 3 stride: 3 pad: 2",  # Reshape drops the last window, all padding
    "k2s3": "kernel_size: 2 stride: 3",  # no padding, stride > kernel: a last window can start past the input
    "floor": "kernel_size: 3 stride: 2 round_mode: FLOOR",
    "global": "global_pooling: true",
}
POOL_NET = "".join(pool(name, "data", params) for name, params in GEOMETRIES.items())


@pytest.fixture(scope="module")
def pool_net(tmp_path_factory):
    """POOL_NET's prototxt, module and ONNX file (exported once: every geometry's loop makes it slow)."""
    folder = tmp_path_factory.mktemp("pool_net")
    path = _net(folder, {"data": (2, 3, 7, 9)}, POOL_NET)
    module = _load(path)
    return path, module, export_onnx(module, folder / "net.onnx")


@pytest.mark.parametrize("make", [rand, ties, specials])
def test_pooling_mask_is_caffes_at_two_sizes(pool_net, make):
    """Values and masks equal Caffe's Forward_cpu: ties keep the first maximum in scan order, padding never
    wins, NaN never wins, a window with nothing above -FLT_MAX gives -FLT_MAX and mask -1."""
    path, module, onnx_path = pool_net
    sizes = [(2, 3, 7, 9), (1, 3, 10, 6)]
    inputs = [make(shape, seed) for seed, shape in enumerate(sizes)]
    for x in inputs:
        blobs = check_against_the_transcription(module, path, x)
        check_generated_py(module, x)
        # kernel 2 stride 3 on a width of 9 (or 6): the last window starts at 9 (or 6), past the input
        assert (blobs["k2s3_mask"][..., -1] == -1).all() and (blobs["k2s3"][..., -1] == -FLT_MAX).all()
        if make is ties:  # the case is the one it claims to be: many 2x2 windows hold their maximum twice
            n, c, h, w = x.shape
            windows = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
            hits = (windows == windows.max(axis=(3, 5), keepdims=True)).sum(axis=(3, 5))
            assert (hits > 1).mean() > 0.3
        if make is specials:  # plane (0, 0) holds only -inf and NaN
            assert (blobs["global_mask"][0, 0] == -1).all() and (blobs["global"][0, 0] == -FLT_MAX).all()
    run_onnx(module, onnx_path, [[x] for x in inputs], exact=True)


def test_pooling_mask_onnx_does_not_depend_on_maxpool_ties(tmp_path):
    """The masked pooling is exported as slices, Greater and Where: no MaxPool whose Indices output leaves
    ties to the runtime."""
    path = _net(tmp_path, {"data": (1, 2, 6, 6)}, pool("p", "data", "kernel_size: 2 stride: 2"))
    model = check_onnx(_load(path), tmp_path, [[ties((1, 2, 6, 6))], [ties((2, 2, 9, 5), 1)]], exact=True)
    ops = {node.op_type for node in model.graph.node}
    assert "MaxPool" not in ops and {"Greater", "Where"} <= ops


def test_one_top_pooling_is_unchanged(tmp_path):
    """Pooling with one top is still the common module (the mask costs nothing when nobody asks for it)."""
    from ninport.layers.pooling import CaffeMaxPoolWithMask, CaffePool2d

    path = _net(tmp_path, {"data": (1, 2, 6, 6)}, pool("p", "data", "kernel_size: 2 stride: 2", tops=["p"])
                + pool("q", "data", "kernel_size: 2 stride: 2"))
    module = _load(path)
    assert type(module.get_submodule("p")) is CaffePool2d
    assert type(module.get_submodule("q")) is CaffeMaxPoolWithMask


# --- a mini SegNet: encoder (pooling with masks), decoder (upsampling by them) -----------------------------


def mini_segnet(up2: str, up1: str, pool_params: str = "kernel_size: 2 stride: 2") -> str:
    return (conv("conv1", "data", "conv1") + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
            + pool("pool1", "conv1", pool_params)
            + conv("conv2", "pool1", "conv2")
            + pool("pool2", "conv2", pool_params)
            + conv("conv3", "pool2", "conv3")
            + upsample("up2", "conv3", "pool2_mask", up2)
            + conv("conv4", "up2", "conv4")
            + upsample("up1", "conv4", "pool1_mask", up1)
            + conv("score", "up1", "score", "num_output: 2 kernel_size: 1"))


MINI_SEGNETS = {
    # name: (up2 params, up1 params, the two input sizes)
    "scale": ("scale: 2", "scale: 2", [(1, 3, 16, 20), (2, 3, 12, 8)]),
    "scale_hw": ("scale_h: 2 scale_w: 2", "scale_h: 2 scale_w: 2", [(1, 3, 8, 12), (1, 3, 20, 4)]),
    "pad_out": ("scale: 2", "scale: 2 pad_out_h: true pad_out_w: true", [(1, 3, 15, 11), (2, 3, 31, 19)]),
    "default_scale": ("upsample_w: 6", "pad_out_h: false", [(1, 3, 8, 8), (1, 3, 12, 16)]),  # scale 2
}


@pytest.mark.parametrize("variant", sorted(MINI_SEGNETS))
def test_mini_segnet_at_two_sizes(tmp_path, variant):
    up2, up1, sizes = MINI_SEGNETS[variant]
    path = _net(tmp_path, {"data": sizes[0]}, mini_segnet(up2, up1))
    module = _load(path)
    inputs = [rand(shape, seed) * 3 for seed, shape in enumerate(sizes)]
    for x in inputs:
        blobs = check_against_the_transcription(module, path, x)
        assert blobs["up1"].shape[2:] == x.shape[2:] and blobs["score"].shape[2:] == x.shape[2:]
        assert (blobs["up1"] != 0).any() and (blobs["up1"] == 0).mean() >= 0.7  # one value in four, at most
        check_generated_py(module, x)
    fixed_by = [layer for layer, _ in ninport.describe(module).size_fixed_by]
    # pad_out takes only some sizes (each pooled size odd where it is set): the probe at twice the size fails
    assert fixed_by == (["up1"] if variant == "pad_out" else [])
    model = check_onnx(module, tmp_path, [[x] for x in inputs], dynamic_size=True)
    assert "ScatterElements" in {node.op_type for node in model.graph.node}


def test_mini_segnet_with_upsample_h_and_w_at_odd_sizes(tmp_path):
    """upsample_h and upsample_w fix each top's size (SegNet's published prototxts give them for odd sizes,
    e.g. 45x60 for a 360x480 input); scale, given too, is ignored, as the fork ignores it."""
    body = mini_segnet("scale: 2 upsample_h: 8 upsample_w: 6", "upsample_h: 15 upsample_w: 11 scale: 3")
    path = _net(tmp_path, {"data": (1, 3, 15, 11)}, body)
    module = _load(path)
    x = rand((1, 3, 15, 11), 5) * 3
    blobs = check_against_the_transcription(module, path, x)
    assert blobs["up2"].shape == (1, 4, 8, 6) and blobs["up1"].shape == (1, 4, 15, 11)
    check_generated_py(module, x)
    check_onnx(module, tmp_path, [[x]])
    # at 13x9 pool1's mask is 7x5 but up2's fixed top (so conv4's output) is 8x6: Caffe refuses, naming up1
    with pytest.raises(ShapeError, match=r"layer 'up1' \(Upsample\) cannot take .*the mask \[1, 4, 7, 5\] must "
                                         r"have the data's shape \[1, 4, 8, 6\]"):
        module(torch.from_numpy(rand((1, 3, 13, 9))))


def test_overlapping_windows_the_last_write_wins(tmp_path):
    """With kernel 3 stride 2 neighbouring windows share a row or column, so two mask entries can name the
    same place (ties make it common): the fork's loop writes in order, the later value stays."""
    body = (pool("pool", "data", "kernel_size: 3 stride: 2") + conv("conv", "pool", "conv", "num_output: 2 "
            "kernel_size: 3 pad: 1") + upsample("up", "conv", "pool_mask", "upsample_h: 15 upsample_w: 11"))
    path = _net(tmp_path, {"data": (1, 2, 15, 11)}, body)
    module = _load(path)
    x = ties((1, 2, 15, 11), 3)
    blobs = check_against_the_transcription(module, path, x)
    masks = blobs["pool_mask"].reshape(2, -1)
    assert all(len(np.unique(m)) < m.size for m in masks), "no repeated mask entry: the case tests nothing"
    check_generated_py(module, x)
    check_onnx(module, tmp_path, [[x], [ties((2, 2, 15, 11), 4)]], exact=False)


def _dropping_reference(data: np.ndarray, mask: np.ndarray, out_hw) -> np.ndarray:
    """The fork's loop where each index is inside the top's plane; others write nothing (ninport's choice
    where the fork aborts or writes outside the plane)."""
    n, c = data.shape[:2]
    top = np.zeros((n, c, out_hw[0] * out_hw[1]), np.float32)
    for plane, values, indices in zip(top.reshape(n * c, -1), data.reshape(n * c, -1), mask.reshape(n * c, -1)):
        for value, index in zip(values, indices):
            if math.isfinite(index) and 0 <= int(index) < plane.size:
                plane[int(index)] = value
    return top.reshape(n, c, *out_hw)


def test_upsample_mask_given_as_an_input(tmp_path):
    """Any mask: repeated entries (the later value stays), fractions (truncated toward zero, as
    static_cast<int>), and entries outside the top's plane (-1, past the end, NaN, huge) that write nothing."""
    path = _net(tmp_path, {"data": (1, 2, 3, 4), "mask": (1, 2, 3, 4)},
                upsample("up", "data", "mask", "upsample_h: 5 upsample_w: 6"))
    module = _load(path)
    data = rand((1, 2, 3, 4), 6)
    mask = np.random.default_rng(7).integers(0, 30, size=(1, 2, 3, 4)).astype(np.float32)
    in_range = mask.copy()
    in_range[0, 0, 0, :4] = [2.7, -0.5, 29.9, 3]  # -> 2, 0, 29, and 3
    check_against_the_transcription(module, path, data, in_range)
    outside = in_range.copy()
    outside[0, 1, 1, :] = [-1, 30, np.nan, 1e10]
    got = module(torch.from_numpy(data), torch.from_numpy(outside)).numpy()
    np.testing.assert_array_equal(got, _dropping_reference(data, outside, (5, 6)))
    with pytest.raises(caffe.CaffeCheckFailed):
        caffe.upsample_forward({"upsample_h": 5, "upsample_w": 6}, data, outside)  # the fork aborts
    check_generated_py(module, data, outside)
    data2 = rand((2, 2, 4, 3), 8)
    mask2 = np.random.default_rng(9).integers(-3, 33, size=(2, 2, 4, 3)).astype(np.float32)
    check_onnx(module, tmp_path, [[data, in_range], [data, outside], [data2, mask2]], exact=True)


# --- what the fork accepts and refuses ---------------------------------------------------------------------


def test_inspect_shows_which_upsample_it_is(tmp_path):
    body = (upsample("a", "data", "mask", "scale: 2 pad_out_w: true") + upsample("b", "data", "mask", "upsample_h: 9 "
            "upsample_w: 11 scale: 2") + 'layer { name: "c" type: "Upsample" bottom: "data" top: "c" }\n')
    rows = {row.layer: row for row in ninport.summary(_net(tmp_path, {"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)},
                                                           body)).layers}
    assert rows["a"].settings == "unpool by mask, scale 2x2, pad_out w" and rows["a"].output_shapes == ((1, 2, 8, 9),)
    assert rows["b"].settings == "unpool by mask, 9x11" and rows["c"].settings == "nearest, scale 1"


@pytest.mark.parametrize("params,out_hw", [
    ("", (8, 10)),  # scale defaults to 2
    ("scale: 3", (12, 15)),
    ("scale_h: 3 scale_w: 2 pad_out_w: true", (12, 9)),
    ("scale: 2 pad_out_h: 1 pad_out_w: f", (7, 10)),  # protobuf's text forms of a bool
    ("scale: 3 upsample_h: 9 upsample_w: 11 pad_out_h: true", (9, 11)),  # upsample_h/_w win, the rest is ignored
    ("upsample_h: 9", (8, 10)),  # upsample_h without upsample_w is ignored by the fork
])
def test_upsample_sizes_are_the_forks(tmp_path, params, out_hw):
    state = caffe.upsample_setup(_fields(params))
    assert caffe.upsample_reshape(state, (1, 2, 4, 5), (1, 2, 4, 5))[2:] == out_hw
    path = _net(tmp_path, {"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)}, upsample("up", "data", "mask", params))
    assert _shapes(path)["up"][2:] == out_hw


@pytest.mark.parametrize("params,message", [
    ("upsample_h: 1 upsample_w: 5", "upsample_h 1 and upsample_w 5 must both be greater than 1"),
    ("scale: 1", "scale 1x1 must be greater than 1"),
    ("scale_h: 2", "give upsample_h and upsample_w, or scale, or both scale_h and scale_w without scale"),
    ("scale: 2 scale_h: 2 scale_w: 2", "the fork refuses what is given: scale, scale_h, scale_w"),
    ("scale_h: 3 scale_w: 2 pad_out_h: true", "pad_out_h needs scale_h 2"),
    ("scale_h: 2 scale_w: 1", "scale 2x1 must be greater than 1"),
])
def test_upsample_parameters_the_fork_refuses(tmp_path, params, message):
    with pytest.raises(caffe.CaffeCheckFailed):
        caffe.upsample_setup(_fields(params))
    path = _net(tmp_path, {"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)}, upsample("up", "data", "mask", params))
    with pytest.raises(ninport.NinportError, match=r'layer "up" \(Upsample\): .*' + message):
        _shapes(path)


@pytest.mark.parametrize("inputs,body,message", [
    ({"data": (1, 2, 4, 5), "mask": (1, 2, 4, 6)}, upsample("up", "data", "mask", "scale: 2"),
     r'"up" \(Upsample\): the mask \[1, 2, 4, 6\] must have the data.s shape \[1, 2, 4, 5\]'),
    ({"data": (1, 2, 4, 5), "mask": (1, 2, 20)}, upsample("up", "data", "mask", "scale: 2"),
     r'"up" \(Upsample\): data \[1, 2, 4, 5\] and mask \[1, 2, 20\] must both be 4-D'),
    ({"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)}, upsample("up", "data", "mask", "scale: -2"),
     r'"up" \(Upsample\): scale -2 must not be negative'),
    ({"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)}, upsample("up", "data", "mask", "scale: 2 pad_out_h: 2"),
     r'"up" \(Upsample\): pad_out_h must be true or false, got 2'),
    ({"data": (1, 2, 4, 5), "mask": (1, 2, 4, 5)}, upsample("up", "data", "mask", "scale: 2 zoom: 2"),
     r'"up" \(Upsample\): upsample_param fields zoom are not SegNet.s'),
    ({"data": (1, 2, 4, 5)}, 'layer { name: "up" type: "Upsample" bottom: "data" top: "up" '
                             "upsample_param { upsample_h: 8 upsample_w: 10 } }\n",
     r'"up" \(Upsample\): fields upsample_h, upsample_w are SegNet.s unpooling Upsample, which takes 2 bottoms'),
    ({"data": (1, 2, 4, 5)}, 'layer { name: "up" type: "Upsample" bottom: "data" bottom: "data" bottom: "data" '
                             'top: "up" }\n', r'"up" \(Upsample\): has 3 bottoms, but a Caffe Upsample layer takes '
                                              r"1 or 2 bottoms"),
    ({"data": (1, 2, 4, 5)}, 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" '
                             "pooling_param { pool: AVE kernel_size: 2 } }\n",
     r'"p" \(Pooling\): has 2 tops, but a Caffe Pooling layer produces exactly 1 top'),
    ({"data": (1, 2, 4, 5)}, 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" top: "k" '
                             "pooling_param { pool: MAX kernel_size: 2 } }\n",
     r'"p" \(Pooling\): has 3 tops, but a Caffe Pooling layer produces 1 or 2 tops'),
])
def test_refusals_name_the_layer(tmp_path, inputs, body, message):
    path = _net(tmp_path, inputs, body)
    with pytest.raises(ninport.NinportError, match=message):
        _shapes(path)


# --- real Caffe (tests/fixtures/caffe-golden-fork: BVLC 9b891540 + caffe-segnet's upsample_layer.cpp) ---------

GOLDEN_FORK = FIXTURES / "caffe-golden-fork"
GOLDEN_CASES = {"pooling_mask": "pooling_mask_size2", "pooling_mask_size2": "pooling_mask",
                "upsample_mask": "upsample_mask_size2", "upsample_mask_size2": "upsample_mask",
                "upsample_mask_odd": None}  # case: the case at another size (None: fixed by upsample_h/_w)


def _golden(name: str) -> GoldenCase:
    folder = GOLDEN_FORK / name
    return GoldenCase(name, folder, json.loads((folder / "case.json").read_text()))


def _mask_blobs(case: GoldenCase) -> set[str]:
    return {layer.tops[1] for layer in ninport.load_spec(case.prototxt).layers
            if layer.type == "Pooling" and len(layer.tops) == 2}


def _check_against_caffe(case: GoldenCase, name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, f"{case.name} {name}: shape {actual.shape} != Caffe's {expected.shape}"
    if name in _mask_blobs(case):
        np.testing.assert_array_equal(actual, expected, err_msg=f"{case.name} {name}")
    else:
        assert relative_error(actual, expected) <= 1e-5, f"{case.name} {name}"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_every_blob_matches_real_caffe(name):
    case = _golden(name)
    module = ninport.load(case.prototxt, case.weights)
    blobs = ninport.forward_blobs(module, *map(torch.from_numpy, case.inputs().values()))
    expected = case.blobs()
    assert set(expected) <= set(blobs) and len(expected) >= len(case.info["outputs"]) + 1
    for blob, value in expected.items():
        _check_against_caffe(case, blob, blobs[blob].numpy(), value)
    check_generated_py(module, *case.inputs().values())


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_the_transcription_is_real_caffe(name):
    """segnet_caffe_numpy on Caffe's own bottoms gives Caffe's own tops, bit for bit."""
    case = _golden(name)
    blobs = case.blobs()
    checked = 0
    for layer in ninport.load_spec(case.prototxt).layers:
        if layer.type == "Pooling" and len(layer.tops) == 2:
            top, mask = caffe.max_pool_with_mask(blobs[layer.bottoms[0]], **_pool_args(layer))
            np.testing.assert_array_equal(top, blobs[layer.tops[0]])
            np.testing.assert_array_equal(mask, blobs[layer.tops[1]])
            checked += 1
        elif layer.type == "Upsample":
            data, mask = (blobs[b] for b in layer.bottoms)
            np.testing.assert_array_equal(caffe.upsample_forward(_upsample_fields(layer), data, mask),
                                          blobs[layer.tops[0]])
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", ["pooling_mask", "upsample_mask", "upsample_mask_size2", "upsample_mask_odd"])
def test_onnx_matches_real_caffe_from_a_file_exported_at_another_size(tmp_path, name):
    """The ONNX file is exported at the other case's input size (symbolic height and width) and run in
    onnxruntime at this case's: every output as Caffe computed it, masks exactly. pooling_mask has no
    weights, so its one file also runs pooling_mask_size2."""
    case = _golden(name)
    other = GOLDEN_CASES[name]
    shapes = _golden(other).info["inputs"] if other else None
    module = ninport.load(case.prototxt, case.weights, input_shape=shapes and {k: tuple(v) for k, v in shapes.items()})
    path = export_onnx(module, tmp_path / "net.onnx", dynamic_size=True if other else None)
    assert [o.name for o in onnx.load(path).graph.output] == case.info["outputs"]
    for run in [case] + ([_golden(other)] if case.weights is None else []):
        outputs = verify_onnx(path, run.inputs())
        expected = run.blobs()
        for blob, value in zip(run.info["outputs"], outputs, strict=True):
            _check_against_caffe(run, blob, value, expected[blob])
