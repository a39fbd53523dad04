"""`ninport upgrade` output of every legacy case reads back to the same net, weights included."""
from __future__ import annotations

import numpy as np
import pytest

from ninport.caffe.io import read_caffemodel, read_prototxt
from ninport.caffe.spec import load_netspec
from ninport.caffe.upgrade import net_format
from ninport.caffe.upgrade_file import upgrade_file
from tests.conftest import NIN_TRAIN_VAL, load_golden

LEGACY_CASES = ["legacy_v0", "legacy_v1", "nin_v1_224"]


def _structure(spec):
    return [(l.name, l.type, l.bottoms, l.tops, l.proto.SerializeToString()) for l in spec.layers]


@pytest.mark.parametrize("name", LEGACY_CASES)
def test_upgraded_prototxt_is_current_and_describes_the_same_net(name, tmp_path):
    case = load_golden(name)
    target, fmt = upgrade_file(case.prototxt, tmp_path / "net.prototxt")
    assert fmt in ("V0", "V1")
    assert net_format(read_prototxt(target)) == "current"
    old, new = load_netspec(case.prototxt), load_netspec(target)
    assert _structure(new) == _structure(old)
    assert new.inputs == old.inputs and new.outputs == old.outputs


@pytest.mark.parametrize("name", ["legacy_v1", "nin_v1_224"])
def test_upgraded_caffemodel_holds_the_same_blobs(name, tmp_path):
    case = load_golden(name)
    target, fmt = upgrade_file(case.weights, tmp_path / "weights.caffemodel")
    assert fmt == "V1"
    old = {l.name: l.blobs for l in read_caffemodel(case.weights)}
    new = {l.name: l.blobs for l in read_caffemodel(target)}
    assert set(new) == set(old)
    for layer, blobs in old.items():
        assert len(new[layer]) == len(blobs)
        for a, b in zip(blobs, new[layer]):
            np.testing.assert_array_equal(a.data, b.data)
            assert a.recorded_shape == b.recorded_shape


def test_upgraded_files_give_caffes_numbers(tmp_path):
    import torch

    import ninport
    from tests.conftest import relative_error

    case = load_golden("legacy_v1")
    proto, _ = upgrade_file(case.prototxt, tmp_path / "net.prototxt")
    weights, _ = upgrade_file(case.weights, tmp_path / "net.caffemodel")
    module = ninport.load(proto, weights)
    out = module(*[torch.from_numpy(x) for x in case.inputs().values()])
    assert relative_error(out.detach().numpy(), case.blobs()["prob"]) <= 1e-5


def test_upgraded_nin_train_val_keeps_both_phases(tmp_path):
    target, fmt = upgrade_file(NIN_TRAIN_VAL, tmp_path / "train_val.prototxt")
    assert fmt == "V1"
    text = target.read_text()
    assert text.count('type: "Data"') == 2 and 'type: "SoftmaxWithLoss"' in text and 'type: "Accuracy"' in text
    assert _structure(load_netspec(target)) == _structure(load_netspec(NIN_TRAIN_VAL))


def test_upgrade_refuses_to_drop_fork_fields(tmp_path):
    import pytest

    from ninport.errors import ParseError

    source = tmp_path / "fork.prototxt"
    source.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
                      'layers { name: "i" type: RELU bottom: "data" top: "i"\n  interp_param { zoom_factor: 2 } }\n')
    with pytest.raises(ParseError, match=r"fork\.prototxt:7:3: field 'interp_param' is not in caffe\.proto"):
        upgrade_file(source, tmp_path / "out.prototxt")
    assert not (tmp_path / "out.prototxt").exists()
