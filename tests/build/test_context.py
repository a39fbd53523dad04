"""LayerContext.parameter: a parameter shares memory with its weight blob when the blob can be adopted as it is
(what read_caffemodel gives), so a caffemodel's weights are in memory once; otherwise it is a copy."""
from __future__ import annotations

import numpy as np
import pytest

from ninport.build.context import LayerContext


def _context(*weights: np.ndarray) -> LayerContext:
    return LayerContext(layer=None, bottom_shapes=[], top_shapes=[], weights=list(weights))


def test_an_owned_float32_blob_becomes_the_parameter_without_a_copy():
    blob = np.arange(12, dtype=np.float32)
    ctx = _context(blob)
    weight = ctx.parameter(0, (3, 4))
    assert weight.shape == (3, 4) and np.shares_memory(weight.detach().numpy(), blob)
    again = ctx.parameter(0)  # a second parameter of the same blob: a copy, never two parameters on one memory
    assert not np.shares_memory(again.detach().numpy(), blob)
    np.testing.assert_array_equal(again.detach().numpy(), blob)


@pytest.mark.parametrize("kind", ["float64", "read-only", "strided"])
def test_other_blobs_are_copied(kind):
    base = np.arange(24, dtype=np.float64 if kind == "float64" else np.float32)
    blob = base[::2] if kind == "strided" else base
    if kind == "read-only":
        blob.flags.writeable = False
    weight = _context(blob).parameter(0)
    assert weight.dtype.is_floating_point and str(weight.dtype) == "torch.float32"
    assert not np.shares_memory(weight.detach().numpy(), base)
    np.testing.assert_array_equal(weight.detach().numpy(), blob.astype(np.float32))
    with_grad = weight.sum() * 2  # a trainable parameter: writable, with gradients
    with_grad.backward()
    assert weight.grad is not None
