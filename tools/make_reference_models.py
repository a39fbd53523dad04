#!/usr/bin/env python3
"""Write the deploy prototxts of the classic Caffe Model Zoo nets under reference_models/.

Each net is written in the layout of its published deploy file: the same layer and blob
names, the same parameters, in-place ReLU/BatchNorm/Scale/Dropout where the original has
them, and the input declared the way the original declares it (an Input layer, or the
legacy `input:` + `input_dim`/`input_shape` fields, or V1 `layers {}` for VGG-16).
The layer lists are generated because most of these nets are long repetitions of one block;
the prototxts are checked in as well, and tests/test_reference_models.py asserts that running
this script reproduces them byte for byte.

    python tools/make_reference_models.py            # (re)write every file
    python tools/make_reference_models.py --check    # exit 1 if a checked-in file differs

Sources the facts were taken from (names, shapes, fields; no text was copied):
  bvlc_alexnet     BVLC/caffe models/bvlc_alexnet/deploy.prototxt (Input-layer version)
  bvlc_googlenet   BVLC/caffe models/bvlc_googlenet/deploy.prototxt (Input-layer version)
  vgg16            K. Simonyan's VGG_ILSVRC_16_layers_deploy.prototxt (gist 211839e770f7b538e2d8, V1 format)
  resnet50         KaimingHe/deep-residual-networks prototxt/ResNet-50-deploy.prototxt
  squeezenet_v1.1  DeepScale/SqueezeNet SqueezeNet_v1.1/deploy.prototxt
  mobilenet_v1     shicai/MobileNet-Caffe mobilenet_deploy.prototxt
  openpose_coco    CMU-Perceptual-Computing-Lab/openpose models/pose/coco/pose_deploy_linevec.prototxt
                   (OpenPose's files are under OpenPose's non-commercial licence: only the architecture
                   facts are used, written in ninport's own compact layout, and the file says so)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "reference_models"


class Enum(str):
    """A protobuf enum value: written without quotes."""


class Raw(str):
    """A line written as is (for one-line messages like `input_param { shape: { ... } }`)."""


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _render(items, indent: str, depth: int) -> list[str]:
    """items: list of (key, value); value is a scalar, a list (sub-message) or Raw (key unused)."""
    lines = []
    pad = indent * depth
    for key, value in items:
        if isinstance(value, Raw):
            lines.append(pad + value)
        elif isinstance(value, list):
            lines.append(f"{pad}{key} {{")
            lines.extend(_render(value, indent, depth + 1))
            lines.append(pad + "}")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def message(key: str, items, indent: str = "  ") -> str:
    return "\n".join(_render([(key, items)], indent, 0)) + "\n"


LR_W = ("param", [("lr_mult", 1), ("decay_mult", 1)])
LR_B = ("param", [("lr_mult", 2), ("decay_mult", 0)])


def layer(name, type_, bottoms, tops, *extra):
    """Items of a `layer {}` in BVLC order: name, type, bottom(s), top(s), then the rest."""
    bottoms = [bottoms] if isinstance(bottoms, str) else list(bottoms)
    tops = [tops] if isinstance(tops, str) else list(tops)
    return ([("name", name), ("type", type_)] + [("bottom", b) for b in bottoms]
            + [("top", t) for t in tops] + list(extra))


def input_layer(dims) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return message("layer", [("name", "data"), ("type", "Input"), ("top", "data"),
                             ("", Raw(f"input_param {{ shape: {{ {shape} }} }}"))])


# ---------------------------------------------------------------- AlexNet (BVLC) ----

def alexnet() -> str:
    out = ['name: "AlexNet"\n', input_layer((10, 3, 227, 227))]

    def conv(name, bottom, n, k, stride=None, pad=None, group=None):
        p = [("num_output", n)] + ([("pad", pad)] if pad else []) + [("kernel_size", k)]
        p += ([("group", group)] if group else []) + ([("stride", stride)] if stride else [])
        out.append(message("layer", layer(name, "Convolution", bottom, name, LR_W, LR_B, ("convolution_param", p))))

    def relu(name, blob):
        out.append(message("layer", layer(name, "ReLU", blob, blob)))

    def lrn(name, bottom):
        out.append(message("layer", layer(name, "LRN", bottom, name, ("lrn_param", [
            ("local_size", 5), ("alpha", 0.0001), ("beta", 0.75)]))))

    def pool(name, bottom):
        out.append(message("layer", layer(name, "Pooling", bottom, name, ("pooling_param", [
            ("pool", Enum("MAX")), ("kernel_size", 3), ("stride", 2)]))))

    def fc(name, bottom, n):
        out.append(message("layer", layer(name, "InnerProduct", bottom, name, LR_W, LR_B,
                                          ("inner_product_param", [("num_output", n)]))))

    def drop(name, blob):
        out.append(message("layer", layer(name, "Dropout", blob, blob, ("dropout_param", [("dropout_ratio", 0.5)]))))

    conv("conv1", "data", 96, 11, stride=4); relu("relu1", "conv1"); lrn("norm1", "conv1"); pool("pool1", "norm1")
    conv("conv2", "pool1", 256, 5, pad=2, group=2); relu("relu2", "conv2"); lrn("norm2", "conv2"); pool("pool2", "norm2")
    conv("conv3", "pool2", 384, 3, pad=1); relu("relu3", "conv3")
    conv("conv4", "conv3", 384, 3, pad=1, group=2); relu("relu4", "conv4")
    conv("conv5", "conv4", 256, 3, pad=1, group=2); relu("relu5", "conv5"); pool("pool5", "conv5")
    fc("fc6", "pool5", 4096); relu("relu6", "fc6"); drop("drop6", "fc6")
    fc("fc7", "fc6", 4096); relu("relu7", "fc7"); drop("drop7", "fc7")
    fc("fc8", "fc7", 1000)
    out.append(message("layer", layer("prob", "Softmax", "fc8", "prob")))
    return "".join(out)


# ------------------------------------------------------------- GoogLeNet (BVLC) ----

# (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) of each inception module (Szegedy et al., Table 1)
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet() -> str:
    out = ['name: "GoogleNet"\n', input_layer((10, 3, 224, 224))]

    def conv(name, bottom, n, k, std, stride=None, pad=None):
        p = [("num_output", n)] + ([("pad", pad)] if pad else []) + [("kernel_size", k)]
        p += [("stride", stride)] if stride else []
        p += [("weight_filler", [("type", "xavier"), ("std", std)]),
              ("bias_filler", [("type", "constant"), ("value", 0.2)])]
        out.append(message("layer", layer(name, "Convolution", bottom, name, LR_W, LR_B, ("convolution_param", p))))

    def relu(name, blob):
        out.append(message("layer", layer(name, "ReLU", blob, blob)))

    def pool(name, bottom, kind, k, stride, pad=None):
        p = [("pool", Enum(kind)), ("kernel_size", k), ("stride", stride)] + ([("pad", pad)] if pad else [])
        out.append(message("layer", layer(name, "Pooling", bottom, name, ("pooling_param", p))))

    def lrn(name, bottom):
        out.append(message("layer", layer(name, "LRN", bottom, name, ("lrn_param", [
            ("local_size", 5), ("alpha", 0.0001), ("beta", 0.75)]))))

    conv("conv1/7x7_s2", "data", 64, 7, 0.1, stride=2, pad=3); relu("conv1/relu_7x7", "conv1/7x7_s2")
    pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX", 3, 2); lrn("pool1/norm1", "pool1/3x3_s2")
    conv("conv2/3x3_reduce", "pool1/norm1", 64, 1, 0.1); relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce")
    conv("conv2/3x3", "conv2/3x3_reduce", 192, 3, 0.03, pad=1); relu("conv2/relu_3x3", "conv2/3x3")
    lrn("conv2/norm2", "conv2/3x3"); pool("pool2/3x3_s2", "conv2/norm2", "MAX", 3, 2)
    bottom = "pool2/3x3_s2"
    for key, (n1, n3r, n3, n5r, n5, npp) in INCEPTION.items():
        m = f"inception_{key}"
        conv(f"{m}/1x1", bottom, n1, 1, 0.03); relu(f"{m}/relu_1x1", f"{m}/1x1")
        conv(f"{m}/3x3_reduce", bottom, n3r, 1, 0.09); relu(f"{m}/relu_3x3_reduce", f"{m}/3x3_reduce")
        conv(f"{m}/3x3", f"{m}/3x3_reduce", n3, 3, 0.03, pad=1); relu(f"{m}/relu_3x3", f"{m}/3x3")
        conv(f"{m}/5x5_reduce", bottom, n5r, 1, 0.2); relu(f"{m}/relu_5x5_reduce", f"{m}/5x5_reduce")
        conv(f"{m}/5x5", f"{m}/5x5_reduce", n5, 5, 0.03, pad=2); relu(f"{m}/relu_5x5", f"{m}/5x5")
        pool(f"{m}/pool", bottom, "MAX", 3, 1, pad=1)
        conv(f"{m}/pool_proj", f"{m}/pool", npp, 1, 0.1); relu(f"{m}/relu_pool_proj", f"{m}/pool_proj")
        out.append(message("layer", layer(f"{m}/output", "Concat",
                                          [f"{m}/1x1", f"{m}/3x3", f"{m}/5x5", f"{m}/pool_proj"], f"{m}/output")))
        bottom = f"{m}/output"
        if key == "3b":
            pool("pool3/3x3_s2", bottom, "MAX", 3, 2); bottom = "pool3/3x3_s2"
        elif key == "4e":
            pool("pool4/3x3_s2", bottom, "MAX", 3, 2); bottom = "pool4/3x3_s2"
    pool("pool5/7x7_s1", bottom, "AVE", 7, 1)
    out.append(message("layer", layer("pool5/drop_7x7_s1", "Dropout", "pool5/7x7_s1", "pool5/7x7_s1",
                                      ("dropout_param", [("dropout_ratio", 0.4)]))))
    out.append(message("layer", layer("loss3/classifier", "InnerProduct", "pool5/7x7_s1", "loss3/classifier",
                                      LR_W, LR_B, ("inner_product_param", [
                                          ("num_output", 1000), ("weight_filler", [("type", "xavier")]),
                                          ("bias_filler", [("type", "constant"), ("value", 0)])]))))
    out.append(message("layer", layer("prob", "Softmax", "loss3/classifier", "prob")))
    return "".join(out)


# ------------------------------------------------- VGG-16 (Simonyan, V1 format) ----

def vgg16() -> str:
    out = ['name: "VGG_ILSVRC_16_layers"\ninput: "data"\n'
           + "".join(f"input_dim: {d}\n" for d in (10, 3, 224, 224))]

    def v1(bottom, top, name, type_, *extra):
        out.append(message("layers", [("bottom", bottom), ("top", top), ("name", name),
                                      ("type", Enum(type_))] + list(extra)))

    bottom = "data"
    for stage, (n, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            v1(bottom, name, name, "CONVOLUTION",
               ("convolution_param", [("num_output", n), ("pad", 1), ("kernel_size", 3)]))
            v1(name, name, f"relu{stage}_{i}", "RELU")
            bottom = name
        v1(bottom, f"pool{stage}", f"pool{stage}", "POOLING",
           ("pooling_param", [("pool", Enum("MAX")), ("kernel_size", 2), ("stride", 2)]))
        bottom = f"pool{stage}"
    for i, n in ((6, 4096), (7, 4096), (8, 1000)):
        v1(bottom, f"fc{i}", f"fc{i}", "INNER_PRODUCT", ("inner_product_param", [("num_output", n)]))
        bottom = f"fc{i}"
        if i < 8:
            v1(bottom, bottom, f"relu{i}", "RELU")
            v1(bottom, bottom, f"drop{i}", "DROPOUT", ("dropout_param", [("dropout_ratio", 0.5)]))
    v1("fc8", "prob", "prob", "SOFTMAX")
    return "".join(out)


# ----------------------------------------------------- ResNet-50 (Kaiming He) ----

def resnet50() -> str:
    out = ['name: "ResNet-50"\ninput: "data"\n' + "".join(f"input_dim: {d}\n" for d in (1, 3, 224, 224)) + "\n"]

    def emit(bottoms, top, name, type_, *extra):
        bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
        out.append(message("layer", [("bottom", b) for b in bottoms] + [("top", top), ("name", name),
                                                                         ("type", type_)] + list(extra),
                           indent="\t") + "\n")

    def conv_bn(bottom, top, conv_name, bn_name, scale_name, n, k, pad, stride, bias=False):
        p = [("num_output", n), ("kernel_size", k), ("pad", pad), ("stride", stride)]
        p += [] if bias else [("bias_term", False)]
        emit(bottom, top, conv_name, "Convolution", ("convolution_param", p))
        emit(top, top, bn_name, "BatchNorm", ("batch_norm_param", [("use_global_stats", True)]))
        emit(top, top, scale_name, "Scale", ("scale_param", [("bias_term", True)]))

    # conv1 is the one convolution with a bias in the published net
    emit("data", "conv1", "conv1", "Convolution",
         ("convolution_param", [("num_output", 64), ("kernel_size", 7), ("pad", 3), ("stride", 2)]))
    emit("conv1", "conv1", "bn_conv1", "BatchNorm", ("batch_norm_param", [("use_global_stats", True)]))
    emit("conv1", "conv1", "scale_conv1", "Scale", ("scale_param", [("bias_term", True)]))
    emit("conv1", "conv1", "conv1_relu", "ReLU")
    emit("conv1", "pool1", "pool1", "Pooling",
         ("pooling_param", [("kernel_size", 3), ("stride", 2), ("pool", Enum("MAX"))]))
    bottom = "pool1"
    for stage, blocks, width in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        for b in range(blocks):
            s = f"{stage}{'abcdef'[b]}"
            stride = 2 if (b == 0 and stage > 2) else 1
            if b == 0:
                conv_bn(bottom, f"res{s}_branch1", f"res{s}_branch1", f"bn{s}_branch1", f"scale{s}_branch1",
                        4 * width, 1, 0, stride)
                shortcut = f"res{s}_branch1"
            else:
                shortcut = bottom
            prev = bottom
            for part, (n, k, pad, st) in zip("abc", ((width, 1, 0, stride), (width, 3, 1, 1), (4 * width, 1, 0, 1))):
                top = f"res{s}_branch2{part}"
                conv_bn(prev, top, top, f"bn{s}_branch2{part}", f"scale{s}_branch2{part}", n, k, pad, st)
                if part != "c":
                    emit(top, top, f"{top}_relu", "ReLU")
                prev = top
            emit([shortcut, f"res{s}_branch2c"], f"res{s}", f"res{s}", "Eltwise")
            emit(f"res{s}", f"res{s}", f"res{s}_relu", "ReLU")
            bottom = f"res{s}"
    emit(bottom, "pool5", "pool5", "Pooling",
         ("pooling_param", [("kernel_size", 7), ("stride", 1), ("pool", Enum("AVE"))]))
    emit("pool5", "fc1000", "fc1000", "InnerProduct", ("inner_product_param", [("num_output", 1000)]))
    emit("fc1000", "prob", "prob", "Softmax")
    return "".join(out)


# -------------------------------------------------- SqueezeNet v1.1 (DeepScale) ----

SQUEEZENET_CITE = """# please cite:
# @article{SqueezeNet,
#     Author = {Forrest N. Iandola and Matthew W. Moskewicz and Khalid Ashraf and Song Han and William J. Dally and Kurt Keutzer},
#     Title = {SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and $<$1MB model size},
#     Journal = {arXiv:1602.07360},
#     Year = {2016}
# }

"""

# (squeeze1x1, expand1x1 = expand3x3) of fire2..fire9
FIRE = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}


def squeezenet11() -> str:
    out = [SQUEEZENET_CITE, input_layer((10, 3, 227, 227))]

    def conv(name, bottom, n, k, stride=None, pad=None):
        p = [("num_output", n)] + ([("pad", pad)] if pad else []) + [("kernel_size", k)]
        p += [("stride", stride)] if stride else []
        out.append(message("layer", layer(name, "Convolution", bottom, name, ("convolution_param", p))))

    def relu(name, blob):
        out.append(message("layer", layer(name, "ReLU", blob, blob)))

    def maxpool(name, bottom):
        out.append(message("layer", layer(name, "Pooling", bottom, name, ("pooling_param", [
            ("pool", Enum("MAX")), ("kernel_size", 3), ("stride", 2)]))))

    conv("conv1", "data", 64, 3, stride=2); relu("relu_conv1", "conv1"); maxpool("pool1", "conv1")
    bottom = "pool1"
    for i, (sq, ex) in FIRE.items():
        f = f"fire{i}"
        conv(f"{f}/squeeze1x1", bottom, sq, 1); relu(f"{f}/relu_squeeze1x1", f"{f}/squeeze1x1")
        conv(f"{f}/expand1x1", f"{f}/squeeze1x1", ex, 1); relu(f"{f}/relu_expand1x1", f"{f}/expand1x1")
        conv(f"{f}/expand3x3", f"{f}/squeeze1x1", ex, 3, pad=1); relu(f"{f}/relu_expand3x3", f"{f}/expand3x3")
        out.append(message("layer", layer(f"{f}/concat", "Concat", [f"{f}/expand1x1", f"{f}/expand3x3"], f"{f}/concat")))
        bottom = f"{f}/concat"
        if i in (3, 5):
            maxpool(f"pool{i}", bottom); bottom = f"pool{i}"
    out.append(message("layer", layer("drop9", "Dropout", bottom, bottom, ("dropout_param", [("dropout_ratio", 0.5)]))))
    conv("conv10", bottom, 1000, 1); relu("relu_conv10", "conv10")
    out.append(message("layer", layer("pool10", "Pooling", "conv10", "pool10", ("pooling_param", [
        ("pool", Enum("AVE")), ("global_pooling", True)]))))
    out.append(message("layer", layer("prob", "Softmax", "pool10", "prob")))
    return "".join(out)


# ------------------------------------------------ MobileNet v1 (shicai layout) ----

# (name, output channels, depthwise stride) of the 13 depthwise-separable blocks
MOBILENET_BLOCKS = (("conv2_1", 64, 1), ("conv2_2", 128, 2), ("conv3_1", 128, 1), ("conv3_2", 256, 2),
                    ("conv4_1", 256, 1), ("conv4_2", 512, 2), ("conv5_1", 512, 1), ("conv5_2", 512, 1),
                    ("conv5_3", 512, 1), ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
                    ("conv6", 1024, 1))


def mobilenet_v1() -> str:
    out = ['name: "MOBILENET"\n'
           "#  transform_param {\n#    scale: 0.017\n#    mirror: false\n#    crop_size: 224\n"
           "#    mean_value: [103.94,116.78,123.68]\n#  }\n"
           'input: "data"\n' + "".join(f"input_dim: {d}\n" for d in (1, 3, 224, 224))]
    frozen = ("param", [("lr_mult", 0), ("decay_mult", 0)])
    scale_lr = ("param", [("lr_mult", 1), ("decay_mult", 0)])

    def conv_bn_relu(name, relu_name, bottom, n, k, pad, stride, group=None):
        p = [("num_output", n), ("bias_term", False), ("pad", pad), ("kernel_size", k)]
        p += [("group", group), ("engine", Enum("CAFFE"))] if group else []
        p += [("stride", stride), ("weight_filler", [("type", "msra")])]
        out.append(message("layer", layer(name, "Convolution", bottom, name, LR_W, ("convolution_param", p))))
        out.append(message("layer", layer(f"{name}/bn", "BatchNorm", name, name, frozen, frozen, frozen,
                                          ("batch_norm_param", [("use_global_stats", True), ("eps", Enum("1e-5"))]))))
        out.append(message("layer", layer(f"{name}/scale", "Scale", name, name, scale_lr, scale_lr, ("scale_param", [
            ("filler", [("value", 1)]), ("bias_term", True), ("bias_filler", [("value", 0)])]))))
        out.append(message("layer", layer(relu_name, "ReLU", name, name)))

    conv_bn_relu("conv1", "relu1", "data", 32, 3, 1, 2)
    bottom, channels = "conv1", 32
    for block, n, stride in MOBILENET_BLOCKS:
        index = block[len("conv"):]
        conv_bn_relu(f"{block}/dw", f"relu{index}/dw", bottom, channels, 3, 1, stride, group=channels)
        conv_bn_relu(f"{block}/sep", f"relu{index}/sep", f"{block}/dw", n, 1, 0, 1)
        bottom, channels = f"{block}/sep", n
    out.append(message("layer", layer("pool6", "Pooling", bottom, "pool6", ("pooling_param", [
        ("pool", Enum("AVE")), ("global_pooling", True)]))))
    out.append(message("layer", layer("fc7", "Convolution", "pool6", "fc7", LR_W, LR_B, ("convolution_param", [
        ("num_output", 1000), ("kernel_size", 1), ("weight_filler", [("type", "msra")]),
        ("bias_filler", [("type", "constant"), ("value", 0)])]))))
    out.append(message("layer", layer("prob", "Softmax", "fc7", "prob")))
    return "".join(out)


# ------------------------------------------- OpenPose body, COCO (Cao et al. 2017) ----

# The COCO body net: VGG-19's first ten 3x3 convolutions (three 2x2 max pools), two more 3x3 convolutions
# (conv4_3_CPM, conv4_4_CPM: the image features F), then six stages of two parallel branches, L1 (part
# affinity fields, 38 maps = 19 limbs x (x, y)) and L2 (confidence maps, 19 = 18 keypoints + background).
# Stage 1 reads F; stages 2-6 read concat(previous L1, previous L2, F). The net's output is the stage-6
# L2 maps followed by the L1 maps. Every convolution: gaussian(std 0.01) weights, constant biases;
# learning-rate multipliers 1/2 (weight/bias) up to stage 1, 4/8 in the refinement stages.
# (channels, convolutions) of each VGG block; a pool after each of the first three
OPENPOSE_VGG = ((64, 2), (128, 2), (256, 4), (512, 2))
OPENPOSE_BRANCHES = {"L1": 38, "L2": 19}
# (channels or None for the branch's map count, kernel, ReLU after it) of each convolution in a branch
OPENPOSE_STAGE1 = ((128, 3, True), (128, 3, True), (128, 3, True), (512, 1, True), (None, 1, False))
OPENPOSE_REFINE = ((128, 7, True),) * 5 + ((128, 1, True), (None, 1, False))


def _inline(items) -> str:
    """A message on one line: `key: value` pairs and `key { ... }` sub-messages."""
    parts = []
    for key, value in items:
        parts.append(f"{key} {{ {_inline(value)} }}" if isinstance(value, list) else f"{key}: {_scalar(value)}")
    return " ".join(parts)


def openpose_coco() -> str:
    out = ["# OpenPose body pose net, COCO 18 keypoints (Cao et al., CVPR 2017): ninport's own rendering of the\n"
           "# architecture, written by tools/make_reference_models.py; not OpenPose's file (see README.md).\n",
           'input: "image"\n', "input_dim: 1\ninput_dim: 3\n",
           "input_dim: 1  # height and width: placeholders, the application reshapes the net to the image\n",
           "input_dim: 1\n"]

    def emit(name, type_, bottoms, top, *extra):
        bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
        head = f'name: "{name}"  type: "{type_}"  ' + "".join(f'bottom: "{b}"  ' for b in bottoms) + f'top: "{top}"'
        if not extra:  # ReLU: one line
            out.append(f"layer {{ {head} }}\n")
            return
        fields = "".join(f"  {key} {{ {_inline(value)} }}\n" for key, value in extra)
        out.append(f"layer {{\n  {head}\n{fields}}}\n")

    def conv(name, bottom, n, k, lr, relu=None):
        emit(name, "Convolution", bottom, name,
             ("param", [("lr_mult", lr), ("decay_mult", 1)]), ("param", [("lr_mult", 2 * lr), ("decay_mult", 0)]),
             ("convolution_param", [("num_output", n), ("pad", k // 2), ("kernel_size", k),
                                    ("weight_filler", [("type", "gaussian"), ("std", 0.01)]),
                                    ("bias_filler", [("type", "constant")])]))
        if relu:
            emit(relu, "ReLU", name, name)

    bottom = "image"
    for block, (n, convs) in enumerate(OPENPOSE_VGG, start=1):
        for i in range(1, convs + 1):
            conv(f"conv{block}_{i}", bottom, n, 3, 1, relu=f"relu{block}_{i}")
            bottom = f"conv{block}_{i}"
        if block < len(OPENPOSE_VGG):
            emit(f"pool{block}_stage1", "Pooling", bottom, f"pool{block}_stage1",
                 ("pooling_param", [("pool", Enum("MAX")), ("kernel_size", 2), ("stride", 2)]))
            bottom = f"pool{block}_stage1"
    for i, n in ((3, 256), (4, 128)):
        conv(f"conv4_{i}_CPM", bottom, n, 3, 1, relu=f"relu4_{i}_CPM")
        bottom = f"conv4_{i}_CPM"
    features = stage_input = bottom

    for stage in range(1, 7):
        if stage == 1:
            convs, lr = OPENPOSE_STAGE1, 1
            conv_name, relu_name = "conv5_{d}_CPM_{b}", "relu5_{d}_CPM_{b}"
        else:
            convs, lr = OPENPOSE_REFINE, 4
            conv_name, relu_name = f"Mconv{{d}}_stage{stage}_{{b}}", f"Mrelu{{d}}_stage{stage}_{{b}}"
        last = dict.fromkeys(OPENPOSE_BRANCHES, stage_input)
        for d, (n, k, relu) in enumerate(convs, start=1):
            for b, maps in OPENPOSE_BRANCHES.items():
                name = conv_name.format(d=d, b=b)
                conv(name, last[b], n or maps, k, lr, relu=relu_name.format(d=d, b=b) if relu else None)
                last[b] = name
        if stage < 6:
            stage_input = f"concat_stage{stage + 1}"
            emit(stage_input, "Concat", [last["L1"], last["L2"], features], stage_input,
                 ("concat_param", [("axis", 1)]))
    emit("concat_stage7", "Concat", [last["L2"], last["L1"]], "net_output", ("concat_param", [("axis", 1)]))
    return "".join(out)


NETS = {
    "bvlc_alexnet": alexnet,
    "bvlc_googlenet": googlenet,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "squeezenet_v1.1": squeezenet11,
    "mobilenet_v1": mobilenet_v1,
    "openpose_coco": openpose_coco,
}


def render_all() -> dict[Path, str]:
    """{path of each deploy.prototxt: its text}."""
    return {ROOT / folder / "deploy.prototxt": make() for folder, make in NETS.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all().items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'differs' if args.check else 'wrote'}: {path.relative_to(ROOT.parent)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
