"""In-place ReLU (ninport/build/graph.py, `LayerContext.may_overwrite_bottom`): inference overwrites a fresh
blob nothing else reads, as Caffe's in-place layer does; everything else keeps its own tensor."""
from __future__ import annotations

import warnings

import pytest
import torch

import ninport
from tests.conftest import relative_error

HEAD = ('name: "n"\n'
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n')
CONV = ('layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
        'convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}\n')


def relu(name: str, bottom: str, top: str) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{bottom}" top: "{top}" }}\n'


def _load(tmp_path, body: str):
    path = tmp_path / "net.prototxt"
    path.write_text(HEAD + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded weights
        return ninport.load(path)


def _in_place(module) -> dict[str, bool]:
    """Each ReLU, BatchNorm and Scale module: whether it may overwrite its bottom."""
    found = {}
    for name, sub in module.named_children():
        if type(sub).__name__ == "Elementwise":
            found[name] = bool(sub.args.get("inplace"))
        elif type(sub).__name__ in ("CaffeBatchNorm", "ScaleBias"):
            found[name] = sub.inplace
    return found


def _out_of_place(module):
    for sub in module.children():
        if type(sub).__name__ == "Elementwise":
            sub.args = {}
        elif type(sub).__name__ in ("CaffeBatchNorm", "ScaleBias"):
            sub.inplace = False
    return module


NETS = {
    "after a convolution": (CONV.format(name="c", bottom="data", top="c") + relu("r", "c", "c"), {"r": True}),
    "not in place in Caffe": (CONV.format(name="c", bottom="data", top="c") + relu("r", "c", "y"), {"r": False}),
    "over the input": (relu("r", "data", "data"), {"r": False}),
    "after a Dropout (its input, unchanged)": (
        CONV.format(name="c", bottom="data", top="c")
        + 'layer { name: "d" type: "Dropout" bottom: "c" top: "c" }\n' + relu("r", "c", "c"), {"r": False}),
    "the convolution also read before the ReLU": (
        CONV.format(name="c", bottom="data", top="c")
        + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 } }\n'
        + relu("r", "c", "c"), {"r": False}),
    "read after the ReLU": (
        CONV.format(name="c", bottom="data", top="c") + relu("r", "c", "c")
        + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 } }\n'
        + CONV.format(name="c2", bottom="c", top="c2") + relu("r2", "c2", "c2"), {"r": True, "r2": True}),
    "a BatchNorm, Scale, ReLU chain": (
        CONV.format(name="c", bottom="data", top="c")
        + 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }\n'
        + 'layer { name: "s" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }\n'
        + relu("r", "c", "c"), {"bn": True, "s": True, "r": True}),
    "a Scale writing a new blob": (
        CONV.format(name="c", bottom="data", top="c")
        + 'layer { name: "s" type: "Scale" bottom: "c" top: "s" scale_param { bias_term: true } }\n'
        + relu("r", "s", "s"), {"s": False, "r": True}),
}


@pytest.mark.parametrize("name", NETS)
def test_in_place_exactly_where_nothing_else_reads_the_bottom(tmp_path, name):
    body, expected = NETS[name]
    module = _load(tmp_path, body)
    assert _in_place(module) == expected
    x = torch.randn(2, 3, 8, 8)
    reference = _out_of_place(_load(tmp_path, body))
    with torch.no_grad():
        got, want = ninport.forward_blobs(module, x), ninport.forward_blobs(reference, x)
        x_before = x.clone()
        module(x)
    assert torch.equal(x, x_before)  # the caller's input is never overwritten
    assert list(got) == list(want)
    for blob in want:  # BatchNorm in place computes (x - mean) / sqrt(var + eps) as Caffe; F.batch_norm differs
        assert relative_error(got[blob].numpy(), want[blob].numpy()) <= 1e-6, blob


def test_training_keeps_every_tensor(tmp_path):
    module = _load(tmp_path, NETS["after a convolution"][0])
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = module(x)
    out.sum().backward()
    assert x.grad is not None and (out >= 0).all()
