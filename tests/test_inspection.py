"""`ninport.summary`: what `inspect` shows, as data; and `inspect` printing model text literally."""
from __future__ import annotations

import json

import pytest

import ninport
from ninport.apps.inspection import NetSummary
from tests.conftest import NIN_DEPLOY, REPO, VENDORED_GOLDEN
from tests.test_cli import messages, run_cli

RESNET50 = REPO / "reference_models" / "resnet50" / "deploy.prototxt"


def test_nin_summary_rows_and_totals():
    net = ninport.summary(NIN_DEPLOY, input_shape="1,3,227,227")
    assert isinstance(net, NetSummary) and net.outputs == ("pool4",)
    rows = {row.layer: row for row in net.layers}
    assert [rows[name].output_shapes[0][2] for name in ("conv1", "pool0", "pool2", "pool3", "pool4")] == \
        [55, 27, 13, 6, 1]
    assert rows["conv1"].settings == "96, k11 s4" and rows["conv1"].parameters == 96 * 3 * 11 * 11 + 96
    assert rows["relu0"].in_place and rows["relu0"].parameters == 0
    assert net.parameters == 7_595_176 and net.statistics == 0
    assert net.parameters == sum(row.parameters for row in net.layers)


def test_batchnorm_statistics_are_not_parameters():
    """ResNet-50 as published: torchvision's 25,557,032 learnable + Caffe conv1's 64-value bias; the
    BatchNorm mean/variance (2 x 26,560) and 53 scale factors are statistics, counted apart."""
    net = ninport.summary(RESNET50)
    assert net.parameters == 25_557_032 + 64
    assert net.statistics == 2 * 26_560 + 53
    assert net.stored_values == net.parameters + net.statistics
    bn = next(row for row in net.layers if row.type == "BatchNorm")
    assert bn.parameters == 0 and bn.statistics > 0


def test_bn_statistics_are_counted_as_statistics(tmp_path):
    """Issue 20: PSPNet's BN stores slope, bias, mean and variance: the mean and variance are statistics, not
    parameters; SegNet's BN in INFERENCE mode stores scale and shift only, both learned."""
    from tests.caffe_files import input_layer

    path = tmp_path / "bn.prototxt"
    path.write_text(input_layer((1, 6, 4, 4))
                    + 'layer { name: "psp" type: "BN" bottom: "data" top: "a" bn_param { eps: 0.001 } }\n'
                    + 'layer { name: "segnet" type: "BN" bottom: "a" top: "b" bn_param { bn_mode: INFERENCE } }\n')
    net = ninport.summary(path)
    rows = {row.layer: row for row in net.layers}
    assert (rows["psp"].parameters, rows["psp"].statistics) == (2 * 6, 2 * 6)
    assert (rows["segnet"].parameters, rows["segnet"].statistics) == (2 * 6, 0)
    assert (net.parameters, net.statistics) == (4 * 6, 2 * 6)
    assert "statistics: mean, variance" in rows["psp"].settings and "INFERENCE" in rows["segnet"].settings


def test_macs_per_image_and_per_batch():
    one = ninport.summary(NIN_DEPLOY)
    four = ninport.summary(NIN_DEPLOY, input_shape=(4, 3, 224, 224))
    assert four.batch == 4 and four.macs == 4 * one.macs
    assert four.macs_per_image == one.macs_per_image == one.macs


def test_weights_fit_is_reported_and_misfit_refused():
    case = VENDORED_GOLDEN / "mini_resnet"
    net = ninport.summary(case / "net.prototxt", weights=case / "weights.caffemodel")
    assert net.weights is not None and net.weights.layers == 9 and net.weights.values == net.stored_values
    with pytest.raises(ninport.WeightsError, match="another net"):
        ninport.summary(VENDORED_GOLDEN / "conv_group2" / "net.prototxt", weights=case / "weights.caffemodel")


def test_summary_checks_argument_types():
    with pytest.raises(ninport.NinportError, match="prototxt must be a file path"):
        ninport.summary(123)
    with pytest.raises(ninport.NinportError, match="weights must be a file path"):
        ninport.summary(NIN_DEPLOY, weights=3.5)


def test_inspect_prints_totals_per_image_and_statistics_apart():
    result = run_cli("inspect", str(RESNET50), "--input-shape", "2,3,224,224")
    assert result.returncode == 0, result.stderr
    assert "25,557,096 parameters (learnable), plus 53,173 stored statistics" in result.stdout
    net = ninport.summary(RESNET50, input_shape="2,3,224,224")
    assert f"{net.macs_per_image / 1e9:.3f} GMAC per image, {net.macs / 1e9:.3f} GMAC per forward at batch 2" \
        in result.stdout
    info = json.loads(run_cli("inspect", str(RESNET50), "--json").stdout)
    assert info["total_parameters"] == 25_557_096 and info["total_statistics"] == 53_173


# Layer names are the file author's text: shown literally, never as rich markup or terminal codes.
HOSTILE = {
    "closing_tag": "[/bold]",
    "hidden_link": "[link=http://evil.example]innocent[/link]",
    "style": "[red on white]x[/]",
    "emoji": ":smiley:",
    "escape": "a\x1b[31mred",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_inspect_shows_hostile_layer_names_literally(tmp_path, kind):
    name = HOSTILE[kind]
    escaped = name.replace("\x1b", "\\x1b")
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
            f'layer {{ name: "{escaped}" type: "ReLU" bottom: "data" top: "{escaped}" }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    result = run_cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert not messages(result.stderr)
    out = result.stdout
    assert "\x1b" not in out  # no terminal escape reaches the terminal, from the file or from rich
    if kind == "escape":
        assert "a\\x1b[31mred" in out
    else:
        assert name in out  # the markup text itself is shown, so it was not interpreted
    assert "\u263a" not in out and "\U0001f603" not in out


# Issue 18 item 7: characters of these categories (Cf, Zl, Zp, Co, Cn) reached inspect's output raw; an editor or
# terminal breaks lines at U+2028 or reorders text at U+061C.
INVISIBLE = ["\u061c", "\u2028", "\u2029", "\u2060", "\u2064", "\U000e0041", "\U000e007f", "\ue000", "\u0378"]


def test_inspect_escapes_every_unsafe_character_of_the_file(tmp_path):
    import unicodedata

    name = "n" + "".join(INVISIBLE) + "x"
    path = tmp_path / "net.prototxt"
    path.write_text(f'name: "{name}"\n'
                    f'layer {{ name: "data" type: "Input" top: "{name}" '
                    'input_param { shape { dim: 1 dim: 2 } } }\n'
                    f'layer {{ name: "{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n', encoding="utf-8")
    for extra in ([], ["--json"]):
        result = run_cli("inspect", str(path), *extra)
        assert result.returncode == 0, result.stderr
        out = result.stdout + result.stderr
        assert not [c for c in out if unicodedata.category(c) in {"Cf", "Zl", "Zp", "Co", "Cn", "Cs"} or c in "\x1b\r"]
    assert json.loads(result.stdout)["name"] == name  # JSON's own escapes
    table = run_cli("inspect", str(path)).stdout
    assert "n\\u061c\\u2028\\u2029\\u2060\\u2064\\U000e0041\\U000e007f\\ue000\\u0378x" in table


def test_inspect_output_piped_into_head_exits_quietly(tmp_path):
    """Far more output than a pipe buffers, so the write after `head` exits must fail with EPIPE."""
    import subprocess
    import sys

    layers = "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "data" }}\n' for i in range(5000))
    net = tmp_path / "long.prototxt"
    net.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
                   + layers)
    for extra in ([], ["--json"]):
        command = " ".join([sys.executable, "-m", "ninport.cli", "inspect", str(net), *extra, "| head -n 2"])
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                                cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
                                timeout=120)
        assert len(result.stdout.splitlines()) == 2
        assert result.stderr == "", result.stderr  # no traceback, no "internal error"
        assert result.returncode == 141  # 128 + SIGPIPE, as Unix tools report a closed pipe


def test_summary_says_which_layers_fix_the_input_size():
    from tests.conftest import NIN_DEPLOY, VENDORED_GOLDEN

    fixed = ninport.summary(VENDORED_GOLDEN / "innerproduct_softmax" / "net.prototxt")
    assert [layer for layer, _ in fixed.size_fixed_by] == ["fc"] and fixed.to_json()["input_size"] == "fixed"
    nin = ninport.summary(NIN_DEPLOY, input_shape=(1, 3, 231, 231))
    assert nin.size_fixed_by == () and nin.to_json()["input_size"] == "any"
    assert nin.layers[-1].output_shapes == ((1, 1000, 2, 2),)  # Caffe's pool4 at 231: 2x2
