"""torch.compile(module, fullgraph=True) traces every converted net whole (no graph break) and computes the same
numbers: every reference model, every golden case against Caffe's blobs, and the generated .py.

Dynamo's own tracing is what can break a graph, so most checks compile with the "eager" backend (the traced graph
run by torch's eager kernels: a few seconds a net); inductor runs on NIN. Under `plain_kernels` (ninport's
oneDNN convolution off, which a trace never takes) the compiled graph must give the module's numbers bit for
bit but for BatchNorm, which inference computes in place as Caffe does, (x - mean) / sqrt(var + eps), where
the traced graph keeps F.batch_norm (float32 rounding apart). Everything runs unmarked on a representative
subset; the rest is marked slow.
"""
from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.export.codegen import write_python
from tests.conftest import (
    REPO,
    SIZES_GOLDEN,
    SSD_GOLDEN,
    golden_case_names,
    load_golden,
    plain_kernels,
    relative_error,
)

REFERENCE_MODELS = sorted(p.parent.name for p in (REPO / "reference_models").glob("*/deploy.prototxt"))
QUICK_MODELS = {"nin_imagenet", "squeezenet_v1.1", "opencv_face_detector"}  # ... and a custom op (DetectionOutput)
QUICK_CASES = {"nin_v1_224", "pool_edges", "pool_max_k3s1p2_bigpad", "pool_ave_k3s2p1_ceil", "lrn_across",
               "mini_inception", "ssd_detout_batch2", "ssd_mini_96", "sz_spp_fc_9x30", "batchnorm_scale"}
TOLERANCE = 1e-5
# The generated .py writes their detection rows (SSD's DetectionOutput, Faster R-CNN's proposals) as plain
# torch whose row count depends on the data: a graph break there, where ninport's module keeps one custom op.
DETECTORS = ("mobilenet_ssd", "opencv_face_detector", "faster_rcnn_vgg16")


def _quick_or_slow(names, quick):
    return [n if n in quick else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _compiled(module, *inputs, backend="eager"):
    torch._dynamo.reset()
    with torch.no_grad():
        return torch.compile(module, fullgraph=True, backend=backend)(*inputs)


def _tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _load_quietly(prototxt, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded weights
        return ninport.load(prototxt, weights)


def _reference_inputs(module, batch=1):
    """Small values, as tests/test_codegen.py feeds the seeded nets: a mean-subtracted image's +-128 overflows a
    seeded SSD's box decoding (exp), which then magnifies float32 rounding into the outputs. Faster R-CNN's
    im_info is what its preprocessing gives (height, width, scale of the image): random values there would
    leave no proposal at all."""
    torch.manual_seed(0)
    shapes = ninport.describe(module).inputs
    inputs = [torch.rand(batch, *shape[1:]) * 2 - 1 for shape in shapes.values()]
    if "im_info" in shapes:
        height, width = shapes["data"][2:]
        inputs[list(shapes).index("im_info")] = torch.tensor([[float(height), float(width), 1.0]])
    return inputs


@pytest.mark.parametrize("model", _quick_or_slow(REFERENCE_MODELS, QUICK_MODELS))
def test_every_reference_model_compiles_whole(model):
    module = _load_quietly(REPO / "reference_models" / model / "deploy.prototxt")
    inputs = _reference_inputs(module)
    with plain_kernels():
        compiled = _tuple(_compiled(module, *inputs))
        with torch.no_grad():
            expected = _tuple(module(*inputs))
    assert len(compiled) == len(expected)
    for got, want in zip(compiled, expected):  # the same kernels: equal up to in-place BatchNorm's arithmetic
        _assert_close(got, want, 1e-6, model)
    with torch.no_grad():  # and the module's own (oneDNN) kernels agree to float32 rounding on these deep nets
        fast = _tuple(module(*inputs))
    for got, want in zip(fast, expected):
        _assert_close(got, want, 1e-4, model)


def _assert_close(got: torch.Tensor, want: torch.Tensor, tolerance: float, what: str) -> None:
    """Same shape, the same non-finite values (seeded SSD nets overflow their box decoding), and the finite
    ones within `tolerance` relative (max |a - b| / max |b|)."""
    assert got.shape == want.shape, what
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got)) and torch.equal(got[~finite], want[~finite]), what
    assert relative_error(got[finite].numpy(), want[finite].numpy()) <= tolerance, what


def _golden_folders():
    names = golden_case_names()
    names += sorted(p.name for p in SSD_GOLDEN.iterdir() if (p / "case.json").is_file())
    names += sorted(p.name for p in SIZES_GOLDEN.iterdir() if (p / "case.json").is_file())
    return names


def _golden(name):
    if (SSD_GOLDEN / name / "case.json").is_file() or (SIZES_GOLDEN / name / "case.json").is_file():
        folder = SSD_GOLDEN / name if (SSD_GOLDEN / name).is_dir() else SIZES_GOLDEN / name
        info = json.loads((folder / "case.json").read_text())
        weights = folder / info["weights"] if info.get("weights") else None
        data = np.load(folder / "inputs.npz")
        blobs = np.load(folder / "blobs.npz")
        return folder / info["prototxt"], weights, [data[n] for n in info["inputs"]], info["outputs"], blobs
    case = load_golden(name)
    return case.prototxt, case.weights, list(case.inputs().values()), case.info["outputs"], case.blobs()


@pytest.mark.parametrize("name", _quick_or_slow(_golden_folders(), QUICK_CASES))
def test_every_golden_case_compiles_whole_and_matches_caffe(name):
    prototxt, weights, inputs, outputs, blobs = _golden(name)
    module = ninport.load(prototxt, weights)
    got = _tuple(_compiled(module, *[torch.from_numpy(x) for x in inputs]))
    assert len(got) == len(outputs)
    for value, blob in zip(got, outputs):
        assert value.shape == blobs[blob].shape, blob
        # pnet_like's softmax over logits up to ~300 moves further with float32 rounding: as in test_any_size
        allowed = 5e-5 if name.startswith("sz_pnet_like") and blob == "prob" else TOLERANCE
        assert relative_error(value.numpy(), blobs[blob]) <= allowed, blob


def test_inductor_compiles_nin_to_the_same_numbers():
    case = load_golden("nin_v1_224")
    module = ninport.load(case.prototxt, case.weights)
    x = torch.from_numpy(case.inputs()["data"])
    got = _compiled(module, x, backend="inductor")
    assert relative_error(got.numpy(), case.blobs()["pool4"]) <= TOLERANCE


@pytest.mark.slow
def test_inductor_compiles_an_ssd_net_with_its_detection_op_to_caffes_rows():
    prototxt, weights, inputs, outputs, blobs = _golden("ssd_mini_96")
    module = ninport.load(prototxt, weights)
    got = _tuple(_compiled(module, *[torch.from_numpy(x) for x in inputs], backend="inductor"))
    for value, blob in zip(got, outputs):
        assert value.shape == blobs[blob].shape, blob
        assert relative_error(value.numpy(), blobs[blob]) <= TOLERANCE, blob


def _generated(module, tmp_path, name):
    path = write_python(module, tmp_path / f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"compiled_{name}", path)
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    return code.load()


@pytest.mark.parametrize("model", _quick_or_slow(
    [m for m in REFERENCE_MODELS if m not in DETECTORS], {"nin_imagenet"}))
def test_the_generated_file_compiles_whole(model, tmp_path):
    module = _load_quietly(REPO / "reference_models" / model / "deploy.prototxt")
    net = _generated(module, tmp_path, model.replace(".", "_"))
    inputs = _reference_inputs(module)
    compiled = _tuple(_compiled(net, *inputs))
    with torch.no_grad():
        expected = _tuple(net(*inputs))
    for got, want in zip(compiled, expected):  # equal up to in-place BatchNorm's arithmetic (module docstring)
        _assert_close(got, want, 1e-6, model)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["opencv_face_detector", "faster_rcnn_vgg16"])
def test_a_generated_detector_compiles_with_a_break_at_the_detection_rows(model, tmp_path):
    """The .py's DetectionOutput and proposal layer are plain torch whose row count depends on the data
    (ninport's module keeps each one custom op instead): fullgraph refuses them, a plain torch.compile runs
    them with a graph break, same rows."""
    module = _load_quietly(REPO / "reference_models" / model / "deploy.prototxt")
    net = _generated(module, tmp_path, model)
    inputs = _reference_inputs(module)
    with torch.no_grad():
        expected = _tuple(net(*inputs))
        torch._dynamo.reset()
        got = _tuple(torch.compile(net, backend="eager")(*inputs))
        with pytest.raises(Exception, match="data-dependent"):
            _compiled(net, *inputs)
    for value, want in zip(got, expected):
        _assert_close(value, want, 1e-5, f"{model} rows")
