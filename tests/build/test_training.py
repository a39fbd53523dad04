"""TRAIN-phase semantics against numpy transcriptions of Caffe's layers (BVLC src/caffe/layers/*.cpp):
Dropout, BatchNorm's moving average with its scale-factor blob, the loss layers and Accuracy; trainable
parameters; TRAIN nets from a train_val prototxt; the fine-tuning example of docs/training.md."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import ninport
from tests.conftest import NIN_TRAIN_VAL, REPO, load_golden
from tests.generated import generated_twin

FLT_MIN = np.finfo(np.float32).tiny


def _load(tmp_path, text: str, **kwargs):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ninport.load(path, **kwargs)


def _input(shape, top="data") -> str:
    return (f'layer {{ name: "in_{top}" type: "Input" top: "{top}" input_param {{ shape {{ '
            + " ".join(f"dim: {d}" for d in shape) + " } } }\n")


# --- trainable by default -------------------------------------------------------------------------------


def test_parameters_are_trainable_unless_frozen():
    case = load_golden("mini_resnet")
    module = ninport.load(case.prototxt, case.weights)
    assert all(p.requires_grad for p in module.parameters())
    out = module(torch.from_numpy(case.inputs()["data"]))
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    frozen = ninport.load(case.prototxt, case.weights, freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())


# --- Dropout --------------------------------------------------------------------------------------------


def caffe_dropout(x: np.ndarray, mask: np.ndarray, ratio: float, train: bool, scale_train: bool = True):
    """dropout_layer.cpp (and fast-rcnn's scale_train): TRAIN top = bottom * mask * scale, TEST a copy."""
    scale = 1.0 / (1.0 - ratio)
    if train:
        return x * mask * (scale if scale_train else 1.0)
    return x if scale_train else x * np.float32(1.0 / scale)


@pytest.mark.parametrize("scale_train", [True, False])
def test_dropout_train_and_test_phase(tmp_path, scale_train):
    ratio = 0.3
    module = _load(tmp_path, _input((4, 8, 16, 16)) + 'layer { name: "drop" type: "Dropout" bottom: "data" top: "data" '
                   f'dropout_param {{ dropout_ratio: {ratio} scale_train: {str(scale_train).lower()} }} }}\n')
    x = torch.rand(4, 8, 16, 16) + 0.5  # no zeros: a zero in the output is a dropped value
    np.testing.assert_allclose(module(x).numpy(), caffe_dropout(x.numpy(), None, ratio, False, scale_train), rtol=1e-6)
    module.train()
    torch.manual_seed(0)
    y = module(x).numpy()
    mask = (y != 0).astype(np.float32)
    assert abs(1 - mask.mean() - ratio) < 0.02  # Bernoulli(1 - ratio) keeps
    np.testing.assert_allclose(y, caffe_dropout(x.numpy(), mask, ratio, True, scale_train), rtol=1e-6)


# --- BatchNorm ------------------------------------------------------------------------------------------


class CaffeBatchNormOracle:
    """batch_norm_layer.cpp Forward_cpu with its blobs: mean sum, variance sum, scale factor."""

    def __init__(self, mean_sum, var_sum, factor, eps, maf, use_global_stats):
        self.blobs = [mean_sum.astype(np.float64), var_sum.astype(np.float64), np.float64(factor)]
        self.eps, self.maf, self.use_global_stats = eps, maf, use_global_stats

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        axes = tuple(d for d in range(x.ndim) if d != 1)
        view = [1, -1] + [1] * (x.ndim - 2)
        if self.use_global_stats:
            s = 0.0 if self.blobs[2] == 0 else 1.0 / self.blobs[2]
            mean, var = self.blobs[0] * s, self.blobs[1] * s
        else:
            mean = x.mean(axis=axes)
            var = ((x - mean.reshape(view)) ** 2).mean(axis=axes)
            self.blobs[2] = self.blobs[2] * self.maf + 1
            self.blobs[0] = mean + self.maf * self.blobs[0]
            m = x.size // x.shape[1]
            self.blobs[1] = (m / (m - 1) if m > 1 else 1) * var + self.maf * self.blobs[1]
        return (x - mean.reshape(view)) / np.sqrt(var.reshape(view) + self.eps)

    @property
    def statistics(self):
        s = 0.0 if self.blobs[2] == 0 else 1.0 / self.blobs[2]
        return self.blobs[0] * s, self.blobs[1] * s


def _batch_norm_net(tmp_path, shape, params: str):
    text = _input(shape) + f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {params} }}\n'
    path = tmp_path / "bn.prototxt"
    path.write_text(text)
    from google.protobuf import text_format

    from ninport.caffe import caffe_pb2 as pb2

    channels = shape[1]
    rng = np.random.default_rng(1)
    stats = [rng.normal(size=channels).astype(np.float32) * 50, rng.uniform(1, 3, channels).astype(np.float32) * 50,
             np.array([50.0], np.float32)]
    net = text_format.Parse(text, pb2.NetParameter())
    layer = net.layer[1]
    for blob in stats:
        layer.blobs.add(shape=pb2.BlobShape(dim=list(blob.shape)), data=blob.tolist())
    weights = tmp_path / "bn.caffemodel"
    weights.write_bytes(net.SerializeToString())
    return ninport.load(path, weights), stats


@pytest.mark.parametrize("maf", [0.999, 0.9])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 3, 1, 1), (1, 3)])  # one value per channel: variance 0
def test_batch_norm_train_step_follows_caffes_moving_average(tmp_path, form, maf, shape):
    module, (mean, var, factor) = _batch_norm_net(tmp_path, shape,
                                                  f"batch_norm_param {{ moving_average_fraction: {maf} }}")
    if form == "py":
        module = generated_twin(module)
    oracle = CaffeBatchNormOracle(mean, var, factor[0], 1e-5, np.float32(maf), use_global_stats=False)
    module.train()
    rng = np.random.default_rng(2)
    for _step in range(3):
        x = rng.normal(2, 3, shape).astype(np.float32)
        np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), oracle.forward(x), atol=2e-5)
        expected_mean, expected_var = oracle.statistics
        bn = module.bn
        np.testing.assert_allclose(bn.running_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), expected_var, rtol=1e-5)
        np.testing.assert_allclose(bn.scale_factor.numpy(), [oracle.blobs[2]], rtol=1e-6)
    module.eval()  # the TEST phase uses the updated statistics
    x = rng.normal(size=(2,) + shape[1:]).astype(np.float32)
    test_oracle = CaffeBatchNormOracle(*oracle.blobs, 1e-5, maf, use_global_stats=True)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), test_oracle.forward(x), atol=2e-5)


def test_batch_norm_at_steady_state_is_torch_momentum(tmp_path):
    """With Caffe's scale factor at its steady value 1 / (1 - maf), the update is PyTorch's with momentum 1 - maf."""
    maf = 0.9
    module, (mean, var, _) = _batch_norm_net(tmp_path, (4, 3, 5, 5),
                                                       f"batch_norm_param {{ moving_average_fraction: {maf} }}")
    module.bn.scale_factor.fill_(1 / (1 - np.float32(maf)))
    reference = nn.BatchNorm2d(3, eps=1e-5, momentum=1 - maf, affine=False)
    reference.running_mean.copy_(module.bn.running_mean)
    reference.running_var.copy_(module.bn.running_var)
    module.train()
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(module(x), reference(x))
    torch.testing.assert_close(module.bn.running_mean, reference.running_mean)
    torch.testing.assert_close(module.bn.running_var, reference.running_var)


def test_batch_norm_use_global_stats_is_respected(tmp_path):
    module, (mean, var, factor) = _batch_norm_net(tmp_path, (2, 3, 4, 4), "batch_norm_param { use_global_stats: true }")
    module.train()
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 4)).astype(np.float32)
    oracle = CaffeBatchNormOracle(mean, var, factor[0], 1e-5, 0.999, use_global_stats=True)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), oracle.forward(x), atol=2e-5)
    assert float(module.bn.scale_factor) == 50.0  # no update
    module, _ = _batch_norm_net(tmp_path, (2, 3, 4, 4), "batch_norm_param { use_global_stats: false }")
    batch = CaffeBatchNormOracle(mean, var, factor[0], 1e-5, 0.999, use_global_stats=False)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), batch.forward(x), atol=2e-5)


# --- losses ---------------------------------------------------------------------------------------------


def caffe_normalizer(mode: str, outer: int, inner: int, valid: int) -> float:
    """LossLayer::GetNormalizer."""
    value = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(value))


def caffe_softmax_loss(x: np.ndarray, label: np.ndarray, axis: int, ignore, mode: str):
    """softmax_loss_layer.cpp: Forward_cpu and Backward_cpu (diff for top diff 1)."""
    x = x.astype(np.float64)
    outer, channels, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1:]))
    scores = x.reshape(outer, channels, inner)
    prob = np.exp(scores - scores.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    labels = label.reshape(outer, inner).astype(np.int64)
    loss, count, diff = 0.0, 0, prob.copy()
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if ignore is not None and value == ignore:
                diff[i, :, j] = 0
                continue
            loss -= np.log(max(prob[i, value, j], FLT_MIN))
            diff[i, value, j] -= 1
            count += 1
    normalizer = caffe_normalizer(mode, outer, inner, count)
    return loss / normalizer, (diff / normalizer).reshape(x.shape)


@pytest.fixture(params=["fx", "py"])
def form(request) -> str:
    """Each loss test runs on the fx module and on its generated .py file (TRAIN nets are written too)."""
    return request.param


def _loss_net(tmp_path, shape, label_shape, layer: str, form: str = "fx", **kwargs):
    module = _load(tmp_path, _input(shape) + _input(label_shape, "label") + layer, phase="TRAIN", **kwargs)
    return generated_twin(module) if form == "py" else module


@pytest.mark.parametrize("loss_param, mode", [("", "VALID"), ("normalization: FULL", "FULL"),
                                              ("normalization: BATCH_SIZE", "BATCH_SIZE"),
                                              ("normalization: NONE", "NONE"),
                                              ("normalize: false", "BATCH_SIZE"), ("normalize: true", "VALID")])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_with_loss(tmp_path, form, loss_param, mode, ignore):
    ignore_text = f"ignore_label: {ignore}" if ignore is not None else ""
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" loss_weight: 0.5 '
             f"loss_param {{ {loss_param} {ignore_text} }} }}\n")
    module = _loss_net(tmp_path, (3, 5, 2, 4), (3, 1, 2, 4), layer, form)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 3, (3, 5, 2, 4)).astype(np.float32)
    label = rng.integers(0, 5, (3, 1, 2, 4)).astype(np.float32)
    expected_loss, expected_diff = caffe_softmax_loss(x, label, 1, ignore, mode)
    xt = torch.from_numpy(x).requires_grad_()
    loss = module(xt, torch.from_numpy(label))
    assert loss.shape == ()
    np.testing.assert_allclose(float(loss), 0.5 * expected_loss, rtol=2e-6)
    loss.backward()
    np.testing.assert_allclose(xt.grad.numpy(), 0.5 * expected_diff, rtol=1e-5, atol=1e-7)


def test_softmax_with_loss_clamps_like_caffe_and_other_axis(tmp_path, form):
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" top: "prob" '
             "softmax_param { axis: 2 } }\n")
    module = _loss_net(tmp_path, (2, 3, 4), (2, 3), layer, form)
    x = np.array([[[0, 200, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]],
                  [[5, 1, 0, -1], [0, 0, 0, 0], [9, 0, 0, 0]]], np.float32)
    label = np.array([[0, 3, 1], [2, 0, 0]], np.float32)
    expected_loss, expected_diff = caffe_softmax_loss(x, label, 2, None, "VALID")
    xt = torch.from_numpy(x).requires_grad_()
    loss, prob = module(xt, torch.from_numpy(label))
    np.testing.assert_allclose(float(loss), expected_loss, rtol=2e-6)  # -log(FLT_MIN) for the underflowed one
    torch.testing.assert_close(prob, torch.softmax(xt, 2))
    loss.backward()
    np.testing.assert_allclose(xt.grad.numpy(), expected_diff, rtol=1e-5, atol=1e-7)


def test_euclidean_loss(tmp_path, form):
    layer = 'layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "label" top: "loss" loss_weight: 2 }\n'
    module = _loss_net(tmp_path, (4, 6), (4, 6), layer, form)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 4, 6)).astype(np.float32)
    at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    loss = module(at, bt)
    diff = a.astype(np.float64) - b
    np.testing.assert_allclose(float(loss), 2 * np.sum(diff ** 2) / 4 / 2, rtol=1e-6)  # dot / num / 2
    loss.backward()
    np.testing.assert_allclose(at.grad.numpy(), 2 * diff / 4, rtol=1e-5)  # sign * loss_weight / num * diff
    np.testing.assert_allclose(bt.grad.numpy(), -2 * diff / 4, rtol=1e-5)


def caffe_sigmoid_cross_entropy(x: np.ndarray, target: np.ndarray, ignore, mode: str):
    """sigmoid_cross_entropy_loss_layer.cpp: the stable loss over non-ignored targets, / the normalizer."""
    x, t = x.astype(np.float64).ravel(), target.astype(np.float64).ravel()
    loss, valid, diff = 0.0, 0, np.zeros_like(x)
    for i in range(x.size):
        if ignore is not None and int(t[i]) == ignore:
            continue
        positive = float(x[i] >= 0)
        loss -= x[i] * (t[i] - positive) - np.log(1 + np.exp(x[i] - 2 * x[i] * positive))
        diff[i] = 1 / (1 + np.exp(-x[i])) - t[i]
        valid += 1
    normalizer = caffe_normalizer(mode, target.shape[0], target.size // target.shape[0], valid)
    return loss / normalizer, (diff / normalizer).reshape(target.shape)


@pytest.mark.parametrize("loss_param, mode, ignore", [("", "BATCH_SIZE", None), ("normalize: true", "VALID", -1),
                                                      ("normalization: FULL", "FULL", -1)])
def test_sigmoid_cross_entropy_loss(tmp_path, form, loss_param, mode, ignore):
    ignore_text = f"ignore_label: {ignore}" if ignore is not None else ""
    layer = ('layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "label" top: "loss" '
             f"loss_param {{ {loss_param} {ignore_text} }} }}\n")
    module = _loss_net(tmp_path, (3, 7), (3, 7), layer, form)
    rng = np.random.default_rng(6)
    x = rng.normal(0, 4, (3, 7)).astype(np.float32)
    target = rng.integers(0, 2, (3, 7)).astype(np.float32)
    target[0, :3] = -1
    expected_loss, expected_diff = caffe_sigmoid_cross_entropy(x, target, ignore, mode)
    xt = torch.from_numpy(x).requires_grad_()
    loss = module(xt, torch.from_numpy(target))
    np.testing.assert_allclose(float(loss), expected_loss, rtol=2e-6)
    loss.backward()
    np.testing.assert_allclose(xt.grad.numpy(), expected_diff, rtol=1e-5, atol=1e-7)


def caffe_accuracy(x: np.ndarray, label: np.ndarray, axis: int, top_k: int, ignore):
    """accuracy_layer.cpp Forward_cpu: a class scoring >= the true class ranks before it."""
    outer, channels, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1:]))
    scores, labels = x.reshape(outer, channels, inner), label.reshape(outer, inner).astype(np.int64)
    accuracy, count = 0, 0
    per_class, seen = np.zeros(channels), np.zeros(channels)
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if ignore is not None and value == ignore:
                continue
            seen[value] += 1
            better = -1 + sum(scores[i, k, j] >= scores[i, value, j] for k in range(channels))
            if better < top_k:
                accuracy += 1
                per_class[value] += 1
            count += 1
    return (0.0 if count == 0 else accuracy / count), np.where(seen > 0, per_class / np.maximum(seen, 1), 0)


@pytest.mark.parametrize("top_k, ignore, axis", [(1, None, 1), (2, 0, 1), (3, None, 2)])
def test_accuracy(tmp_path, form, top_k, ignore, axis):
    ignore_text = f"ignore_label: {ignore}" if ignore is not None else ""
    shape = (4, 5, 3) if axis == 1 else (4, 3, 5)
    label_shape = (4, 3)
    layer = ('layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" top: "per_class" '
             f"accuracy_param {{ top_k: {top_k} axis: {axis} {ignore_text} }} }}\n")
    module = _loss_net(tmp_path, shape, label_shape, layer, form)
    if form == "fx":
        assert ninport.describe(module).outputs == ("acc", "per_class")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, shape).astype(np.float32)  # many ties
    label = rng.integers(0, 5, label_shape).astype(np.float32)
    expected, expected_per_class = caffe_accuracy(x, label, axis, top_k, ignore)
    acc, per_class = module(torch.from_numpy(x), torch.from_numpy(label))
    np.testing.assert_allclose(float(acc), expected, rtol=1e-6)
    np.testing.assert_allclose(per_class.numpy(), expected_per_class, rtol=1e-6)


def test_label_count_is_checked_as_caffe_does(tmp_path):
    layer = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" }\n'
    with pytest.raises(ninport.ShapeError, match="number of labels must match"):
        _loss_net(tmp_path, (2, 5, 3), (2, 2), layer)


# --- TRAIN nets -----------------------------------------------------------------------------------------


def test_nin_train_val_train_phase_has_labels_and_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ninport.load(NIN_TRAIN_VAL, phase="TRAIN", input_shape=(2, 3, 224, 224))
        test = ninport.load(NIN_TRAIN_VAL)
    meta = ninport.describe(train)
    assert meta.phase == "TRAIN" and train.training
    assert meta.inputs == {"data": (2, 3, 224, 224), "label": (2,)}
    assert meta.outputs == ("loss",)
    assert "accuracy" not in [r.name for r in meta.layers]  # TEST-only in the prototxt
    assert ninport.describe(test).outputs == ("pool4",) and not test.training
    loss = train(torch.rand(2, 3, 224, 224) * 255, torch.tensor([3.0, 7.0]))
    assert loss.shape == () and torch.isfinite(loss)


def test_nin_train_net_as_a_generated_file_gives_the_same_loss_and_gradients():
    """`write_python` of a TRAIN net: the file takes data and label, returns Caffe's loss, and backpropagates
    like the fx module (Dropout off on both sides through eval, so the comparison is deterministic)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ninport.load(NIN_TRAIN_VAL, phase="TRAIN", input_shape=(2, 3, 224, 224))
    twin = generated_twin(train.eval())
    x, label = torch.rand(2, 3, 224, 224) * 255, torch.tensor([3.0, 7.0])
    ours, theirs = train(x, label), twin(x, label)
    assert torch.equal(ours, theirs)
    ours.backward()
    theirs.backward()
    assert train.get_submodule(ninport.describe(train).layers[0].module).weight.grad.abs().max() > 0
    for (name, a), (_, b) in zip(train.named_parameters(), twin.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


# --- the fine-tuning example of docs/training.md ---------------------------------------------------


def _docs_fine_tuning_block() -> str:
    docs = (REPO / "docs" / "training.md").read_text()
    section = docs.split("## A fine-tuning example", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_docs_fine_tuning_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference_models").symlink_to(REPO / "reference_models")
    (tmp_path / "out").mkdir()  # as after the README's set-up command
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(_docs_fine_tuning_block(), "docs/training.md", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    model, images, labels = namespace["model"], namespace["images"], namespace["labels"]
    # The same gradient by hand: NIN's features up to relu11, then the new classifier, ReLU, 6x6 mean, cross-entropy.
    model.eval()
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(images).flatten(1), labels)
    loss.backward()
    with torch.no_grad():
        features = ninport.forward_blobs(model, images)["cccp7"]  # after relu11 (in place)
    head = nn.Conv2d(1024, 10, kernel_size=1)
    head.load_state_dict(model.cccp8_1024.state_dict())
    logits = torch.relu(head(features)).mean(dim=(2, 3))
    nn.functional.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(model.cccp8_1024.weight.grad, head.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.cccp8_1024.bias.grad, head.bias.grad, rtol=1e-4, atol=1e-6)
