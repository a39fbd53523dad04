"""Shape inference with Caffe's rounding rules: the NIN table at 224 and 227, parameter counts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ninport.caffe import caffe_pb2 as pb2
from ninport.build.shapes import infer_shapes, supported_types
from ninport.caffe.geometry import pool_output_size
from ninport.caffe.spec import load_netspec

from tests.conftest import NIN_DEPLOY, NIN_TRAIN_VAL

NIN_PARAMS = 7_595_176
SPATIAL = ["data", "conv1", "pool0", "pool2", "pool3", "pool4"]


def spatial_chain(table) -> list[int]:
    return [table.blobs[b][2] for b in SPATIAL]


@pytest.mark.parametrize("path", [NIN_DEPLOY, NIN_TRAIN_VAL], ids=["deploy", "train_val"])
def test_nin_shape_table_224(path):
    table = infer_shapes(load_netspec(path))
    assert spatial_chain(table) == [224, 54, 27, 13, 6, 1]
    assert table.blobs["pool4"] == (1, 1000, 1, 1)
    assert table.total_params == NIN_PARAMS


@pytest.mark.parametrize("path", [NIN_DEPLOY, NIN_TRAIN_VAL], ids=["deploy", "train_val"])
def test_nin_shape_table_227(path):
    spec = load_netspec(path)
    table = infer_shapes(spec.with_input_shapes({"data": (1, 3, 227, 227)}))
    assert spatial_chain(table) == [227, 55, 27, 13, 6, 1]
    assert table.total_params == NIN_PARAMS


def test_nin_channels_and_weights():
    table = infer_shapes(load_netspec(NIN_DEPLOY))
    assert table.blobs["conv1"] == (1, 96, 54, 54)
    assert table.blobs["conv4"] == (1, 1024, 6, 6)
    assert table.layers["conv1"].params == [(96, 3, 11, 11), (96,)]
    assert table.total_macs > 0


def test_batch_size_override_scales_blobs_not_params():
    spec = load_netspec(NIN_DEPLOY).with_input_shapes({"data": (8, 3, 224, 224)})
    table = infer_shapes(spec)
    assert table.blobs["pool4"] == (8, 1000, 1, 1)
    assert table.total_params == NIN_PARAMS


@pytest.mark.parametrize("size,kernel,pad,stride,ceil,expected", [
    (54, 3, 0, 2, True, 27),   # NIN pool0: ceil keeps the last window
    (55, 3, 0, 2, True, 27),
    (13, 3, 0, 2, True, 6),
    (6, 6, 0, 1, True, 1),
    (5, 3, 1, 2, True, 3),     # padded, nothing to drop
    (3, 2, 1, 2, True, 2),     # ceil gives 3 windows; the last starts at in + pad (in the padding): dropped
    (7, 3, 2, 3, True, 3),     # ceil gives 4; the last starts at 9 >= in + pad = 9: dropped
    (54, 3, 0, 2, False, 26),
])
def test_pool_output_size(size, kernel, pad, stride, ceil, expected):
    assert pool_output_size(size, kernel, pad, stride, ceil) == expected


def test_supported_types_cover_the_common_layers():
    types = set(supported_types())
    assert {"Convolution", "Pooling", "InnerProduct", "ReLU", "LRN", "Concat", "Eltwise",
            "BatchNorm", "Scale", "Softmax", "Dropout"} <= types


def test_total_activation_memory_is_bounded(tmp_path):
    """Each blob is under the per-blob limit, but 40 of them add up to more than ninport accepts."""
    import ninport
    from ninport.build.shapes import MAX_BLOB_ELEMENTS, MAX_TOTAL_ACTIVATIONS

    side = 32768  # 1 x 1 x 32768 x 32768 = 2^30 elements per blob
    assert side * side <= MAX_BLOB_ELEMENTS and 40 * side * side > MAX_TOTAL_ACTIVATIONS
    layers = "".join(f'layer {{ name: "r{i}" type: "AbsVal" bottom: "{"data" if i == 0 else f"r{i-1}"}" top: "r{i}" }}\n'
                     for i in range(40))
    net = tmp_path / "tall.prototxt"
    net.write_text(f'input: "data"\ninput_shape {{ dim: 1 dim: 1 dim: {side} dim: {side} }}\n' + layers)
    spec = ninport.load_spec(net)
    with pytest.raises(ninport.ShapeError, match=r'layer "r\d+" \(AbsVal\): the net\'s activations reach'):
        infer_shapes(spec)


def _net(tmp_path, body: str, shape=(1, 3, 8, 8)):
    dims = " ".join(f"dim: {d}" for d in shape)
    net = tmp_path / "net.prototxt"
    net.write_text(f'input: "data"\ninput_shape {{ {dims} }}\n' + body)
    return net


def test_every_unconvertible_layer_is_reported_in_one_error(tmp_path):
    import ninport

    net = _net(tmp_path, 'layer { name: "a" type: "FancyNorm" bottom: "data" top: "a" }\n'
                         'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n'
                         'layer { name: "c" type: "OtherThing" bottom: "b" top: "c" }\n')
    with pytest.raises(ninport.UnsupportedLayerError) as info:
        infer_shapes(ninport.load_spec(net))
    message = str(info.value)
    assert message.startswith("2 layers cannot be converted")
    assert 'net.prototxt:3: layer "a" (FancyNorm)' in message and 'net.prototxt:5: layer "c" (OtherThing)' in message
    assert "\n" not in message


@pytest.mark.parametrize("layer_type, param", [("Flatten", ""), ("Reshape", "reshape_param { shape { dim: 0 dim: -1 } }")])
def test_in_place_layers_that_change_the_shape_are_refused(tmp_path, layer_type, param):
    """Caffe refuses Flatten/Reshape in place; converting it silently gave another model."""
    import ninport

    net = _net(tmp_path, f'layer {{ name: "f" type: "{layer_type}" bottom: "data" top: "data" {param} }}\n')
    with pytest.raises(ninport.ShapeError, match=r'layer "f" \(\w+\): computes in place .* changes the shape'):
        infer_shapes(ninport.load_spec(net))


@pytest.mark.parametrize("body", [
    'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
    'convolution_param { num_output: 1 kernel_size: 1 pad: 20000 } }',
    'layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 2147483647 } }',
    'layer { name: "n" type: "LRN" bottom: "data" top: "n" '
    'lrn_param { local_size: 2147483647 norm_region: WITHIN_CHANNEL } }',
    'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10000000 } }',
])
def test_what_conversion_would_allocate_is_bounded_up_front(tmp_path, body):
    """Refused by shape inference, before any tensor exists (these once allocated up to 19 GB)."""
    import tracemalloc

    import ninport

    net = _net(tmp_path, body + "\n", shape=(1, 3, 16, 16))
    tracemalloc.start()
    with pytest.raises(ninport.ShapeError, match=r"implausibly large|more than the"):
        infer_shapes(ninport.load_spec(net))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20


# --- bottom and top counts, as Caffe's Layer::CheckBlobCounts checks them -----------------------------

BLOB_COUNTS = Path(__file__).resolve().parents[1] / "fixtures" / "caffe-blob-counts"
COUNTS_REFUSED = "Caffe refuses this net"


def _counts_net(layer_type: str, params: str, bottoms: int, tops: int) -> str:
    """The one-layer net make_blob_counts.py ran through Caffe: four 2x3x4x4 inputs, `bottoms` of them used."""
    shapes = "shape { dim: 2 dim: 3 dim: 4 dim: 4 } " * 4
    links = "".join(f'bottom: "d{i}" ' for i in range(bottoms)) + "".join(f'top: "t{i}" ' for i in range(tops))
    return (f'layer {{ name: "data" type: "Input" top: "d0" top: "d1" top: "d2" top: "d3" input_param {{ {shapes}}} }}\n'
            f'layer {{ name: "x" type: "{layer_type}" {links}{params} }}\n')


def _caffe_count_cases() -> list:
    cases = []
    for kind in ("bvlc", "ssd"):
        recorded = json.loads((BLOB_COUNTS / f"{kind}.json").read_text())
        for key, rows in recorded["counts"].items():
            for bottoms, tops, accepted in rows:
                cases.append(pytest.param(key.split("/")[0], recorded["params"][key], bottoms, tops, accepted,
                                          id=f"{kind}-{key}-{bottoms}b{tops}t"))
    return cases


@pytest.mark.parametrize("layer_type, params, bottoms, tops, caffe_accepts", _caffe_count_cases())
def test_bottom_and_top_counts_are_checked_as_caffe_checks_them(tmp_path, layer_type, params, bottoms, tops,
                                                                 caffe_accepts):
    """Every count of 0-4 bottoms and 0-3 tops, against what real Caffe (BVLC, and SSD for its layers) accepted:
    ninport refuses with the count message exactly where Caffe's count check refused. Where Caffe accepted,
    ninport may still refuse for another reason (a convolution with two bottoms, a missing parameter).
    Caffe gives a loss layer without a top an anonymous one; ninport's reader refuses every layer without a top."""
    import ninport

    net = tmp_path / "net.prototxt"
    net.write_text(_counts_net(layer_type, params, bottoms, tops))
    try:
        infer_shapes(load_netspec(net, phase=pb2.TRAIN))
        message = None
    except ninport.NinportError as exc:
        message = str(exc)
    if tops == 0 and caffe_accepts:  # a loss layer: Caffe adds an anonymous top
        assert message is not None and "has no top" in message
        return
    if caffe_accepts:
        assert message is None or COUNTS_REFUSED not in message, message
    elif tops == 0 and "has no top" in (message or ""):  # the reader's refusal came first
        assert f'layer "x" ({layer_type})' in message
    else:
        assert message is not None and COUNTS_REFUSED in message, message
        assert f'{net}:2: layer "x" ({layer_type}): has ' in message


def test_every_builtin_type_declares_its_counts_and_fixtures_cover_caffes_types():
    """Each BVLC and SSD type ninport converts is in the real-Caffe count fixtures; fork types cite headers.
    The layers that become net inputs are there too, but for those the Caffe build could not construct
    without a database or OpenCV (Data, ImageData, ...): their counts come from the headers."""
    from ninport.caffe.spec import SOURCE_LAYER_COUNTS
    from ninport.registry import BlobCounts, all_layer_types

    recorded = set()
    for kind in ("bvlc", "ssd"):
        recorded |= {key.split("/")[0] for key in json.loads((BLOB_COUNTS / f"{kind}.json").read_text())["counts"]}
    builtin = {r.name: r for r in all_layer_types() if not callable(r.converter) and r.dialect is None}
    caffe_types = {name for name, r in builtin.items() if r.origin in ("BVLC Caffe", "SSD fork (weiliu89/caffe ssd)")}
    assert caffe_types == recorded - set(SOURCE_LAYER_COUNTS)
    assert {"Input", "MemoryData", "HDF5Data", "DummyData"} <= recorded
    undeclared = sorted(name for name, r in builtin.items() if r.counts == BlobCounts())
    assert undeclared == ["ShuffleChannel"]  # its header declares no counts: Caffe checks none


@pytest.mark.parametrize("layer_type, tops, message", [
    ("ReLU", 'top: "a" top: "b"', 'layer "r" (ReLU): has 2 tops, but a Caffe ReLU layer produces exactly 1 top'),
    ("Sigmoid", 'top: "a" top: "b"', 'layer "r" (Sigmoid): has 2 tops, but a Caffe Sigmoid layer produces exactly 1 top'),
    ("Split", 'top: "a" top: "b"', None),
])
def test_a_neuron_layer_with_two_tops_is_refused_naming_it(tmp_path, layer_type, tops, message):
    """Issue 18 item 3: at batch 2 a ReLU with tops a and b converted to a model where a and b were
    images 0 and 1 of the batch (its shape rule repeated the bottom shape per top)."""
    import ninport

    net = _net(tmp_path, f'layer {{ name: "r" type: "{layer_type}" bottom: "data" {tops} }}\n', shape=(2, 3, 4, 4))
    if message is None:
        assert infer_shapes(ninport.load_spec(net)).blobs["b"] == (2, 3, 4, 4)
        return
    with pytest.raises(ninport.ShapeError) as info:
        infer_shapes(ninport.load_spec(net))
    assert str(info.value) == f"{net}:3: {message}; Caffe refuses this net"


def test_a_plugin_declares_its_counts(tmp_path):
    import ninport

    ninport.register_layer("TwoInOneOut", shape=lambda layer, shapes: [shapes[0]], module=lambda ctx: None,
                           bottoms=2, tops=(1, lambda layer: 1))
    try:
        net = _net(tmp_path, 'layer { name: "p" type: "TwoInOneOut" bottom: "data" top: "p" }\n')
        with pytest.raises(ninport.ShapeError, match='layer "p" .*has 1 bottom, but a Caffe TwoInOneOut layer takes '
                                                     "exactly 2 bottoms"):
            infer_shapes(ninport.load_spec(net))
        with pytest.raises(ninport.NinportError, match="bottoms must be a count"):
            ninport.register_layer("Bad", shape=lambda layer, shapes: shapes, module=lambda ctx: None, bottoms=-1)
    finally:
        ninport.unregister_layer("TwoInOneOut")


def test_the_shape_rules_give_caffes_shape_for_every_golden_blob(golden_case):
    """What `inspect` prints and the build checks: every blob's shape as real Caffe made it (the automatic
    split copies have their source's shape)."""
    table = infer_shapes(load_netspec(golden_case.prototxt))
    checked = 0
    for blob, shape in golden_case.info["blobs"].items():
        if blob in table.blobs:
            assert tuple(table.blobs[blob]) == tuple(shape), blob
            checked += 1
    assert checked >= len(golden_case.info["outputs"])
