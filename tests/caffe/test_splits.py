"""Caffe's automatic split blobs (ninport/caffe/splits.py), named as BVLC Caffe names them."""
from __future__ import annotations

import warnings

import torch

import ninport
from ninport.caffe.spec import load_netspec

# `input:` fields (Caffe's upgrade makes them an Input layer named "input"), an in-place layer before the
# fan-out, a top with loss_weight (one more reader for InsertSplits), and TEST-phase Accuracy and loss layers
# that ninport leaves out but Caffe's net keeps (they read fc and label too).
NET = """name: "splits"
input: "data"
input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
input: "label"
input_shape { dim: 2 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "e" type: "Eltwise" bottom: "data" bottom: "c1" top: "e" }
layer { name: "pool" type: "Pooling" bottom: "c1" top: "p" pooling_param { pool: MAX global_pooling: true } }
layer { name: "aux" type: "Power" bottom: "p" top: "aux" loss_weight: 1 }
layer { name: "fc" type: "InnerProduct" bottom: "aux" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "trainonly" type: "Power" bottom: "e" top: "t" include { phase: TRAIN } }
"""
# list(caffe.Net(NET, caffe.TEST).blobs) with BVLC Caffe 9b891540 (../shared/oracles bvlc)
CAFFE_BLOBS = ["data", "label", "data_input_0_split_0", "data_input_0_split_1", "label_input_1_split_0",
               "label_input_1_split_1", "c1", "c1_relu1_0_split_0", "c1_relu1_0_split_1", "e", "p", "aux",
               "aux_aux_0_split_0", "aux_aux_0_split_1", "fc", "fc_fc_0_split_0", "fc_fc_0_split_1",
               "fc_fc_0_split_2", "prob", "acc", "loss"]


def test_caffe_blobs_are_caffes_net_blobs(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    spec = load_netspec(path)
    assert [name for name, _ in spec.caffe_blobs] == CAFFE_BLOBS
    copies = {name: source for name, source in spec.caffe_blobs if name != source}
    assert copies["c1_relu1_0_split_1"] == "c1" and copies["label_input_1_split_0"] == "label"
    assert len(copies) == 11


def test_forward_blobs_names_the_split_copies(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(path)
    blobs = ninport.forward_blobs(module, torch.rand(2, 3, 4, 4), torch.zeros(2))
    # everything Caffe lists that the converted TEST net computes (not Accuracy's and the loss's tops)
    assert list(blobs) == [name for name in CAFFE_BLOBS if name not in ("acc", "loss")]
    assert blobs["fc_fc_0_split_2"] is blobs["fc"] and blobs["c1_relu1_0_split_0"] is blobs["c1"]
    assert ninport.describe(module).split_copies["data_input_0_split_1"] == "data"
