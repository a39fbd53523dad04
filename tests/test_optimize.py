"""ninport.optimize (ninport/speedup.py): same numbers as the unoptimized module and as Caffe, same names,
faster path used."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import fx, nn

import ninport
from ninport.speedup import OneDNNConv2d, onednn_available, optimize
from tests.conftest import load_golden, relative_error

TOLERANCE = 1e-5
CAFFE_SPLIT_BLOB = re.compile(r".+_split_\d+$")
# Convolutions of every geometry (groups, depthwise, dilation, no bias, rectangular), a conv not
# followed by a ReLU, a leaky ReLU (not fused), branches and residual sums, pooling, LRN, deconvolution.
CASES = ["conv_group2", "conv_depthwise", "conv_dilation2", "conv_nobias", "conv_rect", "act_relu_leaky",
         "mini_resnet", "mini_inception", "lrn_across", "deconv_s2", "pool_ave_k3s2p1_ceil", "nin_v1_224"]

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def _load(case):
    module = ninport.load(case.prototxt, case.weights)
    inputs = [torch.from_numpy(x) for x in case.inputs().values()]
    return module, inputs


@pytest.mark.parametrize("name", CASES)
def test_optimized_matches_unoptimized_and_caffe(name):
    case = load_golden(name)
    module, inputs = _load(case)
    fast = optimize(module)
    with torch.inference_mode():
        expected = module(*inputs)
        actual = fast(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.is_contiguous()
        assert relative_error(a.numpy(), e.numpy()) <= TOLERANCE
    caffe = case.blobs()
    blobs = ninport.forward_blobs(fast, *inputs)
    for blob, value in caffe.items():
        if CAFFE_SPLIT_BLOB.match(blob) and blob not in blobs:
            continue
        err = relative_error(blobs[blob].numpy(), value)
        assert err <= TOLERANCE, f"{name} blob {blob}: relative error {err:.2e}"


@needs_onednn
def test_names_kept_and_relu_fused_on_nin():
    case = load_golden("nin_v1_224")
    module, _ = _load(case)
    fast = optimize(module)
    assert isinstance(fast, fx.GraphModule)
    assert [n for n, _ in fast.named_children()] == [n for n, _ in module.named_children()]
    assert list(fast.state_dict()) == list(module.state_dict())
    fused = [n for n, m in fast.named_modules() if isinstance(m, OneDNNConv2d) and m.post_op == "relu"]
    assert len(fused) == 12  # every NIN convolution is followed by an in-place ReLU
    called = {n.target for n in fast.graph.nodes if n.op == "call_module"}
    assert "relu0" not in called and "conv1" in called
    # the original is untouched and shares its parameters
    assert any(n.op == "call_module" and n.target == "relu0" for n in module.graph.nodes)
    assert fast.get_submodule("conv1").weight is module.get_submodule("conv1").weight


@needs_onednn
def test_separate_relu_top_is_not_fused(tmp_path):
    """A ReLU writing a new blob leaves the conv's own blob visible: that conv must not fuse."""
    prototxt = ('layer { name: "data" type: "Input" top: "data" '
                'input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'
                'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                'convolution_param { num_output: 4 kernel_size: 3 } }\n'
                'layer { name: "r" type: "ReLU" bottom: "c" top: "r" }\n')
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt)
    with pytest.warns(ninport.NinportWarning):  # seeded random weights
        module = ninport.load(path)
    fast = optimize(module)
    assert fast.get_submodule("c").post_op == "none"
    x = torch.randn(2, 3, 8, 8)
    blobs, expected = ninport.forward_blobs(fast, x), ninport.forward_blobs(module, x)
    assert (blobs["c"] < 0).any()  # the pre-ReLU blob keeps its negative values
    for key in expected:
        assert relative_error(blobs[key].numpy(), expected[key].numpy()) <= TOLERANCE


@needs_onednn
def test_weights_changed_after_optimize_are_used():
    case = load_golden("conv_group2")
    module, inputs = _load(case)
    fast = optimize(module)
    with torch.inference_mode():
        fast(*inputs)  # packs the weights
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(2)
    with torch.inference_mode():
        assert relative_error(fast(*inputs).numpy(), module(*inputs).numpy()) <= TOLERANCE


def test_autograd_falls_back_to_the_plain_path():
    case = load_golden("conv_group2")
    module, inputs = _load(case)
    fast = optimize(module)
    x = inputs[0].clone().requires_grad_(True)
    out = fast(x)
    out.sum().backward()
    assert x.grad is not None and np.isfinite(x.grad.numpy()).all()
    assert relative_error(out.detach().numpy(), module(inputs[0]).detach().numpy()) <= TOLERANCE


def test_unrecognised_graph_left_alone():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding_mode="reflect", padding=1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x))

    module = fx.symbolic_trace(Net()).eval()
    fast = optimize(module)
    assert type(fast.get_submodule("conv")) is nn.Conv2d
    x = torch.randn(1, 3, 5, 5)
    with torch.inference_mode():
        assert torch.equal(fast(x), module(x))


def test_refuses_non_graph_module():
    """A wrong argument is a NinportError (one line from the CLI), not a TypeError."""
    import ninport

    for wrong, kind in ((nn.Conv2d(1, 1, 1), "Conv2d"), (123, "int")):
        with pytest.raises(ninport.NinportError, match=f"needs a torch.fx.GraphModule .*, not {kind}$"):
            ninport.optimize(wrong)
