"""Independent cross-check against OpenCV 4.x's own Caffe importer (cv2.dnn.readNetFromCaffe).

OpenCV shares no code with ninport and no code with BVLC Caffe, so agreement here is a third
opinion beside the real-Caffe golden fixtures. Where OpenCV is known to be unfaithful to Caffe the
case is listed in OPENCV_EXCLUSIONS with the reason; a test checks that each exclusion is still
needed, so a fixed OpenCV shows up instead of silently shrinking coverage.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.conftest import NIN_DEPLOY, GoldenCase, golden_case_names, load_golden, relative_error

cv2 = pytest.importorskip("cv2")
if int(cv2.__version__.split(".")[0]) >= 5:
    pytest.skip(f"OpenCV {cv2.__version__}: these checks are written against OpenCV 4.x's Caffe importer "
                "(5.x reworked the dnn engine and its Caffe support); install opencv-python-headless<5",
                allow_module_level=True)

import ninport  # noqa: E402
from ninport.caffe import caffe_pb2  # noqa: E402
from tests.caffe_files import write_caffemodel  # noqa: E402

TOLERANCE = 1e-5
# Golden cases where OpenCV 4.x is not a faithful reference (found by running every case through
# OpenCV 4.14 and comparing with the real-Caffe blobs). Caffe is right in each of these.
OPENCV_EXCLUSIONS: dict[str, str] = {
    "act_clip": "OpenCV 4.x cannot create a Caffe Clip layer",
    "act_threshold": "OpenCV 4.x cannot create a Caffe Threshold layer",
    "batchnorm_eps_bias": "OpenCV 4.x cannot create a Caffe Bias layer",
    "act_log": "OpenCV's Log layer ignores base/scale/shift (relative error ~1 against Caffe)",
    "lrn_across": "OpenCV's LRN ignores lrn_param.k != 1 (relative error ~0.5 against Caffe)",
    "innerproduct_axis2_transpose": "OpenCV mishandles InnerProduct axis != 1 with transpose: true "
                                    "(relative error ~1 against Caffe)",
    "pool_kernel_over_input": "OpenCV 4.14 refuses a pooling kernel larger than the padded input (a negative "
                              "output size), which Caffe accepts while its ceil formula stays positive",
    "conv_pool_1x1": "OpenCV 4.14 refuses the 2x2 stride-2 pool of a 1x1 blob that Caffe accepts (it computes "
                     "a negative output size); OpenPose's apps only run it after setting a real input size",
    "pool_edges": "OpenCV 4.14 drops a last pooling window starting in the padding per axis, Caffe on both axes "
                  "once either pads: ave_pad_h_only comes out 4x3 where Caffe makes 4x2",
}


def _quiet_load(prototxt, weights=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(prototxt, weights, **kw)


def _opencv_net(prototxt, weights=None):
    return cv2.dnn.readNetFromCaffe(str(prototxt), str(weights)) if weights else cv2.dnn.readNetFromCaffe(str(prototxt))


def _opencv_output_names(net, prototxt, blobs: list[str]) -> list[str]:
    """OpenCV forwards by layer name, not blob name: ask for the last layer writing each blob.

    Two OpenCV quirks: a Convolution layer is renamed after its top blob, and asking for a blob
    name that is also a layer name returns that layer's output *before* later in-place layers.
    """
    spec = ninport.load_spec(prototxt)
    layer_names = set(net.getLayerNames())
    names = []
    for blob in blobs:
        producer = next(layer for layer in reversed(spec.layers) if blob in layer.tops)
        name = producer.name if producer.name in layer_names else blob
        index = producer.tops.index(blob)
        names.append(name if index == 0 else f"{name}.{index}")
    return names


def run_opencv(prototxt, weights, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    net = _opencv_net(prototxt, weights)
    for name, array in inputs.items():
        net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    results = net.forward(_opencv_output_names(net, prototxt, outputs))
    return {blob: np.asarray(value) for blob, value in zip(outputs, results)}


def run_ninport(prototxt, weights, inputs: dict[str, np.ndarray], outputs: list[str], **kw) -> dict[str, np.ndarray]:
    module = _quiet_load(prototxt, weights, **kw)
    blobs = ninport.forward_blobs(module, *[torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()])
    return {name: blobs[name].numpy() for name in outputs}


def test_golden_case_matches_opencv(golden_case: GoldenCase):
    case = golden_case
    if case.name in OPENCV_EXCLUSIONS:
        pytest.skip(f"OpenCV is not a faithful reference here: {OPENCV_EXCLUSIONS[case.name]}")
    inputs, outputs = case.inputs(), case.info["outputs"]
    expected = run_opencv(case.prototxt, case.weights, inputs, outputs)
    actual = run_ninport(case.prototxt, case.weights, inputs, outputs)
    for blob in outputs:
        a, e = actual[blob], expected[blob]
        assert a.shape == e.shape, f"{case.name}: blob {blob!r} shape {a.shape} vs OpenCV {e.shape}"
        err = relative_error(a, e)
        assert err <= TOLERANCE, f"{case.name}: blob {blob!r} relative error {err:.3g} vs OpenCV"


@pytest.mark.parametrize("name", sorted(OPENCV_EXCLUSIONS))
def test_opencv_exclusion_still_needed(name):
    """Each exclusion must still hold: OpenCV fails, or disagrees with the real-Caffe blobs."""
    assert name in golden_case_names(), f"exclusion {name!r} names no golden case"
    case = load_golden(name)
    inputs, outputs = case.inputs(), case.info["outputs"]
    try:
        got = run_opencv(case.prototxt, case.weights, inputs, outputs)
    except cv2.error:
        return
    caffe = case.blobs()
    worst = max(relative_error(got[b].reshape(caffe[b].shape), caffe[b]) if got[b].size == caffe[b].size
                else float("inf") for b in outputs)
    assert worst > 1e-3, (f"OpenCV now agrees with Caffe on {name} (relative error {worst:.3g}): "
                          "drop it from OPENCV_EXCLUSIONS")


# ---- a net whose weights come from no fixture: the shipped NIN deploy with synthetic weights ----

def _nin_param_shapes(prototxt) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """(layer name, type, blob shapes) for each Convolution, read from the prototxt text directly."""
    from google.protobuf import text_format

    net = text_format.Parse(open(prototxt).read(), caffe_pb2.NetParameter())
    channels: dict[str, int] = {}
    out = []
    for layer in net.layer:
        if layer.type == "Input":
            channels[layer.top[0]] = layer.input_param.shape[0].dim[1]
        elif layer.type == "Convolution":
            p = layer.convolution_param
            k = p.kernel_size[0]
            c_in = channels[layer.bottom[0]]
            out.append((layer.name, layer.type, [(p.num_output, c_in // max(p.group, 1), k, k), (p.num_output,)]))
            channels[layer.top[0]] = p.num_output
        else:
            channels[layer.top[0]] = channels[layer.bottom[0]]
    return out


@pytest.fixture(scope="module")
def synthetic_nin(tmp_path_factory):
    """The NIN deploy prototxt plus a caffemodel written here with seeded He-scaled random weights."""
    rng = np.random.default_rng(20240517)
    weights_by_layer, types = {}, {}
    for name, type_, shapes in _nin_param_shapes(NIN_DEPLOY):
        fan_in = int(np.prod(shapes[0][1:]))
        weight = rng.standard_normal(shapes[0]).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        bias = rng.uniform(-0.05, 0.05, shapes[1]).astype(np.float32)
        weights_by_layer[name], types[name] = [weight, bias], type_
    folder = tmp_path_factory.mktemp("synthetic_nin")
    weights = write_caffemodel(folder / "nin_synthetic.caffemodel", weights_by_layer, types,
                               net_name="nin_imagenet_synthetic")
    # The 227 crop for OpenCV: the same net with its Input layer edited (ninport takes input_shape).
    text = NIN_DEPLOY.read_text()
    assert text.count("dim: 224") == 2, "NIN deploy prototxt changed: update the 227 edit"
    deploy_227 = folder / "deploy_227.prototxt"
    deploy_227.write_text(text.replace("dim: 224", "dim: 227"))
    return NIN_DEPLOY, deploy_227, weights


@pytest.mark.parametrize("size", [224, 227])
def test_nin_synthetic_weights_match_opencv(synthetic_nin, size):
    deploy, deploy_227, weights = synthetic_nin
    rng = np.random.default_rng(size)
    x = (rng.uniform(0, 255, (1, 3, size, size)) - 117.0).astype(np.float32)  # BGR 0-255, mean-subtracted
    outputs = ["pool4"]
    cv_prototxt = deploy if size == 224 else deploy_227
    expected = run_opencv(cv_prototxt, weights, {"data": x}, outputs)["pool4"]
    actual = run_ninport(deploy, weights, {"data": x}, outputs, input_shape=(1, 3, size, size))["pool4"]
    assert actual.shape == expected.shape == (1, 1000, 1, 1)
    assert np.isfinite(expected).all() and float(np.abs(expected).max()) > 1e-3, "synthetic activations died out"
    err = relative_error(actual, expected)
    assert err <= 1e-4, f"NIN at {size}: relative error {err:.3g} vs OpenCV"
