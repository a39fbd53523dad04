"""SSD's PriorBox settings: the aspect-ratio de-duplication gives Caffe's answer in linear time."""
from __future__ import annotations

import numpy as np
import pytest

from ninport.caffe import caffe_pb2 as pb2
from ninport.layers.ssd import aspect_ratios, prior_box_layout
from tests.conftest import within


def caffe_aspect_ratios(given, flip: bool) -> list[float]:
    """PriorBoxLayer::LayerSetUp's loop as written: each ratio against every kept one."""
    ratios = [1.0]
    for ar in given:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(float(np.float32(ar)))
        if flip:
            with np.errstate(over="ignore"):
                ratios.append(float(np.float32(1.0 / ar)))
    return ratios


def _tricky_ratios(rng: np.random.Generator, n: int) -> list[float]:
    """float32 ratios that crowd each other: steps around 1e-6 near 1, near bucket edges, tiny ones
    (flips out of float range), large ones (their flips pile up near 0), exact repeats."""
    bases = [1.0, 2.0, 0.5, 1 / 3, 3.0, 1e-6, 2e-6, 3e-6, 1e-7, 1e-45, 1e-39, 7.0, 1e5, 1e6, 3e7, 1e30]
    steps = [0.0, 1e-7, 3e-7, 5e-7, 9.999e-7, 1e-6, 1.0001e-6, 2e-6, 1.0]
    values = []
    for _ in range(n):
        value = np.float32(rng.choice(bases) + rng.choice(steps) * rng.integers(-3, 4))
        for _ in range(int(rng.integers(0, 3))):  # a few float32 steps either way
            value = np.nextafter(value, np.float32(np.inf if rng.integers(2) else 0))
        if value > 0:
            values.append(float(value))
    return values


@pytest.mark.parametrize("seed", range(60))
def test_aspect_ratios_match_caffes_loop(seed):
    rng = np.random.default_rng(seed)
    given = _tricky_ratios(rng, int(rng.integers(1, 400)))
    for flip in (True, False):
        assert aspect_ratios(given, flip) == caffe_aspect_ratios(given, flip)


def test_usual_ratios():
    assert aspect_ratios([2.0, 3.0, 2.0000001], True) == caffe_aspect_ratios([2.0, 3.0], True)
    assert len(aspect_ratios([2.0, 3.0], True)) == 5 and aspect_ratios([0.5, 2.0], False) == [1.0, 0.5, 2.0]


def test_twenty_thousand_ratios_lay_out_in_linear_time():
    """Caffe's loop compares each ratio with every kept one: 20,000 ratios took 88 s."""
    given = [float(np.float32(2.0 + i * 1e-3)) for i in range(20_000)]
    param = pb2.PriorBoxParameter(min_size=[30.0], aspect_ratio=given, flip=True)
    with within(20, "laying out 20,000 aspect ratios"):
        layout = prior_box_layout(param)
    assert layout.num_priors == 1 + 2 * 20_000
