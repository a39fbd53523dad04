"""The SSD fork's layers against SSD Caffe itself (tests/fixtures/caffe-golden-ssd, 32 cases), through
ninport.load and through the exported ONNX in onnxruntime, and against numpy transcriptions of the
fork's sources (tests/layers/ssd_caffe_numpy.py) for options the fixtures do not cover."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ninport
from ninport.errors import ShapeError
from ninport.layers import ssd
from ninport.layers.ssd import FLT_MAX, DetectionSettings
from tests.conftest import SSD_GOLDEN, relative_error
from tests.layers import ssd_caffe_numpy as caffe

CASES = sorted(p.name for p in SSD_GOLDEN.glob("ssd_*") if (p / "case.json").is_file())
CAFFE_SPLIT_BLOB = re.compile(r".+_split_\d+$")
TOLERANCE = 1e-5


def _case(name: str):
    folder = SSD_GOLDEN / name
    info = json.loads((folder / "case.json").read_text())
    weights = folder / info["weights"] if info.get("weights") else None
    inputs = np.load(folder / "inputs.npz")
    return folder, info, weights, [inputs[n] for n in info["inputs"]], np.load(folder / "blobs.npz")


def _all_nodes(graph):
    """Every node of an ONNX graph, those inside Loop/If/Scan bodies included."""
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def _assert_standard_onnx(model) -> set[str]:
    """Only standard ONNX operators, subgraphs included, and no model-local function; returns the op types."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    nodes = list(_all_nodes(model.graph))
    assert {node.domain for node in nodes} <= {"", "ai.onnx"}, "only standard ONNX operators"
    assert {entry.domain for entry in model.opset_import} <= {"", "ai.onnx"}
    assert not model.functions, "no model-local function"
    return {node.op_type for node in nodes}


def _check(name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, f"blob {name}: shape {actual.shape} != Caffe's {expected.shape}"
    err = relative_error(actual, expected)
    assert err <= TOLERANCE, f"blob {name}: relative error {err:.2e} > {TOLERANCE}"


def test_all_32_cases_are_here():
    assert len(CASES) == 32


@pytest.mark.parametrize("name", CASES)
def test_every_blob_matches_ssd_caffe(name):
    folder, _info, weights, inputs, expected = _case(name)
    module = ninport.load(folder / "net.prototxt", weights)
    blobs = ninport.forward_blobs(module, *[torch.from_numpy(x) for x in inputs])
    checked = 0
    for blob in expected.files:
        if CAFFE_SPLIT_BLOB.match(blob) and blob not in blobs:
            continue
        _check(blob, blobs[blob].numpy(), expected[blob])
        checked += 1
    assert checked >= len(inputs) + 1


@pytest.mark.parametrize("name", CASES)
def test_onnx_in_onnxruntime_matches_ssd_caffe(name, tmp_path):
    import onnx
    import onnxruntime as ort

    folder, info, weights, inputs, expected = _case(name)
    module = ninport.load(folder / "net.prototxt", weights)
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    _assert_standard_onnx(onnx.load(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = session.run(None, dict(zip(info["inputs"], inputs)))
    for blob, value in zip(info["outputs"], results):
        _check(blob, value, expected[blob])


def test_adaptive_nms_exports_exactly_caffes_rows(tmp_path):
    """eta < 1 (the threshold shrinks after each kept box) runs as an ONNX Loop: Caffe's rows, count and
    order included, in onnxruntime; the fixture's adaptive threshold does change what is kept."""
    import onnx
    import onnxruntime as ort

    folder, info, weights, inputs, expected = _case("ssd_detout_eta")
    module = ninport.load(folder / "net.prototxt", weights)
    path = ninport.export_onnx(module, tmp_path / "net.onnx")
    ops = _assert_standard_onnx(onnx.load(path))
    assert "Loop" in ops and "NonMaxSuppression" not in ops
    (rows,) = ort.InferenceSession(str(path)).run(None, dict(zip(info["inputs"], inputs)))
    caffe_rows = expected["detection_out"]
    assert rows.shape == caffe_rows.shape
    np.testing.assert_array_equal(rows[..., :2], caffe_rows[..., :2])  # image and label of every row, in order
    _check("detection_out", rows, caffe_rows)
    # the fixture would fail with a fixed threshold: eta matters here
    fixed = caffe.detection_output(expected["mbox_loc"], expected["mbox_conf_flatten"], expected["mbox_priorbox"],
                                   **{**_detection_kwargs(folder), "eta": 1.0})
    assert fixed.shape != caffe_rows.shape or relative_error(fixed, caffe_rows) > TOLERANCE
    # ... and the torch module computes it too
    _check("detection_out", module(*[torch.from_numpy(x) for x in inputs]).detach().numpy(), caffe_rows)


def test_fixed_threshold_keeps_the_non_max_suppression_path(tmp_path):
    """eta == 1 still exports as one NonMaxSuppression, without a Loop."""
    import onnx

    folder, _info, weights, _inputs, _expected = _case("ssd_detout_ties")
    ops = _assert_standard_onnx(onnx.load(ninport.export_onnx(ninport.load(folder / "net.prototxt", weights),
                                                              tmp_path / "net.onnx")))
    assert "NonMaxSuppression" in ops and "Loop" not in ops


def test_exported_detector_runs_other_batch_sizes(tmp_path):
    """The batch axis is dynamic: a batch of 2 identical images gives each image's rows twice."""
    import onnxruntime as ort

    folder, _info, weights, inputs, expected = _case("ssd_mini_96")
    module = ninport.load(folder / "net.prototxt", weights)
    session = ort.InferenceSession(str(ninport.export_onnx(module, tmp_path / "net.onnx")))
    (rows,) = session.run(None, {"data": np.concatenate([inputs[0], inputs[0]])})
    single = expected["detection_out"][0, 0]
    assert rows.shape == (1, 1, 2 * len(single), 7)
    np.testing.assert_allclose(rows[0, 0, :len(single)], single, atol=1e-5)
    np.testing.assert_allclose(rows[0, 0, len(single):, 1:], single[:, 1:], atol=1e-5)
    assert (rows[0, 0, len(single):, 0] == 1).all()


# --- the numpy transcriptions: first trusted against SSD Caffe, then an oracle for other options ----


def _detection_kwargs(folder: Path) -> dict:
    text = (folder / "net.prototxt").read_text()
    text = text[text.index("detection_output_param"):]

    def field(name, default, kind=float):
        found = re.search(rf"\b{name}: *([-\w.]+)", text)
        return kind(found.group(1)) if found else default
    return {"num_classes": field("num_classes", 0, int),
            "share_location": field("share_location", "true", str) == "true",
            "background_label_id": field("background_label_id", 0, int), "code_type": field("code_type", "CORNER", str),
            "variance_encoded_in_target": field("variance_encoded_in_target", "false", str) == "true",
            "keep_top_k": field("keep_top_k", -1, int), "confidence_threshold": field("confidence_threshold", None),
            "nms_threshold": field("nms_threshold", 0.3), "top_k": field("top_k", -1, int), "eta": field("eta", 1.0)}


@pytest.mark.parametrize("name", ["ssd_detout_eta", "ssd_detout_no_share_location", "ssd_detout_ties",
                                  "ssd_detout_corner_size", "ssd_detout_batch2_one_empty", "ssd_detout_none_batch2"])
def test_numpy_transcription_of_detection_output_matches_ssd_caffe(name):
    folder, _, _, _, blobs = _case(name)
    rows = caffe.detection_output(blobs["mbox_loc"], blobs["mbox_conf_flatten"], blobs["mbox_priorbox"],
                                  **_detection_kwargs(folder))
    _check("detection_out", rows, blobs["detection_out"])


PRIOR_CASES = [  # (case, blob, feature hw, image hw, parameters) as the cases' prototxts give them
    ("ssd_priorbox_fractional_dedup", "prior_frac", (2, 3), (40, 40),
     {"min_size": [10.5], "max_size": [20.7], "aspect_ratio": [0.5, 2.0, 1.0], "variance": [0.1, 0.1, 0.2, 0.2]}),
    ("ssd_priorbox_fractional_dedup", "prior_noflip", (2, 3), (40, 40),
     {"min_size": [10.5], "aspect_ratio": [2.0, 3.0], "flip": False, "variance": [0.1, 0.1, 0.2, 0.2]}),
    ("ssd_priorbox_step_offset", "prior_default_step", (19, 19), (300, 300),
     {"min_size": [60], "max_size": [105], "aspect_ratio": [2, 3], "variance": [0.1, 0.1, 0.2, 0.2]}),
    ("ssd_priorbox_step_offset", "prior_offset0", (19, 19), (300, 300),
     {"min_size": [60], "max_size": [105], "aspect_ratio": [2, 3], "variance": [0.1, 0.1, 0.2, 0.2], "offset": 0.0}),
    ("ssd_priorbox_img_step_hw", "prior_hw", (6, 8), (72, 96),
     {"min_size": [16], "max_size": [32], "aspect_ratio": [2], "variance": [0.1, 0.1, 0.2, 0.2], "img_hw": (144, 192),
          "step_hw": (20, 25)}),
]


@pytest.mark.parametrize("case, blob, feature, image, kwargs", PRIOR_CASES, ids=[c[1] for c in PRIOR_CASES])
def test_numpy_transcription_of_prior_box_matches_ssd_caffe(case, blob, feature, image, kwargs):
    _, _, _, _, blobs = _case(case)
    _check(blob, caffe.prior_box(feature, image, **kwargs), blobs[blob])


def _settings(**overrides) -> DetectionSettings:
    values = {"num_classes": 3, "share_location": True, "background_label_id": 0, "code_type": "CENTER_SIZE",
                  "variance_encoded_in_target": False, "keep_top_k": -1, "confidence_threshold": -FLT_MAX,
                  "nms_threshold": 0.45, "top_k": -1, "eta": 1.0, "clip": False}
    values.update(overrides)
    return DetectionSettings(**values)


def _random_head(seed: int, priors: int, num_classes: int, loc_classes: int, batch: int = 1, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, (priors, 2))
    sizes = rng.uniform(0.05, 0.4, (priors, 2))
    corners = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    prior = np.stack([corners.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], priors)])[None].astype(np.float32)
    loc = rng.normal(0, spread, (batch, priors * loc_classes * 4)).astype(np.float32)
    logits = rng.normal(0, 2, (batch, priors, num_classes))
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    # a few exact ties, as quantized nets make them
    conf[:, ::7, -1] = conf[:, 3:4, -1]
    return loc, conf.reshape(batch, -1).astype(np.float32), prior


ORACLE_OPTIONS = [
    {"eta": 0.7, "nms_threshold": 0.9, "top_k": 30},
    {"keep_top_k": 5, "confidence_threshold": 0.2},
    {"keep_top_k": 0, "confidence_threshold": 0.1},
    {"top_k": 0},
    {"code_type": "CORNER", "nms_threshold": 0.3},  # CORNER decoding makes boxes with xmax < xmin
    {"code_type": "CORNER_SIZE", "variance_encoded_in_target": True},
    {"share_location": False, "background_label_id": 2, "keep_top_k": 12},
    {"num_classes": 1, "background_label_id": 0},  # no foreground class at all: Caffe's -1 rows
    {"clip": True, "confidence_threshold": 0.25},
    {"nms_threshold": 0.0, "confidence_threshold": 0.05},
]


@pytest.mark.parametrize("options", ORACLE_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_detection_output_matches_the_numpy_transcription(options):
    settings = _settings(**options)
    loc, conf, prior = _random_head(len(str(options)), 60, settings.num_classes, settings.num_loc_classes, batch=2,
                                    spread=3.0 if settings.code_type == "CORNER" else 1.0)
    kwargs = dict(options)
    threshold = kwargs.pop("confidence_threshold", None)
    expected = caffe.detection_output(loc, conf, prior, **{"num_classes": 3, "code_type": "CENTER_SIZE",
                                                                  "nms_threshold": 0.45, **kwargs},
                                      confidence_threshold=threshold)
    module = ssd.CaffeDetectionOutput(settings)
    actual = module(torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(prior)).numpy()
    _check("rows", actual, expected)


@pytest.mark.parametrize("chunk", [1 << 21, 1], ids=["one step", "a group per step"])
def test_many_overlapping_candidates_are_suppressed_as_caffe_does(chunk, monkeypatch):
    """Hundreds of candidates in a small area, so suppression chains run deep: the matrix NMS for a fixed
    threshold (`ssd._greedy_nms_fixed_threshold`) keeps exactly the boxes Caffe's candidate-by-candidate loop
    keeps, with the groups in one step or one group per step."""
    monkeypatch.setattr(ssd, "NMS_CHUNK_ELEMENTS", chunk)
    settings = _settings(num_classes=3, top_k=300, keep_top_k=-1, confidence_threshold=0.01, nms_threshold=0.45)
    loc, conf, prior = _random_head(7, 400, settings.num_classes, settings.num_loc_classes, batch=3, spread=0.3)
    prior[0, 0] = 0.4 + 0.2 * prior[0, 0]  # every prior inside the square [0.4, 0.6]
    expected = caffe.detection_output(loc, conf, prior, num_classes=3, code_type="CENTER_SIZE", nms_threshold=0.45,
                                      top_k=300, confidence_threshold=0.01)
    module = ssd.CaffeDetectionOutput(settings)
    actual = module(torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(prior)).numpy()
    assert 30 < actual.shape[2] < 3 * 2 * 300  # many kept, many suppressed
    _check("rows", actual, expected)


def _onnx_rows(module, loc, conf, prior) -> np.ndarray:
    """The module exported alone (dynamic batch, ninport's translation table) and run in onnxruntime."""
    import onnxruntime as ort

    from ninport.export.onnx import quiet_torch

    batch = torch.export.Dim("batch")
    with quiet_torch():
        program = torch.onnx.export(module, tuple(torch.from_numpy(a) for a in (loc, conf, prior)), None, dynamo=True,
                                    opset_version=18, custom_translation_table=ssd.onnx_translations(),
                                    dynamic_shapes=({0: batch}, {0: batch}, {}), report=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    (rows,) = session.run(None, dict(zip(names, (loc, conf, prior))))
    return rows


@pytest.mark.parametrize("options", ORACLE_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_detection_output_onnx_translation_matches_torch(options, tmp_path):
    """The standard-ONNX translation reproduces the torch op on options the fixtures lack."""
    settings = _settings(**options)
    loc, conf, prior = _random_head(7, 60, settings.num_classes, settings.num_loc_classes, batch=2,
                                    spread=3.0 if settings.code_type == "CORNER" else 1.0)
    module = ssd.CaffeDetectionOutput(settings).eval()
    expected = module(torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(prior)).numpy()
    _check("rows", _onnx_rows(module, loc, conf, prior), expected)


ETA_OPTIONS = [  # adaptive NMS: the threshold shrinks by eta after each kept box while it is > 0.5
    {"eta": 0.5, "nms_threshold": 0.95},
    {"eta": 0.7, "nms_threshold": 0.9, "top_k": 50, "keep_top_k": 30},
    {"eta": 0.9, "nms_threshold": 0.8, "code_type": "CORNER"},  # boxes with xmax < xmin: zero area
    {"eta": 0.3, "nms_threshold": 0.99, "share_location": False, "confidence_threshold": 0.05},
]


@pytest.mark.parametrize("options", ETA_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_adaptive_nms_in_onnx_matches_the_numpy_transcription(options):
    """The ONNX Loop against Caffe's ApplyNMSFast loop for other eta values; each case keeps other
    boxes than a fixed threshold would."""
    settings = _settings(**options)
    loc, conf, prior = _random_head(11, 120, settings.num_classes, settings.num_loc_classes, batch=2,
                                    spread=3.0 if settings.code_type == "CORNER" else 0.3)
    kwargs = dict(options)
    threshold = kwargs.pop("confidence_threshold", None)
    oracle = {"num_classes": 3, "code_type": "CENTER_SIZE", **kwargs, "confidence_threshold": threshold}
    expected = caffe.detection_output(loc, conf, prior, **oracle)
    fixed = caffe.detection_output(loc, conf, prior, **{**oracle, "eta": 1.0})
    assert fixed.shape != expected.shape or relative_error(fixed, expected) > TOLERANCE, "eta changes nothing here"
    rows = _onnx_rows(ssd.CaffeDetectionOutput(settings).eval(), loc, conf, prior)
    assert rows.shape == expected.shape
    np.testing.assert_array_equal(rows[..., :2], expected[..., :2])
    _check("rows", rows, expected)


@pytest.mark.parametrize("kwargs", [
    {"min_size": [30.0], "max_size": [60.0], "aspect_ratio": [2.0, 3.0], "clip": True, "variance": [0.2]},
    {"min_size": [8.0, 16.7], "aspect_ratio": [0.25], "flip": False, "step": 7.5, "offset": 0.0},
    {"min_size": [12.0], "img_hw": (50, 70), "step_hw": (9.0, 11.0)},
])
def test_prior_box_matches_the_numpy_transcription(kwargs):
    from ninport.caffe import caffe_pb2 as pb2
    from ninport.layers.ssd import prior_box_layout

    param = pb2.PriorBoxParameter(min_size=kwargs["min_size"], max_size=kwargs.get("max_size", []),
                                  aspect_ratio=kwargs.get("aspect_ratio", []), flip=kwargs.get("flip", True),
                                  clip=kwargs.get("clip", False), variance=kwargs.get("variance", []),
                                  offset=kwargs.get("offset", 0.5))
    if "step" in kwargs:
        param.step = kwargs["step"]
    if "img_hw" in kwargs:
        param.img_h, param.img_w = kwargs["img_hw"]
        param.step_h, param.step_w = kwargs["step_hw"]
    module = ssd.prior_box_module(prior_box_layout(param))
    actual = module(torch.zeros(1, 4, 7, 9), torch.zeros(1, 3, 64, 80)).numpy()
    _check("prior", actual, caffe.prior_box((7, 9), (64, 80), **kwargs))


def test_prior_box_follows_the_run_time_sizes():
    """The priors come from the bottoms' shapes at run time, not from the build-time table."""
    from ninport.caffe import caffe_pb2 as pb2
    from ninport.layers.ssd import prior_box_layout

    module = ssd.prior_box_module(prior_box_layout(pb2.PriorBoxParameter(min_size=[20.0], max_size=[40.0],
                                                                 aspect_ratio=[2.0])))
    for feature, image in (((3, 4), (30, 40)), ((10, 19), (100, 190))):
        actual = module(torch.zeros((1, 2) + feature), torch.zeros((1, 3) + image)).numpy()
        expected = caffe.prior_box(feature, image, min_size=[20.0], max_size=[40.0], aspect_ratio=[2.0])
        _check("prior", actual, expected)


@pytest.mark.parametrize("options", [{"across_spatial": True, "channel_shared": False, "eps": 1e-10},
                                     {"across_spatial": False, "channel_shared": True, "eps": 0.3}])
def test_normalize_matches_the_numpy_transcription(options):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.2, (2, 5, 3, 4)).astype(np.float32)
    scale = rng.uniform(1, 5, (1,) if options["channel_shared"] else (5,)).astype(np.float32)
    module = ssd.Normalize(torch.nn.Parameter(torch.from_numpy(scale)), options["across_spatial"],
                           options["channel_shared"], options["eps"])
    _check("norm", module(torch.from_numpy(x)).detach().numpy(), caffe.normalize(x, scale, **options))


def test_permute_matches_the_numpy_transcription():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for order in ((3, 0), (1, 3, 2), (0, 1, 2, 3)):
        from ninport.caffe import caffe_pb2 as pb2
        from ninport.layers.ssd import permute_order
        full = permute_order(pb2.PermuteParameter(order=order), 4)
        np.testing.assert_array_equal(ssd.Permute(full)(torch.from_numpy(x)).numpy(), caffe.permute(x, list(order)))


# --- bad input ---------------------------------------------------------------------------------------------


def _net(tmp_path, body: str) -> Path:
    path = tmp_path / "bad.prototxt"
    path.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }\n'
                    'input: "feat" input_shape { dim: 1 dim: 8 dim: 4 dim: 4 }\n' + body)
    return path


@pytest.mark.parametrize("body, message", [
    ('layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "p" prior_box_param { aspect_ratio: 2 } }',
     r'layer "pb" \(PriorBox\).*needs min_size'),
    (('layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "p" '
     'prior_box_param { min_size: 8 max_size: 4 } }'), r'layer "pb".*max_size 4.* must be greater'),
    ('layer { name: "perm" type: "Permute" bottom: "feat" top: "q" permute_param { order: 0 order: 2 order: 2 } }',
     r'layer "perm" \(Permute\).*not a permutation'),
    ('layer { name: "perm" type: "Permute" bottom: "feat" top: "q" permute_param { order: 0 order: 4 } }',
     r'layer "perm" \(Permute\).*not a permutation'),
])
def test_bad_ssd_layers_are_one_clear_error(tmp_path, body, message):
    with pytest.raises(ShapeError, match=message):
        ninport.load(_net(tmp_path, body))


DETECTION_NET = """
layer {{ name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "prior"
         prior_box_param {{ min_size: 8 max_size: 16 }} }}
layer {{ name: "loc" type: "Flatten" bottom: "feat" top: "loc" }}
layer {{ name: "c" type: "Convolution" bottom: "feat" top: "c"
         convolution_param {{ num_output: {conf} kernel_size: 1 }} }}
layer {{ name: "conf" type: "Flatten" bottom: "c" top: "conf" }}
layer {{ name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "out"
         detection_output_param {{ num_classes: {classes} nms_param {{ nms_threshold: 0.45 }} }} }}
"""


def test_a_well_formed_detection_head_loads(tmp_path):
    # feat 8x4x4 -> loc 128 values = 32 priors (2 per cell) x 4; conf 4 x 16 = 64 values = 32 priors x 2 classes
    module = ninport.load(_net(tmp_path, DETECTION_NET.format(conf=4, classes=2)))
    assert ninport.describe(module).blobs["prior"].shape == (1, 2, 128)


@pytest.mark.parametrize("conf, classes, message", [
    (3, 2, r'layer "det" \(DetectionOutput\).*confidence bottom \[1, 48\] does not fit 32 priors x num_classes 2'),
    (4, 3, r'layer "det" \(DetectionOutput\).*confidence bottom \[1, 64\] does not fit 32 priors x num_classes 3'),
])
def test_detection_output_bottoms_must_fit_classes_and_priors(tmp_path, conf, classes, message):
    with pytest.raises(ShapeError, match=message):
        ninport.load(_net(tmp_path, DETECTION_NET.format(conf=conf, classes=classes)))


def test_detection_output_prior_count_must_fit_the_location_bottom(tmp_path):
    body = DETECTION_NET.format(conf=4, classes=2).replace("min_size: 8 max_size: 16", "min_size: 8")
    with pytest.raises(ShapeError, match=r'layer "det".*location bottom \[1, 128\] does not fit 16 priors'):
        ninport.load(_net(tmp_path, body))


# --- OpenCV's normalized_bbox: false (boxes in pixels), as its Faster R-CNN and R-FCN prototxts use it ---------


def _pixel_head(seed: int, priors: int, num_classes: int, loc_classes: int, variances: bool, spread: float = 0.3,
                ties: bool = True):
    """Priors in pixels of a 320 x 240 image: (1, 2, 4P) with variances, else (1, 1, 4P) as OpenCV's
    Faster R-CNN prototxts make them from the rois."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, (priors, 2)) * [320, 240]
    sizes = rng.uniform(4, 90, (priors, 2))
    corners = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).reshape(-1)
    prior = (np.stack([corners, np.tile([0.1, 0.1, 0.2, 0.2], priors)]) if variances else corners[None])[None]
    loc = rng.normal(0, spread * (5 if variances else 1), (1, priors * loc_classes * 4))
    logits = rng.normal(0, 2, (1, priors, num_classes))
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if ties:
        conf[:, ::9, -1] = conf[:, 4:5, -1]  # exact ties
    return loc.astype(np.float32), conf.reshape(1, -1).astype(np.float32), prior.astype(np.float32)


PIXEL_OPTIONS = [  # OpenCV's faster_rcnn_zf.prototxt first; then the other decodings, variances and clip
    {"num_classes": 4, "share_location": False, "variance_encoded_in_target": True, "keep_top_k": 30,
     "nms_threshold": 0.3},
    {"num_classes": 3, "confidence_threshold": 0.2, "nms_threshold": 0.45, "top_k": 25},
    {"num_classes": 3, "code_type": "CORNER", "nms_threshold": 0.2, "confidence_threshold": 0.1},
    {"num_classes": 3, "clip": True, "variance_encoded_in_target": True, "nms_threshold": 0.5, "keep_top_k": 12},
]
IMAGE = np.zeros((1, 3, 240, 320), np.float32)  # the fourth bottom: clip to [0, 319] x [0, 239]


def _pixel_case(options: dict, seed: int):
    settings = _settings(**{"code_type": "CENTER_SIZE", **options, "normalized": False})
    loc, conf, prior = _pixel_head(seed, 80, settings.num_classes, settings.num_loc_classes,
                                   not settings.variance_encoded_in_target,
                                   spread=3.0 if settings.code_type == "CORNER" else 0.3)
    kwargs = {"code_type": "CENTER_SIZE", "nms_threshold": 0.45, **options}
    threshold = kwargs.pop("confidence_threshold", None)
    expected = caffe.detection_output(loc, conf, prior, **kwargs, confidence_threshold=threshold,
                                      normalized_bbox=False, image_hw=IMAGE.shape[2:])
    return settings, (loc, conf, prior) + ((IMAGE,) if settings.clip else ()), expected


@pytest.mark.parametrize("options", PIXEL_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pixel_boxes_match_the_numpy_transcription_of_opencv(options):
    differs = 0
    for seed in (1, 2, 3):
        settings, inputs, expected = _pixel_case(options, seed)
        actual = ssd.CaffeDetectionOutput(settings)(*[torch.from_numpy(a) for a in inputs]).numpy()
        _check("rows", actual, expected)
        normalized = caffe.detection_output(*inputs[:3], **{k: v for k, v in options.items()
                                                             if k not in ("confidence_threshold", "clip")},
                                            confidence_threshold=options.get("confidence_threshold"),
                                            **({"code_type": "CENTER_SIZE"} if "code_type" not in options else {}))
        differs += normalized.shape != expected.shape or relative_error(normalized, expected) > TOLERANCE
    assert differs, "normalized_bbox: false changes nothing here"


@pytest.mark.parametrize("options", PIXEL_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pixel_boxes_in_onnx_match_the_numpy_transcription(options):
    """The ONNX Loop with OpenCV's pixel overlaps (NonMaxSuppression has no +1 sides)."""
    import onnxruntime as ort

    from ninport.export.onnx import quiet_torch

    settings, inputs, expected = _pixel_case(options, 4)
    module = ssd.CaffeDetectionOutput(settings).eval()
    with quiet_torch():
        program = torch.onnx.export(module, tuple(torch.from_numpy(a) for a in inputs), None, dynamo=True,
                                    opset_version=18, custom_translation_table=ssd.onnx_translations(), report=False)
    ops = _assert_standard_onnx(program.model_proto)
    assert "Loop" in ops and "NonMaxSuppression" not in ops
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    (rows,) = session.run(None, dict(zip(names, inputs)))
    _check("rows", rows, expected)


PIXEL_NET = """
layer {{ name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" {image}top: "out"
         detection_output_param {{ num_classes: {num_classes} share_location: {share} background_label_id: 0
         nms_param {{ nms_threshold: {nms} }} code_type: {code} keep_top_k: {keep} confidence_threshold: {threshold}
         variance_encoded_in_target: {in_target} normalized_bbox: false {extra}}} }}
"""


def _pixel_net(tmp_path, inputs, **fields) -> Path:
    loc, conf, prior = inputs[:3]
    text = "".join(f'input: "{name}" input_shape {{ {" ".join(f"dim: {d}" for d in value.shape)} }}\n'
                   for name, value in zip(("loc", "conf", "prior", "image"), inputs))
    values = {"image": 'bottom: "image" ' if len(inputs) > 3 else "", "num_classes": 4, "share": "false",
              "nms": 0.3, "code": "CENTER_SIZE", "keep": 30, "threshold": 0.05, "in_target": "true", "extra": "",
              **fields}
    path = tmp_path / "pixel.prototxt"
    path.write_text(text + PIXEL_NET.format(**values))
    return path


def _by_label_and_score(rows: np.ndarray) -> np.ndarray:
    rows = rows.reshape(-1, 7)
    return rows[np.lexsort((rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("fields", [{}, {"code": "CORNER", "share": "true", "num_classes": 3, "in_target": "false"},
                                    {"extra": "clip: true "}], ids=["faster_rcnn", "corner", "clip"])
def test_pixel_boxes_match_opencv(tmp_path, fields):
    """OpenCV 4.x's DetectionOutput on the same inputs: the same rows (OpenCV orders them by score over all
    classes, SSD Caffe's order is label then score: compared by label and score). No exact ties: where equal
    scores straddle keep_top_k, SSD Caffe and OpenCV both leave the choice to std::sort."""
    cv2 = pytest.importorskip("cv2")
    share = fields.get("share", "false") == "true"
    classes = fields.get("num_classes", 4)
    loc, conf, prior = _pixel_head(5, 60, classes, 1 if share else classes, fields.get("in_target") == "false",
                                   spread=2.0 if fields.get("code") == "CORNER" else 0.3, ties=False)
    inputs = (loc, conf, prior) + ((IMAGE,) if "clip" in fields.get("extra", "") else ())
    path = _pixel_net(tmp_path, inputs, **fields)
    net = cv2.dnn.readNetFromCaffe(str(path))
    for name, value in zip(("loc", "conf", "prior", "image"), inputs):
        net.setInput(value, name)
    theirs = net.forward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        ours = ninport.load(path)(*[torch.from_numpy(a) for a in inputs]).numpy()
    assert ours.shape[2] > 5
    _check("rows", _by_label_and_score(ours), _by_label_and_score(theirs))


@pytest.mark.parametrize("fields, message", [
    ({"code": "CORNER_SIZE"}, "OpenCV, whose field normalized_bbox is, decodes CORNER_SIZE as CORNER"),
    ({"extra": "clip: true "}, r"give the image \(N, C, H, W\) as the fourth bottom"),
    ({"in_target": "false"}, r"the prior bottom must be \(1, 2, 4 x priors\) as PriorBox makes it, got \[1, 1, 240\]"),
    ({"nms": "0.3 eta: 0.8"}, "OpenCV, whose field normalized_bbox is, ignores eta"),
    ({"extra": "visualise: 1 "}, "fields this layer type does not read: detection_output_param.visualise"),
    ({"extra": "normalized_bbox: 2 "}, "normalized_bbox must be true or false"),
])
def test_pixel_detection_output_refusals_name_the_layer(tmp_path, fields, message):
    inputs = _pixel_head(6, 60, 4, 4, False)
    with pytest.raises(ShapeError, match=r'pixel.prototxt:\d+: layer "det" \(DetectionOutput\): .*' + message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ninport.NinportWarning)
            ninport.load(_pixel_net(tmp_path, inputs, **fields))


def test_pixel_boxes_that_touch_overlap():
    """OpenCV's pixel overlap counts the shared column of boxes that touch, (0, 0, 9, 9) and (9, 0, 18, 9):
    10 / 190 = 0.053 > 0.05 suppresses the second; normalized boxes that touch do not overlap."""
    prior = np.array([[[0, 0, 9, 9, 9, 0, 18, 9, 40, 40, 50, 50]]], np.float32)
    conf = np.array([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7]], np.float32)
    loc = np.zeros((1, 12), np.float32)
    for normalized, xmin in ((False, [0, 40]), (True, [0, 9, 40])):
        settings = _settings(num_classes=2, code_type="CORNER", variance_encoded_in_target=True, nms_threshold=0.05,
                             normalized=normalized)
        module = ssd.CaffeDetectionOutput(settings).eval()
        rows = module(*[torch.from_numpy(a) for a in (loc, conf, prior)]).numpy()
        assert rows[0, 0, :, 3].tolist() == xmin
        _check("rows", _onnx_rows(module, loc, conf, prior), rows)
