"""The classic Caffe Model Zoo deploy nets shipped under reference_models/.

For each net: the prototxt is what tools/make_reference_models.py writes; it has the published
layout (input declaration, layer/blob names, in-place layers); ninport builds it with random
weights and the output has the published shape; blob shapes at key layers follow Caffe's rounding;
the parameter count equals the well-known figure, which is also recomputed here by hand from the
published architecture tables; and with seeded synthetic weights written to a caffemodel the output
agrees with OpenCV 4.x's own Caffe importer (cv2.dnn.readNetFromCaffe).
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import ninport
from tests.caffe_files import write_caffemodel as write_blobs
from tests.conftest import REPO, relative_error
from ninport.caffe import caffe_pb2
from ninport.build.shapes import infer_shapes

MODELS = REPO / "reference_models"
NETS = ("bvlc_alexnet", "bvlc_googlenet", "vgg16", "resnet50", "squeezenet_v1.1", "mobilenet_v1")
# The published input size of each net (all run here at batch 1).
SIZE = {"bvlc_alexnet": 227, "bvlc_googlenet": 224, "vgg16": 224, "resnet50": 224,
        "squeezenet_v1.1": 227, "mobilenet_v1": 224}
# (logits blob, final output blob, published output shape at batch 1)
OUTPUT = {
    "bvlc_alexnet": ("fc8", "prob", (1, 1000)),
    "bvlc_googlenet": ("loss3/classifier", "prob", (1, 1000)),
    "vgg16": ("fc8", "prob", (1, 1000)),
    "resnet50": ("fc1000", "prob", (1, 1000)),
    "squeezenet_v1.1": ("pool10", "prob", (1, 1000, 1, 1)),
    "mobilenet_v1": ("fc7", "prob", (1, 1000, 1, 1)),
}


def deploy(net: str) -> Path:
    return MODELS / net / "deploy.prototxt"


def quiet_load(prototxt, weights=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(prototxt, weights, **kw)


def table(net: str, size: int | None = None):
    size = size or SIZE[net]
    return infer_shapes(ninport.load_spec(deploy(net), (1, 3, size, size)))


def parse(net: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(deploy(net).read_text(), caffe_pb2.NetParameter())


# ---------------------------------------------------------------- the files themselves ----

def _generator():
    path = REPO / "tools" / "make_reference_models.py"
    spec = importlib.util.spec_from_file_location("make_reference_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Nets the generator writes: the classic ones above, and OpenPose (tests/test_reference_openpose.py).
GENERATED = (*NETS, "openpose_coco")


def test_generator_reproduces_checked_in_prototxts():
    rendered = _generator().render_all()
    assert sorted(p.parent.name for p in rendered) == sorted(GENERATED)
    for path, text in rendered.items():
        assert path.is_file(), f"{path} missing: run python tools/make_reference_models.py"
        assert path.read_text() == text, (f"{path.relative_to(REPO)} differs from what "
                                          "tools/make_reference_models.py writes; rerun it")


@pytest.mark.parametrize("net", NETS)
def test_readme_present(net):
    text = (MODELS / net / "README.md").read_text()
    total = table(net).total_params
    assert f"{total:,}" in text, f"{net}/README.md does not state the parameter count {total:,}"
    assert "not shipped" in text


# How each published file declares its input, and its net name.
INPUT_STYLE = {
    "bvlc_alexnet": ("AlexNet", "Input layer", (10, 3, 227, 227)),
    "bvlc_googlenet": ("GoogleNet", "Input layer", (10, 3, 224, 224)),
    "vgg16": ("VGG_ILSVRC_16_layers", "input_dim", (10, 3, 224, 224)),
    "resnet50": ("ResNet-50", "input_dim", (1, 3, 224, 224)),
    "squeezenet_v1.1": ("", "Input layer", (10, 3, 227, 227)),
    "mobilenet_v1": ("MOBILENET", "input_dim", (1, 3, 224, 224)),
}


@pytest.mark.parametrize("net", NETS)
def test_published_layout(net):
    proto = parse(net)
    name, style, dims = INPUT_STYLE[net]
    assert proto.name == name
    if style == "Input layer":
        assert not proto.input and proto.layer[0].type == "Input"
        assert tuple(proto.layer[0].input_param.shape[0].dim) == dims
    else:
        assert list(proto.input) == ["data"] and tuple(proto.input_dim) == dims
    # VGG-16 was published in the V1 format (`layers { type: CONVOLUTION }`), the others in the current one.
    assert bool(proto.layers) == (net == "vgg16") and bool(proto.layer) == (net != "vgg16")
    layers = proto.layers if net == "vgg16" else proto.layer
    names = [layer.name for layer in layers]
    assert len(names) == len(set(names)), "layer names must be unique"
    relu_type = caffe_pb2.V1LayerParameter.RELU if net == "vgg16" else "ReLU"
    relus = [layer for layer in layers if layer.type == relu_type]
    assert relus and all(list(r.bottom) == list(r.top) for r in relus), "every ReLU runs in place"


# Layer counts of the published files, by type (V1 names mapped to current ones).
LAYER_COUNTS = {
    "bvlc_alexnet": {"Input": 1, "Convolution": 5, "ReLU": 7, "LRN": 2, "Pooling": 3, "InnerProduct": 3,
                     "Dropout": 2, "Softmax": 1},
    "bvlc_googlenet": {"Input": 1, "Convolution": 57, "ReLU": 57, "LRN": 2, "Pooling": 14, "Concat": 9,
                       "Dropout": 1, "InnerProduct": 1, "Softmax": 1},
    "vgg16": {"Convolution": 13, "ReLU": 15, "Pooling": 5, "InnerProduct": 3, "Dropout": 2, "Softmax": 1},
    "resnet50": {"Convolution": 53, "BatchNorm": 53, "Scale": 53, "ReLU": 49, "Eltwise": 16, "Pooling": 2,
                 "InnerProduct": 1, "Softmax": 1},
    "squeezenet_v1.1": {"Input": 1, "Convolution": 26, "ReLU": 26, "Pooling": 4, "Concat": 8, "Dropout": 1,
                        "Softmax": 1},
    "mobilenet_v1": {"Convolution": 28, "BatchNorm": 27, "Scale": 27, "ReLU": 27, "Pooling": 1, "Softmax": 1},
}


@pytest.mark.parametrize("net", NETS)
def test_layer_counts(net):
    spec = ninport.load_spec(deploy(net))
    counts: dict[str, int] = {}
    for layer in spec.layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    expected = {k: v for k, v in LAYER_COUNTS[net].items() if k != "Input"}
    assert counts == expected


# ------------------------------------------------------------- parameter counts ----
# The well-known figures. AlexNet: the BVLC model with grouped conv2/4/5 (torchvision's single-tower
# variant has 61,100,840). VGG-16: 138,357,544 (torchvision's vgg16 has the identical layer shapes).
# GoogLeNet: 6,998,552 for the deploy net (no auxiliary heads). SqueezeNet v1.1: 1,235,496 (torchvision
# squeezenet1_1, identical shapes). ResNet-50: torchvision's 25,557,032 = conv/fc 25,503,912 + BN
# gamma/beta 53,120; Caffe's conv1 adds a 64-value bias. MobileNet v1 1.0-224: Keras reports
# 4,231,976 trainable = conv/fc 4,210,088 + BN gamma/beta 21,888.
KNOWN = {"bvlc_alexnet": 60_965_224, "vgg16": 138_357_544, "bvlc_googlenet": 6_998_552,
         "squeezenet_v1.1": 1_235_496}
KNOWN_SPLIT = {"resnet50": (25_503_912 + 64, 2 * 26_560 + 53, 53_120),
               "mobilenet_v1": (4_210_088, 2 * 10_944 + 27, 21_888)}


@pytest.mark.parametrize("net", sorted(KNOWN))
def test_parameter_count(net):
    assert table(net).total_params == KNOWN[net]


@pytest.mark.parametrize("net", sorted(KNOWN_SPLIT))
def test_parameter_count_conv_fc_and_batchnorm_separately(net):
    t, spec = table(net), ninport.load_spec(deploy(net))
    split = {"weights": 0, "BatchNorm": 0, "Scale": 0}
    for layer in spec.layers:
        n = sum(math.prod(p) for p in t.layers[layer.name].params)
        split[layer.type if layer.type in ("BatchNorm", "Scale") else "weights"] += n
    assert (split["weights"], split["BatchNorm"], split["Scale"]) == KNOWN_SPLIT[net]
    assert t.total_params == sum(KNOWN_SPLIT[net])


# ------------------------------------------------------------------ blob shapes ----
# Caffe rounds pooling output up: e.g. GoogLeNet's 112 -> 56 (floor would give 55).

KEY_SHAPES = {
    "bvlc_alexnet": {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
                     "pool2": (256, 13, 13), "conv4": (384, 13, 13), "pool5": (256, 6, 6), "fc6": (4096,),
                     "prob": (1000,)},
    "bvlc_googlenet": {"conv1/7x7_s2": (64, 112, 112), "pool1/3x3_s2": (64, 56, 56),
                       "conv2/3x3": (192, 56, 56), "pool2/3x3_s2": (192, 28, 28),
                       "inception_3a/output": (256, 28, 28), "inception_3b/output": (480, 28, 28),
                       "pool3/3x3_s2": (480, 14, 14), "inception_4a/output": (512, 14, 14),
                       "inception_4e/output": (832, 14, 14), "pool4/3x3_s2": (832, 7, 7),
                       "inception_5b/output": (1024, 7, 7), "pool5/7x7_s1": (1024, 1, 1),
                       "loss3/classifier": (1000,)},
    "vgg16": {"conv1_2": (64, 224, 224), "pool1": (64, 112, 112), "pool2": (128, 56, 56),
              "pool3": (256, 28, 28), "pool4": (512, 14, 14), "pool5": (512, 7, 7), "fc7": (4096,)},
    "resnet50": {"conv1": (64, 112, 112), "pool1": (64, 56, 56), "res2a_branch2a": (64, 56, 56),
                 "res2c": (256, 56, 56), "res3a_branch2a": (128, 28, 28), "res3d": (512, 28, 28),
                 "res4f": (1024, 14, 14), "res5c": (2048, 7, 7), "pool5": (2048, 1, 1), "fc1000": (1000,)},
    "squeezenet_v1.1": {"conv1": (64, 113, 113), "pool1": (64, 56, 56), "fire2/concat": (128, 56, 56),
                        "pool3": (128, 28, 28), "fire5/concat": (256, 28, 28), "pool5": (256, 14, 14),
                        "fire9/concat": (512, 14, 14), "conv10": (1000, 14, 14), "pool10": (1000, 1, 1)},
    "mobilenet_v1": {"conv1": (32, 112, 112), "conv2_1/dw": (32, 112, 112), "conv2_2/sep": (128, 56, 56),
                     "conv3_2/sep": (256, 28, 28), "conv4_2/sep": (512, 14, 14), "conv5_5/sep": (512, 14, 14),
                     "conv5_6/dw": (512, 7, 7), "conv6/sep": (1024, 7, 7), "pool6": (1024, 1, 1),
                     "fc7": (1000, 1, 1)},
}


@pytest.mark.parametrize("net", NETS)
def test_key_blob_shapes(net):
    blobs = table(net).blobs
    for blob, shape in KEY_SHAPES[net].items():
        assert blobs[blob] == (1, *shape), f"{net}: blob {blob!r}"
    logits, out, out_shape = OUTPUT[net]
    assert blobs[out] == out_shape


def test_googlenet_sizes_need_ceil_pooling():
    """The 112 -> 56 -> 28 -> 14 -> 7 chain only holds with Caffe's ceil rounding."""
    blobs = table("bvlc_googlenet").blobs
    sizes = [blobs[b][2] for b in ("conv1/7x7_s2", "pool1/3x3_s2", "pool2/3x3_s2", "pool3/3x3_s2",
                                   "pool4/3x3_s2")]
    assert sizes == [112, 56, 28, 14, 7]
    assert (112 - 3) // 2 + 1 == 55  # what floor rounding would have given


@pytest.mark.parametrize("net,size,spatial", [("squeezenet_v1.1", 163, 10), ("mobilenet_v1", 160, 5)])
def test_global_pooling_nets_take_other_sizes(net, size, spatial):
    blobs = table(net, size).blobs
    logits, out, out_shape = OUTPUT[net]
    assert blobs[out] == out_shape
    last = "fire9/concat" if net == "squeezenet_v1.1" else "conv6/sep"
    assert blobs[last][2:] == (spatial, spatial)


# ------------------------------------------------------------ build and run (random) ----

@pytest.mark.parametrize("net", ["bvlc_alexnet", "bvlc_googlenet", "squeezenet_v1.1", "mobilenet_v1"])
def test_builds_and_runs_with_random_weights(net):
    size = SIZE[net]
    module = quiet_load(deploy(net), input_shape=(1, 3, size, size))
    with torch.no_grad():
        y = module(torch.randn(1, 3, size, size))
    assert tuple(y.shape) == OUTPUT[net][2]
    assert torch.isfinite(y).all()
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-4)  # Softmax output


# --------------------------------------------------------- synthetic weights vs OpenCV ----

def synthetic_weights(net: str, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Seeded float32 weights of the right shapes that keep activations finite and alive.

    Convolution/InnerProduct weights He-scaled, small biases; BatchNorm mean small, variance in
    [0.5, 1.5], scale factor 1; Scale gamma in [0.5, 1], beta small.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32
    t, spec = table(net), ninport.load_spec(deploy(net))
    weights = {}
    for layer in spec.layers:
        shapes = t.layers[layer.name].params
        if not shapes:
            continue
        if layer.type == "BatchNorm":
            c = shapes[0]
            arrays = [rng.uniform(-0.1, 0.1, c), rng.uniform(0.5, 1.5, c), np.ones(1)]
        elif layer.type == "Scale":
            arrays = [rng.uniform(0.5, 1.0, shapes[0])] + [rng.uniform(-0.1, 0.1, s) for s in shapes[1:]]
        else:
            weight = rng.standard_normal(shapes[0], dtype=f32)
            weight *= f32(math.sqrt(2.0 / math.prod(shapes[0][1:])))
            arrays = [weight] + [rng.uniform(-0.05, 0.05, s) for s in shapes[1:]]
        weights[layer.name] = [np.ascontiguousarray(a, dtype="<f4") for a in arrays]
    return weights


def write_caffemodel(path: Path, net: str, weights: dict[str, list[np.ndarray]]) -> None:
    """A caffemodel (NetParameter, current format) holding `weights` for reference net `net`."""
    spec = ninport.load_spec(deploy(net))
    write_blobs(path, weights, {layer.name: layer.type for layer in spec.layers}, net_name=f"{net}_synthetic")


def opencv_forward(prototxt: Path, weights: Path, x: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
    """OpenCV forwards by layer name: ask for the last layer writing each blob (see test_opencv_crosscheck)."""
    cv2 = pytest.importorskip("cv2")
    model = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    model.setInput(x)
    spec = ninport.load_spec(prototxt)
    names = set(model.getLayerNames())
    wanted = []
    for blob in blobs:
        producer = next(layer for layer in reversed(spec.layers) if blob in layer.tops)
        wanted.append(producer.name if producer.name in names else blob)
    return {b: np.asarray(v) for b, v in zip(blobs, model.forward(wanted))}


def _opencv_4x():
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__}: written against OpenCV 4.x's Caffe importer")


# Extra intermediate blobs compared against OpenCV (blobs no later in-place layer rewrites, or the
# last in-place writer is asked for).
INTERMEDIATE = {
    "bvlc_alexnet": ["pool2", "pool5"],
    "bvlc_googlenet": ["pool1/3x3_s2", "inception_3b/output", "pool4/3x3_s2"],
    "vgg16": ["pool3"],
    "resnet50": ["pool1", "res3d", "pool5"],
    "squeezenet_v1.1": ["pool3", "fire9/concat"],
    "mobilenet_v1": ["conv2_2/sep", "pool6"],
}


# VGG-16 takes ~12 s on 2 CPU cores (138M synthetic weights written, read twice, 15.5 GMAC run twice):
# marked slow, so `-m "not slow"` leaves it out. The others take 0.3-6 s.
@pytest.mark.parametrize("net", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg16" else n for n in NETS])
def test_synthetic_weights_match_opencv(net, tmp_path):
    _opencv_4x()
    size = SIZE[net]
    weights_path = tmp_path / f"{net}.caffemodel"
    write_caffemodel(weights_path, net, synthetic_weights(net))
    rng = np.random.default_rng(size)
    x = (rng.uniform(0, 255, (1, 3, size, size)) - 117.0).astype(np.float32)  # BGR 0-255, mean-subtracted
    if net == "mobilenet_v1":
        x *= np.float32(0.017)
    logits, out, out_shape = OUTPUT[net]
    blobs = INTERMEDIATE[net] + [logits, out]
    expected = opencv_forward(deploy(net), weights_path, x, blobs)
    module = quiet_load(deploy(net), weights_path, input_shape=(1, 3, size, size))
    got = ninport.forward_blobs(module, torch.from_numpy(x))
    for blob in blobs:
        a, e = got[blob].numpy(), expected[blob]
        assert a.shape == e.shape, f"{net}: blob {blob!r} shape {a.shape} vs OpenCV {e.shape}"
        assert np.isfinite(e).all() and float(np.abs(e).max()) > 1e-3, f"{net}: {blob!r} died out or overflowed"
        err = relative_error(a, e)
        assert err <= 1e-4, f"{net}: blob {blob!r} relative error {err:.3g} vs OpenCV"
    assert got[out].shape == out_shape


# --------------------------------------------------------- ONNX of every classic net ----

@pytest.mark.parametrize("net", [n for n in NETS if n != "vgg16"])  # VGG16's 550 MB file: skipped for time
def test_onnx_export_runs_with_torch_numbers(net, tmp_path):
    """LRN, Concat, BatchNorm+Scale, depthwise convs and ceil pooling all survive the ONNX trip."""
    from ninport.export.artifacts import verify_onnx
    from ninport.export.onnx import export_onnx

    size = SIZE[net]
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, net, synthetic_weights(net))
    module = quiet_load(deploy(net), weights, input_shape=(1, 3, size, size))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    path = export_onnx(module, tmp_path / "net.onnx")
    got = verify_onnx(path, {next(iter(ninport.describe(module).inputs)): x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).detach().numpy()
    assert relative_error(got, expected) <= 1e-4


# ---------------------------------------------------------------- SSD detectors (the SSD fork's layers) ----

# (net, feature maps feeding PriorBox with (blob, head prefix, H, W, priors per cell), classes, keep_top_k)
DETECTORS = {
    # OpenCV's res10 face detector: conv8_2_h and conv9_2_h keep 5x5 (3x3 stride 1 pad 1), so 8,892 priors,
    # not SSD300's 8,732; mbox_priorbox is 1x2x35568 as OpenCV reports for res10_300x300_ssd_iter_140000.
    # The published file names the heads of blob conv6_2_h `conv6_2_mbox_*` (the caffemodel's names).
    "opencv_face_detector": ([("conv4_3_norm", "conv4_3_norm", 38, 38, 4), ("fc7", "fc7", 19, 19, 6),
                              ("conv6_2_h", "conv6_2", 10, 10, 6), ("conv7_2_h", "conv7_2", 5, 5, 6),
                              ("conv8_2_h", "conv8_2", 5, 5, 4), ("conv9_2_h", "conv9_2", 5, 5, 4)], 2, 200),
    # chuanqi305's MobileNet-SSD: 1,917 priors.
    "mobilenet_ssd": ([(blob, blob, h, w, p) for blob, h, w, p in [
        ("conv11", 19, 19, 3), ("conv13", 10, 10, 6), ("conv14_2", 5, 5, 6), ("conv15_2", 3, 3, 6),
        ("conv16_2", 2, 2, 6), ("conv17_2", 1, 1, 6)]], 21, 100),
}
PRIOR_TOTAL = {"opencv_face_detector": 8892, "mobilenet_ssd": 1917}


def _with_clip(tmp_path: Path) -> Path:
    """The shipped file as OpenCV's later revision has it (opencv/opencv#14938): `clip: 1`, threshold 0.2."""
    text = deploy("opencv_face_detector").read_text()
    assert "    confidence_threshold: 0.01\n" in text and "clip: 1" not in text
    path = tmp_path / "deploy_clip.prototxt"
    path.write_text(text.replace("    confidence_threshold: 0.01\n", "    confidence_threshold: 0.2\n    clip: 1\n"))
    return path


@pytest.mark.parametrize("net", sorted(DETECTORS))
def test_detector_readme_names_input_mean_scale_and_labels(net):
    text = (MODELS / net / "README.md").read_text()
    for fact in ("300", "mean", "scale", "label"):
        assert fact in text.lower(), f"{net}/README.md does not mention {fact}"
    labels = (MODELS / net / "labels.txt").read_text().splitlines()
    assert len(labels) == DETECTORS[net][1]


@pytest.mark.parametrize("net", sorted(DETECTORS))
def test_detector_priors_and_head_shapes(net):
    maps, classes, _ = DETECTORS[net]
    shapes = infer_shapes(ninport.load_spec(deploy(net))).blobs
    for source, head, height, width, per_cell in maps:
        assert shapes[source][2:] == (height, width), source
        assert shapes[f"{head}_mbox_priorbox"] == (1, 2, height * width * per_cell * 4)
        assert shapes[f"{head}_mbox_conf"][1] == per_cell * classes
        assert shapes[f"{head}_mbox_loc"][1] == per_cell * 4
    total = sum(h * w * p for _, _, h, w, p in maps)
    assert total == PRIOR_TOTAL[net]
    assert shapes["mbox_priorbox"] == (1, 2, total * 4)
    assert shapes["mbox_loc"] == (1, total * 4)
    assert shapes["mbox_conf_flatten"] == (1, total * classes)


def _detector_input(seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (1, 3, 300, 300)).astype(np.float32))


@pytest.mark.parametrize("variant", ["opencv_face_detector", "opencv_face_detector_clip", "mobilenet_ssd"])
def test_detector_converts_and_runs_in_onnxruntime(variant, tmp_path):
    import onnxruntime as ort

    net = variant.replace("_clip", "")
    prototxt = _with_clip(tmp_path) if variant.endswith("_clip") else deploy(net)
    module = quiet_load(prototxt)
    description = ninport.describe(module)
    clip = [layer for layer in description.layers if layer.type == "DetectionOutput"]
    assert len(clip) == 1 and description.outputs == ("detection_out",)
    assert module.get_submodule(clip[0].module).settings.clip == (variant == "opencv_face_detector_clip")
    x = _detector_input()
    with torch.no_grad():
        rows = module(x).numpy()
    keep_top_k = DETECTORS[net][2]
    assert rows.ndim == 4 and rows.shape[:2] == (1, 1) and rows.shape[3] == 7 and 1 <= rows.shape[2] <= keep_top_k
    path = ninport.export_onnx(module, tmp_path / f"{variant}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_rows,) = session.run(None, {"data": x.numpy()})
    assert onnx_rows.shape == rows.shape
    np.testing.assert_allclose(onnx_rows, rows, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("net", sorted(DETECTORS))
def test_detector_heads_match_opencv(net, tmp_path):
    """With seeded weights in a caffemodel, the priors and both heads agree with OpenCV 4.x's importer."""
    _opencv_4x()
    from ninport.caffe.weights import random_weights

    spec = ninport.load_spec(deploy(net))
    weights = random_weights(infer_shapes(spec), spec, seed=3)
    path = write_blobs(tmp_path / "synthetic.caffemodel", weights)
    module = quiet_load(deploy(net), path)
    x = _detector_input(1)
    ours = ninport.forward_blobs(module, x)
    names = ["mbox_priorbox", "mbox_loc", "mbox_conf_flatten"]
    theirs = opencv_forward(deploy(net), path, x.numpy(), names)
    for name in names:
        assert relative_error(ours[name].numpy(), theirs[name].reshape(ours[name].shape)) <= 1e-4, name


# ---------------------------------------------------------------- declared preprocessing ----

ALL_MODELS = sorted(p.parent.name for p in MODELS.glob("*/deploy.prototxt"))
# OpenPose declares a 1x1 placeholder and outputs keypoint maps: `predict` (a classifier's or detector's
# preprocessing at the declared size) does not apply; its README gives OpenPose's own preprocessing. The
# colorization net takes the L channel of a Lab image (no preprocess file can say so; its README does), and
# Faster R-CNN's two inputs are checked in tests/test_reference_faster_rcnn.py.
PREDICT_MODELS = [net for net in ALL_MODELS if net not in ("openpose_coco", "colorization", "faster_rcnn_vgg16")]


@pytest.mark.parametrize("net", PREDICT_MODELS)
def test_preprocess_file_fits_the_net_and_says_what_the_readme_says(net):
    """Each reference model declares its preprocessing, so `predict` has nothing to guess and nothing to warn."""
    from ninport.apps.detect import is_detector
    from ninport.apps.preprocess import preprocess_file_for, read_preprocess_file

    declared = read_preprocess_file(preprocess_file_for(deploy(net)))
    spec = ninport.load_spec(deploy(net))
    (shape,) = spec.inputs.values()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre = ninport.resolve_preprocessing(deploy(net), shape, spec.preprocess, declared=declared,
                                            detector=is_detector(spec))
    assert pre.subtracts_mean and pre.declared and not pre.warn_on_squash
    readme = (MODELS / net / "README.md").read_text()
    assert "deploy.preprocess.json" in readme
    for value in (*pre.mean_values, pre.scale, pre.crop or pre.resize[0]):
        assert f"{value:g}" in readme or str(value) in readme, f"{net}: {value} is not in its README"
