"""ninport.with_outputs: the same net returning chosen blobs, sharing its parameters."""
from __future__ import annotations

import warnings

import pytest
import torch

import ninport
from tests.conftest import REPO

NIN = REPO / "reference_models" / "nin_imagenet" / "deploy.prototxt"


@pytest.fixture(scope="module")
def nin():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(NIN, input_shape=(1, 3, 224, 224))


def test_the_chosen_blobs_are_the_blobs_caffe_would_report(nin):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # as forward_blobs runs (inference may take other, equally exact kernels)
        pool3, conv1 = ninport.with_outputs(nin, ["pool3", "conv1"])(x)
    blobs = ninport.forward_blobs(nin, x)
    assert torch.equal(pool3, blobs["pool3"]) and torch.equal(conv1, blobs["conv1"])  # conv1 after its in-place ReLU
    assert ninport.describe(ninport.with_outputs(nin, ["pool3"])).outputs == ("pool3",)


def test_chosen_blobs_and_every_blob_come_in_the_default_layout(nin):
    """Inference hands channels_last tensors between layers (ninport/layers/convolution.py); what the caller
    gets is laid out as a plain torch module's outputs are, so `.view` works on a feature map."""
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        conv1, pool3 = ninport.with_outputs(nin, ["conv1", "pool3"])(x)
        blobs = ninport.forward_blobs(nin, x)
    assert conv1.is_contiguous() and pool3.is_contiguous() and conv1.view(2, -1).shape == (2, 96 * 54 * 54)
    assert all(value.is_contiguous() for value in blobs.values())


def test_layers_no_chosen_blob_needs_are_left_out_and_parameters_are_shared(nin):
    early = ninport.with_outputs(nin, ["conv1"])
    assert [n.op for n in early.graph.nodes].count("call_module") == 2  # conv1 and its ReLU
    x = torch.ones(1, 3, 224, 224)
    before = early(x).clone()
    with torch.no_grad():
        nin.get_submodule("conv1").bias.add_(1.0)
    try:
        assert not torch.equal(early(x), before)  # the same Parameter object, not a copy
    finally:
        with torch.no_grad():
            nin.get_submodule("conv1").bias.sub_(1.0)


def test_an_unknown_blob_is_a_one_line_error(nin):
    with pytest.raises(ninport.NinportError, match="no blob 'nosuch'"):
        ninport.with_outputs(nin, ["nosuch"])
    with pytest.raises(ninport.NinportError, match="non-empty list"):
        ninport.with_outputs(nin, "pool3")
