"""The `hed` dialect: HED's Caffe fork computes Crop offsets from the net (s9xie/hed crop_layer.cpp).

Real HED Caffe checks the whole published net (tests/fixtures/caffe-golden-fork/hed_500,
tests/test_reference_hed.py); here the reference is tests/layers/hed_caffe_numpy.py, a transcription
of the fork's CropLayer (LayerSetUp's coord-map walk in float32, and Forward_cpu), reading the prototxt
with protobuf's own parser. Checked on HED's published deploy.prototxt and on small nets that walk every
coord_map the fork has, in torch at two input sizes, through the generated .py and in onnxruntime.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport import registry
from ninport.errors import NinportError, ShapeError
from tests.conftest import REPO, plain_kernels
from tests.generated import generated_twin
from tests.layers import hed_caffe_numpy as fork

HED = REPO / "reference_models" / "hed" / "deploy.prototxt"

# A small net walking each coord_map of the fork: a padded conv, pooling (inverse FilterMap), a
# deconvolution (FilterMap), an in-place ReLU, Concat/Eltwise (identity, first bottom), and a Crop of a Crop.


def conv(name, bottom, params, kind="Convolution"):
    return layer(name, kind, [bottom], name, f"convolution_param {{ {params} }}")


def layer(name, kind, bottoms, top, params=""):
    bottoms = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {bottoms} top: "{top}" {params} }}\n'


SMALL = ('name: "hed_small"\ninput: "data"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 20\ninput_dim: 17\n'
         + conv("c1", "data", "num_output: 3 kernel_size: 3 pad: 6")
         + layer("r1", "ReLU", ["c1"], "c1")
         + layer("p1", "Pooling", ["c1"], "p1", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
         + conv("c2", "p1", "num_output: 3 kernel_size: 3 pad: 1")
         + conv("up", "c2", "num_output: 3 kernel_size: 4 stride: 2", "Deconvolution")
         + layer("crop", "Crop", ["up", "c1"], "a")
         + layer("sum", "Eltwise", ["a", "c1"], "s")
         + layer("crop", "Crop", ["s", "data"], "b")
         + layer("cat", "Concat", ["c1", "c1"], "cat")
         + layer("crop", "Crop", ["cat", "b"], "out"))


def _load(prototxt, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(prototxt, **kwargs)


def _net(tmp_path, text: str):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def _crops(module):
    return [r for r in ninport.describe(module).layers if r.type == "Crop"]


def _check_every_crop_against_the_fork(module, text: str, x: np.ndarray) -> int:
    """Each Crop's top equals the fork's Forward_cpu on the bottoms ninport computed, at the offsets the
    fork's LayerSetUp computes; returns how many crops were checked."""
    reference = fork.Net(text)
    blobs = {k: v.numpy() for k, v in ninport.forward_blobs(module, torch.from_numpy(x)).items()}
    fork_crops = [i for i, layer in enumerate(reference.layers) if layer.type == "Crop"]
    records = _crops(module)
    assert len(records) == len(fork_crops)
    for record, index in zip(records, fork_crops):
        crop_h, crop_w = reference.crop[index]
        expected = fork.crop_forward(blobs[record.bottoms[0]], blobs[record.bottoms[1]].shape, crop_h, crop_w)
        np.testing.assert_array_equal(blobs[record.tops[0]], expected)
    return len(records)


def test_hed_deploy_crop_offsets_are_the_forks():
    text = HED.read_text()
    reference = fork.Net(text)
    expected = [reference.crop[i] for i, layer in enumerate(reference.layers) if layer.type == "Crop"]
    assert expected == [(34, 34), (35, 35), (36, 36), (38, 38), (42, 42)]
    for shape in [None, (1, 3, 64, 48)]:
        spec = ninport.load_spec(HED, shape, dialect="hed")
        got = [tuple(layer.proto.crop_param.offset) for layer in spec.layers if layer.type == "Crop"]
        assert got == expected  # fixed at setup, whatever the input size
    rows = [row for row in ninport.summary(HED, dialect="hed").layers if row.type == "Crop"]
    assert [row.layer for row in rows] == ["crop"] * 5 and rows[4].settings == "axis 2 offset 42,42"


@pytest.mark.parametrize("shape", [(1, 3, 64, 48), (2, 3, 37, 53)])
def test_hed_deploy_runs_the_forks_crop(shape):
    """One module built at HED's declared 500x500 runs at both sizes; every crop is the fork's."""
    module = _load(HED, dialect="hed")
    x = np.random.default_rng(shape[2]).normal(0, 50, shape).astype(np.float32)
    assert _check_every_crop_against_the_fork(module, HED.read_text(), x) == 5
    assert ninport.describe(module).dialect == "hed"


def test_without_the_dialect_crop_is_bvlcs():
    """BVLC's Crop with no crop_param cuts at offset 0: the side outputs are shifted against the image."""
    module = _load(HED, input_shape=(1, 3, 64, 48))
    x = np.random.default_rng(0).normal(0, 50, (1, 3, 64, 48)).astype(np.float32)
    blobs = ninport.forward_blobs(module, torch.from_numpy(x))
    np.testing.assert_array_equal(blobs["upscore-dsn1"].numpy(), blobs["score-dsn1-up"].numpy()[:, :, :64, :48])
    assert ninport.describe(module).dialect is None


@pytest.mark.parametrize("shape", [(1, 2, 20, 17), (2, 2, 31, 24)])
def test_small_net_every_coord_map(tmp_path, shape):
    module = _load(_net(tmp_path, SMALL), dialect="hed")
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    assert _check_every_crop_against_the_fork(module, SMALL, x) == 3
    offsets = [tuple(layer.proto.crop_param.offset) for layer in ninport.load_spec(_net(tmp_path, SMALL),
                                                                                  dialect="hed").layers
               if layer.type == "Crop"]
    # up = 2 (x / 2 - 1/4) + 3/2 = x + 1 in c1's coordinates; c1 = data + (6 - 1); cat follows c1 and b = c1 - 5
    assert offsets == [(1, 1), (5, 5), (5, 5)]
    twin = generated_twin(module)
    with plain_kernels(), torch.no_grad():
        assert torch.equal(twin(torch.from_numpy(x)), module(torch.from_numpy(x)))


def test_small_net_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from ninport.export.artifacts import verify_onnx

    module = _load(_net(tmp_path, SMALL), dialect="hed")
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    import onnx

    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["dialect"] == "hed"
    for shape in [(1, 2, 20, 17), (3, 2, 26, 19)]:
        x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        (got,) = verify_onnx(path, {"data": x})
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-5)


# --- what the fork refuses, refused naming the layer ----------------------------------------------------

HEAD = 'input: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 12\ninput_dim: 12\n'


@pytest.mark.parametrize("body, fork_says, message", [
    (conv("c", "data", "num_output: 1 kernel_size: 2") + layer("k", "Crop", ["data", "c"], "k"),
     "not an integer", "not an integer"),
    (conv("c", "data", "num_output: 1 kernel_size: 3") + layer("k", "Crop", ["c", "data"], "k"),
     "Negative crop width", "negative crop"),
    (layer("p", "Pooling", ["data"], "p", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
     + layer("k", "Crop", ["data", "p"], "k"), "scale", "differ in scale"),
    (layer("f", "InnerProduct", ["data"], "f", "inner_product_param { num_output: 144 }")
     + layer("r", "Reshape", ["f"], "r", "reshape_param { shape { dim: 1 dim: 1 dim: 12 dim: 12 } }")
     + layer("k", "Crop", ["r", "data"], "k"), "Reshape", '"r" (Reshape)'),
])
def test_the_forks_refusals(tmp_path, body, fork_says, message):
    text = HEAD + body
    with pytest.raises((fork.CheckFailed, fork.NotImplementedInFork), match=fork_says):
        fork.Net(text)
    with pytest.raises(ShapeError) as info:
        ninport.load_spec(_net(tmp_path, text), dialect="hed")
    assert 'layer "k" (Crop)' in str(info.value) and message in str(info.value)


def test_crop_param_and_disconnected_bottoms_and_out_of_range(tmp_path):
    two_inputs = ('input: "data"\ninput_shape { dim: 1 dim: 1 dim: 12 dim: 12 }\n'
                  'input: "other"\ninput_shape { dim: 1 dim: 1 dim: 5 dim: 5 }\n')
    cases = [
        (HEAD + 'layer { name: "k" type: "Crop" bottom: "data" bottom: "data" top: "k" crop_param { offset: 1 } }\n',
         "has no crop_param"),
        (two_inputs + 'layer { name: "k" type: "Crop" bottom: "data" bottom: "other" top: "k" }\n',
         "disconnected blobs"),
        (HEAD + conv("c", "data", "num_output: 1 kernel_size: 3 pad: 3")
         + layer("p", "Pooling", ["data"], "p", "pooling_param { pool: AVE global_pooling: true }")
         + layer("k", "Crop", ["p", "c"], "k"), "global pooling"),
    ]
    for text, message in cases:
        with pytest.raises(ShapeError, match=message) as info:
            ninport.load_spec(_net(tmp_path, text), dialect="hed")
        assert 'layer "k" (Crop)' in str(info.value)
    # a Slice along the height keeps the coordinates (identity) but not the size: the fork would read past
    # the first bottom's end (it does not check); ninport refuses it, at build time and at run time
    text = (HEAD + 'layer { name: "s" type: "Slice" bottom: "data" top: "s1" top: "s2" '
                   'slice_param { axis: 2 slice_point: 6 } }\n'
                   'layer { name: "k" type: "Crop" bottom: "s1" bottom: "data" top: "k" }\n')
    assert fork.Net(text).crop[1] == (0, 0)
    with pytest.raises(ShapeError, match=r'layer "k" \(Crop\): .*offset 0 of size 12 runs past axis 2 of size 6'):
        ninport.load_spec(_net(tmp_path, text), dialect="hed") and ninport.load(_net(tmp_path, text), dialect="hed")


# --- the dialect registry -----------------------------------------------------------------------------


def test_dialects_are_listed_and_an_unknown_one_is_refused():
    assert registry.dialects()["hed"].startswith("HED's Caffe fork") and registry.dialect_types("hed") == ["Crop"]
    with pytest.raises(NinportError, match=r"unknown dialect 'caffe-hed'; registered dialects: hed"):
        ninport.load(HED, dialect="caffe-hed")
    assert registry.layer_type("Crop").origin == "BVLC Caffe"
    assert registry.layer_type("Crop", "hed").dialect == "hed"
    assert registry.layer_type("ReLU", "hed") is registry.layer_type("ReLU")


def test_a_plugin_registers_its_own_dialect(tmp_path):
    """Through the same public door as any plugin type: register_layer(..., dialect=...)."""
    def doubled_relu_shape(layer, shapes):
        return [shapes[0]]

    class Doubled(torch.nn.Module):
        def forward(self, x):
            return 2 * torch.relu(x)

    path = _net(tmp_path, 'input: "data"\ninput_shape { dim: 1 dim: 2 }\n'
                          'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    ninport.register_layer("ReLU", shape=doubled_relu_shape, module=lambda ctx: Doubled(), dialect="mine")
    try:
        x = torch.tensor([[-1.0, 3.0]])
        assert _load(path, dialect="mine")(x).tolist() == [[0.0, 6.0]]
        assert _load(path)(x).tolist() == [[0.0, 3.0]]  # other nets never see it
    finally:
        registry.unregister_layer("ReLU", "mine")
    assert "mine" not in registry.dialects()


def test_cli_dialect_flag(tmp_path):
    from tests.test_cli import run_cli

    result = run_cli("inspect", str(HED), "--dialect", "hed")
    assert result.returncode == 0, result.stderr
    assert "axis 2 offset 42,42" in result.stdout
    bad = run_cli("inspect", str(HED), "--dialect", "nope")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "unknown dialect 'nope'" in bad.stderr
