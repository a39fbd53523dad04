"""ROIPooling (caffe-fast-rcnn) and PSROIPooling (caffe-rfcn).

Against real Caffe: the fork-Caffe golden cases (tests/fixtures/caffe-golden-fork: roi_pooling*, psroi_pooling*, and
the pooling layer of fast_rcnn_mini / rfcn_mini fed the rois py-faster-rcnn's proposal layer made there), blob by
blob, in torch, through the generated .py and in onnxruntime. Against the numpy transcriptions of the forks' sources
(tests/layers/roi_caffe_numpy.py, first checked against those fixtures) on random and edge-case rois (outside the
map, negative, inverted, tiny, corners on .5, batch index 1 and fractional) at two feature sizes, with the roi count
changing at run time in torch and in onnxruntime.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import ninport
from ninport import load_spec
from ninport.layers import roi
from tests.conftest import FIXTURES, relative_error
from tests.generated import generated_twin
from tests.layers import roi_caffe_numpy as caffe
from tests.layers.test_ssd import _assert_standard_onnx

FORK_GOLDEN = FIXTURES / "caffe-golden-fork"
ROI_CASES = ["roi_pooling", "roi_pooling_size2", "roi_pooling_scale_half", "roi_pooling_scale_half_size2"]
PSROI_CASES = ["psroi_pooling", "psroi_pooling_size2"]
TOLERANCE = 1e-5

# --- the real-Caffe fixtures ------------------------------------------------------------------------------


def _case(name: str):
    folder = FORK_GOLDEN / name
    info = json.loads((folder / "case.json").read_text())
    inputs = np.load(folder / "inputs.npz")
    return folder, info, {k: inputs[k] for k in inputs.files}, np.load(folder / "blobs.npz")


def _pooling_layers(prototxt):
    """(name, type, bottoms, top, checked params) of the ROIPooling / PSROIPooling layers of a fixture's net."""
    found = []
    for layer in load_spec(prototxt).layers:
        if layer.type == "ROIPooling":
            found.append((layer.name, layer.type, layer.bottoms, layer.tops[0], roi.roi_pooling_params(layer)))
        elif layer.type == "PSROIPooling":
            found.append((layer.name, layer.type, layer.bottoms, layer.tops[0], roi.psroi_pooling_params(layer)))
    return found


def _numpy_forward(kind: str, params, features, rois):
    if kind == "ROIPooling":
        return caffe.roi_pooling(features, rois, params.pooled_h, params.pooled_w, params.spatial_scale)
    return caffe.psroi_pooling(features, rois, params.spatial_scale, params.output_dim, params.group_size)


def _module(kind: str, params):
    if kind == "ROIPooling":
        return roi.CaffeROIPooling(params.pooled_h, params.pooled_w, params.spatial_scale)
    return roi.CaffePSROIPooling(params.spatial_scale, params.output_dim, params.group_size)


def _check(name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, f"blob {name}: shape {actual.shape} != Caffe's {expected.shape}"
    err = relative_error(actual, expected)
    assert err <= TOLERANCE, f"blob {name}: relative error {err:.2e} > {TOLERANCE}"


def _load(prototxt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(prototxt)


POOLING_CASES = ROI_CASES + PSROI_CASES + ["fast_rcnn_mini", "fast_rcnn_mini_size2", "rfcn_mini", "rfcn_mini_size2"]


@pytest.mark.parametrize("name", POOLING_CASES)
def test_the_numpy_transcriptions_are_real_caffe_exactly(name):
    """The oracle for the other tests: each pooling top of each fixture, recomputed by the numpy transcription from
    the bottoms Caffe had, is Caffe's top bit for bit (in the mini detectors the rois are the proposal layer's)."""
    folder, _info, _inputs, blobs = _case(name)
    layers = _pooling_layers(folder / "net.prototxt")
    assert layers
    for _name, kind, (features, rois), top, params in layers:
        np.testing.assert_array_equal(_numpy_forward(kind, params, blobs[features], blobs[rois]), blobs[top])


@pytest.mark.parametrize("name", ROI_CASES + PSROI_CASES)
def test_every_blob_matches_caffe(name):
    """ninport.load on the fixture's prototxt: every blob within 1e-5 of Caffe's, the pooling tops exactly; and the
    generated .py computes the same."""
    folder, info, inputs, blobs = _case(name)
    module = _load(folder / "net.prototxt")
    feeds = [torch.from_numpy(inputs[n]) for n in info["inputs"]]
    ours = ninport.forward_blobs(module, *feeds)
    checked = [blob for blob in blobs.files if blob in ours]
    for blob in checked:
        _check(blob, ours[blob].numpy(), blobs[blob])
    tops = [top for *_, top, _params in _pooling_layers(folder / "net.prototxt")]
    assert set(tops) <= set(checked) and len(tops) == 2
    for top in tops:
        np.testing.assert_array_equal(ours[top].numpy(), blobs[top])
    outputs = generated_twin(module)(*feeds)
    for blob, value in zip(info["outputs"], outputs):
        np.testing.assert_array_equal(value.numpy(), blobs[blob])


@pytest.mark.parametrize("base", ["roi_pooling", "roi_pooling_scale_half", "psroi_pooling"])
def test_onnx_in_onnxruntime_matches_caffe_at_both_sizes(base, tmp_path):
    """One ONNX file per case, exported at the first size, runs the second size's features and rois too."""
    import onnx
    import onnxruntime as ort

    folder, info, _inputs, _blobs = _case(base)
    path = ninport.export_onnx(_load(folder / "net.prototxt"), tmp_path / "net.onnx")
    ops = _assert_standard_onnx(onnx.load(path))
    assert "MaxRoiPool" not in ops and "Loop" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for name in (base, f"{base}_size2"):
        _folder, info, inputs, blobs = _case(name)
        for blob, value in zip(info["outputs"], session.run(None, inputs)):
            np.testing.assert_array_equal(value, blobs[blob])


@pytest.mark.parametrize("name", ["fast_rcnn_mini", "fast_rcnn_mini_size2", "rfcn_mini", "rfcn_mini_size2"])
def test_the_pooling_of_the_mini_detectors_matches_caffe(name):
    """The layers inside the two-stage detectors, fed the bottoms Caffe had: the features and the rois that
    py-faster-rcnn's proposal layer made (300 per image, many overlapping the border)."""
    folder, _info, _inputs, blobs = _case(name)
    for _name, kind, (features, rois), top, params in _pooling_layers(folder / "net.prototxt"):
        out = _module(kind, params)(torch.from_numpy(blobs[features]), torch.from_numpy(blobs[rois]))
        np.testing.assert_array_equal(out.numpy(), blobs[top])


# --- against the numpy transcriptions: random and edge-case rois ------------------------------------------

SCALE = 0.25  # rois in pixels, 4 pixels per feature cell
SIZES = [(2, 18, 9, 13), (2, 18, 16, 5)]  # output_dim 2 x group_size 3^2 = 18 channels for PSROIPooling
NET = """name: "roi_test"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 18 dim: {h} dim: {w} }} }} }}
layer {{ name: "rois" type: "Input" top: "rois" input_param {{ shape {{ dim: {r} dim: 5 }} }} }}
layer {{ name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool"
  roi_pooling_param {{ pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 }} }}
layer {{ name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps"
  psroi_pooling_param {{ spatial_scale: 0.25 output_dim: 2 group_size: 3 }} }}
"""


def rois_for(height: int, width: int, count: int, seed: int) -> np.ndarray:
    """`count` rows [batch, x1, y1, x2, y2] in pixels, in random order: random ones over and beyond the map
    (negative, past the end, inverted, tiny), a share with corners on .5 before and after scaling, and fixed edge
    cases (all of them when count >= 40)."""
    rng = np.random.default_rng(seed)
    span_w, span_h = width / SCALE, height / SCALE
    x = rng.uniform(-0.3 * span_w, 1.3 * span_w, (count, 2))
    y = rng.uniform(-0.3 * span_h, 1.3 * span_h, (count, 2))
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    small = rng.random(count) < 0.3  # tiny rois: under one cell
    boxes[small, 2:] = boxes[small, :2] + rng.uniform(-2, 3, (small.sum(), 2))
    half = rng.random(boxes.shape) < 0.25  # x * scale on .5 (ROIPooling rounds that), or x itself (PSROIPooling)
    boxes[half] = np.where(rng.random(half.sum()) < 0.5, np.round(boxes[half] * SCALE) + 0.5,
                           np.round(boxes[half]) + 0.5 * SCALE) / SCALE
    batch = rng.integers(0, 2, count).astype(np.float64)
    fractional = rng.random(count) < 0.2
    batch[fractional] += rng.uniform(-0.49, 0.99, fractional.sum())  # truncated toward zero: -0.4 -> 0, 1.9 -> 1
    batch = np.clip(batch, -0.49, 1.99)
    fixed = np.array([[0, 0, 0, span_w - 1, span_h - 1],            # the whole map
                      [1, -2 / SCALE, -2 / SCALE, span_w + 8, span_h + 8],  # beyond every border
                      [0, -30, -30, -10, -10],                      # entirely before the map
                      [1, span_w + 10, span_h + 10, span_w + 50, span_h + 50],  # entirely after it
                      [0, 6, 6, 6, 6],                              # one point: x * scale = 1.5 -> 2
                      [1, -2, -6, 2, 6],                            # -0.5 -> -1, -1.5 -> -2, 0.5 -> 1, 1.5 -> 2
                      [0, 2.5, 3.5, -0.5, -1.5],                    # inverted, on .5 before scaling
                      [1.7, 10, 4, 11, 30],                         # batch 1.7 -> 1
                      [-0.4, 3, 9, 30, 14]])                        # batch -0.4 -> 0
    rows = np.concatenate([fixed, np.concatenate([batch[:, None], boxes], 1)])
    return rows[rng.permutation(len(rows))[:count]].astype(np.float32)


def features_for(shape, seed: int) -> np.ndarray:
    """N(0, 1): bins whose max is negative differ from empty bins (0)."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _expected(features, rois):
    return (caffe.roi_pooling(features, rois, 3, 2, SCALE), caffe.psroi_pooling(features, rois, SCALE, 2, 3))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The two layers over one feature map, loaded at SIZES[0] with 40 rois."""
    path = tmp_path_factory.mktemp("roi") / "net.prototxt"
    path.write_text(NET.format(h=SIZES[0][2], w=SIZES[0][3], r=40))
    return _load(path)


@pytest.fixture(scope="module")
def session(net, tmp_path_factory):
    import onnx
    import onnxruntime as ort

    path = ninport.export_onnx(net, tmp_path_factory.mktemp("roi_onnx") / "net.onnx")
    ops = _assert_standard_onnx(onnx.load(path))
    assert "MaxRoiPool" not in ops
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_edge_cases_are_in_the_rois():
    """The rois below do reach what they are meant to: corners C's round() and numpy's half-to-even round
    differently, for both layers' roundings; a negative fractional batch index; empty bins."""
    rois = rois_for(*SIZES[0][2:], 60, seed=1)
    scaled, unscaled = rois[:, 1:] * np.float32(SCALE), rois[:, 1:]
    c_rounded = np.vectorize(caffe.c_round)
    assert (c_rounded(scaled) != np.round(scaled)).sum() >= 10
    assert (c_rounded(unscaled) != np.round(unscaled)).sum() >= 10
    assert ((rois[:, 0] < 0) & (rois[:, 0] > -1)).any() and (rois[:, 0] % 1 > 0).sum() >= 5
    features = features_for(SIZES[0], 2)
    pooled, _ = _expected(features, rois)
    assert (pooled == 0).all(axis=1).sum() >= 10 and (pooled < 0).sum() >= 50


@pytest.mark.parametrize("size", SIZES)
def test_torch_and_the_generated_py_match_the_forks(net, size):
    """At both feature sizes (the module was built at the first) and for several roi counts."""
    twin = generated_twin(net)
    for count, seed in ((40, 3), (1, 4), (73, 5)):
        features, rois = features_for(size, seed), rois_for(*size[2:], count, seed)
        pooled, ps = _expected(features, rois)
        with torch.no_grad():
            ours = net(torch.from_numpy(features), torch.from_numpy(rois))
            theirs = twin(torch.from_numpy(features), torch.from_numpy(rois))
        np.testing.assert_array_equal(ours[0].numpy(), pooled)
        np.testing.assert_array_equal(ours[1].numpy(), ps)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b), "the generated .py differs"


@pytest.mark.parametrize("size", SIZES)
def test_onnxruntime_matches_the_forks_with_any_roi_count(session, size):
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert isinstance(inputs["rois"][0], str) and all(isinstance(d, str) for d in inputs["data"][2:])
    for count, seed in ((40, 6), (1, 7), (73, 8)):
        features, rois = features_for(size, seed), rois_for(*size[2:], count, seed)
        pooled, ps = session.run(None, {"data": features, "rois": rois})
        expected_pooled, expected_ps = _expected(features, rois)
        np.testing.assert_array_equal(pooled, expected_pooled)
        np.testing.assert_array_equal(ps, expected_ps)


def test_nan_and_infinite_features_as_caffe(net, session):
    """Caffe's `>` from -FLT_MAX skips NaN and keeps a bin of -inf at -FLT_MAX; a PSROIPooling bin adds whatever is
    in it (NaN and inf only where they are inside the bin)."""
    features = features_for(SIZES[0], 9)
    features[0, :, 2, 3] = np.nan
    features[0, 1, 5:, :] = -np.inf
    features[1, 4, :, 7:] = np.inf
    features[1, :3, 0:4, 0:4] = np.nan
    rois = rois_for(*SIZES[0][2:], 40, seed=10)
    pooled, ps = _expected(features, rois)
    assert (pooled == -caffe.FLT_MAX).any() and np.isnan(ps).any() and not np.isnan(pooled).any()
    with torch.no_grad():
        ours = net(torch.from_numpy(features), torch.from_numpy(rois))
    for actual in ([t.numpy() for t in ours], session.run(None, {"data": features, "rois": rois})):
        np.testing.assert_array_equal(actual[0], pooled)
        np.testing.assert_array_equal(actual[1], ps)


def test_a_batch_index_outside_the_batch_gives_nan_for_that_roi(net, session):
    """caffe-fast-rcnn aborts (CHECK) and the R-FCN kernel reads outside the blob: ninport gives NaN for that
    roi's whole top, the other rois as usual."""
    features = features_for(SIZES[0], 11)
    rois = rois_for(*SIZES[0][2:], 6, seed=12)
    rois[:, 0] = [0, 2, 1, -1, 1.5, np.nan] + [0] * (len(rois) - 6)
    good = np.array([0, 2, 4] + list(range(6, len(rois))))
    pooled, ps = _expected(features, rois[good])
    with torch.no_grad():
        ours = [t.numpy() for t in net(torch.from_numpy(features), torch.from_numpy(rois))]
    for actual in (ours, session.run(None, {"data": features, "rois": rois})):
        for value, expected in zip(actual, (pooled, ps)):
            assert np.isnan(value[[1, 3, 5]]).all()
            np.testing.assert_array_equal(value[good], expected)


def test_half_way_corners_round_away_from_zero():
    """x * scale = 0.5 is cell 1 for ROIPooling and x = 0.5 is 1 for PSROIPooling (C's round; torch.round and
    numpy give 0): the value in cell 0 is then outside the roi."""
    features = torch.zeros(1, 1, 1, 4)
    features[0, 0, 0, 0] = 5.0
    rois = torch.tensor([[0.0, 2.0, 0.0, 4.0, 0.0]])  # x1 * 0.25 = 0.5 -> cell 1, x2 -> 1
    assert roi.roi_max_pool(features, rois, 1, 1, 0.25).item() == 0.0
    assert roi.roi_max_pool(features, torch.tensor([[0.0, 1.9, 0.0, 4.0, 0.0]]), 1, 1, 0.25).item() == 5.0
    rois = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]])  # round(0.5) = 1: the roi is [1, 2)
    assert roi.psroi_average_pool(features, rois, 1.0, 1, 1).item() == 0.0
    assert roi.psroi_average_pool(features, torch.tensor([[0.0, 0.4, 0.0, 0.5, 0.0]]), 1.0, 1, 1).item() == 2.5


@pytest.mark.parametrize("shape", [(40, 5, 1, 1), (40, 7)])
def test_rois_rows_of_more_values_read_the_first_five(tmp_path, shape):
    """Caffe reads 5 values per roi, a row being count / num values long."""
    path = tmp_path / "net.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    path.write_text(NET.format(h=SIZES[0][2], w=SIZES[0][3], r=40).replace("dim: 40 dim: 5", dims))
    module = _load(path)
    features, rois = features_for(SIZES[0], 13), rois_for(*SIZES[0][2:], 40, seed=13)
    wide = np.concatenate([rois, np.full((40, max(0, shape[1] - 5)), 1e6, np.float32)], 1).reshape(shape)
    with torch.no_grad():
        ours = module(torch.from_numpy(features), torch.from_numpy(wide))
    for value, expected in zip(ours, _expected(features, rois)):
        np.testing.assert_array_equal(value.numpy(), expected)


def test_the_size_guard_reruns_the_rule_at_a_new_size(net):
    """A feature map whose channels no longer fit output_dim x group_size^2 is refused naming the layer."""
    with pytest.raises(ninport.ShapeError, match=r"layer 'ps' \(PSROIPooling\) cannot take bottom .*27 channels; "
                                                 r"output_dim 2 x group_size 3\^2 needs 18"):
        net(torch.zeros(1, 27, 9, 13), torch.zeros(3, 5))


# --- refusals: one error naming the layer --------------------------------------------------------------------

ROI = 'layer {{ name: "p" type: "ROIPooling" bottom: "data" bottom: "rois" top: "p" {} }}\n'
PSROI = 'layer {{ name: "p" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "p" {} }}\n'
GOOD_ROI = "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.0625 }"
GOOD_PSROI = "psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 3 }"


def _inputs(data=(1, 18, 6, 6), rois=(4, 5)) -> str:
    def shape(dims):
        return " ".join(f"dim: {d}" for d in dims)
    return 'name: "bad"\n' + "".join(
        f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape(dims)} }} }} }}\n'
        for name, dims in (("data", data), ("rois", rois)))


REFUSALS = [
    ("ROIPooling", _inputs() + ROI.format("roi_pooling_param { pooled_w: 2 }"),
     r"roi_pooling_param.pooled_h 0 must be > 0 \(caffe-fast-rcnn's CHECK_GT"),
    ("ROIPooling", _inputs() + ROI.format(""), r"roi_pooling_param.pooled_h 0 must be > 0"),
    ("ROIPooling", _inputs() + ROI.format("roi_pooling_param { pooled_h: 2 pooled_w: -3 }"),
     r"roi_pooling_param.pooled_w -3 must be > 0"),
    ("ROIPooling", _inputs() + ROI.format("roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: inf }"),
     r"roi_pooling_param.spatial_scale inf is not a finite float"),
    ("ROIPooling", _inputs() + ROI.format("roi_pooling_param { pooled_h: 2 pooled_w: 2 pooled_size: 7 }"),
     r"roi_pooling_param has no field 'pooled_size' in the fork's caffe.proto"),
    ("ROIPooling", _inputs() + ROI.format("roi_pooling_param { pooled_h: 2.5 pooled_w: 2 }"),
     r"roi_pooling_param.pooled_h must be an integer"),
    ("ROIPooling", _inputs() + ROI.format(GOOD_ROI + " psroi_pooling_param { group_size: 3 }"),
     r"fields this layer type does not read: psroi_pooling_param"),
    ("ROIPooling", _inputs() + ROI.format(GOOD_ROI).replace('top: "p"', 'top: "p" top: "argmax"'),
     r"has 2 tops, but a Caffe ROIPooling layer produces exactly 1 top; Caffe refuses this net"),
    ("ROIPooling", _inputs() + ROI.format(GOOD_ROI).replace(' bottom: "rois"', ""),
     r"has 1 bottom, but a Caffe ROIPooling layer takes exactly 2 bottoms"),
    ("ROIPooling", _inputs(rois=(4, 4)) + ROI.format(GOOD_ROI),
     r"the rois bottom must be R x 5 \(rows of batch index, x1, y1, x2, y2\), got \[4, 4\]"),
    ("ROIPooling", _inputs(rois=(5,)) + ROI.format(GOOD_ROI), r"the rois bottom must be R x 5"),
    ("ROIPooling", _inputs(data=(1, 18, 6)) + ROI.format(GOOD_ROI), r"the feature bottom must be 4-D \(N, C, H, W\)"),
    ("PSROIPooling", _inputs(data=(1, 27, 6, 6)) + PSROI.format(GOOD_PSROI),
     r"the feature bottom \[1, 27, 6, 6\] has 27 channels; output_dim 2 x group_size 3\^2 needs 18 "
     r"\(caffe-rfcn's CHECK_EQ\)"),
    ("PSROIPooling", _inputs() + PSROI.format("psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 }"),
     r"psroi_pooling_param.group_size is missing: caffe-rfcn's caffe.proto declares it required"),
    ("PSROIPooling", _inputs() + PSROI.format(""), r"needs psroi_pooling_param"),
    ("PSROIPooling", _inputs() + PSROI.format("psroi_pooling_param { spatial_scale: 1 output_dim: 0 group_size: 3 }"),
     r"psroi_pooling_param.output_dim 0 must be > 0"),
    ("PSROIPooling", _inputs() + PSROI.format("psroi_pooling_param { spatial_scale: 1 output_dim: 2 group_size: -3 }"),
     r"psroi_pooling_param.group_size -3 must be > 0"),
    ("PSROIPooling", _inputs() + PSROI.format(GOOD_PSROI.replace("}", "pooled_h: 7 }")),
     r"psroi_pooling_param has no field 'pooled_h'"),
    ("PSROIPooling", _inputs() + PSROI.format(GOOD_PSROI.replace("0.0625", "nan")),
     r"psroi_pooling_param.spatial_scale nan is not a finite float"),
    ("PSROIPooling", _inputs(rois=(4, 5, 2)) + PSROI.format(GOOD_PSROI), None),  # 10 values per row: accepted
]


@pytest.mark.parametrize("kind,text,message", REFUSALS, ids=[f"{kind}-{i}" for i, (kind, *_) in enumerate(REFUSALS)])
def test_a_bad_layer_is_one_error_naming_it(tmp_path, kind, text, message):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    if message is None:
        assert ninport.summary(path).layers[-1].type == kind
        return
    with pytest.raises(ninport.NinportError, match=rf'{path}:\d+: layer "p" \({kind}\): {message}'):
        ninport.load(path)


def test_the_cli_refuses_without_a_traceback(tmp_path):
    from tests.test_cli import run_cli

    path = tmp_path / "net.prototxt"
    path.write_text(REFUSALS[0][1])
    result = run_cli("inspect", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert 'layer "p" (ROIPooling): roi_pooling_param.pooled_h 0 must be > 0' in result.stderr


def test_inspect_shows_the_settings_and_the_fork(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(h=9, w=13, r=40))
    settings = {row.layer: row.settings for row in ninport.summary(path).layers}
    assert settings["pool"] == "3x2, scale 0.25" and settings["ps"] == "2 x 3x3, scale 0.25"
    from ninport import registry
    assert "caffe-fast-rcnn" in registry.layer_type("ROIPooling").origin
    assert "caffe-rfcn" in registry.layer_type("PSROIPooling").origin
