"""Parity with real Caffe: every golden case, every blob, through ninport.load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ninport
from tests.conftest import NIN_DEPLOY, NIN_TRAIN_VAL, load_golden, relative_error

TOLERANCE = 1e-5


def _run_case(case, **load_kwargs):
    module = ninport.load(case.prototxt, case.weights, **load_kwargs)
    inputs = [torch.from_numpy(x) for x in case.inputs().values()]
    return module, ninport.forward_blobs(module, *inputs), module(*inputs)


def test_every_blob_matches_caffe(golden_case):
    module, blobs, _ = _run_case(golden_case)
    expected = golden_case.blobs()
    # forward_blobs names every blob of Caffe's net.blobs, its automatic split copies included, in its order
    assert list(blobs) == list(golden_case.info["blobs"])
    checked = 0
    for name, value in expected.items():
        assert name in blobs, f"blob {name!r} of Caffe's net is missing from the converted graph"
        actual = blobs[name].numpy()
        assert actual.shape == value.shape, f"blob {name}: shape {actual.shape} != Caffe's {value.shape}"
        err = relative_error(actual, value)
        assert err <= TOLERANCE, f"blob {name}: relative error {err:.2e} > {TOLERANCE}"
        checked += 1
    assert checked >= len(golden_case.info["inputs"]) + 1


def test_outputs_in_caffe_order(golden_case):
    module, _, result = _run_case(golden_case)
    outputs = golden_case.info["outputs"]
    assert list(ninport.describe(module).outputs) == outputs
    results = result if isinstance(result, tuple) else (result,)
    assert len(results) == len(outputs)
    expected = golden_case.blobs()
    for name, value in zip(outputs, results):
        assert relative_error(value.detach().numpy(), expected[name]) <= TOLERANCE


@pytest.mark.parametrize("crop", [224, 227])
def test_nin_reference_deploy_runs_golden_weights(crop):
    """The shipped current-format deploy.prototxt takes the golden V1 NIN weights by layer name."""
    case = load_golden(f"nin_v1_{crop}")
    module = ninport.load(NIN_DEPLOY, case.weights, input_shape=(1, 3, crop, crop))
    x = torch.from_numpy(case.inputs()["data"])
    out = module(x)
    assert out.shape == (1, 1000, 1, 1)
    assert relative_error(out.detach().numpy(), case.blobs()["pool4"]) <= TOLERANCE


def test_nin_train_val_test_phase_matches_caffe():
    """V1 train_val: TEST-phase data layer becomes a 224 input; losses and accuracy are dropped."""
    case = load_golden("nin_v1_224")
    module = ninport.load(NIN_TRAIN_VAL, case.weights)
    assert ninport.describe(module).inputs == {"data": (1, 3, 224, 224)}
    assert list(ninport.describe(module).outputs) == ["pool4"]
    out = module(torch.from_numpy(case.inputs()["data"]))
    assert relative_error(out.detach().numpy(), case.blobs()["pool4"]) <= TOLERANCE


def test_nin_batch_of_eight_equals_eight_single_runs():
    case = load_golden("nin_v1_227")
    module = ninport.load(case.prototxt, case.weights, input_shape=(8, 3, 227, 227))
    x = torch.from_numpy(np.repeat(case.inputs()["data"], 8, axis=0))
    out = module(x)
    for row in out:
        assert relative_error(row.detach().numpy()[None], case.blobs()["pool4"]) <= TOLERANCE


def test_state_dict_keys_follow_caffe_layer_names():
    """Attributes are the Caffe names made identifiers; the description maps them back."""
    case = load_golden("nin_v1_224")
    module = ninport.load(case.prototxt, case.weights)
    keys = set(module.state_dict())
    assert {"conv1.weight", "conv1.bias", "cccp8_1024.weight", "cccp8_1024.bias"} <= keys
    assert ninport.describe(module).module_of("conv4-1024") == "conv4_1024"
    assert dict(module.named_children())["conv4_1024"].weight.shape == (1024, 384, 3, 3)


def test_random_weights_warn_and_are_seeded():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a = ninport.load(NIN_DEPLOY)
    with pytest.warns(UserWarning):
        b = ninport.load(NIN_DEPLOY)
    torch.testing.assert_close(a.state_dict()["conv1.weight"], b.state_dict()["conv1.weight"])
    out = a(torch.rand(1, 3, 224, 224) * 255)
    assert out.shape == (1, 1000, 1, 1) and torch.isfinite(out).all()
