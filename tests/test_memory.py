"""ninport.memory: the memory convert, verify and predict need, estimated from the shapes before anything is
allocated, and refused in one line past the limit (NINPORT_MEMORY_LIMIT, else the memory available)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ninport
from ninport import memory
from ninport.errors import MemoryLimitError
from tests.caffe_files import input_layer, write_caffemodel
from tests.conftest import REPO
from tests.peak_rss import peak_rss_growth
from tests.test_cli import run_cli

# A one-channel image through a 3x3 convolution to 4 channels: the worst case measured for the estimates
# (torch and onnxruntime build im2col columns 9x the input).
NET = """name: "wide"
input: "data"
input_shape { dim: 1 dim: 1 dim: SIZE dim: SIZE }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


def _net(tmp_path, size: int):
    path = tmp_path / "wide.prototxt"
    path.write_text(NET.replace("SIZE", str(size)))
    return path


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ninport.NinportWarning)
        return ninport.load(path)


@pytest.mark.parametrize("text, expected", [("8G", 8 * 2 ** 30), ("512M", 512 * 2 ** 20), ("1.5GiB", 3 * 2 ** 29),
                                            ("1000", 1000), ("none", None), ("off", None)])
def test_the_limit_is_read_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv(memory.LIMIT_ENV, text)
    assert memory.memory_limit()[0] == expected


def test_a_malformed_limit_is_one_error(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(MemoryLimitError, match="NINPORT_MEMORY_LIMIT='lots': expected bytes"):
        memory.memory_limit()


def test_without_a_setting_the_limit_is_the_memory_available(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: 123 * 2 ** 20)
    assert memory.memory_limit() == (123 * 2 ** 20, "the memory available now")
    with pytest.raises(MemoryLimitError, match=r"x needs about 200 MiB of memory, more than the memory available "
                                               r"now \(123 MiB\); do less, or set NINPORT_MEMORY_LIMIT"):
        memory.require(200 * 2 ** 20, "x", "do less")
    memory.require(100 * 2 ** 20, "x", "do less")


def test_available_memory_is_known_here():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    assert 0 < memory.available_bytes() < 2 ** 50


def test_estimates_follow_the_shapes(tmp_path):
    description = ninport.describe(_load(_net(tmp_path, 100)))
    # the input, the convolution's output and the ReLU's (in place, still a new tensor): 10^4 (1 + 4 + 4) floats
    assert memory.output_bytes(description) == 4 * 100 * 100 * 9
    assert memory.output_bytes(description, batch=3) == 3 * 4 * 100 * 100 * 9
    assert memory.export_input_bytes(description) == 2 * 4 * 100 * 100  # exported at a batch of 2


def test_convert_verify_and_predict_refuse_past_the_limit_in_one_line(tmp_path):
    """Before, nothing was estimated: a net within every per-blob limit could ask for more memory than the
    machine had (the issue's 3.6 GB input: 7.2 GB of example input, then torch and onnxruntime) and be
    killed without a word. Here a limit of 64 MiB stands for a small machine."""
    prototxt = _net(tmp_path, 2000)
    np.save(tmp_path / "image.npy", np.zeros((2000, 2000, 1), np.uint8))
    env = {memory.LIMIT_ENV: "64M"}
    runs = {
        "convert": ["convert", str(prototxt), "-o", str(tmp_path / "out")],
        "verify": ["verify", str(prototxt), "--no-opencv"],
        "predict": ["predict", str(prototxt), str(tmp_path / "image.npy"), "--mean-values", "0"],
    }
    for command, args in runs.items():
        result = subprocess.run([sys.executable, "-m", "ninport.cli", *args], capture_output=True, text=True,
                                timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO), **env))
        errors = [line for line in result.stderr.splitlines() if line.startswith("ninport: error")]
        assert result.returncode == 1 and len(errors) == 1, (command, result.stderr)
        assert "of memory, more than the NINPORT_MEMORY_LIMIT=64M limit (64 MiB)" in errors[0], errors[0]
        assert str(prototxt) in errors[0]
    assert not (tmp_path / "out").exists()  # refused before any file was written
    ok = run_cli("convert", str(prototxt), "-o", str(tmp_path / "out"), "--no-check", "--format", "safetensors")
    assert ok.returncode == 0, ok.stderr  # the default limit: the memory available, plenty for this


def test_the_self_check_stays_within_its_estimate(tmp_path):
    """The peak RSS of load + export + self-check, less the RSS after load, against `convert_bytes` (the
    self-check's float64 comparison of whole blobs alone took 14x a blob before it was chunked)."""
    prototxt = _net(tmp_path, 2000)
    code = """if True:
        import sys, warnings
        warnings.simplefilter("ignore")
        import ninport, onnxruntime
        from ninport import memory

        def rss(key):
            return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

        module = ninport.load(sys.argv[1])
        description = ninport.describe(module)
        estimate = memory.convert_bytes(module, description, export=True, check=True)
        before = rss("VmRSS")
        path = ninport.export_onnx(module, sys.argv[2])
        check = ninport.check_onnx(module, path)
        assert check.passed, check
        print(rss("VmHWM") - before, estimate)
    """
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    result = subprocess.run([sys.executable, "-c", code, str(prototxt), str(tmp_path / "wide.onnx")],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    used, estimate = (float(v) for v in result.stdout.split())
    assert used <= estimate, f"used {used / 2 ** 20:.0f} MiB, estimated {estimate / 2 ** 20:.0f} MiB"


def test_the_library_export_and_check_refuse_past_the_limit(tmp_path, monkeypatch):
    """ninport.export_onnx, write_pt2 and check_onnx estimate on their own (torch.rand made the doubled-batch
    example input before anything said no)."""
    module = _load(_net(tmp_path, 64))
    onnx_path = ninport.export_onnx(module, tmp_path / "ok.onnx")  # within the memory available
    monkeypatch.setenv(memory.LIMIT_ENV, "64M")
    for call in (lambda: ninport.export_onnx(module, tmp_path / "a.onnx"),
                 lambda: ninport.write_pt2(module, tmp_path / "a.pt2"),
                 lambda: ninport.check_onnx(module, onnx_path)):
        with pytest.raises(MemoryLimitError, match="at input data \\[1, 1, 64, 64\\] needs about"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.onnx", "wide.prototxt"]


# VGG16's classifier on a flat input: fc6 reads 512x7x7 = 25,088 values (392 MiB of weights), fc7 is 4096x4096 and
# fc8 4096 -> 1000; 472 MiB of the 528 MiB of VGG16's weights, with a forward pass that costs nothing.
BIG_FC = {"fc6": (4096, 25088), "fc7": (4096, 4096), "fc8": (1000, 4096)}


@pytest.fixture(scope="module")
def big_fc_net(tmp_path_factory):
    """A folder with the net (net.prototxt) and its seeded weights (weights.caffemodel); and the weights' bytes."""
    folder = tmp_path_factory.mktemp("big_fc")
    text, bottom = input_layer((1, BIG_FC["fc6"][1])), "data"
    for name, (outputs, _) in BIG_FC.items():
        text += (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                 f"inner_product_param {{ num_output: {outputs} }} }}\n")
        if name != "fc8":
            text += f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
        bottom = name
    text += 'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n'
    (folder / "net.prototxt").write_text(text)
    rng = np.random.default_rng(0)
    weights = {name: [(rng.random(shape, dtype=np.float32) - 0.5) * np.float32(2 / shape[1] ** 0.5),
                      rng.random(shape[0], dtype=np.float32) - 0.5] for name, shape in BIG_FC.items()}
    write_caffemodel(folder / "weights.caffemodel", weights, {name: "InnerProduct" for name in BIG_FC})
    size = sum(a.nbytes for arrays in weights.values() for a in arrays)
    return folder, size


def test_load_holds_the_weights_once(big_fc_net):
    """ninport.load reads each blob into an array of its own and makes the parameter from it without a copy
    (before: the file's mapped pages, then a copy of every blob, 2x the weights)."""
    folder, size = big_fc_net
    measured = peak_rss_growth("tests.convert_memory:load_folder", folder, cap=4 * size)
    assert measured.error is None, measured.error
    assert measured.growth <= 1.25 * size, f"{measured.growth / size:.2f}x the weights"


def test_convert_holds_the_weights_less_than_twice(big_fc_net):
    """`convert` to ONNX and safetensors with its self-check, at VGG16's scale (472 MiB of weights): at most
    1.75x the weights more than the process held after importing torch, the exporter and onnxruntime. Before,
    the ONNX model proto, its serialization, the checker's and onnxruntime's copies of it and the safetensors
    clones each held the weights again: 5.7x for VGG16 (whole process). Now the files are written from the
    module's tensors, and onnxruntime maps the file's weights after the module's are freed."""
    folder, size = big_fc_net
    measured = peak_rss_growth("tests.convert_memory:convert_folder", folder, cap=6 * size)
    assert measured.error is None, measured.error
    assert measured.growth <= 1.75 * size, f"{measured.growth / size:.2f}x the weights"
