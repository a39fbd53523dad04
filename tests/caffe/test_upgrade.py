"""V0/V1 upgrade, phase rules, data layers as inputs, Caffe's output order."""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe.spec import build_netspec, layer_included, load_netspec
from ninport.caffe.upgrade import net_format, upgrade_net

from tests.conftest import NIN_DEPLOY, NIN_TRAIN_VAL, VENDORED_GOLDEN

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'


def spec_of(text: str, **kwargs):
    net = text_format.Parse(text, pb2.NetParameter())
    return build_netspec(net, "t.prototxt", **kwargs)


def rule_layer(rules: str):
    return text_format.Parse(f'name: "x" type: "ReLU" {rules}', pb2.LayerParameter())


@pytest.mark.parametrize("rules,phase,stages,level,included", [
    ("", pb2.TEST, set(), 0, True),
    ("include { phase: TEST }", pb2.TEST, set(), 0, True),
    ("include { phase: TRAIN }", pb2.TEST, set(), 0, False),
    ("include { phase: TRAIN }", pb2.TRAIN, set(), 0, True),
    ("exclude { phase: TEST }", pb2.TEST, set(), 0, False),
    ("exclude { phase: TRAIN }", pb2.TEST, set(), 0, True),
    ("include { stage: \"deploy\" }", pb2.TEST, set(), 0, False),
    ("include { stage: \"deploy\" }", pb2.TEST, {"deploy"}, 0, True),
    ("include { not_stage: \"deploy\" }", pb2.TEST, {"deploy"}, 0, False),
    ("include { min_level: 1 }", pb2.TEST, set(), 0, False),
    ("include { min_level: 1 }", pb2.TEST, set(), 2, True),
    ("include { max_level: 1 }", pb2.TEST, set(), 2, False),
    ("include { phase: TRAIN } include { phase: TEST }", pb2.TEST, set(), 0, True),
])
def test_phase_rules(rules, phase, stages, level, included):
    assert layer_included(rule_layer(rules), phase, level, stages) is included


def test_train_only_layers_are_dropped_at_test_and_losses_kept_at_train():
    text = INPUT + (
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
        'layer { name: "t" type: "Sigmoid" bottom: "r" top: "t" include { phase: TRAIN } }\n'
        'layer { name: "acc" type: "Accuracy" bottom: "r" bottom: "r" top: "acc" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "r" bottom: "r" top: "loss" }\n')
    spec = spec_of(text)
    assert [layer.name for layer in spec.layers] == ["r"]
    assert spec.outputs == ["r"]
    assert [layer.name for layer in spec_of(text, phase=pb2.TRAIN).layers] == ["r", "t", "acc", "loss"]


def test_data_layer_becomes_input_with_crop_size():
    spec = load_netspec(NIN_TRAIN_VAL)
    assert spec.inputs == {"data": (1, 3, 224, 224)}
    assert spec.preprocess.crop_size == 224 and spec.preprocess.mirror is False  # the TEST layer
    assert "label" not in spec.outputs and spec.outputs == ["pool4"]


def test_image_data_layer_grey_and_resize():
    text = ('layer { name: "d" type: "ImageData" top: "data" top: "label" '
            'image_data_param { source: "x" is_color: false new_height: 20 new_width: 30 } }\n'
            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert spec_of(text).inputs == {"data": (1, 1, 20, 30)}


def test_legacy_data_transform_fields_are_moved():
    text = ('layer { name: "d" type: "Data" top: "data" data_param { source: "x" crop_size: 17 mirror: true } }\n'
            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    spec = spec_of(text)
    assert spec.inputs == {"data": (1, 3, 17, 17)} and spec.preprocess.crop_size == 17


def test_output_order_is_sorted_unconsumed_blobs():
    text = INPUT + ('layer { name: "z" type: "ReLU" bottom: "data" top: "zeta" }\n'
                    'layer { name: "a" type: "Sigmoid" bottom: "data" top: "alpha" }\n'
                    'layer { name: "m" type: "TanH" bottom: "data" top: "mid" }\n'
                    'layer { name: "m2" type: "ReLU" bottom: "mid" top: "mid" }\n')
    assert spec_of(text).outputs == ["alpha", "mid", "zeta"]


def test_input_fields_become_an_input_layer():
    text = 'input: "a"\ninput_shape { dim: 1 dim: 2 }\ninput: "b"\ninput_shape { dim: 1 dim: 2 }\n' \
           'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" }\n'
    spec = spec_of(text)
    assert spec.inputs == {"a": (1, 2), "b": (1, 2)}


@pytest.mark.parametrize("case,fmt", [("legacy_v0", "V0"), ("legacy_v1", "V1"), ("mini_resnet", "current")])
def test_formats_upgrade_to_current(case, fmt):
    net = text_format.Parse((VENDORED_GOLDEN / case / "net.prototxt").read_text(), pb2.NetParameter())
    assert net_format(net) == fmt
    upgraded = upgrade_net(net)
    assert net_format(upgraded) == "current" and not len(upgraded.layers) and not len(upgraded.input)
    assert all(layer.type for layer in upgraded.layer)
    # upgrading twice changes nothing
    assert upgrade_net(upgraded) == upgraded


def test_v0_layer_parameters_carry_over():
    spec = load_netspec(VENDORED_GOLDEN / "legacy_v0" / "net.prototxt")
    conv = spec.layer("conv1")
    assert conv.type == "Convolution"
    p = conv.proto.convolution_param
    assert (p.num_output, list(p.kernel_size), list(p.stride), list(p.pad)) == (4, [3], [2], [1])
    assert spec.layer("pool1").proto.pooling_param.pool == pb2.PoolingParameter.AVE
    assert spec.source_format == "V0"


def test_v0_padding_layer_is_folded_into_conv():
    text = ('input: "data"\ninput_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5\n'
            'layers { layer { name: "pad" type: "padding" pad: 2 } bottom: "data" top: "padded" }\n'
            'layers { layer { name: "conv" type: "conv" num_output: 2 kernelsize: 3 } '
            'bottom: "padded" top: "conv" }\n')
    spec = spec_of(text)
    assert [layer.name for layer in spec.layers] == ["conv"]
    assert spec.layers[0].bottoms == ["data"]
    assert list(spec.layers[0].proto.convolution_param.pad) == [2]


def test_v1_blobs_lr_become_param_specs():
    spec = load_netspec(VENDORED_GOLDEN / "legacy_v1" / "net.prototxt")
    conv = spec.layer("conv1").proto
    assert [p.lr_mult for p in conv.param] == [1, 2]


def test_nin_deploy_and_train_val_agree():
    deploy, train_val = load_netspec(NIN_DEPLOY), load_netspec(NIN_TRAIN_VAL)
    assert train_val.source_format == "V1"
    assert [l.type for l in deploy.layers] == [l.type for l in train_val.layers]


def test_error_lines_point_at_v0_layers(tmp_path):
    from ninport.errors import ShapeError
    from ninport.api import load

    text = (VENDORED_GOLDEN / "legacy_v0" / "net.prototxt").read_text().replace("num_output: 5", "num_output: 0")
    path = tmp_path / "v0.prototxt"
    path.write_text(text)
    with pytest.raises(ShapeError, match=r'v0\.prototxt:\d+: layer "fc"'):
        load(path)
