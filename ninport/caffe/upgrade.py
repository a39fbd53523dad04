"""Bring any Caffe net (V0, V1 or current) to the current `layer {}` form, as Caffe's
upgrade_proto.cpp does, so that everything downstream sees one representation.

Works on caffe_pb2.NetParameter messages; copies, never edits the caller's message.
"""
from __future__ import annotations

from ninport.caffe import caffe_pb2 as pb2
from ninport.errors import ParseError

# V1LayerParameter.LayerType enum name -> current layer type string.
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling",
    "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V0 type string -> V1 enum name.
V0_TYPE_NAMES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}


def v1_type_name(value: int) -> str:
    """Current type string of a V1 enum value (as found in V1 caffemodels)."""
    try:
        return V1_TYPE_NAMES[pb2.V1LayerParameter.LayerType.Name(value)]
    except (ValueError, KeyError):
        return f"V1 type {value}"


def net_format(net: "pb2.NetParameter") -> str:
    """'V0', 'V1' or 'current': which layout a parsed net uses."""
    if any(v1.HasField("layer") for v1 in net.layers):
        return "V0"
    if len(net.layers):
        return "V1"
    return "current"


def upgrade_net(net: "pb2.NetParameter", source: str = "<net>") -> "pb2.NetParameter":
    """Return a current-format copy of `net` (V0 and V1 layers, input fields, data transforms)."""
    return upgrade_net_with_origins(net, source)[0]


def upgrade_net_with_origins(net: "pb2.NetParameter", source: str = "<net>") \
        -> tuple["pb2.NetParameter", list[int | None]]:
    """`upgrade_net`, plus for each upgraded layer the index of the source layer it came from
    (in net.layer or net.layers), or None for the Input layer made from `input:` fields; so a
    reader can carry per-layer data (line, unknown fields) across the upgrade."""
    if len(net.layer) and len(net.layers):
        raise ParseError(f"{source}: net uses both `layer` and the legacy `layers` field; "
                         "Caffe refuses this too. Use one of them.")
    out = pb2.NetParameter()
    out.CopyFrom(net)
    origins: list[int | None] = list(range(len(net.layer)))
    if net_format(net) == "V0":
        v1_layers, origins = _upgrade_v0_net(net, source)
    else:
        v1_layers = list(net.layers)
        if v1_layers:
            origins = list(range(len(v1_layers)))
    if v1_layers:
        del out.layers[:]
        del out.layer[:]
        for v1 in v1_layers:
            _upgrade_v1_layer(v1, out.layer.add(), source)
    _upgrade_data_transform(out)
    if _upgrade_input_fields(out, source):
        origins = [None] + origins
    return out, origins


# --- V0 -> V1 -------------------------------------------------------------------------------


def _upgrade_v0_net(net, source):
    """V0 connections -> V1 layers, folding V0 'padding' layers into the conv/pool after them."""
    padding_of: dict[str, tuple[int, str]] = {}  # padding layer top -> (pad, its bottom)
    v1_layers, origins = [], []
    for index, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type == "padding":
            if len(conn.bottom) != 1 or len(conn.top) != 1:
                raise ParseError(f'{source}: layer "{v0.name}": V0 padding layer needs one bottom and one top')
            padding_of[conn.top[0]] = (v0.pad, conn.bottom[0])
            continue
        v1 = pb2.V1LayerParameter()
        for bottom in conn.bottom:
            if bottom in padding_of:
                pad, real_bottom = padding_of[bottom]
                if v0.type not in ("conv", "pool"):
                    raise ParseError(f'{source}: layer "{v0.name}": V0 padding feeds a "{v0.type}" layer; '
                                     "only conv and pool can absorb it")
                v0 = _with_pad(v0, pad)
                bottom = real_bottom
            v1.bottom.append(bottom)
        v1.top.extend(conn.top)
        _upgrade_v0_layer(v0, v1, source)
        v1_layers.append(v1)
        origins.append(index)
    return v1_layers, origins


def _with_pad(v0, pad):
    copy = pb2.V0LayerParameter()
    copy.CopyFrom(v0)
    copy.pad = pad
    return copy


def _upgrade_v0_layer(v0, v1, source):
    kind = v0.type
    if kind not in V0_TYPE_NAMES:
        raise ParseError(f'{source}: layer "{v0.name}": unknown V0 layer type "{kind}"')
    v1.name = v0.name
    v1.type = pb2.V1LayerParameter.LayerType.Value(V0_TYPE_NAMES[kind])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)

    def has(f):
        return v0.HasField(f)

    conv, ip, pool = v1.convolution_param, v1.inner_product_param, v1.pooling_param
    if kind == "conv":
        if has("num_output"): conv.num_output = v0.num_output
        if has("biasterm"): conv.bias_term = v0.biasterm
        if has("weight_filler"): conv.weight_filler.CopyFrom(v0.weight_filler)
        if has("bias_filler"): conv.bias_filler.CopyFrom(v0.bias_filler)
        if has("pad"): conv.pad.append(v0.pad)
        if has("kernelsize"): conv.kernel_size.append(v0.kernelsize)
        if has("group"): conv.group = v0.group
        if has("stride"): conv.stride.append(v0.stride)
    elif kind == "innerproduct":
        if has("num_output"): ip.num_output = v0.num_output
        if has("biasterm"): ip.bias_term = v0.biasterm
        if has("weight_filler"): ip.weight_filler.CopyFrom(v0.weight_filler)
        if has("bias_filler"): ip.bias_filler.CopyFrom(v0.bias_filler)
    elif kind == "pool":
        if has("pad"): pool.pad = v0.pad
        if has("kernelsize"): pool.kernel_size = v0.kernelsize
        if has("stride"): pool.stride = v0.stride
        if has("pool"): pool.pool = v0.pool
    elif kind == "dropout":
        if has("dropout_ratio"): v1.dropout_param.dropout_ratio = v0.dropout_ratio
    elif kind == "lrn":
        lrn = v1.lrn_param
        if has("local_size"): lrn.local_size = v0.local_size
        if has("alpha"): lrn.alpha = v0.alpha
        if has("beta"): lrn.beta = v0.beta
        if has("k"): lrn.k = v0.k
    elif kind == "concat":
        if has("concat_dim"): v1.concat_param.concat_dim = v0.concat_dim
    elif kind in ("data", "images", "window_data", "hdf5_data"):
        target = {"data": v1.data_param, "images": v1.image_data_param,
                  "window_data": v1.window_data_param, "hdf5_data": v1.hdf5_data_param}[kind]
        if has("source"): target.source = v0.source
        if has("batchsize"): target.batch_size = v0.batchsize
        if kind != "hdf5_data":
            if has("scale"): v1.transform_param.scale = v0.scale
            if has("meanfile"): v1.transform_param.mean_file = v0.meanfile
            if has("cropsize"): v1.transform_param.crop_size = v0.cropsize
            if has("mirror"): v1.transform_param.mirror = v0.mirror
        if kind == "data" and has("rand_skip"): v1.data_param.rand_skip = v0.rand_skip
        if kind == "images":
            if has("shuffle_images"): v1.image_data_param.shuffle = v0.shuffle_images
            if has("new_height"): v1.image_data_param.new_height = v0.new_height
            if has("new_width"): v1.image_data_param.new_width = v0.new_width
    elif kind == "infogain_loss":
        if has("source"): v1.infogain_loss_param.source = v0.source
    elif kind == "hdf5_output":
        if has("hdf5_output_param"): v1.hdf5_output_param.CopyFrom(v0.hdf5_output_param)


# --- V1 -> current --------------------------------------------------------------------------

_LAYER_FIELDS = {f.name: f for f in pb2.LayerParameter.DESCRIPTOR.fields}


def _upgrade_v1_layer(v1, layer, source):
    layer.name = v1.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    layer.blobs.extend(v1.blobs)
    layer.type = v1_type_name(v1.type) if v1.HasField("type") else ""
    n_params = max(len(v1.param), len(v1.blobs_lr), len(v1.weight_decay), len(v1.blob_share_mode))
    for i in range(n_params):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    # Every *_param message of V1 has a same-named, same-typed twin in LayerParameter.
    for fd, value in v1.ListFields():
        if fd.name.endswith("_param") and fd.name in _LAYER_FIELDS:
            getattr(layer, fd.name).CopyFrom(value)
    if not layer.type:
        raise ParseError(f'{source}: layer "{v1.name}": has no type')


# --- data transform and input fields ---------------------------------------------------------

_DATA_PARAMS = ("data_param", "image_data_param", "window_data_param")
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _upgrade_data_transform(net):
    """Move the deprecated scale/mean_file/crop_size/mirror of data layers into transform_param."""
    for layer in net.layer:
        for pname in _DATA_PARAMS:
            if not layer.HasField(pname):
                continue
            p = getattr(layer, pname)
            for f in _TRANSFORM_FIELDS:
                if p.HasField(f):
                    setattr(layer.transform_param, f, getattr(p, f))
                    p.ClearField(f)


def _upgrade_input_fields(net, source) -> bool:
    """`input` + `input_dim`/`input_shape` -> an Input layer named "input", first in the net."""
    if not len(net.input):
        if len(net.input_dim) or len(net.input_shape):
            raise ParseError(f"{source}: input_dim/input_shape given without any `input` name")
        return False
    names = list(net.input)
    shapes: list[list[int]] = []
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise ParseError(f"{source}: {len(names)} inputs but {len(net.input_shape)} input_shape entries")
        shapes = [list(s.dim) for s in net.input_shape]
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * len(names):
            raise ParseError(f"{source}: {len(names)} inputs need {4 * len(names)} input_dim values "
                             f"(N, C, H, W each), found {len(net.input_dim)}")
        dims = list(net.input_dim)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    else:
        raise ParseError(f"{source}: input {names[0]!r} has no input_dim or input_shape")
    layer = pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for dims in shapes:
        layer.input_param.shape.add().dim.extend(dims)
    existing = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(existing)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")
    return True
