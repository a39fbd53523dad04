"""Pooling (ninport/layers/pooling.py): torch's own max_pool2d/avg_pool2d where they are exact, Caffe's explicit
form elsewhere, each decided from the sizes; both against a transcription of Caffe's PoolingLayer."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ninport.caffe import geometry
from ninport.layers.pooling import FLT_MAX, CaffePool2d


def caffe_pool(x: np.ndarray, kernel, pad, stride, ceil: bool, method: str) -> np.ndarray:
    """PoolingLayer::Reshape and Forward_cpu (BVLC), transcribed: the output size rounds up (or down), and when
    the layer pads on either axis a last window starting at or past in + pad is dropped, on both axes."""
    n, c, h, w = x.shape

    def rounded(size, k, p, s):
        span = size + 2 * p - k
        return (-(-span // s) if ceil else span // s) + 1

    oh, ow = rounded(h, kernel[0], pad[0], stride[0]), rounded(w, kernel[1], pad[1], stride[1])
    if pad[0] or pad[1]:
        oh -= (oh - 1) * stride[0] >= h + pad[0]
        ow -= (ow - 1) * stride[1] >= w + pad[1]
    out = np.zeros((n, c, oh, ow), np.float64)
    for ph, pw in itertools.product(range(oh), range(ow)):
        hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
        he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
        size = (he - hs) * (we - ws)
        window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)].astype(np.float64)
        if method == "max":
            out[:, :, ph, pw] = window.max(axis=(2, 3)) if window.size else -FLT_MAX
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, :, ph, pw] = window.sum(axis=(2, 3)) / size
    return out.astype(np.float32)


def _configs():
    """Square and rectangular windows, every pad Caffe takes (pad < kernel), strides below and above the
    kernel, pads on one axis only."""
    for k, s in itertools.product(range(1, 5), range(1, 6)):
        for p in range(k):
            yield (k, k), (p, p), (s, s)
    yield (3, 2), (1, 0), (2, 3)  # pads only the height: Caffe still drops the width's window past the input
    yield (2, 3), (0, 1), (3, 1)
    yield (2, 2), (1, 0), (1, 4)
    yield (3, 1), (2, 0), (2, 2)  # pad > kernel / 2 on one axis: torch refuses it


@pytest.mark.parametrize("method", ["max", "ave"])
@pytest.mark.parametrize("ceil", [True, False])
def test_every_window_is_caffes_whichever_form_runs(method, ceil):
    rng = np.random.default_rng(0)
    forms = {"native": 0, "explicit": 0}
    for kernel, pad, stride in _configs():
        module = CaffePool2d(kernel, pad, stride, ceil, method)
        for h, w in ((1, 1), (2, 5), (5, 2), (6, 7), (9, 9), (12, 8)):
            try:
                module.params.check_output((h, w))
            except geometry.GeometryError:  # a size Caffe refuses (the shape rule refuses it before the forward)
                continue
            x = rng.normal(size=(2, 3, h, w)).astype(np.float32)
            expected = caffe_pool(x, kernel, pad, stride, ceil, method)
            with torch.no_grad():
                got = module(torch.from_numpy(x)).numpy()
            native = module.plans[(h, w)] is None
            assert native == module.params.torch_pools_exactly((h, w))
            forms["native" if native else "explicit"] += 1
            where = (kernel, pad, stride, (h, w), "native" if native else "explicit")
            assert got.shape == expected.shape, where
            if method == "max":
                np.testing.assert_array_equal(got, expected, err_msg=str(where))
            else:
                np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=str(where))
    assert forms["native"] > 100 and forms["explicit"] > 5, forms  # both forms ran, and were checked


def test_torch_output_size_rule_is_torchs():
    """geometry.torch_pool_output_size against torch itself, wherever torch takes the window."""
    checked = 0
    for k, s, size, ceil in itertools.product(range(1, 6), range(1, 7), range(1, 14), (True, False)):
        for p in range(k // 2 + 1):
            expected = geometry.torch_pool_output_size(size, k, p, s, ceil)
            if expected < 1:
                with pytest.raises(RuntimeError):
                    F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil)
                continue
            got = F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil).shape[-1]
            assert got == expected, (k, p, s, size, ceil)
            checked += 1
    assert checked > 1000


def test_native_at_every_size_only_where_no_size_differs():
    """`torch_pools_exactly_at_every_size` (what a traced, symbolic-size forward relies on) holds only where
    torch's output size is Caffe's at every size: checked at every size up to 60."""
    for k, s, ceil in itertools.product(range(1, 6), range(1, 8), (True, False)):
        for p in range(k):
            params = geometry.PoolParams((k, k), (p, p), (s, s), ceil, "max")
            sizes = range(params.smallest_input(0), 60)
            every = all(params.torch_pools_exactly((n, n)) for n in sizes)
            if params.torch_pools_exactly_at_every_size():
                assert every, (k, p, s, ceil)
            elif 2 * p <= k:
                assert not every, (k, p, s, ceil)  # the claim is tight: some size differs


def test_a_size_is_decided_once_and_kept():
    module = CaffePool2d((1, 1), (0, 0), (3, 3), True, "max")  # stride > kernel without padding: size-dependent
    calls = []
    decide = module.params.torch_pools_exactly

    class Counting(type(module.params)):
        def torch_pools_exactly(self, in_hw):
            calls.append(tuple(in_hw))
            return decide(in_hw)

    module.params = Counting(*module.params)
    with torch.no_grad():
        for _ in range(3):
            module(torch.zeros(1, 1, 6, 6))  # Caffe keeps a window starting at 6, past the input: explicit form
            module(torch.zeros(1, 1, 7, 7))  # windows at 0, 3, 6, all inside: torch's own call
    assert calls == [(6, 6), (7, 7)]
    assert module.plans[(6, 6)] is not None and module.plans[(7, 7)] is None


def test_ave_divisors_follow_the_module_to_another_dtype():
    """The explicit form's divisors are kept per size; .double() starts over and the result stays Caffe's."""
    module = CaffePool2d((3, 3), (2, 2), (2, 2), True, "ave")  # pad > kernel / 2: always the explicit form
    x = np.random.default_rng(1).normal(size=(1, 2, 7, 5))
    expected = caffe_pool(x, (3, 3), (2, 2), (2, 2), True, "ave")
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x).float()).numpy(), expected, rtol=1e-6, atol=1e-6)
        module = module.double()
        assert module.plans == {}
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_channels_last_input_gives_the_same_numbers():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(2, 5, 11, 9)).astype(np.float32))
    for method in ("max", "ave"):
        module = CaffePool2d((3, 3), (1, 1), (2, 2), True, method)
        with torch.no_grad():
            plain = module(x)
            last = module(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(last, plain, rtol=1e-6, atol=1e-6)
