"""Every bad input ends in one clear NinportError naming the file (and layer, line where known).

Never a traceback from deep inside protobuf, numpy or torch, never a hang, never a huge allocation.
"""
from __future__ import annotations

import re
import tracemalloc
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

import ninport
from ninport.caffe import io
from ninport.caffe.spec import load_netspec
from ninport.errors import NinportError, ParseError, ShapeError, UnsupportedLayerError, WeightsError

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "caffe-golden"

# A small current-format net; each test breaks one thing in it.
NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 group: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
"""

V1_NET = (GOLDEN / "legacy_v1" / "net.prototxt").read_text()
V0_NET = (GOLDEN / "legacy_v0" / "net.prototxt").read_text()


def write(tmp_path: Path, text: str | bytes, name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def fails(exc_type, fn, *args, **kwargs) -> str:
    """Run fn, expect exactly `exc_type` (a NinportError), return its one-line message."""
    assert issubclass(exc_type, NinportError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc_type) as info:
            fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert "Traceback" not in message
    return message


def load_fails(exc_type, prototxt, weights=None, **kwargs) -> str:
    return fails(exc_type, ninport.load, prototxt, weights, **kwargs)

@contextmanager
def allocates_little(limit: int = 64 << 20):
    """Refused before anything big is allocated: Python/numpy's peak stays under `limit` bytes.
    (A memory bound, not a timing one: timings flake on shared machines.)"""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak allocation {peak:,} bytes"



# --- prototxt text ----------------------------------------------------------------------------


def test_misspelled_field_names_file_line_col_and_field(tmp_path):
    """A field caffe.proto lacks is kept (forks add fields), then refused by the layer that cannot read it."""
    path = write(tmp_path, NET.replace("kernel_size: 3 group", "kernel_size: 3 grup"))
    message = load_fails(UnsupportedLayerError, path)
    assert str(path) in message
    assert re.search(r"net\.prototxt:4:\d+", message), message
    assert "grup" in message


def test_unbalanced_brace_names_line(tmp_path):
    path = write(tmp_path, NET.replace("kernel_size: 2 stride: 2 } }", "kernel_size: 2 stride: 2 }"))
    message = fails(ParseError, load_netspec, path)
    assert re.search(r"net\.prototxt:\d+:\d+", message), message


def test_bad_enum_value_names_line_col(tmp_path):
    path = write(tmp_path, NET.replace("pool: MAX", "pool: MAXIMUM"))
    message = fails(ParseError, load_netspec, path)
    assert re.search(r"net\.prototxt:7:\d+", message) and "MAXIMUM" in message, message


def test_overlong_line_is_not_copied_whole_into_the_message(tmp_path):
    path = write(tmp_path, "input_dim: " + "9" * 5000 + "\n")
    message = fails(ParseError, load_netspec, path)
    assert len(message) < 600 and "net.prototxt:1:" in message


def test_empty_file(tmp_path):
    message = load_fails(ParseError, write(tmp_path, ""))
    assert "empty" in message and "net.prototxt" in message


def test_whitespace_and_comments_only(tmp_path):
    message = load_fails(ParseError, write(tmp_path, "# nothing here\n\n   \n"))
    assert "net.prototxt" in message and "no input" in message


def test_binary_file_given_as_prototxt(tmp_path):
    caffemodel = GOLDEN / "legacy_v1" / "weights.caffemodel"
    message = load_fails(ParseError, caffemodel)
    assert str(caffemodel) in message and "binary" in message


def test_non_utf8_text(tmp_path):
    message = fails(ParseError, load_netspec, write(tmp_path, b'name: "caf\xe9"\n'))
    assert "net.prototxt" in message and "UTF-8" in message


def test_missing_file(tmp_path):
    message = load_fails(ParseError, tmp_path / "nope.prototxt")
    assert "nope.prototxt" in message and "no such file" in message


def test_directory_instead_of_file(tmp_path):
    message = load_fails(ParseError, tmp_path)
    assert str(tmp_path) in message and "directory" in message
    message = load_fails(ParseError, write(tmp_path, NET), tmp_path)
    assert "directory" in message


def test_both_include_and_exclude(tmp_path):
    text = NET.replace('type: "ReLU" bottom: "conv1" top: "conv1"',
                       'type: "ReLU" bottom: "conv1" top: "conv1" include { phase: TEST } exclude { phase: TRAIN }')
    message = fails(ParseError, load_netspec, write(tmp_path, text))
    assert 'layer "relu1"' in message and "include" in message and "net.prototxt:5" in message


def test_layer_and_layers_mixed(tmp_path):
    text = NET + 'layers { name: "x" type: RELU bottom: "fc" top: "fc" }\n'
    message = fails(ParseError, load_netspec, write(tmp_path, text))
    assert "net.prototxt" in message and "layers" in message


def test_input_dim_count_wrong(tmp_path):
    text = 'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n' \
           'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    message = fails(ParseError, load_netspec, write(tmp_path, text))
    assert "net.prototxt" in message and "input_dim" in message


# --- connectivity -----------------------------------------------------------------------------


def test_bottom_that_no_layer_produces(tmp_path):
    path = write(tmp_path, NET.replace('bottom: "pool1" top: "fc"', 'bottom: "pool9" top: "fc"'))
    message = load_fails(ParseError, path)
    assert "'pool9'" in message and 'layer "fc"' in message and "net.prototxt:8" in message


def test_non_in_place_duplicate_top(tmp_path):
    path = write(tmp_path, NET.replace('bottom: "pool1" top: "fc"', 'bottom: "pool1" top: "conv1"'))
    message = load_fails(ParseError, path)
    assert "'conv1'" in message and 'layer "fc"' in message and "already produced" in message


def test_duplicate_layer_name_is_accepted_as_caffe_does(tmp_path):
    """Caffe does not require unique layer names (HED repeats "crop"); each layer stays its own."""
    path = write(tmp_path, NET.replace('name: "relu1"', 'name: "conv1"'))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(path)
    records = [r for r in ninport.describe(module).layers if r.name == "conv1"]
    assert [(r.type, r.module) for r in records] == [("Convolution", "conv1"), ("ReLU", "conv1_2")]


def test_no_input_at_all(tmp_path):
    message = load_fails(ParseError, write(tmp_path, 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n'))
    assert "net.prototxt" in message and "no input" in message


# --- shapes and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("dims", ["dim: -1 dim: 4", "dim: 0 dim: 4", "dim: 1 dim: 0"])
def test_negative_or_zero_input_dimension(tmp_path, dims):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("dim: 1 dim: 4", dims)))
    assert "net.prototxt" in message and "'data'" in message and "positive" in message


def test_negative_num_output_is_a_parse_error(tmp_path):
    # num_output is unsigned in caffe.proto: protobuf itself refuses it, with the position.
    message = load_fails(ParseError, write(tmp_path, NET.replace("num_output: 8", "num_output: -8")))
    assert re.search(r"net\.prototxt:4:\d+", message) and "-8" in message


def test_zero_num_output(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("num_output: 5", "num_output: 0")))
    assert 'layer "fc"' in message and "num_output" in message


@pytest.mark.parametrize("layer,old,new", [
    ("fc", "num_output: 5", "num_output: 2000000000"),
    ("conv1", "num_output: 8 kernel_size: 3 group: 2", "num_output: 2000000000 kernel_size: 3"),
])
def test_absurd_num_output_fails_before_allocating_naming_the_layer(tmp_path, layer, old, new):
    path = write(tmp_path, NET.replace(old, new))
    with allocates_little():
        message = load_fails(ShapeError, path)
    assert f'layer "{layer}"' in message and "2,000,000,000" in message.replace("2000000000", "2,000,000,000")


def test_absurd_input_size_fails_before_allocating(tmp_path):
    path = write(tmp_path, NET.replace("dim: 12 dim: 12", "dim: 1000000 dim: 1000000"))
    with allocates_little():
        message = load_fails(ShapeError, path)
    assert "'data'" in message


def test_absurd_input_shape_override_fails_before_allocating(tmp_path):
    with allocates_little():
        load_fails(ShapeError, write(tmp_path, NET), input_shape=(1, 4, 10 ** 6, 10 ** 6))
        load_fails(ShapeError, write(tmp_path, NET), input_shape="1,4,-3,12")


def test_total_weights_implausible(tmp_path):
    # Each weight blob alone is under the per-blob limit; together they are not.
    layers = "".join(
        f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "data" top: "fc{i}" '
        f"inner_product_param {{ num_output: 2000000 }} }}\n" for i in range(4))
    text = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1000 } } }\n' + layers
    with allocates_little():
        message = load_fails(ShapeError, write(tmp_path, text))
    assert 'layer "fc' in message


def test_pooling_stride_far_past_input_fails_before_padding(tmp_path):
    # pad 0, stride >> kernel: Caffe keeps a last window far past the input; the padded input
    # that window implies would be ~68 GB.
    text = NET.replace("pool: MAX kernel_size: 2 stride: 2", "pool: MAX kernel_size: 2 stride: 2000000000")
    with allocates_little():
        message = load_fails(ShapeError, write(tmp_path, text))
    assert 'layer "pool1"' in message


def test_group_not_dividing_channels(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("group: 2", "group: 3")))
    assert 'layer "conv1"' in message and "group 3" in message and "net.prototxt:3" in message


def test_group_zero(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("group: 2", "group: 0")))
    assert 'layer "conv1"' in message and "group" in message


def test_pooling_output_size_not_positive(tmp_path):
    # Caffe takes ceil((10 + 2 - 20) / 2) + 1 = -3 and refuses it; a kernel larger than the input is not the reason
    path = write(tmp_path, NET.replace("kernel_size: 2 stride: 2", "kernel_size: 20 stride: 2 pad: 1"))
    message = load_fails(ShapeError, path)
    assert 'layer "pool1"' in message and "on a 10x10 input gives output size -3x-3" in message


def test_conv_kernel_larger_than_input(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("kernel_size: 3 group", "kernel_size: 30 group")))
    assert 'layer "conv1"' in message


def test_output_shape_collapses_to_zero(tmp_path):
    # 12 -> conv 3 -> 10 -> pool 2/2 -> 5 -> a 5x5 conv gives 1x1 -> a 2x2 pool cannot fit.
    text = NET.replace('layer { name: "fc"', 'layer { name: "conv2" type: "Convolution" bottom: "pool1" '
                       'top: "conv2" convolution_param { num_output: 3 kernel_size: 5 stride: 9 } }\n'
                       'layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" '
                       'convolution_param { num_output: 3 kernel_size: 2 } }\nlayer { name: "fc"')
    message = load_fails(ShapeError, write(tmp_path, text))
    assert 'layer "conv3"' in message


def test_reshape_to_zero_elements(tmp_path):
    text = NET + ('layer { name: "r" type: "Reshape" bottom: "fc" top: "r" '
                  'reshape_param { shape { dim: 0 dim: 0 dim: 0 } } }\n')
    message = load_fails(ShapeError, write(tmp_path, text))
    assert 'layer "r"' in message


def test_exp_and_log_bases_caffe_refuses(tmp_path):
    text = NET + 'layer { name: "e" type: "Exp" bottom: "fc" top: "e" exp_param { base: -2 } }\n'
    assert 'layer "e"' in load_fails(ShapeError, write(tmp_path, text))
    text = NET + 'layer { name: "l" type: "Log" bottom: "fc" top: "l" log_param { base: 1 } }\n'
    assert 'layer "l"' in load_fails(ShapeError, write(tmp_path, text))


def test_stride_beyond_caffe_int(tmp_path):
    text = NET.replace("kernel_size: 2 stride: 2", "kernel_size: 2 stride: 2147483648 pad: 1")
    assert 'layer "pool1"' in load_fails(ShapeError, write(tmp_path, text))
    text = NET.replace("kernel_size: 3 group: 2", "kernel_size: 3 group: 2 stride: 4294967295")
    assert 'layer "conv1"' in load_fails(ShapeError, write(tmp_path, text))


def test_negative_batchnorm_eps(tmp_path):
    text = NET + 'layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "fc" batch_norm_param { eps: -1 } }\n'
    assert 'layer "bn"' in load_fails(ShapeError, write(tmp_path, text))


def test_scale_without_bottom(tmp_path):
    text = NET + 'layer { name: "sc" type: "Scale" top: "sc" }\n'
    assert 'layer "sc"' in load_fails(ShapeError, write(tmp_path, text))


# --- unsupported layers ------------------------------------------------------------------


def test_unsupported_layer_type_lists_supported(tmp_path):
    path = write(tmp_path, NET.replace('type: "ReLU"', 'type: "FancyNorm"'))
    message = load_fails(UnsupportedLayerError, path)
    assert 'layer "relu1"' in message and "'FancyNorm'" in message and "net.prototxt:5" in message
    assert "supported types:" in message and "Convolution" in message and "Pooling" in message


def test_stochastic_pooling_unsupported(tmp_path):
    message = load_fails(UnsupportedLayerError, write(tmp_path, NET.replace("pool: MAX", "pool: STOCHASTIC")))
    assert 'layer "pool1"' in message and "STOCHASTIC" in message


# --- each format with a bad layer --------------------------------------------------------


def test_current_format_bad_layer(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, NET.replace("group: 2", "group: 5")))
    assert 'layer "conv1"' in message and "net.prototxt:3" in message


def test_v1_format_bad_layer(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, V1_NET.replace("group: 3", "group: 4")))
    assert 'layer "conv1" (Convolution)' in message and "net.prototxt:4" in message


def test_v1_format_unknown_enum(tmp_path):
    message = fails(ParseError, load_netspec, write(tmp_path, V1_NET.replace("type: LRN", "type: FANCY")))
    assert re.search(r"net\.prototxt:5:\d+", message) and "FANCY" in message


def test_v1_format_unsupported_layer(tmp_path):
    message = load_fails(UnsupportedLayerError, write(tmp_path, V1_NET.replace("type: LRN", "type: IM2COL")))
    assert 'layer "norm1"' in message and "Im2col" in message


def test_v0_format_bad_layer(tmp_path):
    message = load_fails(ShapeError, write(tmp_path, V0_NET.replace("kernelsize: 3\n    stride: 2\n    pad: 1",
                                                                    "kernelsize: 30\n    stride: 2\n    pad: 1")))
    assert 'layer "conv1"' in message and "net.prototxt" in message


def test_v0_format_unknown_type(tmp_path):
    message = fails(ParseError, load_netspec, write(tmp_path, V0_NET.replace('type: "relu"', 'type: "fancy"')))
    assert 'layer "relu1"' in message and '"fancy"' in message and "net.prototxt" in message


def test_v0_padding_feeding_a_non_conv(tmp_path):
    text = V0_NET.replace('layers {\n  layer {\n    name: "relu1"',
                          'layers {\n  layer {\n    name: "pad1"\n    type: "padding"\n    pad: 1\n  }\n'
                          '  bottom: "conv1"\n  top: "padded"\n}\nlayers {\n  layer {\n    name: "relu1"')
    text = text.replace('    type: "relu"\n  }\n  bottom: "conv1"', '    type: "relu"\n  }\n  bottom: "padded"')
    message = fails(ParseError, load_netspec, write(tmp_path, text))
    assert 'layer "relu1"' in message and "padding" in message


# --- caffemodels -------------------------------------------------------------------------


@pytest.fixture
def v1_case(tmp_path):
    proto = write(tmp_path, V1_NET)
    weights = (GOLDEN / "legacy_v1" / "weights.caffemodel").read_bytes()
    return proto, weights


def test_truncated_caffemodel(tmp_path, v1_case):
    proto, data = v1_case
    for cut in (1, 10, len(data) // 3, len(data) // 2, len(data) - 1):
        weights = write(tmp_path, data[:cut], "w.caffemodel")
        message = load_fails(NinportError, proto, weights)
        assert "w.caffemodel" in message, message


def test_random_bytes_caffemodel(tmp_path, v1_case):
    import numpy as np

    proto, _ = v1_case
    rng = np.random.default_rng(7)
    for _ in range(20):
        weights = write(tmp_path, rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes(),
                        "w.caffemodel")
        message = load_fails(NinportError, proto, weights)
        assert "w.caffemodel" in message, message


def test_empty_caffemodel(tmp_path, v1_case):
    proto, _ = v1_case
    message = load_fails(ParseError, proto, write(tmp_path, b"", "w.caffemodel"))
    assert "w.caffemodel" in message and "empty" in message


def test_prototxt_given_as_caffemodel(tmp_path, v1_case):
    proto, _ = v1_case
    message = load_fails(ParseError, proto, proto)
    assert str(proto) in message
    message = fails(ParseError, io.read_caffemodel, GOLDEN / "mini_resnet" / "net.prototxt")
    assert "net.prototxt" in message


def test_huge_length_prefix_is_not_allocated(tmp_path):
    # field 100 (layer), length varint of 2**62: must fail as truncated, at once.
    data = bytes([0xA2, 0x06]) + b"\xff" * 8 + b"\x3f"
    with allocates_little():
        message = fails(ParseError, io.read_caffemodel, write(tmp_path, data, "w.caffemodel"))
    assert "w.caffemodel" in message


def test_overlong_varint(tmp_path):
    message = fails(ParseError, io.read_caffemodel, write(tmp_path, b"\xff" * 20, "w.caffemodel"))
    assert "w.caffemodel" in message


def test_weights_of_another_net(tmp_path, v1_case):
    proto, _ = v1_case
    message = load_fails(WeightsError, proto, GOLDEN / "mini_resnet" / "weights.caffemodel")
    assert "another net" in message and "weights.caffemodel" in message


def test_weights_whose_shapes_do_not_fit(tmp_path, v1_case):
    _, weights = v1_case
    proto = write(tmp_path, V1_NET.replace("num_output: 6", "num_output: 9"))
    weights_path = write(tmp_path, weights, "w.caffemodel")
    message = load_fails(WeightsError, proto, weights_path)
    assert 'layer "conv1"' in message and "w.caffemodel" in message
    assert "[6, 1, 3, 3]" in message and "[9, 1, 3, 3]" in message


def test_weights_shapes_after_input_change(tmp_path, v1_case):
    # A bigger input changes the fc layer's K: the caffemodel's fc weight no longer fits.
    proto, weights = v1_case
    message = load_fails(WeightsError, proto, write(tmp_path, weights, "w.caffemodel"),
                         input_shape=(2, 3, 20, 20))
    assert 'layer "fc"' in message and "[1, 1, 5, 96]" in message and "[5, 486]" in message


def test_blob_count_mismatch(tmp_path, v1_case):
    _, weights = v1_case
    proto = write(tmp_path, V1_NET.replace("num_output: 6 kernel_size: 3",
                                           "num_output: 6 bias_term: false kernel_size: 3"))
    message = load_fails(WeightsError, proto, write(tmp_path, weights, "w.caffemodel"))
    assert 'layer "conv1"' in message and "2 blobs" in message and "implies 1" in message


def test_missing_layer_weights(tmp_path, v1_case):
    _, weights = v1_case
    proto = write(tmp_path, V1_NET + 'layers { name: "fc2" type: INNER_PRODUCT bottom: "prob" top: "fc2" '
                                     'inner_product_param { num_output: 3 } }\n')
    message = load_fails(WeightsError, proto, write(tmp_path, weights, "w.caffemodel"))
    assert 'layer "fc2"' in message and "no weights" in message


def test_weights_for_a_layer_that_has_none(tmp_path, v1_case):
    """The caffemodel holds blobs for `norm1`, an LRN (no weights in Caffe): refused, naming both types.
    Every weighted layer still finds its weights, so only the weightless-layer check can fire."""
    from ninport.caffe import caffe_pb2 as pb2

    proto, weights = v1_case
    net = pb2.NetParameter.FromString(weights)
    layers = net.layers if len(net.layers) else net.layer
    conv = next(layer for layer in layers if layer.name == "conv1")
    norm = next((layer for layer in layers if layer.name == "norm1"), None)
    if norm is None:
        norm = layers.add()
        norm.name = "norm1"
        norm.type = pb2.V1LayerParameter.LRN if layers is net.layers else "LRN"
    norm.blobs.extend(conv.blobs)
    message = load_fails(WeightsError, proto, write(tmp_path, net.SerializeToString(), "w.caffemodel"))
    assert 'layer "norm1"' in message and "2 blobs" in message and "has no weights" in message


def test_blob_data_count_disagrees_with_its_shape(tmp_path):
    """A blob whose BlobShape says 2x3 but holds 5 floats: refused before any tensor."""
    from ninport.caffe import caffe_pb2 as pb2

    net = pb2.NetParameter()
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    layer.blobs.add().data.extend([0.0, 0.0])
    layer.blobs[1].shape.dim.append(2)
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            'inner_product_param { num_output: 2 } }\n')
    message = load_fails(WeightsError, write(tmp_path, text),
                         write(tmp_path, net.SerializeToString(), "w.caffemodel"))
    assert 'layer "fc"' in message and "6" in message and "5" in message


def test_read_caffemodel_rejects_directory_and_missing(tmp_path):
    assert "directory" in fails(ParseError, io.read_caffemodel, tmp_path)
    assert "no such file" in fails(ParseError, io.read_caffemodel, tmp_path / "x.caffemodel")


def test_caffemodel_as_prototxt_via_proto_reader(tmp_path):
    message = fails(ParseError, io.read_caffemodel_proto, write(tmp_path, b"\xff\xff\xff", "w.caffemodel"))
    assert "w.caffemodel" in message


# --- found by the fuzz suite ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Split", "Slice"])
def test_single_top_split_or_slice_runs(tmp_path, kind):
    import torch

    text = NET + f'layer {{ name: "s" type: "{kind}" bottom: "fc" top: "s" }}\n' \
                 'layer { name: "r" type: "ReLU" bottom: "s" top: "r" }\n'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(write(tmp_path, text))
    out = module(torch.zeros(1, 4, 12, 12))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5)


def test_python_layer_is_explained(tmp_path):
    text = NET + ('layer { name: "py" type: "Python" bottom: "fc" top: "py" '
                  'python_param { module: "my_layers" layer: "Custom" } }\n')
    message = fails(ninport.UnsupportedLayerError, ninport.load, write(tmp_path, text))
    assert 'layer "py" (Python)' in message and "my_layers.Custom" in message


def test_syntax_error_reads_file_line_col_colon(tmp_path):
    path = write(tmp_path, 'name: "x"\nlayer {\n  name: "c" typo_field: 3\n}\n')
    message = fails(ninport.ParseError, ninport.load_spec, path)
    assert message.startswith(f"{path}:3:") and " : " not in message
