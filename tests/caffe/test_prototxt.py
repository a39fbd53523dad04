"""The prototxt reader: fork files parse, typed fork fields land typed, unknown fields are kept per
layer with their dotted paths, syntax errors say file:line:col, and parsing stays linear."""
from __future__ import annotations

import math
import re
import time

import pytest
from google.protobuf import text_format

from ninport.caffe import caffe_pb2 as pb2
from ninport.caffe import io
from ninport.caffe.prototxt import MAX_NESTING_DEPTH, parse_message
from ninport.caffe.spec import load_netspec
from ninport.errors import ParseError
from tests.caffe_files import input_layer
from tests.conftest import within
from tests.peak_rss import peak_rss_growth

# An excerpt in the style of OpenCV's res10 SSD face detector deploy.prototxt (written from the
# published architecture: conv4_3 → Normalize → loc/conf heads → Permute/Flatten, PriorBox,
# DetectionOutput). The published file writes `clip: false` in prior_box_param and `clip: 1`
# (OpenCV's field) in detection_output_param.
FACE_DETECTOR = """\
input: "data"
input_shape { dim: 1 dim: 3 dim: 300 dim: 300 }

layer {
  name: "conv4_3"
  type: "Convolution"
  bottom: "data"
  top: "conv4_3"
  convolution_param { num_output: 8 pad: 1 kernel_size: 3 }
}
layer {
  name: "conv4_3_norm"
  type: "Normalize"
  bottom: "conv4_3"
  top: "conv4_3_norm"
  norm_param {
    across_spatial: false
    scale_filler {
      type: "constant"
      value: 10
    }
    channel_shared: false
  }
}
layer {
  name: "conv4_3_norm_mbox_loc"
  type: "Convolution"
  bottom: "conv4_3_norm"
  top: "conv4_3_norm_mbox_loc"
  convolution_param { num_output: 16 pad: 1 kernel_size: 3 }
}
layer {
  name: "conv4_3_norm_mbox_loc_perm"
  type: "Permute"
  bottom: "conv4_3_norm_mbox_loc"
  top: "conv4_3_norm_mbox_loc_perm"
  permute_param {
    order: 0
    order: 2
    order: 3
    order: 1
  }
}
layer {
  name: "conv4_3_norm_mbox_priorbox"
  type: "PriorBox"
  bottom: "conv4_3_norm"
  bottom: "data"
  top: "conv4_3_norm_mbox_priorbox"
  prior_box_param {
    min_size: 30.0
    max_size: 60.0
    aspect_ratio: 2
    flip: true
    clip: false
    variance: 0.1
    variance: 0.1
    variance: 0.2
    variance: 0.2
    step: 8
    offset: 0.5
  }
}
layer {
  name: "detection_out"
  type: "DetectionOutput"
  bottom: "conv4_3_norm_mbox_loc_perm"
  bottom: "conv4_3_norm"
  bottom: "conv4_3_norm_mbox_priorbox"
  top: "detection_out"
  include {
    phase: TEST
  }
  detection_output_param {
    num_classes: 2
    share_location: true
    background_label_id: 0
    nms_param {
      nms_threshold: 0.45
      top_k: 400
    }
    code_type: CENTER_SIZE
    keep_top_k: 200
    confidence_threshold: 0.2
    clip: 1
  }
}
"""

# PSPNet-style: Interp's interp_param (fork number 143 collides with BVLC input_param: not typed),
# the PSPNet BN layer's bn_param (typed, 152), and stray fork fields inside BVLC messages.
PSPNET = """\
name: "psp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "conv1/bn" type: "BN" bottom: "conv1" top: "conv1"
        bn_param { slope_filler { type: "constant" value: 1 } frozen: true momentum: 0.95 } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 ceil_mode: false some_fork_knob: 7 } }
layer {
  name: "interp"
  type: "Interp"
  bottom: "pool"
  top: "interp"
  interp_param {
    zoom_factor: 8
  }
}
layer { name: "up" type: "Upsample" bottom: "interp" top: "up" upsample_param { scale: 2 } mode: NEAREST }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_face_detector_typed_fork_fields(tmp_path):
    spec = load_netspec(write(tmp_path, FACE_DETECTOR))
    assert [layer.type for layer in spec.layers] == [
        "Convolution", "Normalize", "Convolution", "Permute", "PriorBox", "DetectionOutput"]
    norm = spec.layer("conv4_3_norm").proto.norm_param
    assert norm.across_spatial is False and norm.channel_shared is False
    assert norm.scale_filler.type == "constant" and norm.scale_filler.value == 10
    assert list(spec.layer("conv4_3_norm_mbox_loc_perm").proto.permute_param.order) == [0, 2, 3, 1]
    prior = spec.layer("conv4_3_norm_mbox_priorbox").proto.prior_box_param
    assert list(prior.min_size) == [30] and list(prior.max_size) == [60]
    assert prior.HasField("clip") and prior.clip is False and prior.flip is True
    assert [round(v, 6) for v in prior.variance] == [0.1, 0.1, 0.2, 0.2] and prior.step == 8
    det = spec.layer("detection_out").proto.detection_output_param
    assert det.num_classes == 2 and det.code_type == pb2.PriorBoxParameter.CENTER_SIZE
    assert det.nms_param.top_k == 400 and math.isclose(det.nms_param.nms_threshold, 0.45, rel_tol=1e-6)
    assert det.keep_top_k == 200 and det.clip is True
    assert all(layer.unknown_fields == {} for layer in spec.layers)
    # Lines point at each `layer {` even though the net starts with input fields.
    assert spec.layer("conv4_3").line == 4 and spec.layer("detection_out").line == 64


def test_face_detector_without_clip_defaults_false(tmp_path):
    spec = load_netspec(write(tmp_path, FACE_DETECTOR.replace("    clip: 1\n", "")))
    det = spec.layer("detection_out").proto.detection_output_param
    assert det.clip is False and not det.HasField("clip")


def test_pspnet_unknown_fields_kept_with_paths(tmp_path):
    spec = load_netspec(write(tmp_path, PSPNET))
    assert spec.layer("interp").unknown_fields == {"interp_param": [{"zoom_factor": [8]}]}
    pool = spec.layer("pool")
    assert pool.proto.pooling_param.ceil_mode is False  # typed
    assert pool.unknown_fields == {"pooling_param.some_fork_knob": [7]}
    up = spec.layer("up").unknown_fields
    assert up == {"upsample_param": [{"scale": [2]}], "mode": ["NEAREST"]}
    bn = spec.layer("conv1/bn").proto.bn_param
    assert bn.frozen is True and bn.slope_filler.value == 1 and math.isclose(bn.momentum, 0.95, rel_tol=1e-6)
    assert spec.layer("conv1/bn").unknown_fields == {}
    # Each unknown field knows where it was written.
    assert spec.layer("interp").unknown_field_places["interp_param"] == (14, 3)
    assert spec.layer("pool").line == 7 and spec.layer("interp").line == 9


def test_unknown_field_values_of_every_kind():
    layer = pb2.LayerParameter()
    unknown = parse_message(
        'name: "x" knob { a: 1 b: -2.5e-3 c: true d: False e: "s\\"q" f: ENUM_WORD g: -inf '
        "g: nan h: [1, 2, 3] nested: { deeper { x: 'y' } } } knob { a: 2 } flag: t",
        layer)
    assert layer.name == "x"
    [first, second] = unknown["knob"]
    assert first["a"] == [1] and first["b"] == [-2.5e-3] and first["c"] == [True] and first["d"] == [False]
    assert first["e"] == ['s"q'] and first["f"] == ["ENUM_WORD"]
    assert first["g"][0] == -math.inf and math.isnan(first["g"][1])
    assert first["h"] == [1, 2, 3] and first["nested"] == [{"deeper": [{"x": ["y"]}]}]
    assert second == {"a": [2]}
    assert unknown["flag"] == ["t"]
    assert all(type(v) is int for v in first["h"]) and type(first["b"][0]) is float


def test_syntax_forms_match_protobuf():
    """Everything protobuf's own parser accepts in Caffe files parses to the same message."""
    text = """# comment
    name: 'a' "b" 'c'   # concatenated
    layer <
      name: "n\\t\\x41\\101\\u00e9" type: "Convolution"
      bottom: ["x", "y"] top: "z";
      convolution_param: { num_output: 0x10 kernel_size: [3, 3] bias_term: True
                           weight_filler { type: "msra" std: 1e-4 min: -inf max: .5 mean: 1.5f } }
      loss_weight: 1 loss_weight: 2.
      propagate_down: t propagate_down: f propagate_down: 1
      include { phase: 1 }
      param { lr_mult: 0 }, param { lr_mult: 1 }
    >
    """
    expected = text_format.Parse(text, pb2.NetParameter())
    parsed = io.parse_prototxt(text, "t.prototxt")
    assert parsed.net == expected
    assert parsed.net.layer[0].name == "n\tAAé" and parsed.net.name == "abc"


def test_long_comment_runs_and_escape_runs_match_protobuf():
    """The tokenizer takes comment lines and string escapes in chunks (bounded regex memory): runs
    longer than a chunk, and a lone backslash right after one, read as protobuf reads them."""
    escapes = '\\"\\101\\x42\\n' * 3000  # 4 escapes each: many chunks
    text = "# a\n  \n" * 3000 + f'name: "{escapes}" \'{escapes}\'\n' + "#\n" * 2049 + 'input: "data"\n'
    expected = text_format.Parse(text, pb2.NetParameter())
    assert io.parse_prototxt(text, "t.prototxt").net == expected
    for body in ["\\n" * 1024 + "\\", "\\n" * 1023 + "\\", "\\n" * 1025 + "x\\"]:
        with pytest.raises(ParseError, match=r"^t\.prototxt:2:7: syntax error: an unterminated string$"):
            io.parse_prototxt(f'# x\nname: "{body}\n"', "t.prototxt")


def test_runs_of_digits_and_escapes_parse_in_linear_time():
    """A number's lookahead made the regex retry every shorter prefix of a digit run (8,000 digits
    took 1.4 s, quadratic), and each escape copied the rest of its string: both now take one pass."""
    with within(20, "a 2 MB digit run"):
        with pytest.raises(ParseError, match=r"^t\.prototxt:1:7: syntax error: unexpected character '1'$"):
            io.parse_prototxt("name: " + "1" * 2_000_000 + "a", "t.prototxt")
    with within(20, "a string of 500,000 escapes"):
        net = io.parse_prototxt('name: "' + "\\101" * 500_000 + '"', "t.prototxt").net
    assert net.name == "A" * 500_000


@pytest.mark.parametrize("text,where,needle", [
    ('layer {\n  name: "a"\n  type: "ReLU"\n', "4:1", "end of file"),
    ('layer {\n  name: "a" }\n}\n', "3:1", "expected a field name"),
    ('layer {\n  name: "a\n}\n', "2:9", "unterminated string"),
    ('layer { name: "a" type: "Pooling"\n pooling_param { pool: MAXIMUM } }\n', "2:24", "MAXIMUM"),
    ('layer { name: "a" convolution_param {\n num_output: -3 } }\n', "2:14", "out of range"),
    ('layer { name: "a" convolution_param {\n num_output: 1.5 } }\n', "2:14", "integer"),
    ('layer { name: "a" name: "b" }\n', "1:19", "given twice"),
    ('layer { name "a" }\n', "1:14", "expected ':'"),
    ('layer { name: "a" } @\n', "1:21", "unexpected character"),
    ('name: "x"\nlayer { name: "\\q" }\n', "2:15", "escape"),
])
def test_malformed_files_give_file_line_col(tmp_path, text, where, needle):
    path = write(tmp_path, text)
    with pytest.raises(ParseError) as info:
        load_netspec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{where}: ") and needle in message and "\n" not in message, message


def test_unknown_fields_inside_v1_and_v0_layers_survive_upgrade(tmp_path):
    v1 = ('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
          'layers {\n  name: "c" type: CONVOLUTION bottom: "data" top: "c"\n'
          '  convolution_param { num_output: 2 kernel_size: 3 fork_knob: 1 }\n  v1_only: "x"\n}\n'
          'layers { name: "r" type: RELU bottom: "c" top: "c" }\n')
    spec = load_netspec(write(tmp_path, v1))
    assert spec.source_format == "V1"
    conv = spec.layer("c")
    assert conv.unknown_fields == {"convolution_param.fork_knob": [1], "v1_only": ["x"]} and conv.line == 6
    assert spec.layer("r").line == 11
    v0 = ('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
          'layers {\n  layer { name: "c" type: "conv" num_output: 2 kernelsize: 3 v0_knob: 4 }\n'
          '  bottom: "data" top: "c"\n}\n')
    spec = load_netspec(write(tmp_path, v0, "v0.prototxt"))
    assert spec.source_format == "V0"
    assert spec.layer("c").unknown_fields == {"v0_knob": [4]} and spec.layer("c").line == 6


def test_net_level_unknown_fields_are_kept_and_never_fail(tmp_path):
    text = 'name: "n"\nfork_net_option: 3\nfork_block { a: "b" }\n' + PSPNET.split("\n", 1)[1]
    spec = load_netspec(write(tmp_path, text))
    assert spec.unknown_fields == {"fork_net_option": [3], "fork_block": [{"a": ["b"]}]}
    assert spec.with_input_shapes({"data": (1, 3, 32, 32)}).unknown_fields == spec.unknown_fields


def test_every_layer_with_unread_fork_fields_is_named_in_one_error(tmp_path):
    from ninport.build.shapes import infer_shapes, unconvertible_layers
    from ninport.errors import UnsupportedLayerError

    spec = load_netspec(write(tmp_path, PSPNET))
    problems = unconvertible_layers(spec)
    message = "; ".join(problems)
    assert "pooling_param.some_fork_knob" in message and 'layer "pool" (Pooling)' in message
    with pytest.raises(UnsupportedLayerError) as info:
        infer_shapes(spec)
    assert "\n" not in str(info.value) and str(len(problems)) in str(info.value)
    single = load_netspec(write(tmp_path, PSPNET.split("layer {\n  name: \"interp\"")[0], "one.prototxt"))
    with pytest.raises(UnsupportedLayerError, match=r"one\.prototxt:8:77: layer \"pool\" \(Pooling\)"):
        infer_shapes(single)


def test_nesting_is_bounded():
    deep = "knob { " * (MAX_NESTING_DEPTH + 5) + "}" * (MAX_NESTING_DEPTH + 5)
    with pytest.raises(ParseError, match="nesting deeper"):
        io.parse_prototxt(deep, "deep.prototxt")
    with pytest.raises(ParseError, match="nesting deeper"):  # also through known messages
        io.parse_prototxt("layer { " * (MAX_NESTING_DEPTH + 5), "deep.prototxt")
    io.parse_prototxt("knob { " * 50 + "}" * 50, "ok.prototxt")


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    path = write(tmp_path, PSPNET)
    monkeypatch.setattr(io, "MAX_PROTOTXT_BYTES", 100)
    with pytest.raises(ParseError, match=r"more than the 100 bytes allowed"):
        load_netspec(path)


def _many_layers(n: int) -> str:
    head = 'layer { name: "data" type: "Input" top: "l0" input_param { shape { dim: 1 dim: 2 } } }\n'
    body = "".join(f'layer {{\n  name: "l{i}"\n  type: "ReLU"\n  bottom: "l{i - 1}"\n  top: "l{i}"\n}}\n'
                   for i in range(1, n + 1))
    return head + body


def test_fifty_thousand_layers_parse_in_linear_time(tmp_path):
    """The old reader counted newlines from the file start per layer (quadratic: 20k layers took
    28 s). The bound is generous for a shared machine; the quadratic reader needed minutes here."""
    path = write(tmp_path, _many_layers(50_000))
    start = time.perf_counter()
    spec = load_netspec(path)
    elapsed = time.perf_counter() - start
    assert len(spec.layers) == 50_000 and spec.layers[-1].line == 2 + 6 * 49_999
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_layer_lines_is_linear_and_correct():
    text = _many_layers(3)
    assert io.layer_lines(text) == [1, 2, 8, 14]
    from pathlib import Path
    assert re.search(r"text\.count\(", Path(io.__file__).read_text()) is None


# --- memory: a small multiple of the file size, whatever the text holds --------------------------

_BIG = 60_000_000  # bytes: under the 64 MiB prototxt cap


def _write_repeated(path, head: str, unit: str, count: int, tail: str = ""):
    """head + unit * count + tail, written in pieces (the test process never holds the text)."""
    with open(path, "w") as f:
        f.write(head)
        piece = unit * max(1, (1 << 20) // len(unit))
        per_piece = len(piece) // len(unit)
        for _ in range(count // per_piece):
            f.write(piece)
        f.write(unit * (count % per_piece) + tail)
    return path


_HUGE = {  # kind -> (head, unit, tail, the error, None if the file reads)
    "spaces": ('name: "x"\n', " ", input_layer((1, 3)), None),
    "one string": ('name: "', "a", '"\n' + input_layer((1, 3)), None),
    "an unterminated string": ('name: "x"\nlayer {\n  name: "', "a", "", "{path}:3:9: syntax error: "
                               "an unterminated string"),
    "comment lines": ("", "#\n", 'name: "x" ?\n', f"{{path}}:{_BIG // 2 + 1}:11: syntax error: "
                                                  "unexpected character '?'"),
}


@pytest.fixture(scope="module")
def tiny_prototxt_growth(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("tiny"), 'name: "x"\n')
    return peak_rss_growth("ninport.caffe.io:read_prototxt", path).growth


@pytest.mark.parametrize("kind", list(_HUGE))
def test_reading_a_huge_prototxt_costs_a_small_multiple_of_its_size(tmp_path, kind, tiny_prototxt_growth):
    """The old tokenizer's regex kept a backtracking record per character of a blank run, a comment
    run or a string (~130 bytes per byte: 8 GB for a 60 MB file). Now the file's bytes and its
    text, and nothing per character, stay within 4x the file size (the error still says line:col)."""
    head, unit, tail, error = _HUGE[kind]
    path = _write_repeated(tmp_path / "net.prototxt", head, unit, _BIG // len(unit), tail)
    size = path.stat().st_size
    measured = peak_rss_growth("ninport.caffe.io:read_prototxt", path, cap=8 * size)
    assert measured.error != "MemoryError", f"more than 8x the file size ({size:,} bytes)"
    assert measured.error == (error and error.format(path=path))
    assert measured.growth - tiny_prototxt_growth <= 4 * size, \
        f"{(measured.growth - tiny_prototxt_growth) / size:.1f}x the file size"


def test_a_flood_of_message_blocks_is_refused_within_a_small_multiple_of_its_size(tmp_path, tiny_prototxt_growth):
    """Each message block costs protobuf ~750 bytes: 60 MB of `layer{}` took 5.6 GB. Past
    MAX_MESSAGE_BLOCKS the reader stops with a line:col error, long before memory grows."""
    from ninport.caffe.prototxt import MAX_MESSAGE_BLOCKS

    path = _write_repeated(tmp_path / "net.prototxt", "", "layer{}\n", _BIG // 8, "")
    size = path.stat().st_size
    measured = peak_rss_growth("ninport.caffe.io:read_prototxt", path, cap=8 * size)
    assert measured.error == (f"{path}:{MAX_MESSAGE_BLOCKS + 1}:6: more than "
                              f"{MAX_MESSAGE_BLOCKS:,} message blocks (no real net has that many)")
    assert measured.growth - tiny_prototxt_growth <= 4 * size
