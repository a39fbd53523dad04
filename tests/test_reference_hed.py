"""HED's deploy.prototxt as its authors published it (reference_models/hed).

The file is checked to be the published one (its git blob id, recorded in its README with the source commit);
it builds from it without `input_shape`, read as BVLC Caffe or in the `hed` dialect, and takes a caffemodel
that lists its five layers named "crop". Its crops against the fork's source: tests/layers/test_hed.py.
"""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport.build.shapes import infer_shapes
from tests.caffe_files import write_caffemodel
from tests.conftest import REPO

HED = REPO / "reference_models" / "hed" / "deploy.prototxt"


def git_blob_id(path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def test_the_file_is_the_published_one():
    readme = (HED.parent / "README.md").read_text()
    assert f"`{git_blob_id(HED)}`" in readme, "deploy.prototxt is not the file its README names"
    assert "not shipped" in readme


@pytest.mark.parametrize("dialect", [None, "hed"])
def test_hed_builds_without_input_shape(dialect):
    net = ninport.summary(HED, dialect=dialect)
    assert net.inputs == {"data": (1, 3, 500, 500)}
    assert net.outputs == ("sigmoid-dsn1", "sigmoid-dsn2", "sigmoid-dsn3", "sigmoid-dsn4", "sigmoid-dsn5",
                           "sigmoid-fuse")
    assert all(row.output_shapes == ((1, 1, 500, 500),) for row in net.layers if row.type == "Sigmoid")
    assert f"{net.parameters:,}" in (HED.parent / "README.md").read_text()
    assert [row.layer for row in net.layers if row.type == "Crop"] == ["crop"] * 5


def test_hed_takes_a_caffemodel_that_lists_its_five_crops(tmp_path):
    """HED's caffemodel has a layer per net layer, the five "crop"s without blobs: no warning, all weights found."""
    spec = ninport.load_spec(HED, (1, 3, 40, 40), dialect="hed")
    table = infer_shapes(spec)
    rng = np.random.default_rng(0)

    class LayersInOrder(list):  # write_caffemodel takes .items(): here a list, so "crop" can repeat
        def items(self):
            return self

    layers = LayersInOrder((layer.name, [rng.normal(0, 0.05, shape).astype(np.float32)
                                         for shape in table.layers[layer.key].params]) for layer in spec.layers)
    assert [name for name, _ in layers].count("crop") == 5
    weights = dict(layers)
    path = tmp_path / "hed.caffemodel"
    write_caffemodel(path, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = ninport.load(HED, path, input_shape=(1, 3, 40, 40), dialect="hed")
    assert torch.equal(module.get_submodule("conv1_1").weight, torch.from_numpy(weights["conv1_1"][0]))
    assert module(torch.zeros(1, 3, 40, 40))[5].shape == (1, 1, 40, 40)
