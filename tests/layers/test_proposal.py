"""Faster R-CNN's region proposal layer (ninport/layers/proposal.py): py-faster-rcnn's `type: "Python"` layer
`rpn.proposal_layer.ProposalLayer` and OpenCV's `type: "Proposal"`, against real Caffe running the original
Python layer (tests/fixtures/caffe-golden-fork), against a numpy copy of the original algorithm
(tests/layers/proposal_reference.py) on many seeded inputs at two feature-map sizes, in torch, in onnxruntime and
through the generated .py; against OpenCV 4.x's own Proposal; the refusals; and the door for users' own Python
layers (`ninport.register_python_layer`)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ninport
from ninport import registry
from ninport.errors import ShapeError, UnsupportedLayerError
from ninport.layers import proposal
from ninport.layers.python_layer import parse_param_str
from tests.conftest import FIXTURES, relative_error
from tests.generated import generated_twin
from tests.layers import proposal_reference as original
from tests.layers import ssd_caffe_numpy as caffe_numpy

FORK_GOLDEN = FIXTURES / "caffe-golden-fork"
TOLERANCE = 1e-5
SIZES = ((5, 7), (14, 20))  # feature maps (H, W): 315 and 2,520 anchors
PYTHON_LAYER = ("layer {{ name: 'proposal' type: 'Python' bottom: 'scores' bottom: 'deltas' bottom: 'im_info' "
                "{tops} python_param {{ module: 'rpn.proposal_layer' layer: 'ProposalLayer' "
                "param_str: \"{param_str}\" }} }}\n")
OPENCV_LAYER = ("layer {{ name: 'proposal' type: 'Proposal' bottom: 'scores' bottom: 'deltas' bottom: 'im_info' "
                "{tops} proposal_param {{ {fields} }} }}\n")
TWO_TOPS = "top: 'rois' top: 'roi_scores'"
OPENCV_FIELDS = "ratio: 0.5 ratio: 1.0 ratio: 2.0 scale: 8 scale: 16 scale: 32"


def _net(tmp_path: Path, layer: str, anchors: int = 9, size=(14, 20), name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(f'name: "rpn"\n'
                    f'input: "scores" input_shape {{ dim: 1 dim: {2 * anchors} dim: {size[0]} dim: {size[1]} }}\n'
                    f'input: "deltas" input_shape {{ dim: 1 dim: {4 * anchors} dim: {size[0]} dim: {size[1]} }}\n'
                    'input: "im_info" input_shape { dim: 1 dim: 3 }\n' + layer)
    return path


def _load(path: Path, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)  # a net without weights says so
        return ninport.load(path, weights)


def _rpn_inputs(seed: int, size, anchors: int = 9, stride: float = 16, scale: float = 1.0, spread: float = 0.4,
                levels: int | None = None):
    """Scores (a softmax over background/object per anchor; `levels`: object scores rounded to that many
    values, so they tie), deltas and im_info (the image a little smaller than the feature map covers)."""
    rng = np.random.default_rng(seed)
    height, width = size
    logits = rng.normal(0, 2, (1, 2, anchors * height, width))
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if levels is not None:
        prob[:, 1] = np.round(prob[:, 1] * levels) / levels
        prob[:, 0] = 1 - prob[:, 1]
    scores = prob.reshape(1, 2 * anchors, height, width).astype(np.float32)
    deltas = rng.normal(0, spread, (1, 4 * anchors, height, width)).astype(np.float32)
    im_info = np.array([[height * stride - 3, width * stride - 5, scale]], np.float32)
    return scores, deltas, im_info


def _check(name: str, actual, expected) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err = relative_error(actual, expected)
    assert err <= TOLERANCE, f"{name}: relative error {err:.2e} > {TOLERANCE}"


def _as_tensors(*arrays):
    return [torch.from_numpy(a) for a in arrays]


def _forms(module, folder: Path) -> dict:
    """The module as torch, as its ONNX file in onnxruntime and as its generated .py: each a function of the
    net's input arrays returning {output blob: array}."""
    import onnxruntime as ort

    outputs = ninport.describe(module).outputs
    session = ort.InferenceSession(str(ninport.export_onnx(module, folder / "net.onnx")),
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    twin = generated_twin(module)

    def torch_form(net):
        def run(*arrays):
            with torch.no_grad():
                result = net(*_as_tensors(*arrays))
            result = result if isinstance(result, tuple) else (result,)
            return {name: value.numpy() for name, value in zip(outputs, result)}
        return run
    return {"torch": torch_form(module), "py": torch_form(twin),
            "onnx": lambda *arrays: dict(zip(outputs, session.run(None, dict(zip(names, arrays)))))}


# --- real Caffe running py-faster-rcnn's Python layer ---------------------------------------------------------


def _case(name: str):
    folder = FORK_GOLDEN / name
    info = json.loads((folder / "case.json").read_text())
    return folder, info, np.load(folder / "inputs.npz"), np.load(folder / "blobs.npz")


@pytest.mark.parametrize("name", ["proposal_python", "proposal_python_size2"])
def test_every_blob_matches_caffe_running_the_python_layer(name):
    """A tiny RPN and the original Python layer in real Caffe, at 224x320 and 256x288 (im_info scale 1.6:
    boxes under 25.6 pixels dropped): every blob, rois and their scores included, rows and order."""
    folder, info, inputs, blobs = _case(name)
    module = _load(folder / "net.prototxt", folder / "weights.caffemodel")
    ours = ninport.forward_blobs(module, *_as_tensors(*(inputs[n] for n in info["inputs"])))
    assert set(blobs.files) <= set(ours)
    for blob in blobs.files:
        _check(blob, ours[blob], blobs[blob])
    assert blobs["rois"].shape[0] < 300  # fewer rows than post_nms_top_n: the row count is the data's


RPN_CASES = ["proposal_python", "fast_rcnn_mini", "fast_rcnn_mini_size2", "rfcn_mini", "rfcn_mini_size2",
             "faster_rcnn_vgg16", "faster_rcnn_vgg16_600x800"]


@pytest.fixture(scope="module")
def python_proposal(tmp_path_factory):
    """py-faster-rcnn's test.prototxt proposal layer alone (both tops), with its torch, ONNX and .py forms."""
    folder = tmp_path_factory.mktemp("python_proposal")
    return _forms(_load(_net(folder, PYTHON_LAYER.format(tops=TWO_TOPS, param_str="'feat_stride': 16"))), folder)


@pytest.mark.parametrize("form", ["torch", "onnx", "py"])
def test_proposals_from_caffes_rpn_blobs_are_caffes_rois(python_proposal, form):
    """Each fork fixture's RPN outputs as Caffe computed them, through the proposal layer alone: Caffe's rois,
    at 14x20 up to 38x50 feature maps (VGG16 at 600x800: 17,100 anchors, 6,000 before NMS, 300 rois)."""
    run = python_proposal[form]
    for name in RPN_CASES:
        _, _, _, blobs = _case(name)
        rois = run(*[blobs[n] for n in ("rpn_cls_prob_reshape", "rpn_bbox_pred", "im_info")])["rois"]
        _check(f"{name} rois", rois, blobs["rois"])


def test_onnx_of_the_whole_rpn_matches_caffe(tmp_path):
    """The fixture's net end to end in onnxruntime (convolutions, softmax, proposals): Caffe's rois and scores."""
    import onnx
    import onnxruntime as ort

    from tests.layers.test_ssd import _assert_standard_onnx

    folder, info, inputs, blobs = _case("proposal_python")
    module = _load(folder / "net.prototxt", folder / "weights.caffemodel")
    path = ninport.export_onnx(module, tmp_path / "rpn.onnx")
    ops = _assert_standard_onnx(onnx.load(path))
    assert {"TopK", "Loop"} <= ops and "NonMaxSuppression" not in ops
    results = ort.InferenceSession(str(path)).run(None, {n: inputs[n] for n in info["inputs"]})
    for blob, value in zip(info["outputs"], results):
        _check(blob, value, blobs[blob])


# --- the numpy copy of the original, many seeded inputs ------------------------------------------------------


PARAM_STRS = [  # (param_str as in a prototxt, the original's arguments)
    ("'feat_stride': 16", {}),
    ("'feat_stride': 16 \\n'scales': !!python/tuple [4, 8, 16, 32]", {"scales": (4, 8, 16, 32)}),  # py-faster-rcnn COCO
    ("{'feat_stride': 8, 'scales': [2, 5.5], 'ratios': [0.25, 1, 3]}", {"feat_stride": 8, "scales": (2, 5.5),
                                                                         "ratios": (0.25, 1, 3)}),
]


@pytest.mark.parametrize("param_str, kwargs", PARAM_STRS, ids=["vgg16", "coco_scales", "stride8_ratios"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_python_layer_matches_the_original(tmp_path, param_str, kwargs, size):
    stride = kwargs.get("feat_stride", 16)
    anchors = len(kwargs.get("ratios", (0.5, 1, 2))) * len(kwargs.get("scales", (8, 16, 32)))
    module = _load(_net(tmp_path, PYTHON_LAYER.format(tops=TWO_TOPS, param_str=param_str), anchors, size))
    dropped = 0
    for seed in range(6):
        scores, deltas, im_info = _rpn_inputs(seed, size, anchors, stride, scale=(0.5, 1.0, 2.5)[seed % 3],
                                              spread=0.6)
        roi_scores, rois = module(*_as_tensors(scores, deltas, im_info))  # outputs sorted by name, as Caffe's
        expected, expected_scores = original.proposal_layer(scores, deltas, im_info, **kwargs, sort_kind="stable")
        _check(f"seed {seed} rois", rois, expected)
        _check(f"seed {seed} scores", roi_scores, expected_scores)
        everything, _ = original.proposal_layer(scores, deltas, im_info, **kwargs, min_size=0, sort_kind="stable")
        dropped += not np.array_equal(everything, expected)
    assert dropped, "the minimum-size filter changed none of these cases"


OPENCV_OPTIONS = [  # proposal_param fields, and the original's arguments they mean
    ("", {}),
    ("feat_stride: 8 base_size: 12 min_size: 10 pre_nms_topn: 40 post_nms_topn: 12 nms_thresh: 0.5",
     {"feat_stride": 8, "base_size": 12, "min_size": 10, "pre_nms_topN": 40, "post_nms_topN": 12, "nms_thresh": 0.5}),
    ("pre_nms_topn: 0 post_nms_topn: 0 nms_thresh: 0.3 min_size: 0",  # 0: no cut
     {"pre_nms_topN": 0, "post_nms_topN": 0, "nms_thresh": 0.3, "min_size": 0}),
]


def _original(scores, deltas, im_info, base_size=16, **kwargs):
    """The original with generate_anchors' base_size as OpenCV's base_size gives it."""
    if base_size == 16:
        return original.proposal_layer(scores, deltas, im_info, **kwargs, sort_kind="stable")
    saved = original.generate_anchors
    original.generate_anchors = lambda **kw: saved(base_size=base_size, **kw)
    try:
        return original.proposal_layer(scores, deltas, im_info, **kwargs, sort_kind="stable")
    finally:
        original.generate_anchors = saved


@pytest.mark.parametrize("fields, kwargs", OPENCV_OPTIONS, ids=["defaults", "all_fields", "no_cuts"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_opencv_proposal_type_computes_the_original(tmp_path, fields, kwargs, size):
    layer = OPENCV_LAYER.format(tops=TWO_TOPS, fields=f"{OPENCV_FIELDS} {fields}")
    module = _load(_net(tmp_path, layer, 9, size))
    for seed in range(4):
        scores, deltas, im_info = _rpn_inputs(100 + seed, size, stride=kwargs.get("feat_stride", 16),
                                              scale=(0.6, 1.7)[seed % 2], spread=0.6)
        roi_scores, rois = module(*_as_tensors(scores, deltas, im_info))  # outputs sorted by name, as Caffe's
        expected, expected_scores = _original(scores, deltas, im_info, **kwargs)
        _check(f"seed {seed} rois", rois, expected)
        _check(f"seed {seed} scores", roi_scores, expected_scores)


@pytest.fixture(scope="module")
def opencv_proposal(tmp_path_factory):
    """OpenCV's Proposal with every field set (small cuts) and one top, with its ONNX and .py forms."""
    folder = tmp_path_factory.mktemp("opencv_proposal")
    fields = f"{OPENCV_FIELDS} {OPENCV_OPTIONS[1][0]}"
    return _forms(_load(_net(folder, OPENCV_LAYER.format(tops="top: 'rois'", fields=fields))), folder)


@pytest.mark.parametrize("form", ["torch", "onnx", "py"])
def test_exported_forms_match_the_original_at_two_sizes(python_proposal, opencv_proposal, form):
    """The ONNX file (exported once, run at both feature sizes) and the generated .py on seeded inputs: exact
    ties among the scores, the pre-NMS cut through a tie, boxes all below the minimum size (no row)."""
    kwargs = OPENCV_OPTIONS[1][1]
    for size in SIZES:
        for seed in range(4):
            levels = (None, 7)[seed % 2]
            scores, deltas, im_info = _rpn_inputs(200 + seed, size, scale=(0.8, 1.9)[seed % 2], levels=levels)
            got = python_proposal[form](scores, deltas, im_info)
            expected, expected_scores = original.proposal_layer(scores, deltas, im_info, sort_kind="stable")
            _check("rois", got["rois"], expected)
            _check("scores", got["roi_scores"], expected_scores)
            scores, deltas, im_info = _rpn_inputs(300 + seed, size, stride=8, scale=(0.8, 1.9)[seed % 2],
                                                  levels=levels)
            rois = opencv_proposal[form](scores, deltas, im_info)["rois"]
            _check("rois", rois, _original(scores, deltas, im_info, **kwargs)[0])
        scores, deltas, im_info = _rpn_inputs(7, size, scale=1000.0)  # every box under 16,000 pixels
        got = python_proposal[form](scores, deltas, im_info)
        assert got["rois"].shape == (0, 5) and got["roi_scores"].shape == (0, 1)


def test_ties_follow_a_stable_sort(tmp_path):
    """Object scores on 5 levels tie by the hundred. The pre-NMS cut (40) falls inside a tie: the later boxes
    of the tie are kept (argsort reversed); NMS then takes equal scores earlier box first. Each rule changes
    the rois here (the original with either sort's ties the other way round gives other rois)."""
    fields = f"{OPENCV_FIELDS} pre_nms_topn: 40 post_nms_topn: 25 nms_thresh: 0.6 min_size: 0"
    module = _load(_net(tmp_path, OPENCV_LAYER.format(tops=TWO_TOPS, fields=fields)))
    scores, deltas, im_info = _rpn_inputs(11, (14, 20), levels=5)
    kwargs = {"pre_nms_topN": 40, "post_nms_topN": 25, "nms_thresh": 0.6, "min_size": 0}
    _, rois = module(*_as_tensors(scores, deltas, im_info))
    expected, _ = original.proposal_layer(scores, deltas, im_info, **kwargs, sort_kind="stable")
    _check("rois", rois, expected)
    ranked = np.sort(scores[0, 9:].ravel())[::-1]
    assert ranked[39] == ranked[40], "the cut falls inside a tie"
    for pre_nms, nms in (("ties-reversed", "stable"), ("stable", "ties-reversed")):
        other, _ = original.proposal_layer(scores, deltas, im_info, **kwargs, sort_kind=pre_nms, nms_sort_kind=nms)
        assert not np.array_equal(other, expected), f"the {'NMS' if nms != 'stable' else 'pre-NMS'} tie order " \
                                                    "does not matter here"


# --- OpenCV 4.x, an independent implementation -----------------------------------------------------------------


def test_opencv_computes_the_same_proposals_but_skips_the_minimum_size(tmp_path):
    """OpenCV's own Proposal (cv2.dnn, the Caffe importer of OpenCV 4) on the same inputs: its rows are the
    original's with min_size 0 (OpenCV's min_size is read and not used), within float rounding, then zero rows
    up to post_nms_topn; ninport keeps the original's filter and gives only the rows there are."""
    cv2 = pytest.importorskip("cv2")
    for name in ("proposal_python", "proposal_python_size2"):
        _, _, _, blobs = _case(name)
        scores, deltas, im_info = (blobs[n] for n in ("rpn_cls_prob_reshape", "rpn_bbox_pred", "im_info"))
        path = _net(tmp_path, OPENCV_LAYER.format(tops="top: 'rois'", fields=OPENCV_FIELDS), size=scores.shape[2:])
        net = cv2.dnn.readNetFromCaffe(str(path))
        for blob, value in (("scores", scores), ("deltas", deltas), ("im_info", im_info)):
            net.setInput(value, blob)
        opencv_rois = net.forward()
        ours = _load(path)(*_as_tensors(scores, deltas, im_info)).numpy()
        without_filter, _ = original.proposal_layer(scores, deltas, im_info, min_size=0, sort_kind="stable")
        rows = len(without_filter)
        assert opencv_rois.shape == (300, 5) and not opencv_rois[rows:].any()
        assert relative_error(opencv_rois[:rows], without_filter) < 1e-5
        _check(name, ours, blobs["rois"])  # Caffe's: the filter dropped boxes OpenCV keeps
        assert len(ours) < rows


# --- refusals: each names the layer --------------------------------------------------------------------------


def _refusal(tmp_path, layer: str, error=ShapeError, anchors: int = 9, size=(14, 20)) -> str:
    path = _net(tmp_path, layer, anchors, size)
    with pytest.raises(error) as info:
        _load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5: layer \"proposal\" (") and "\n" not in message, message
    return message


@pytest.mark.parametrize("param_str, reason", [
    ("'feat_stride': __import__('os').getpid()", "is not a literal"),
    ("'feat_stride': exec('raise SystemExit')", "is not a literal"),
    ("'feat_stride': 16, 'scales': (8, 16), 'scales': (4,)", "gives 'scales' twice"),
    ("'feat_stride': 16, 'pre_nms_topN': 100", "does not read"),
    ("'scales': [8, 16, 32]", "must give 'feat_stride'"),
    ("'feat_stride': sixteen", "is not a literal"),
    ("{'feat_stride': 16", "does not close"),
    ("'feat_stride': [16", "bracket open"),
    ("feat_stride 16", "is not 'key: value'"),
    ("'feat_stride': 0", "feat_stride must be a positive number"),
    ("'feat_stride': 16, 'scales': [8, -1]", "must hold positive finite numbers"),
    ("'feat_stride': 16, 'ratios': []", "non-empty list"),
    ("'feat_stride': {'a': 1}", "must be a number, string, boolean or a list of them, got dict"),
])
def test_a_bad_param_str_is_refused_naming_the_layer(tmp_path, param_str, reason):
    message = _refusal(tmp_path, PYTHON_LAYER.format(tops="top: 'rois'", param_str=param_str))
    assert "(Python)" in message and reason in message
    assert "rpn.proposal_layer.ProposalLayer" in message


def test_param_str_is_read_as_yaml_writes_it():
    assert parse_param_str("'feat_stride': 16") == {"feat_stride": 16}
    assert parse_param_str("'feat_stride': 16 \n'scales': !!python/tuple [4, 8, 16, 32]") == {
        "feat_stride": 16, "scales": (4, 8, 16, 32)}
    assert parse_param_str(' { "num_classes": 21, name: \'a, b\', "on": true } ') == {
        "num_classes": 21, "name": "a, b", "on": True}
    assert parse_param_str("") == {}
    with pytest.raises(ValueError, match="more than"):
        parse_param_str("'a': [" + "1, " * 5000 + "]")
    with pytest.raises(ValueError, match="not a literal"):  # the parser's nesting limit, not a crash
        parse_param_str("'a': " + "[" * 4000 + "]" * 4000)
    with pytest.raises(ValueError, match="a list of them, got list"):  # lists of lists of lists
        parse_param_str("'a': [[[1]]]")


@pytest.mark.parametrize("python_param, names", [
    ("module: 'rpn.proposal_target_layer' layer: 'ProposalTargetLayer'",
     "rpn.proposal_target_layer.ProposalTargetLayer"),
    ("module: 'rpn.proposal_layer' layer: 'ProposalLayer2'", "rpn.proposal_layer.ProposalLayer2"),
    ("layer: 'ProposalLayer'", "?.ProposalLayer"),
])
def test_any_other_python_layer_is_refused_naming_module_and_layer(tmp_path, python_param, names):
    layer = (f"layer {{ name: 'proposal' type: 'Python' bottom: 'scores' bottom: 'deltas' bottom: 'im_info' "
             f"top: 'rois' python_param {{ {python_param} }} }}\n")
    message = _refusal(tmp_path, layer, UnsupportedLayerError)
    assert f"({names})" in message and "ninport.register_python_layer" in message


@pytest.mark.parametrize("bottoms, tops, anchors, size, reason", [
    ("bottom: 'scores' bottom: 'deltas'", "top: 'rois'", 9, (14, 20), "has 2 bottoms, but a Caffe Python layer takes "
                                                                       "exactly 3 bottoms"),
    ("bottom: 'scores' bottom: 'deltas' bottom: 'im_info'", "top: 'a' top: 'b' top: 'c'", 9, (14, 20),
     "has 3 tops, but a Caffe Python layer produces 1 or 2 tops"),
    ("bottom: 'deltas' bottom: 'scores' bottom: 'im_info'", "top: 'rois'", 9, (14, 20),
     "the scores bottom must be (1, 2 x 9 anchors, H, W)"),
    ("bottom: 'scores' bottom: 'scores' bottom: 'im_info'", "top: 'rois'", 9, (14, 20),
     "the box-delta bottom must be (1, 4 x 9 anchors, 14, 20)"),
    ("bottom: 'scores' bottom: 'deltas' bottom: 'scores'", "top: 'rois'", 9, (14, 20), "im_info must be (1, 3)"),
    ("bottom: 'scores' bottom: 'deltas' bottom: 'im_info'", "top: 'rois'", 6, (14, 20),
     "the scores bottom must be (1, 2 x 9 anchors, H, W)"),
])
def test_wrong_bottoms_and_tops_are_refused_naming_the_layer(tmp_path, bottoms, tops, anchors, size, reason):
    layer = (f"layer {{ name: 'proposal' type: 'Python' {bottoms} {tops} python_param {{ "
             "module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: \"'feat_stride': 16\" } }\n")
    assert reason in _refusal(tmp_path, layer, anchors=anchors, size=size)


def test_a_batch_of_two_images_is_refused_at_run_time(tmp_path):
    """The original asserts a batch of one; the module's size guard refuses a second image at call time."""
    module = _load(_net(tmp_path, PYTHON_LAYER.format(tops="top: 'rois'", param_str="'feat_stride': 16")))
    scores, deltas, im_info = _rpn_inputs(0, (14, 20))
    with pytest.raises(ShapeError, match=r"layer 'proposal' \(Python\) cannot take .*a batch of one image"):
        module(*_as_tensors(np.concatenate([scores, scores]), np.concatenate([deltas, deltas]), im_info))
    rois = module(*_as_tensors(*_rpn_inputs(0, (3, 4))))  # another size is fine
    assert rois.shape[1] == 5


@pytest.mark.parametrize("fields, reason", [
    ("scale: 8", "proposal_param needs ratio values"),
    ("ratio: 1", "proposal_param needs scale values"),
    (f"{OPENCV_FIELDS} anchor_scale: 3", "fields OpenCV's Proposal does not have: anchor_scale"),
    (f"{OPENCV_FIELDS} feat_stride: 16.5", "feat_stride must be an unsigned integer"),
    (f"{OPENCV_FIELDS} pre_nms_topn: -1", "pre_nms_topn must be an unsigned integer"),
    (f"{OPENCV_FIELDS} nms_thresh: 'a'", "nms_thresh must be a number"),
    ("ratio: 0.5 ratio: 0 scale: 8", "must hold positive finite numbers"),
])
def test_bad_proposal_param_is_refused_naming_the_layer(tmp_path, fields, reason):
    message = _refusal(tmp_path, OPENCV_LAYER.format(tops="top: 'rois'", fields=fields))
    assert "(Proposal)" in message and reason in message


def test_inspect_shows_the_settings(tmp_path):
    path = _net(tmp_path, PYTHON_LAYER.format(tops=TWO_TOPS, param_str="'feat_stride': 16"))
    row = ninport.summary(path).layers[0]
    assert row.settings == "rpn.proposal_layer.ProposalLayer, stride 16, 9 anchors, pre 6000, post 300, nms 0.7, min 16"
    assert row.output_shapes == ((1, 5), (1, 1, 1, 1))  # Caffe's shapes before the first forward pass


# --- the door for users' own Python layers -------------------------------------------------------------------

PLUGIN = FIXTURES / "plugins" / "python_layers.py"
AFFINE = ("my_layers.affine", "AffineLayer")
AFFINE_NET = ('name: "affine"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
              "layer { name: 'affine' type: 'Python' bottom: 'data' top: 'out' "
              "python_param { module: 'my_layers.affine' layer: 'AffineLayer' param_str: \"%s\" } }\n")


@pytest.fixture
def clean_python_layers():
    registry.unregister_python_layer(*AFFINE)
    yield
    registry.unregister_python_layer(*AFFINE)
    registry.unregister_python_layer("my_layers", "Broken")


def test_a_plugin_computes_its_own_python_layer(tmp_path, clean_python_layers):
    from ninport.plugins import load_plugin

    net = tmp_path / "affine.prototxt"
    net.write_text(AFFINE_NET % "'factor': 2.5, 'bias': 1")
    with pytest.raises(UnsupportedLayerError, match=r"\(my_layers\.affine\.AffineLayer\).*register_python_layer"):
        _load(net)
    assert load_plugin(PLUGIN) == ["Python my_layers.affine.AffineLayer"]
    assert registry.python_layer_record(*AFFINE).origin == "plugin python_layers.py"
    module = _load(net)
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), 2.5 * x + 1, rtol=1e-6)
    forms = _forms(module, tmp_path)
    for form in ("onnx", "py"):
        np.testing.assert_allclose(forms[form](x)["out"], 2.5 * x + 1, rtol=1e-6)
    assert ninport.summary(net).layers[0].settings == "my_layers.affine.AffineLayer, factor 2.5"
    net.write_text(AFFINE_NET % "'bias': 1")
    with pytest.raises(ShapeError, match=r'layer "affine" \(Python\): my_layers\.affine\.AffineLayer: param_str '
                                         r"must give a number 'factor'"):
        _load(net)
    registry.unregister_python_layer(*AFFINE)
    with pytest.raises(UnsupportedLayerError, match=r"my_layers\.affine\.AffineLayer"):
        _load(net)


def test_the_cli_takes_a_python_layer_plugin(tmp_path, capsys, clean_python_layers):
    from ninport.cli import main

    net = tmp_path / "affine.prototxt"
    net.write_text(AFFINE_NET % "'factor': 3")
    assert main(["inspect", str(net)]) == 1
    assert "(my_layers.affine.AffineLayer)" in capsys.readouterr().err
    assert main(["convert", str(net), "--plugin", str(PLUGIN), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "affine.onnx").is_file()


def test_python_layer_registrations_are_checked(clean_python_layers):
    def shape(layer, shapes):
        return shapes

    with pytest.raises(ninport.NinportError, match=r"Python rpn\.proposal_layer\.ProposalLayer is already "
                                                   r"registered \(py-faster-rcnn"):
        ninport.register_python_layer("rpn.proposal_layer", "ProposalLayer", shape=shape, module=lambda ctx: None)
    registry.unregister_python_layer("rpn.proposal_layer", "ProposalLayer")  # a built-in stays
    assert registry.python_layer_record("rpn.proposal_layer", "ProposalLayer") is not None
    with pytest.raises(ninport.NinportError, match="is not a Python identifier"):
        ninport.register_python_layer("my_layers", "a.b", shape=shape, module=lambda ctx: None)
    with pytest.raises(ninport.NinportError, match="must be a non-empty string"):
        ninport.register_python_layer("", "Layer", shape=shape, module=lambda ctx: None)
    with pytest.raises(ninport.NinportError, match="shape and module must be callables"):
        ninport.register_python_layer("my_layers", "Layer", shape=shape, module="not callable")


def test_a_failing_python_layer_plugin_is_named(tmp_path, clean_python_layers):
    def shape(layer, shapes):
        raise KeyError("boom")

    ninport.register_python_layer("my_layers", "Broken", shape=shape, module=lambda ctx: None)
    net = tmp_path / "broken.prototxt"
    net.write_text((AFFINE_NET % "").replace("my_layers.affine", "my_layers").replace("AffineLayer", "Broken"))
    with pytest.raises(ShapeError, match=r'layer "affine" \(Python\): my_layers\.Broken: the shape rule of plugin '
                                         r"failed: KeyError: 'boom'"):
        _load(net)


# --- proposals into OpenCV's DetectionOutput (normalized_bbox: false), rows of any count downstream -------------


CHAIN = """layer { name: 'proposal' type: 'Python' bottom: 'scores' bottom: 'deltas' bottom: 'im_info'
  top: 'rois' top: 'roi_scores' python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer'
  param_str: "'feat_stride': 16" } }
layer { name: 'crop' type: 'Slice' bottom: 'rois' top: 'batch_ids' top: 'boxes' slice_param { axis: 1 slice_point: 1 } }
layer { name: 'silence' type: 'Silence' bottom: 'batch_ids' }
layer { name: 'priors' type: 'Reshape' bottom: 'boxes' top: 'priors' reshape_param { shape { dim: 1 dim: 1 dim: -1 } } }
layer { name: 'shift' type: 'Power' bottom: 'boxes' top: 'shift' power_param { scale: 0.0005 shift: -0.1 } }
layer { name: 'loc' type: 'Reshape' bottom: 'shift' top: 'loc' reshape_param { shape { dim: 1 dim: -1 } } }
layer { name: 'background' type: 'Power' bottom: 'roi_scores' top: 'background' power_param { scale: -1 shift: 1 } }
layer { name: 'both' type: 'Concat' bottom: 'background' bottom: 'roi_scores' top: 'both' }
layer { name: 'conf' type: 'Reshape' bottom: 'both' top: 'conf' reshape_param { shape { dim: 1 dim: -1 } } }
layer { name: 'detection_out' type: 'DetectionOutput' bottom: 'loc' bottom: 'conf' bottom: 'priors'
  top: 'detection_out' detection_output_param { num_classes: 2 share_location: true background_label_id: 0
  nms_param { nms_threshold: 0.4 } code_type: CENTER_SIZE keep_top_k: 40 confidence_threshold: 0.3
  variance_encoded_in_target: true normalized_bbox: false } }
"""


def test_proposals_feed_a_pixel_detection_output_in_every_form(tmp_path):
    """Rois of a data-dependent count through Slice, Reshape, Power and Concat into DetectionOutput with
    OpenCV's normalized_bbox: false (priors in pixels, 1 x 1 x 4R, variance in the target), as OpenCV's Faster
    R-CNN prototxts wire it: torch, onnxruntime and the .py at two feature sizes against the numpy copies."""
    forms = _forms(_load(_net(tmp_path, CHAIN)), tmp_path)
    checked = 0
    for size in SIZES:
        for seed in range(3):
            scores, deltas, im_info = _rpn_inputs(400 + seed, size, scale=0.8)
            rois, roi_scores = original.proposal_layer(scores, deltas, im_info, sort_kind="stable")
            boxes = rois[:, 1:]
            loc = (boxes * np.float32(0.0005) + np.float32(-0.1)).reshape(1, -1)
            conf = np.concatenate([1 - roi_scores, roi_scores], axis=1).reshape(1, -1)
            expected = caffe_numpy.detection_output(
                loc, conf, boxes.reshape(1, 1, -1), num_classes=2, background_label_id=0, code_type="CENTER_SIZE",
                variance_encoded_in_target=True, keep_top_k=40, confidence_threshold=0.3, nms_threshold=0.4,
                normalized_bbox=False)
            for form in ("torch", "onnx", "py"):
                _check(f"{form} detections", forms[form](scores, deltas, im_info)["detection_out"], expected)
            checked += expected.shape[2] > 1
    assert checked == 6


# --- the original's comparisons at their edges ---------------------------------------------------------------


class _Select(torch.nn.Module):
    """The selection op alone, to export it."""

    def __init__(self, pre: int, post: int, threshold: float):
        super().__init__()
        self.options = (pre, post, threshold)

    def forward(self, boxes, scores, valid):
        return torch.ops.ninport.rpn_proposals(boxes, scores, valid, *self.options)


def _selected_in_onnx(module, *arrays):
    import onnxruntime as ort

    from ninport.export.onnx import quiet_torch

    count = torch.export.Dim("count")
    with quiet_torch():
        program = torch.onnx.export(module.eval(), tuple(torch.from_numpy(a) for a in arrays), None, dynamo=True,
                                    opset_version=18, custom_translation_table=proposal.onnx_translations(),
                                    dynamic_shapes=({0: count}, {0: count}, {0: count}), report=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    return session.run(None, dict(zip([i.name for i in session.get_inputs()], arrays)))[0]


def test_nms_keeps_an_overlap_equal_to_the_threshold_and_counts_pixel_sides():
    """py_cpu_nms keeps a box whose overlap is <= the threshold, areas and intersections with sides + 1:
    (0, 0, 9, 9) and (0, 0, 9, 4) overlap exactly 50 / 100 (kept at 0.5, not at 0.49); (0, 0, 9, 5) overlaps
    the first 0.6; (9, 0, 18, 9) touches it in one pixel column: 10 / 190 > 0.05."""
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 4], [0, 0, 9, 5], [9, 0, 18, 9], [30, 30, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    valid = np.ones(5, bool)
    for threshold, kept in ((0.5, [0, 1, 3, 4]), (0.49, [0, 3, 4]), (0.05, [0, 4])):
        expected = original.py_cpu_nms(np.hstack([boxes, scores[:, None]]), threshold)
        assert expected == kept
        module = _Select(0, 0, threshold)
        assert module(*_as_tensors(boxes, scores, valid)).tolist() == kept
        assert _selected_in_onnx(module, boxes, scores, valid).tolist() == kept


def test_a_box_of_exactly_the_minimum_size_is_kept(tmp_path):
    """One 16 x 16 anchor per cell, no deltas: bbox_transform_inv makes each box 17 pixels wide and high (its
    corners are centre -+ 8), and at im_info scale 1.0625 the minimum is 16 x 1.0625 = 17: the original keeps
    them (>=). An image under a pixel clips every box to (0, 0, 0, 0): max(min(x, -0.5), 0)."""
    fields = "ratio: 1 scale: 1 min_size: 16 nms_thresh: 0.99"
    module = _load(_net(tmp_path, OPENCV_LAYER.format(tops="top: 'rois'", fields=fields), anchors=1, size=(3, 4)))
    scores, deltas, im_info = _rpn_inputs(3, (3, 4), anchors=1, spread=0.0, scale=1.0625)
    rois = module(*_as_tensors(scores, deltas, im_info)).numpy()
    assert len(rois) == 6 and ((rois[:, 3] - rois[:, 1] + 1 == 17) & (rois[:, 4] - rois[:, 2] + 1 == 17)).all()
    _check("rois", rois, _original(scores, deltas, im_info, ratios=(1,), scales=(1,), nms_thresh=0.99)[0])
    tiny = np.array([[0.5, 0.5, 1]], np.float32)
    fields = "ratio: 1 scale: 1 min_size: 0"
    module = _load(_net(tmp_path, OPENCV_LAYER.format(tops="top: 'rois'", fields=fields), anchors=1, size=(3, 4)))
    rois = module(*_as_tensors(scores, deltas, tiny)).numpy()
    expected = _original(scores, deltas, tiny, ratios=(1,), scales=(1,), min_size=0)[0]
    assert len(expected) == 1 and not expected.any()
    _check("rois", rois, expected)
