"""The generated .py file: standalone (no ninport), exact (Caffe's numbers), readable, and safe with hostile names."""
from __future__ import annotations

import ast
import importlib.util
import io
import json
import subprocess
import sys
import tokenize
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from torch import nn

import ninport
from ninport.caffe import caffe_pb2 as pb2
from ninport.errors import ExportError, ShapeError
from ninport.export import codegen
from ninport.export.codegen import python_source, write_python
from tests.conftest import (
    REPO,
    SIZES_GOLDEN,
    SSD_GOLDEN,
    golden_case_names,
    load_golden,
    plain_kernels,
    relative_error,
)

TOLERANCE = 1e-5
REFERENCE_MODELS = REPO / "reference_models"
# Inputs small enough to keep the weights small (fc layers shrink with the input); large enough for each
# net's fixed-size final pooling.
REFERENCE_SHAPES = {"bvlc_alexnet": (1, 3, 67, 67), "vgg16": (1, 3, 32, 32), "hed": (1, 3, 64, 48),
                    "fcn8s": (1, 3, 16, 16), "colorization": (1, 1, 64, 64)}
# Nets with more than one input (Faster R-CNN's data and im_info): their own tests run them.
ONE_INPUT_REFERENCE_MODELS = sorted(p.name for p in REFERENCE_MODELS.iterdir()
                                    if p.is_dir() and p.name != "faster_rcnn_vgg16")

RUNNER = """
import importlib.util, json, sys
sys.modules['ninport'] = None  # any import of ninport fails
import numpy as np, torch
for case in json.loads(open(sys.argv[1]).read()):
    spec = importlib.util.spec_from_file_location(case['name'], case['py'])
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    model = code.load()
    inputs = np.load(case['inputs'])
    with torch.no_grad():
        out = model(*[torch.from_numpy(inputs[name]) for name in case['input_names']])
    out = out if isinstance(out, tuple) else (out,)
    np.savez(case['outputs'], *[o.numpy() for o in out])
"""


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    return code


def _run_without_ninport(runs: list[tuple[Path, Path, list[str]]], tmp_path: Path) -> list[list[np.ndarray]]:
    """Run each (generated .py, inputs .npz, input names) in ONE fresh process where `import ninport`
    fails; the outputs of each run, in the net's order."""
    cases = [{"name": f"generated_{i}", "py": str(py), "inputs": str(inputs), "input_names": list(names),
              "outputs": str(tmp_path / f"outputs_{i}.npz")} for i, (py, inputs, names) in enumerate(runs)]
    listing = tmp_path / "cases.json"
    listing.write_text(json.dumps(cases))
    result = subprocess.run([sys.executable, "-c", RUNNER, str(listing)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = []
    for case in cases:
        saved = np.load(case["outputs"])
        outputs.append([saved[f"arr_{i}"] for i in range(len(saved.files))])
    return outputs


def test_every_golden_case_matches_caffe_through_the_generated_file(tmp_path):
    """All golden cases in one fresh process where `import ninport` fails."""
    runs, cases = [], []
    for name in golden_case_names():
        case = load_golden(name)
        module = ninport.load(case.prototxt, case.weights)
        folder = tmp_path / name
        folder.mkdir()
        write_python(module, folder / "net.py")
        np.savez(folder / "inputs.npz", **case.inputs())
        runs.append((folder / "net.py", folder / "inputs.npz", list(case.info["inputs"])))
        cases.append((name, case))
    assert len(runs) >= 40
    for (name, case), got in zip(cases, _run_without_ninport(runs, tmp_path), strict=True):
        blobs = case.blobs()
        assert len(got) == len(case.info["outputs"]), name
        for value, blob in zip(got, case.info["outputs"]):
            err = relative_error(value, blobs[blob])
            assert err <= TOLERANCE, f"{name}: output {blob}: relative error {err:.2e}"


@pytest.mark.parametrize("model", ONE_INPUT_REFERENCE_MODELS)
def test_reference_model_source_builds_and_matches_fx(model, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(REFERENCE_MODELS / model / "deploy.prototxt", input_shape=REFERENCE_SHAPES.get(model))
    path = tmp_path / f"{model}.py"
    path.write_text(python_source(module))
    code = _import_file(path, f"generated_{model}")
    net = getattr(code, type(module).__name__)()
    net.load_state_dict(module.state_dict())  # strict: the keys are the fx module's keys
    net.eval()
    torch.manual_seed(0)
    shape = next(iter(ninport.describe(module).inputs.values()))
    x = torch.rand(2, *shape[1:]) * 255
    with plain_kernels(), torch.no_grad():
        expected, got = module(x), net(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def _cases(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if (p / "case.json").is_file())


def test_every_ssd_golden_case_matches_ssd_caffe_through_the_generated_file(tmp_path):
    """The 32 cases SSD Caffe computed (PriorBox, Normalize, Permute, DetectionOutput and a small SSD net):
    the generated file reproduces every output, detection rows included, where ninport is not importable."""
    runs, expected = [], []
    for folder in _cases(SSD_GOLDEN, "ssd_*"):
        info = json.loads((folder / "case.json").read_text())
        weights = folder / info["weights"] if info.get("weights") else None
        py = write_python(ninport.load(folder / "net.prototxt", weights), tmp_path / f"{folder.name}.py")
        runs.append((py, folder / "inputs.npz", list(info["inputs"])))
        expected.append((folder.name, info["outputs"], np.load(folder / "blobs.npz")))
    assert len(runs) == 32
    for (name, outputs, blobs), got in zip(expected, _run_without_ninport(runs, tmp_path), strict=True):
        assert len(got) == len(outputs), name
        for value, blob in zip(got, outputs):
            assert value.shape == blobs[blob].shape, f"{name}: output {blob}"
            err = relative_error(value, blobs[blob])
            assert err <= TOLERANCE, f"{name}: output {blob}: relative error {err:.2e}"


def test_one_generated_file_per_net_matches_caffe_at_every_size(tmp_path):
    """tests/fixtures/caffe-golden-sizes: Caffe ran each net at four sizes; one generated file per net, run
    without ninport, reproduces Caffe's outputs at all of them (pooling, Deconvolution, Crop, SPP follow)."""
    from tests.build.test_any_size import _tolerance

    runs, expected = [], []
    folders = _cases(SIZES_GOLDEN, "sz_*")
    for declared in (f for f in folders if (f / "weights.caffemodel").is_file()):
        net = declared.name.split("_")[1] + "_" + declared.name.split("_")[2]
        module = ninport.load(declared / "net.prototxt", declared / "weights.caffemodel")
        path = write_python(module, tmp_path / f"{net}.py")
        for folder in (f for f in folders if f.name.startswith(f"sz_{net}_")):
            info = json.loads((folder / "case.json").read_text())
            runs.append((path, folder / "inputs.npz", list(info["inputs"])))
            expected.append((folder, module, info))
    assert len(runs) == 16
    for (folder, module, info), got in zip(expected, _run_without_ninport(runs, tmp_path), strict=True):
        caffe = dict(np.load(folder / "blobs.npz"))
        inputs = np.load(folder / "inputs.npz")
        ours = ninport.forward_blobs(module, *[torch.from_numpy(inputs[n]) for n in info["inputs"]])
        for value, blob in zip(got, info["outputs"], strict=True):
            assert value.shape == caffe[blob].shape, f"{folder.name}: output {blob}"
            err = relative_error(value, caffe[blob])
            assert err <= _tolerance(module, blob, ours, caffe), f"{folder.name}: output {blob}: {err:.2e}"


def test_every_reference_model_file_runs_without_ninport(tmp_path):
    """Each reference model's .py and safetensors (seeded random weights: no published weights here), run
    in one fresh process where `import ninport` fails, gives the fx module's outputs."""
    runs, expected = [], []
    for model in ONE_INPUT_REFERENCE_MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ninport.load(REFERENCE_MODELS / model / "deploy.prototxt",
                                  input_shape=REFERENCE_SHAPES.get(model))
        py = write_python(module, tmp_path / f"{model}.py")
        shape = next(iter(ninport.describe(module).inputs.values()))
        # small inputs: with seeded weights, a mean-subtracted image's +-128 overflows an SSD's box decoding
        x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        np.savez(tmp_path / f"{model}_inputs.npz", data=x)
        with plain_kernels(), torch.no_grad():
            out = module(torch.from_numpy(x))
        runs.append((py, tmp_path / f"{model}_inputs.npz", ["data"]))
        expected.append((model, out if isinstance(out, tuple) else (out,)))
    assert len(runs) == 13
    for (model, outputs), got in zip(expected, _run_without_ninport(runs, tmp_path), strict=True):
        assert len(got) == len(outputs), model
        for value, out in zip(got, outputs):
            assert value.shape == tuple(out.shape), model
            assert relative_error(value, out.numpy()) <= 1e-6, model


# sizes other than the reference one: Caffe's pooling rounding, SPP bins, Crop and Reshape follow the input
OTHER_SIZES = [(0, 1), (1, 0), (2, 3), (5, 4), (-1, -2)]


def test_generated_file_runs_at_other_input_sizes_like_the_fx_module(tmp_path):
    """Every golden case's file at several other input sizes: the same outputs as the fx module wherever
    the fx module accepts the size (pooling, SPP, Crop, Reshape recompute their geometry per forward)."""
    compared = 0
    for name in golden_case_names():
        case = load_golden(name)
        module = ninport.load(case.prototxt, case.weights)
        path = tmp_path / f"{name}.py"
        path.write_text(python_source(module))
        code = _import_file(path, f"sized_{name}")
        net = getattr(code, type(module).__name__)()
        net.load_state_dict(module.state_dict())
        net.eval()
        inputs = case.inputs()
        for dh, dw in OTHER_SIZES:
            resized = []
            for x in inputs.values():
                x = torch.from_numpy(x)
                if x.dim() == 4:
                    x = _resized(x, x.shape[2] + dh, x.shape[3] + dw)
                resized.append(x)
            with plain_kernels(), torch.no_grad():
                try:
                    expected = module(*resized)
                except (ShapeError, RuntimeError):  # a size the net cannot take (e.g. weights over H, W)
                    continue
                got = net(*resized)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = got if isinstance(got, tuple) else (got,)
            for e, g in zip(expected, got):
                assert e.shape == g.shape, (name, dh, dw)
                assert torch.allclose(e, g, rtol=1e-6, atol=1e-6, equal_nan=True), (name, dh, dw)
            compared += 1
    assert compared >= 100


def _resized(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """x cut or extended (reflected values) to h x w, so new rows hold real data."""
    x = x[:, :, :h, :w]
    while x.shape[2] < h or x.shape[3] < w:
        x = torch.cat([x, x.flip(2)], 2)[:, :, :max(h, x.shape[2])] if x.shape[2] < h else x
        x = torch.cat([x, x.flip(3)], 3)[:, :, :, :max(w, x.shape[3])] if x.shape[3] < w else x
        x = x[:, :, :h, :w]
    return x.contiguous()


def test_generated_file_reads_like_model_code(tmp_path):
    case = load_golden("mini_resnet")
    source = python_source(ninport.load(case.prototxt, case.weights))
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "json", "math", "os", "struct", "sys", "pathlib", "torch", "nn", "F",
                        "annotations", "Path", "functional"}, imported
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}
    assert "nn.Conv2d(" in source and "def forward(self, " in source and "def load(" in source
    for record in ninport.describe(ninport.load(case.prototxt, case.weights)).layers:
        assert f"# {record.name} ({record.type})" in source


def test_hostile_names_stay_comments(tmp_path):
    """Layer, blob and net names with quotes, newlines, triple quotes and backslashes: the file still
    compiles and runs, and the names appear only inside comments."""
    evil = 'x"""\n__import__("os").system("touch PWNED")\n#\\\' \'\'\' \r\\n'
    net = pb2.NetParameter(name=evil + "net")
    net.layer.add(name=evil + "in", type="Input", top=[evil]).input_param.shape.add(dim=[1, 2, 5, 5])
    conv = net.layer.add(name=evil, type="Convolution", bottom=[evil], top=[evil + "c"])
    conv.convolution_param.num_output = 3
    conv.convolution_param.kernel_size.append(3)
    net.layer.add(name=evil + "relu", type="ReLU", bottom=[evil + "c"], top=[evil + "c"])
    net.layer.add(name="concat" + evil, type="Concat", bottom=[evil + "c", evil + "c"], top=["out" + evil])
    prototxt = tmp_path / "evil.prototxt"
    prototxt.write_text(text_format.MessageToString(net))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ninport.load(prototxt)
    path = write_python(module, tmp_path / "evil.py")
    source = path.read_text()
    compile(source, str(path), "exec")
    class_name = type(module).__name__  # letters and digits of the net name, as fx names the class
    assert class_name.isidentifier() and class_name.isalnum()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if "PWNED" in token.string or "system" in token.string:
            # in comments, escaped; or inside identifiers made of its letters and digits (inert names)
            assert token.type in (tokenize.COMMENT, tokenize.NAME), token
        if token.type == tokenize.STRING:
            assert "PWNED" not in token.string and "system" not in token.string, token
    calls = {getattr(node.func, "attr", getattr(node.func, "id", None)) for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call)}
    assert not calls & {"system", "popen", "__import__", "exec"}
    x = np.random.default_rng(0).random((1, 2, 5, 5), dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    [[got]] = _run_without_ninport([(path, tmp_path / "in.npz", ["x"])], tmp_path)
    assert not (tmp_path / "PWNED").exists()
    with plain_kernels(), torch.no_grad():
        assert np.array_equal(got, module(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("net_name", ["f", "path", "nn", "torch", "load", "caffe_pool2d", "eltwise_sum",
                                      "detection_output", "pool_params", "pool_window"])
def test_the_net_class_never_shadows_a_name_the_file_uses(net_name, tmp_path):
    """The class is named after the net; a net called like an import, a helper class or `load` gets a
    suffix, so the file still runs (the SSD fixtures' net "detection_output" once broke this)."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f'name: "{net_name}"\ninput: "data"\ninput_shape {{ dim: 1 dim: 2 dim: 7 dim: 7 }}\n'
                        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
                        'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }\n'
                        'layer { name: "sum" type: "Eltwise" bottom: "pool" bottom: "pool" top: "sum" '
                        'eltwise_param { coeff: 1 coeff: -0.5 } }\n')
    module = ninport.load(prototxt)
    path = write_python(module, tmp_path / "net.py")
    source = path.read_text()
    assert "class CaffePool2d(" in source and "class EltwiseSum(" in source
    code = _import_file(path, f"named_{net_name}")
    x = torch.rand(1, 2, 7, 7)
    with plain_kernels(), torch.no_grad():
        assert torch.equal(code.load()(x), module(x))


def _layer_module_classes() -> dict[str, type]:
    import importlib
    import inspect
    import pkgutil

    from ninport import layers

    classes = {}
    for info in pkgutil.iter_modules(layers.__path__):
        family = importlib.import_module(f"ninport.layers.{info.name}")
        for name, cls in vars(family).items():
            if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == family.__name__:
                classes[f"{info.name}.{name}"] = cls
    return classes


def test_every_layer_module_class_records_its_arguments():
    """Each converter module class is written by its own source: it records its constructor arguments, or
    derives from a class that does (ninport's size checks on top), or is torch's own convolution. Two
    recorded classes of one name would be two definitions of a layer in one file."""
    classes = _layer_module_classes()
    recorded = {key: cls for key, cls in classes.items() if "__records_args__" in cls.__dict__}
    assert len(recorded) >= 35
    unwritable = [key for key, cls in classes.items() if not key.split(".")[1].startswith("_")
                  and not any("__records_args__" in base.__dict__ for base in cls.__mro__)
                  and not issubclass(cls, (nn.Conv2d, nn.ConvTranspose2d))]
    assert not unwritable
    names = [cls.__name__ for cls in recorded.values()]
    assert len(names) == len(set(names))


def _ninport_definitions(name: str) -> list:
    """The classes and functions named `name` that a loaded ninport module defines."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "ninport" and module is not None:
            obj = vars(module).get(name)
            if (isinstance(obj, type) or callable(obj)) and getattr(obj, "__module__", None) == module_name:
                found.append(obj)
    return found


def _without_records_args(node: ast.AST) -> str:
    node.decorator_list = [d for d in node.decorator_list if ast.unparse(d) != "records_args"]
    return ast.dump(node)


@pytest.mark.parametrize("case_name", ["mini_resnet", "pool_ave_k3s2p1", "pool_global_ave_max", "shape_layers"])
def test_the_file_holds_the_layer_modules_own_source(case_name, tmp_path):
    """Every class and function of the generated file but the net, the reader and `load` is ninport's own
    definition of that name, exactly (the `@records_args` line aside), defined once in ninport and once in
    the file: the file's layer is the fx module's layer."""
    import inspect
    import textwrap

    case = load_golden(case_name)
    module = ninport.load(case.prototxt, case.weights)
    tree = ast.parse(python_source(module))
    defined = [node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    names = [node.name for node in defined]
    assert len(names) == len(set(names))
    copied = [node for node in defined if node.name not in {type(module).__name__, "read_safetensors", "load"}]
    assert len(copied) >= 3
    for node in copied:
        [obj] = _ninport_definitions(node.name)
        [own] = ast.parse(textwrap.dedent(inspect.getsource(obj))).body
        assert _without_records_args(node) == _without_records_args(own), node.name


class _Doubler(nn.Module):
    def forward(self, x):
        return x * 2


def _plugin_offset(x, offset):
    return x + offset


PLUGIN_SCALE = 3.0


@ninport.records_args
class _Shifter(nn.Module):
    """A plugin's module written as ninport's own are: it records its arguments; its helper function and
    constant come along."""

    def __init__(self, offset: float, weight: torch.Tensor):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return _plugin_offset(x, self.offset) * self.weight.view(1, -1, 1, 1) * PLUGIN_SCALE


@ninport.records_args
class _UsesNumpy(nn.Module):
    def forward(self, x):
        return x * float(np.pi)


def _register(type_name: str, make) -> Path:
    ninport.register_layer(type_name, shape=lambda layer, shapes: [shapes[0]], module=make)


def _one_layer_net(tmp_path: Path, type_name: str) -> Path:
    prototxt = tmp_path / "p.prototxt"
    prototxt.write_text('name: "p"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 2 dim: 2 }\n'
                        f'layer {{ name: "twice" type: "{type_name}" bottom: "data" top: "y" }}\n')
    return prototxt


def test_a_module_that_records_no_arguments_is_refused_naming_the_layer(tmp_path):
    _register("Doubler", lambda ctx: _Doubler())
    try:
        module = ninport.load(_one_layer_net(tmp_path, "Doubler"))
        with pytest.raises(ExportError, match='layer "twice" \\(Doubler\\).*_Doubler.*records_args'):
            write_python(module, tmp_path / "p.py")
        assert not (tmp_path / "p.py").exists()
    finally:
        ninport.unregister_layer("Doubler")


def test_a_module_using_what_a_standalone_file_cannot_hold_is_refused(tmp_path):
    _register("UsesNumpy", lambda ctx: _UsesNumpy())
    try:
        module = ninport.load(_one_layer_net(tmp_path, "UsesNumpy"))
        with pytest.raises(ExportError, match=r'layer "twice" \(UsesNumpy\).*uses .np. \(module\)'):
            write_python(module, tmp_path / "p.py")
    finally:
        ninport.unregister_layer("UsesNumpy")


def test_a_plugin_module_that_records_its_arguments_is_written_with_what_it_uses(tmp_path):
    _register("Shifter", lambda ctx: _Shifter(0.5, torch.tensor([2.0, -1.0])))
    try:
        module = ninport.load(_one_layer_net(tmp_path, "Shifter"))
        path = write_python(module, tmp_path / "p.py")
        source = path.read_text()
        assert "self.twice = _Shifter(offset=0.5, weight=torch.empty([2]))" in source
        assert "def _plugin_offset(" in source and "PLUGIN_SCALE = 3.0" in source and "records_args" not in source
        x = torch.rand(1, 2, 2, 2)
        with plain_kernels(), torch.no_grad():
            assert torch.equal(_import_file(path, "generated_plugin").load()(x), module(x))
    finally:
        ninport.unregister_layer("Shifter")


@pytest.mark.parametrize("net_name", ["none", "true", "false", "valueError", "notImplemented", "match", "path",
                                      "readSafetensors", "float", "__debug__", "case", "_", "type"])
def test_the_class_name_is_never_a_keyword_builtin_or_a_name_of_the_file(tmp_path, net_name):
    """Issue 18 item 4: a net named `none` gave `class None(nn.Module):` (a SyntaxError), `valueError` a class
    `ValueError` hiding the builtin that the file's own reader raises."""
    import builtins
    import keyword

    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(f'name: "{net_name}"\ninput: "data"\ninput_shape {{ dim: 1 dim: 2 dim: 3 dim: 3 }}\n'
                        'layer { name: "r" type: "ReLU" bottom: "data" top: "y" }\n')
    source = python_source(ninport.load(prototxt))
    tree = ast.parse(source)  # a SyntaxError here fails the test
    [load] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "load"]
    net_class = load.returns.id  # def load(...) -> NetClass
    assert net_class not in set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)), net_class
    namespace: dict = {}
    exec(compile(source, "generated.py", "exec"), namespace)  # defines the file's names, runs nothing else
    assert not {name for name in namespace if not name.startswith("__")} & set(dir(builtins))  # shadows none
    assert namespace["load"].__annotations__["return"] == net_class
    assert isinstance(namespace[net_class], type) and issubclass(namespace[net_class], nn.Module)
    helpers = [node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    assert helpers.count(net_class) == 1


def test_invisible_and_line_breaking_characters_of_names_are_escaped_in_the_comments(tmp_path):
    """Issue 18 item 7: U+2028 in a layer name reached a comment raw, and an editor that breaks lines there shows
    the comment's tail as a line of code. No character of Cf, Zl, Zp, Co, Cn (nor a control but newline) is left."""
    import unicodedata

    name = "n\u061c\u2028\u2029\u2060\u2064\U000e0041\U000e007f\ue000\u0378\x85\x0bx"
    net = pb2.NetParameter(name=name)
    net.layer.add(name=name + "in", type="Input", top=[name]).input_param.shape.add(dim=[1, 2, 3, 3])
    net.layer.add(name=name, type="ReLU", bottom=[name], top=[name + "out"])
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(text_format.MessageToString(net, as_utf8=True), encoding="utf-8")
    source = python_source(ninport.load(prototxt))
    unsafe = {"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"}
    assert not [c for c in source if unicodedata.category(c) in unsafe and c != "\n"]
    assert "# n\\u061c\\u2028\\u2029\\u2060\\u2064\\U000e0041\\U000e007f\\ue000\\u0378\\x85\\x0bx (ReLU)" in source
    assert len(source.splitlines()) == len(source.split("\n")) - 1  # no line break but newline, for any reader


def test_source_that_does_not_compile_is_an_export_error_and_nothing_is_written(tmp_path, monkeypatch):
    """The generated source is compiled before it is written: a bug in code generation (here a constructor
    line cut short) is an ExportError, never a broken .py file (nor its .safetensors) on disk."""
    monkeypatch.setattr(codegen, "_torch_constructor", lambda m: "nn.Identity(")
    prototxt = tmp_path / "p.prototxt"
    prototxt.write_text('name: "p"\ninput: "data"\ninput_shape { dim: 1 dim: 1 dim: 2 dim: 2 }\n'
                        'layer { name: "b" type: "ReLU" bottom: "data" top: "y" }\n')
    module = ninport.load(prototxt)
    with pytest.raises(ExportError, match=r"p.prototxt: the generated Python source does not compile \(line \d+"):
        write_python(module, tmp_path / "p.py")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.prototxt"]
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="does not compile"):
        ninport.convert_files(prototxt, None, out, formats=("py",), check=False)
    assert not out.exists() or not any(out.iterdir())


def test_convert_format_py_writes_the_file_and_its_weights(tmp_path):
    case = load_golden("conv_rect")
    written = ninport.convert_files(case.prototxt, case.weights, tmp_path, formats=("py",), check=False).written
    stem = case.prototxt.stem
    assert written == {"py": tmp_path / f"{stem}.py", "safetensors": tmp_path / f"{stem}.safetensors"}
    code = _import_file(written["py"], "generated_conv_rect")
    model = code.load()
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(torch.from_numpy(case.inputs()["data"]))
    assert relative_error(out.numpy(), case.blobs()[case.info["outputs"][0]]) <= TOLERANCE


def test_a_net_without_a_name_is_named_after_its_file(tmp_path):
    """No `name:` in the prototxt: the class, the header comment, the fx class and the ONNX graph take the
    file's stem rather than a blank (`class Caffe`, `# Caffe net: `)."""
    prototxt = tmp_path / "face_detector.prototxt"
    prototxt.write_text('input: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
                        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    module = ninport.load(prototxt)
    source = python_source(module)
    assert "class FaceDetector(nn.Module)" in source
    assert "# Caffe net: face_detector (the prototxt has no name: the file's stem)" in source
    assert type(module).__name__ == "FaceDetector" and ninport.describe(module).name == ""
    import onnx

    assert onnx.load(str(ninport.export_onnx(module, tmp_path / "f.onnx"))).graph.name == "face_detector"
