"""tests/seeded_weights.py: the NIN golden caffemodel is rebuilt from its seed, never handed out unchecked."""
from __future__ import annotations

import hashlib

import pytest

from tests.seeded_weights import NIN_PROTOTXT, NIN_SEED, NIN_SHA256, ensure_seeded_caffemodel


def test_weights_from_another_generator_are_refused_and_not_written(tmp_path):
    path = tmp_path / "weights.caffemodel"
    with pytest.raises(RuntimeError, match=r"seed 2\) now have sha256 [0-9a-f]{64}, not the recorded"):
        ensure_seeded_caffemodel(path, NIN_PROTOTXT, NIN_SEED + 1, NIN_SHA256)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_file_is_rewritten_with_the_recorded_bytes(tmp_path):
    path = tmp_path / "weights.caffemodel"
    path.write_bytes(b"not the weights")
    assert ensure_seeded_caffemodel(path, NIN_PROTOTXT, NIN_SEED, NIN_SHA256) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == NIN_SHA256
    assert [p.name for p in tmp_path.iterdir()] == ["weights.caffemodel"], "no temporary file left behind"
