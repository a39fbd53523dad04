"""The benchmark harness runs end to end (--quick, tiny rounds) and writes every row; its model generator
writes real V1-layout caffemodels. No speed is asserted here: targets live in the benchmark's own table."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.models import MODELS, generated_caffemodel
from benchmarks.nets import ENGINES as NETS_ENGINES
from benchmarks.predict_folder import METHODS as PREDICT_METHODS
from ninport.api import load_spec
from tests.conftest import REPO

LOAD_METHODS = {"ninport.load", "protobuf ParseFromString + np.array", "cv2.dnn.readNetFromCaffe",
                "read file from page cache"}
ENGINES = {"ninport torch", "ninport torch + optimize()", "onnxruntime", "OpenCV dnn"}


def test_generated_nin_is_v1_and_loads_as_its_seeded_weights(tmp_path):
    from ninport.caffe import caffe_pb2

    path = generated_caffemodel("NIN", tmp_path, seed=3)
    net = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert len(net.layer) == 0 and len(net.layers) == 12  # V1: NetParameter.layers, 12 convolutions
    bias = net.layers[0].blobs[1]
    assert (bias.num, bias.channels, bias.height, bias.width) == (1, 1, 1, 96) and not bias.shape.dim

    import torch

    import ninport

    with pytest.warns(ninport.NinportWarning):
        seeded = ninport.load(MODELS["NIN"], seed=3)
    loaded = ninport.load(MODELS["NIN"], path)
    for key, value in seeded.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_quick_benchmark_writes_every_row(tmp_path):
    out = tmp_path / "latest.json"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), "--load-rounds", "1",
           "--runtime-rounds", "1", "--convert-rounds", "1", "--threads", "1", "--batches", "2", "--no-options",
           "--matmul-n", "256", "--predict-images", "8", "--nets-threads", "1", "--profile-top", "3"]
    proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["method"] for r in rows if r["section"] == "load" and r["model"] == "NIN"} == LOAD_METHODS
    runtime = [r for r in rows if r["section"] == "runtime"]
    assert {r["engine"] for r in runtime} == ENGINES
    assert {(r["threads"], r["batch"]) for r in runtime} == {(1, 2)}
    assert [(r["model"], r["formats"]) for r in rows if r["section"] == "convert"] == [("-", ""), ("NIN", "onnx")]
    assert not any(r["model"] == "VGG16" for r in rows)  # --quick skips it
    for r in rows:
        assert np.isfinite(r["median_s"]) and r["median_s"] > 0, r
    load = {r["method"]: r for r in rows if r["section"] == "load"}
    for method, r in load.items():
        assert r["op_peak_rss_mib"] >= 0 and r["process_peak_rss_mib"] > r["weights_mib"] > 28
        if method != "ninport.load":
            assert r["ninport_over_this"] == pytest.approx(load["ninport.load"]["median_s"] / r["median_s"])
    for r in runtime:
        assert r["images_per_s"] == pytest.approx(2 / r["median_s"])
        assert r["gflops"] > 0 and r["pct_of_matmul_peak"] > 0
        assert r["max_rel_diff_vs_torch"] < 1e-4  # every engine computed the same net
    assert {r["engine"]: r["over_onnxruntime"] for r in runtime}["onnxruntime"] == 1.0
    bare, convert = (r for r in rows if r["section"] == "convert")
    assert convert["process_peak_rss_mib"] > convert["weights_mib"] and convert["peak_above_imports_mib"] > 0
    assert convert["peak_over_weights"] == pytest.approx(convert["process_peak_rss_mib"] / convert["weights_mib"])
    assert convert["over_bare_imports"] == pytest.approx(convert["median_s"] / bare["median_s"])
    assert 2.0 < result["machine"]["nin_gflop_per_image"] < 2.4  # NIN at 224: 1.10 GMAC
    assert result["machine"]["matmul_peak_gflops_1t"] > 0
    assert any(t["target"].startswith("NIN convert (ONNX, checked) wall within 1.5x") for t in result["targets"])
    assert "ninport time / peer time" in proc.stdout and "TARGETS" in proc.stdout
    predict = {r["method"]: r for r in rows if r["section"] == "predict"}
    assert set(predict) == {m.replace("batch B", "batch 8") for m in PREDICT_METHODS.values()}
    batched = predict["ninport predict folder (batch 8, read-ahead)"]
    for r in predict.values():
        assert r["images"] == 8 and r["images_per_s"] == pytest.approx(8 / r["median_s"])
        assert r["same_top5_as_classify"]  # batches gave the results of one image at a time
        if r is not batched:
            assert r["batched_over_this"] == pytest.approx(batched["median_s"] / r["median_s"])
    assert "PREDICT NIN on a folder of 8 JPEGs" in proc.stdout
    nets = [r for r in rows if r["section"] == "nets"]
    assert {(r["model"], r["engine"]) for r in nets} == {(m, e) for m in ("NIN", "SqueezeNet") for e in NETS_ENGINES}
    assert {(r["threads"], r["batch"]) for r in nets} == {(1, 2)}
    ort = {r["model"]: r["median_s"] for r in nets if r["engine"] == "onnxruntime"}
    for r in nets:
        assert r["max_rel_diff_vs_module"] < 1e-4, r  # each engine computed the same net
        assert r["over_onnxruntime"] == pytest.approx(r["median_s"] / ort[r["model"]])
    profile = result["nets"]["profiles"]["NIN b2 t1"]
    assert len(profile["ops"]) == 3 and len(profile["layers"]) == 3
    assert {layer["layer"] for layer in profile["layers"]} <= {layer.name for layer in load_spec(MODELS["NIN"]).layers}
    nets_targets = [t for t in result["targets"] if "thread(s)" in t["target"]]
    assert {t["target"].split(",")[0] for t in nets_targets} >= {"ninport's ONNX at or under OpenCV dnn's time"}
    assert "NETS: ninport.load module vs onnxruntime" in proc.stdout
    assert "PROFILE of the module's forward" in proc.stdout
