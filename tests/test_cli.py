"""The `ninport` command as a user runs it: exit codes, one-line errors, outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NIN_DEPLOY, NIN_TRAIN_VAL, REPO, VENDORED_GOLDEN


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ninport.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def is_progress(line: str) -> bool:
    """A stage line (`ninport: exporting ONNX to out/net.onnx...`), logged on stderr when not on a terminal."""
    return line.startswith("ninport: ") and line.endswith("...") and not line.startswith(
        ("ninport: error", "ninport: warning", "ninport: internal error"))


def messages(stderr: str) -> list[str]:
    """stderr without the progress lines: errors and warnings."""
    return [line for line in stderr.strip().splitlines() if not is_progress(line)]


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("ninport ")
    for verb in ("convert", "inspect", "verify", "upgrade", "predict"):
        result = run_cli(verb, "--help")
        assert result.returncode == 0 and "Example:" in result.stdout and f"ninport {verb}" in result.stdout


@pytest.mark.parametrize("crop,chain", [(224, ["54", "27", "13", "6", "1"]), (227, ["55", "27", "13", "6", "1"])])
def test_inspect_shows_nin_shape_chain(crop, chain):
    result = run_cli("inspect", str(NIN_DEPLOY), "--input-shape", f"1,3,{crop},{crop}")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    for layer, size in zip(["conv1", "pool0", "pool2", "pool3", "pool4"], chain):
        assert f"x{size}x{size} " in rows[layer], rows[layer]
    assert "7,595,176 parameters" in result.stdout


def test_inspect_v1_train_val_uses_test_phase_crop():
    result = run_cli("inspect", str(NIN_TRAIN_VAL))
    assert result.returncode == 0, result.stderr
    assert "data [1, 3, 224, 224]" in result.stdout and "outputs (Caffe order): pool4" in result.stdout


def test_verify_golden_folder_passes():
    result = run_cli("verify", str(VENDORED_GOLDEN / "mini_resnet"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Caffe (golden mini_resnet): 7 blobs compared: PASS" in result.stdout  # 2 of them split copies
    assert "onnxruntime" in result.stdout


def test_verify_reports_first_divergence(tmp_path):
    """One bias value changed: the output blob must fail, named as the first divergence."""
    from ninport.caffe import caffe_pb2

    case = VENDORED_GOLDEN / "conv_group2"
    net = caffe_pb2.NetParameter.FromString((case / "weights.caffemodel").read_bytes())
    conv = next(layer for layer in net.layer if layer.name == "l")
    conv.blobs[1].data[0] += 1.0
    tampered = tmp_path / "weights.caffemodel"
    tampered.write_bytes(net.SerializeToString())
    result = run_cli("verify", str(case / "net.prototxt"), "--weights", str(tampered), "--golden", str(case),
                     "--no-onnx", "--no-opencv")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "first divergence at blob 'out'" in result.stdout


def test_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "ReLU" bottom: "nothing" top: "a" \n')
    result = run_cli("inspect", str(bad))
    assert result.returncode == 1
    lines = messages(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ninport: error: ") and str(bad) in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path):
    result = run_cli("--debug", "inspect", str(tmp_path / "missing.prototxt"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_upgrade_v1_prototxt_and_caffemodel_round_trip(tmp_path):
    from ninport.caffe.spec import load_netspec

    case = VENDORED_GOLDEN / "legacy_v1"
    out_proto = tmp_path / "new.prototxt"
    out_model = tmp_path / "new.caffemodel"
    assert run_cli("upgrade", str(case / "net.prototxt"), "-o", str(out_proto)).returncode == 0
    assert run_cli("upgrade", str(case / "weights.caffemodel"), "-o", str(out_model)).returncode == 0
    assert "layers {" not in out_proto.read_text() and "layer {" in out_proto.read_text()
    old, new = load_netspec(case / "net.prototxt"), load_netspec(out_proto)
    assert [(l.name, l.type, l.bottoms, l.tops) for l in old.layers] == \
        [(l.name, l.type, l.bottoms, l.tops) for l in new.layers]
    assert new.inputs == old.inputs and new.outputs == old.outputs


def test_upgrade_refuses_to_overwrite_its_input():
    case = VENDORED_GOLDEN / "legacy_v0" / "net.prototxt"
    result = run_cli("upgrade", str(case), "-o", str(case))
    assert result.returncode == 1 and "refusing to overwrite" in result.stderr


def _assert_one_line_error(result, *needles):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = messages(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ninport: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file_and_directory_given_as_file(tmp_path):
    _assert_one_line_error(run_cli("inspect", str(tmp_path / "nope.prototxt")), "nope.prototxt", "no such file")
    _assert_one_line_error(run_cli("convert", str(tmp_path), "-o", str(tmp_path / "o")), "is a directory")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder_is_one_line_and_leaves_nothing(tmp_path):
    # /proc refuses new entries even for root, unlike a chmod'ed folder
    _assert_one_line_error(run_cli("convert", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "--weights",
                                   str(VENDORED_GOLDEN / "conv_group2" / "weights.caffemodel"), "-o",
                                   "/proc/ninport-out"), "/proc/ninport-out")


def test_failed_convert_leaves_the_output_folder_as_it_was(tmp_path):
    """Weights of another net: refused before anything is written; existing files untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "net.onnx").write_bytes(b"previous")
    result = run_cli("convert", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "--weights",
                     str(VENDORED_GOLDEN / "mini_resnet" / "weights.caffemodel"), "-o", str(out))
    _assert_one_line_error(result, "weights.caffemodel", "another net")
    assert sorted(p.name for p in out.iterdir()) == ["net.onnx"]
    assert (out / "net.onnx").read_bytes() == b"previous"


def test_absurd_num_output_fails_before_allocating_naming_the_layer(tmp_path):
    """6e9 weights (24 GB) would exhaust this machine if anything were allocated before the check."""
    net = tmp_path / "huge.prototxt"
    net.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
                   'layer { name: "big" type: "Convolution" bottom: "data" top: "big"\n'
                   '  convolution_param { num_output: 2000000000 kernel_size: 1 } }\n')
    import ninport
    from ninport.errors import ShapeError
    with pytest.raises(ShapeError, match='layer "big"'):
        ninport.load(net)
    _assert_one_line_error(run_cli("inspect", str(net)), str(net), '"big"')


def test_convert_reports_and_checks_the_onnx_file(tmp_path):
    case = VENDORED_GOLDEN / "mini_inception"
    result = run_cli("convert", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
                     "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "inputs data [1, 8, 12, 12] (batch, height and width dynamic), outputs prob" in result.stdout
    assert f"wrote {tmp_path / 'net.onnx'}" in result.stdout
    # the self-check says what it compared: the output and the logits the final Softmax reads
    assert ("checked: onnxruntime runs net.onnx with the torch model's numbers on prob (output), "
            "fc (logits of Softmax layer prob)") in result.stdout
    # not on a terminal, the stages are logged on stderr, one line each, and nothing else is
    stages = result.stderr.strip().splitlines()
    assert all(is_progress(line) for line in stages), stages
    assert any("exporting ONNX to" in line for line in stages) and any("onnxruntime" in line for line in stages)
    quiet = run_cli("convert", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
                    "-o", str(tmp_path), "--quiet", "--no-check")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_convert_shows_no_unsafe_character_of_the_file(tmp_path):
    """Issue 18 item 7: the self-check's line named the Softmax layer raw ("logits of Softmax layer ...")."""
    import unicodedata

    name = "soft\u2028max\u061c\U000e0041"
    net = tmp_path / "net.prototxt"
    net.write_text('input: "data"\ninput_shape { dim: 1 dim: 4 }\n'
                   'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                   'inner_product_param { num_output: 3 } }\n'
                   f'layer {{ name: "{name}" type: "Softmax" bottom: "fc" top: "prob" }}\n', encoding="utf-8")
    result = run_cli("convert", str(net), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "fc (logits of Softmax layer soft\\u2028max\\u061c\\U000e0041)" in result.stdout
    out = result.stdout + result.stderr
    assert not [c for c in out if unicodedata.category(c) in {"Cf", "Zl", "Zp", "Co", "Cn", "Cs"} or c in "\x1b\r"]


def test_convert_without_weights_says_random(tmp_path):
    result = run_cli("convert", str(NIN_DEPLOY), "-o", str(tmp_path), "--no-check")
    assert result.returncode == 0, result.stderr
    assert "weights: RANDOM" in result.stdout and "RANDOM weights" in result.stderr
    assert "checked:" not in result.stdout and (tmp_path / "deploy.onnx").is_file()
    assert "not checked (--no-check): deploy.onnx" in result.stdout  # says so, rather than nothing


def test_verify_without_golden_uses_opencv_and_onnxruntime():
    case = VENDORED_GOLDEN / "legacy_v0"
    result = run_cli("verify", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seeded random inputs" in result.stdout
    assert "OpenCV 4.x dnn: 1 blob compared: PASS" in result.stdout
    assert "onnxruntime (exported ONNX): 1 blob compared: PASS" in result.stdout


def test_verify_skips_opencv_where_it_is_known_to_differ():
    result = run_cli("verify", str(VENDORED_GOLDEN / "lrn_across"), "--no-onnx")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped OpenCV: OpenCV ignores LRN k != 1" in result.stdout


def test_unexpected_exception_is_an_internal_error_with_debug_hint(monkeypatch, capsys):
    from ninport import cli

    def broken(args):
        raise RuntimeError("simulated bug\nsecond line")
    monkeypatch.setattr(cli, "cmd_inspect", broken)
    assert cli.main(["inspect", str(NIN_DEPLOY)]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: RuntimeError: simulated bug" in err[0] and "--debug" in err[0]


def test_inspect_checks_that_weights_fit():
    case = VENDORED_GOLDEN / "mini_resnet"
    good = run_cli("inspect", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"))
    assert good.returncode == 0, good.stderr
    assert "fits the net: 9 layers" in good.stdout
    bad = run_cli("inspect", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "--weights",
                  str(case / "weights.caffemodel"))
    _assert_one_line_error(bad, "another net")


def test_verify_without_weights_does_not_compare_opencv_on_different_weights():
    result = run_cli("verify", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped OpenCV: no caffemodel given" in result.stdout
    assert "onnxruntime (exported ONNX): 1 blob compared: PASS" in result.stdout
    assert "RANDOM weights" in result.stderr


def test_inspect_json_has_the_nin_table():
    import json

    result = run_cli("inspect", str(NIN_DEPLOY), "--input-shape", "1,3,227,227", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    shapes = {row["layer"]: row["output_shapes"][0] for row in info["layers"]}
    assert [shapes[l][2] for l in ("conv1", "pool0", "pool2", "pool3", "pool4")] == [55, 27, 13, 6, 1]
    assert info["total_parameters"] == 7_595_176 and info["total_statistics"] == 0 and info["outputs"] == ["pool4"]
    relu0 = next(row for row in info["layers"] if row["layer"] == "relu0")
    assert relu0["in_place"] and relu0["parameters"] == 0


@pytest.mark.parametrize("args,needle", [
    (["inspect", str(NIN_DEPLOY), "--input-shape", "1,3,x"], "--input-shape"),
    (["inspect", str(NIN_DEPLOY), "--input-shape", "1,3,0,5"], "positive"),
    (["verify", str(VENDORED_GOLDEN / "mini_resnet"), "--tolerance", "nan"], "--tolerance"),
    (["verify", str(VENDORED_GOLDEN / "mini_resnet"), "--seed", "-3"], "--seed"),
    (["convert", str(NIN_DEPLOY), "--format", "onnx,tflite", "-o", "/nonexistent/out"], "tflite"),
    (["inspect"], "prototxt"),
])
def test_bad_values_are_exit_1_with_one_line(args, needle):
    _assert_one_line_error(run_cli(*args), needle)


def test_warnings_are_one_line_each_and_escaped(tmp_path):
    """A NinportWarning carrying file text (here the prototxt path) is printed on one line, escaped."""
    folder = tmp_path / "we\x1bird"
    folder.mkdir()
    net = folder / "net.prototxt"
    net.write_text((VENDORED_GOLDEN / "conv_group2" / "net.prototxt").read_text())
    result = run_cli("convert", str(net), "-o", str(tmp_path / "o"), "--no-check")
    assert result.returncode == 0, result.stderr
    [warning] = messages(result.stderr)
    assert warning.startswith("ninport: warning: ") and "we\\x1bird" in warning and "\x1b" not in result.stderr


def test_every_written_file_is_checked_and_named(tmp_path):
    """`--format py` alone writes net.py and the net.safetensors it loads: both are checked, each named."""
    case = VENDORED_GOLDEN / "conv_group2"
    args = [str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel")]
    alone = run_cli("convert", *args, "--format", "py", "-o", str(tmp_path / "py"))
    assert alone.returncode == 0, alone.stderr
    checked = [line for line in alone.stdout.splitlines() if line.startswith("checked: ")]
    assert len(checked) == 2 and "a Python without ninport runs net.py" in checked[0], alone.stdout
    assert checked[1].startswith("checked: net.safetensors holds 2 tensors of the module's state dict, bit for bit")
    every = run_cli("convert", *args, "--format", "onnx,pt2,safetensors,py", "-o", str(tmp_path / "all"), "-q")
    assert every.returncode == 0, every.stderr
    runners = [line.split(" runs ")[0] for line in every.stdout.splitlines() if " runs net." in line]
    assert runners == ["checked: onnxruntime", "checked: torch.export.load", "checked: a Python without ninport"]
    assert "checked: net.safetensors holds" in every.stdout


def test_convert_says_why_height_and_width_are_fixed(tmp_path):
    """InnerProduct after spatial layers fixes the size: the summary says so and names the layer; --dynamic
    is refused naming it; --static says it was asked for."""
    case = VENDORED_GOLDEN / "innerproduct_softmax"
    args = [str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"), "-o", str(tmp_path), "-q",
            "--no-check"]
    fixed = run_cli("convert", *args)
    assert fixed.returncode == 0, fixed.stderr
    assert "(batch dynamic; height and width fixed: the net runs only at its input size (layer 'fc': " in fixed.stdout
    _assert_one_line_error(run_cli("convert", *args, "--dynamic"), "height and width cannot be dynamic", "'fc'")
    static = run_cli("convert", str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt"), "-o", str(tmp_path / "s"),
                     "-q", "--no-check", "--static")
    assert "(batch dynamic; height and width fixed: as asked (dynamic_size=False" in static.stdout, static.stdout
    both = run_cli("convert", *args, "--static", "--dynamic")
    assert both.returncode == 1 and "not allowed with" in both.stderr


# Runs `ninport ARGS...` and says on stderr whether torch was imported on the way.
NO_TORCH_PROBE = ("import sys\nfrom ninport.cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
                  "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)\n")


def run_cli_watching_torch(*args: str) -> tuple[subprocess.CompletedProcess, bool]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    result = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE, *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("torch imported: "), result.stderr
    result.stderr = "\n".join(lines[:-1])
    return result, lines[-1] == "torch imported: True"


def test_bad_arguments_and_files_fail_before_torch_loads(tmp_path):
    """Importing torch takes seconds: everything checkable is checked first, so a typo answers at once."""
    good = str(VENDORED_GOLDEN / "conv_group2" / "net.prototxt")
    broken = tmp_path / "broken.prototxt"
    broken.write_text('name: "x"\nlayer { name: "a" type: "ReLU" bottom: "nothing" top: "a" }\n')
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = [
        (["convert", str(tmp_path / "nosuch.prototxt")], "no such file"),
        (["convert", good, "--format", "tflite"], "tflite"),
        (["convert", str(tmp_path)], "is a directory"),
        (["convert", good, "--weights", str(tmp_path / "nosuch.caffemodel")], "nosuch.caffemodel"),
        (["convert", good, "-o", str(a_file)], "not a folder"),
        (["convert", good, "-o", str(a_file / "sub")], str(a_file / "sub")),
        (["convert", str(broken)], "no input"),
        (["convert", good, "--input-shape", "1,3,x"], "--input-shape"),
        (["verify", str(tmp_path / "nosuch.prototxt")], "no such file"),
        (["verify", good, "--weights", str(tmp_path / "nosuch.caffemodel")], "nosuch.caffemodel"),
        (["predict", str(tmp_path / "nosuch.prototxt"), "x.jpg"], "no such file"),
    ]
    for args, needle in cases:
        result, torch_imported = run_cli_watching_torch(*args)
        _assert_one_line_error(result, needle)
        assert not torch_imported, args
    assert not (a_file.parent / "o").exists()
    # Size questions need the shape rules, which live beside their torch modules: one line still, after torch.
    fixed = VENDORED_GOLDEN / "innerproduct_softmax" / "net.prototxt"
    _assert_one_line_error(run_cli("convert", str(fixed), "-o", str(tmp_path / "d"), "--dynamic"), "layer 'fc': ")
    assert not (tmp_path / "d").exists()


def test_help_and_counts_read_right(tmp_path):
    top = run_cli("--help").stdout
    assert "standalone PyTorch .py" in top and "detect objects" in top and "--resize 256,256" in top
    assert "--resize 256 " not in run_cli("predict", "--help").stdout
    net = tmp_path / "one.prototxt"
    net.write_text('input: "data"\ninput_shape { dim: 1 dim: 2 }\nlayer { name: "r" type: "ReLU" bottom: "data" '
                   'top: "r" }\n')
    assert "total: 1 layer, 0 parameters" in run_cli("inspect", str(net)).stdout
