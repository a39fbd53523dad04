"""The checked-in caffe_pb2.py must match proto/caffe.proto and BVLC numbering."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO_ROOT / "ninport" / "caffe" / "caffe_pb2.py"
PROTO = REPO_ROOT / "proto" / "caffe.proto"


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "_ninport_generate_proto", REPO_ROOT / "tools" / "generate_proto.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_module_matches_regenerated(tmp_path):
    gen = _load_generator()
    # Interpreter with the pinned grpcio-tools; override to use a side venv.
    python = os.environ.get("NINPORT_PROTOGEN_PYTHON", sys.executable)
    try:
        gen.check_generator(python)
    except gen.GeneratorUnavailable as exc:
        pytest.skip(f"pinned proto generator ({gen.PINNED_REQUIREMENT}) unavailable: {exc}")
    out = gen.generate(tmp_path / "caffe_pb2.py", PROTO, python)
    assert out.read_bytes() == CHECKED_IN.read_bytes(), (
        "ninport/caffe/caffe_pb2.py is stale; run: python tools/generate_proto.py"
    )


# (message, field) -> BVLC Caffe field number.  Binary .caffemodel files
# depend on these; they must never change.
BVLC_FIELD_NUMBERS = {
    ("BlobShape", "dim"): 1,
    ("BlobProto", "shape"): 7,
    ("BlobProto", "data"): 5,
    ("BlobProto", "double_data"): 8,
    ("BlobProto", "double_diff"): 9,
    ("BlobProto", "num"): 1,
    ("BlobProto", "width"): 4,
    ("NetParameter", "layer"): 100,
    ("NetParameter", "layers"): 2,
    ("NetParameter", "input_dim"): 4,
    ("NetParameter", "input_shape"): 8,
    ("LayerParameter", "blobs"): 7,
    ("LayerParameter", "param"): 6,
    ("LayerParameter", "phase"): 10,
    ("LayerParameter", "convolution_param"): 106,
    ("LayerParameter", "pooling_param"): 121,
    ("LayerParameter", "inner_product_param"): 117,
    ("LayerParameter", "batch_norm_param"): 139,
    ("LayerParameter", "scale_param"): 142,
    ("LayerParameter", "input_param"): 143,
    ("LayerParameter", "swish_param"): 147,
    ("LayerParameter", "clip_param"): 148,
    ("ConvolutionParameter", "dilation"): 18,
    ("ConvolutionParameter", "stride"): 6,
    ("PoolingParameter", "round_mode"): 13,
    ("PoolingParameter", "global_pooling"): 12,
    ("V1LayerParameter", "blobs"): 6,
    ("V1LayerParameter", "blobs_lr"): 7,
    ("V1LayerParameter", "weight_decay"): 8,
    ("V1LayerParameter", "param"): 1001,
    ("V1LayerParameter", "layer"): 1,
    ("V0LayerParameter", "blobs"): 50,
    ("V0LayerParameter", "blobs_lr"): 51,
    ("V0LayerParameter", "weight_decay"): 52,
    ("V0LayerParameter", "concat_dim"): 65,
    ("V0LayerParameter", "hdf5_output_param"): 1001,
}


# (message, field) -> the number the fork that introduced it uses (checked in the fork's caffe.proto:
# weiliu89/caffe branch ssd, NVIDIA/caffe, rbgirshick/caffe-fast-rcnn, hszhao/PSPNet, OpenCV's
# opencv-caffe.proto). Binary files written by those forks depend on them.
FORK_FIELD_NUMBERS = {
    ("LayerParameter", "permute_param"): 202,
    ("LayerParameter", "prior_box_param"): 203,
    ("LayerParameter", "detection_output_param"): 204,
    ("LayerParameter", "norm_param"): 206,
    ("LayerParameter", "bn_param"): 152,
    ("DetectionOutputParameter", "nms_param"): 4,
    ("DetectionOutputParameter", "save_output_param"): 5,
    ("DetectionOutputParameter", "code_type"): 6,
    ("DetectionOutputParameter", "keep_top_k"): 7,
    ("DetectionOutputParameter", "variance_encoded_in_target"): 8,
    ("DetectionOutputParameter", "confidence_threshold"): 9,
    ("DetectionOutputParameter", "clip"): 1000,
    ("NonMaximumSuppressionParameter", "eta"): 3,
    ("PriorBoxParameter", "offset"): 13,
    ("PriorBoxParameter", "step"): 10,
    ("NormalizeParameter", "eps"): 4,
    ("DropoutParameter", "scale_train"): 2,
    ("BlobProto", "raw_data_type"): 10,
    ("BlobProto", "raw_data"): 12,
    ("BNParameter", "frozen"): 5,
}


@pytest.mark.parametrize("msg,field", sorted(FORK_FIELD_NUMBERS))
def test_fork_field_numbers(msg, field):
    from ninport.caffe import caffe_pb2

    desc = getattr(caffe_pb2, msg).DESCRIPTOR
    assert desc.fields_by_name[field].number == FORK_FIELD_NUMBERS[(msg, field)]


def test_fork_enums_and_defaults():
    from ninport.caffe import caffe_pb2

    assert caffe_pb2.FLOAT16 == 2 and caffe_pb2.FLOAT == 1 and caffe_pb2.DOUBLE == 0
    assert caffe_pb2.PriorBoxParameter.CENTER_SIZE == 2
    assert caffe_pb2.PoolingParameter().ceil_mode is True
    assert caffe_pb2.DropoutParameter().scale_train is True
    assert caffe_pb2.DetectionOutputParameter().keep_top_k == -1
    # ceil_mode must not share PR 3057's number 13 with round_mode (opposite 0/1 meaning).
    pool = caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name
    assert pool["ceil_mode"].number != pool["round_mode"].number


@pytest.mark.parametrize("msg,field", sorted(BVLC_FIELD_NUMBERS))
def test_bvlc_field_numbers(msg, field):
    from ninport.caffe import caffe_pb2

    desc = getattr(caffe_pb2, msg).DESCRIPTOR
    assert desc.fields_by_name[field].number == BVLC_FIELD_NUMBERS[(msg, field)]


def test_bvlc_types_and_defaults():
    from google.protobuf.descriptor import FieldDescriptor as FD

    from ninport.caffe import caffe_pb2

    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert blob["num"].type == FD.TYPE_INT32  # int32 in BVLC (forks use int64)
    assert blob["double_data"].type == FD.TYPE_DOUBLE
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].type == FD.TYPE_INT64
    assert caffe_pb2.PoolingParameter.CEIL == 0 and caffe_pb2.PoolingParameter.FLOOR == 1
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL
    assert caffe_pb2.ConvolutionParameter().group == 1
    assert caffe_pb2.V1LayerParameter.CONVOLUTION == 4
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39
    assert caffe_pb2.TEST == 1


def test_binary_and_text_round_trip():
    from google.protobuf import text_format

    from ninport.caffe import caffe_pb2

    net = text_format.Parse(
        'name: "t" layer { name: "c" type: "Convolution" '
        "convolution_param { num_output: 4 kernel_size: 3 } "
        "blobs { shape { dim: 4 dim: 1 dim: 3 dim: 3 } data: 1.5 } } "
        'layers { name: "old" type: CONVOLUTION blobs_lr: 1 }',
        caffe_pb2.NetParameter(),
    )
    data = net.SerializeToString()
    again = caffe_pb2.NetParameter.FromString(data)
    assert again == net and again.SerializeToString() == data
    assert text_format.Parse(text_format.MessageToString(again), caffe_pb2.NetParameter()) == net


def test_checked_in_descriptor_matches_proto_file(tmp_path):
    """Whatever protoc is installed: the schema compiled from proto/caffe.proto must equal the one
    embedded in the checked-in module, so an edit to either alone fails here."""
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) provides protoc")
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    from ninport.caffe import caffe_pb2

    out = tmp_path / "caffe.desc"
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{include}",
                      f"--descriptor_set_out={out}", str(PROTO)])
    assert rc == 0, "protoc failed to compile proto/caffe.proto"
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    embedded = descriptor_pb2.FileDescriptorProto.FromString(caffe_pb2.DESCRIPTOR.serialized_pb)

    def normalized(file_proto):
        """Drop what protoc versions print differently: json_name, float default spelling."""
        import struct

        for message in file_proto.message_type:
            stack = [message]
            while stack:
                m = stack.pop()
                for f in m.field:
                    f.ClearField("json_name")
                    if f.type == f.TYPE_FLOAT and f.HasField("default_value"):
                        bits = struct.pack("<f", float(f.default_value))
                        f.default_value = bits.hex()
                stack.extend(m.nested_type)
        return file_proto

    assert normalized(compiled) == normalized(embedded), (
        "ninport/caffe/caffe_pb2.py is stale; run: python tools/generate_proto.py")
