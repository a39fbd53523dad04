"""A converted net as a standalone, readable PyTorch file: `ninport convert --format py`, `write_python`.

The file defines one nn.Module class named after the net, in the style of torchvision's model code: an
`__init__` that builds one attribute per Caffe layer (named as in `ninport.describe(module).layers`, the
same identifiers as the fx module, so the state_dict keys match), and a `forward` with one line per layer.

There is one definition of each layer: its module. A layer module records its constructor arguments
(`ninport.build.recorded.records_args`), and the file holds that class's own source (`inspect.getsource`,
without the decorator) and a `Cls(arg=value, ...)` line; the functions, classes and constants the class
uses are copied with it, found by name, transitively (e.g. `ninport.caffe.geometry`'s pooling windows).
Modules that refer to anything else (numpy, ninport's modules, a custom op) are refused with the layer
named. A subclass that only adds ninport's size checks (or, for SSD's DetectionOutput, the custom op that
export keeps whole) is written as the recorded class it derives from. Where torch's own class is exact
(nn.Conv2d, nn.ConvTranspose2d, nn.PReLU, nn.Dropout) the file uses it. A plugin's module class is
written the same way when it records its arguments. The file imports only torch (and the standard
library) and loads its weights from the `.safetensors` file written beside it, with a small reader of
its own.

Names from the Caffe files are data: code uses only the generated identifiers; the Caffe names appear in
comments only, escaped (`safe_text`: no newline or other control character survives).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import math
import os
import symtable
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ninport.build.description import NetDescription, describe
from ninport.build.graph import net_class_name, python_identifier
from ninport.build.recorded import TensorArg, recorded_args, records_args
from ninport.errors import ExportError, NinportError, safe_text, shape_text
from ninport.export.safetensors import write_safetensors
from ninport.fileio import write_atomic

COMMENT_CHARS = 100


# --- literals: only numbers, booleans, None, tuples and lists of them, and identifier-like words -----------


def lit(value: Any) -> str:
    """A Python literal for a constructor argument; refuses anything that is not plain data."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(float(value))
    if isinstance(value, str) and value.isidentifier():
        return repr(value)
    if isinstance(value, TensorArg):
        return _tensor(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(lit(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    raise NinportError(f"cannot write {type(value).__name__} as a Python literal")


def _tensor(arg: TensorArg) -> str:
    """An empty tensor of the argument's shape that the weights file fills (load_state_dict)."""
    if not isinstance(arg.dtype, torch.dtype):
        raise NinportError(f"cannot write a tensor of dtype {arg.dtype!r}")
    dtype = "" if arg.dtype == torch.float32 else f", dtype=torch.{str(arg.dtype).removeprefix('torch.')}"
    empty = f"torch.empty({lit([int(d) for d in arg.shape])}{dtype})"
    if not arg.parameter:
        return empty
    return f"nn.Parameter({empty})" if arg.requires_grad else f"nn.Parameter({empty}, requires_grad=False)"


# --- torch's own classes, where they are exact ---------------------------------------------------------------


def _pair(value) -> str:
    """(3, 3) -> 3, as torchvision writes it; (3, 5) stays a tuple."""
    value = tuple(int(v) for v in value)
    return lit(value[0]) if len(set(value)) == 1 else lit(value)


def _torch_constructor(m: nn.Module) -> str | None:
    """nn.Conv2d & co. (ninport's CaffeConv2d only adds size checks), or None for any other module."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        torch_class = nn.ConvTranspose2d if isinstance(m, nn.ConvTranspose2d) else nn.Conv2d
        options = [f"kernel_size={_pair(m.kernel_size)}"]
        for name, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1)):
            value = getattr(m, name, (default,))
            if any(int(v) != default for v in value):
                options.append(f"{name}={_pair(value)}")
        if m.groups != 1:
            options.append(f"groups={m.groups}")
        if m.bias is None:
            options.append("bias=False")
        return f"nn.{torch_class.__name__}({m.in_channels}, {m.out_channels}, {', '.join(options)})"
    if type(m) is nn.PReLU:
        return f"nn.PReLU(num_parameters={m.num_parameters})"
    if type(m) is nn.Dropout:
        return f"nn.Dropout(p={lit(float(m.p))})"
    return None


# --- a recorded class and what it uses, as source ------------------------------------------------------------

# what the file's header binds: a helper may use these names for these objects
_HEADER = {"torch": torch, "nn": nn, "F": F, "math": math}
# modules whose names a copied helper may import (the file needs only torch and the standard library)
_IMPORTABLE = {"torch", "math", "dataclasses", "functools", "itertools", "typing", "collections", "operator",
               "numbers"}


def _loaded_names(tree: ast.AST) -> set[str]:
    """The module-level names a definition reads, outside annotations (the file has
    `from __future__ import annotations`, so those stay strings)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
        elif isinstance(node, ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            if annotation is not None:
                skip.update(id(n) for n in ast.walk(annotation))
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
              and id(n) not in skip}
    return loaded & _global_names(symtable.symtable(ast.unparse(tree), "<definition>", "exec"))


def _global_names(table: symtable.SymbolTable) -> set[str]:
    """The names some scope of a definition reads from the module (not its locals and parameters)."""
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        names |= _global_names(child)
    return names


def _resolve(node: ast.expr, namespace: dict) -> Any:
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr, None)
    if isinstance(node, ast.Call):
        return None
    return None


def _importable(value: Any) -> str | None:
    """The import line that binds a module or a standard-library/torch object, or None."""
    if isinstance(value, types.ModuleType):
        return value.__name__ if value.__name__.split(".")[0] in _IMPORTABLE else None
    module = getattr(value, "__module__", None)
    name = getattr(value, "__name__", None)
    if module and name and module.split(".")[0] in _IMPORTABLE and module.split(".")[0] != "torch" and \
            getattr(importlib.import_module(module), name, None) is value:
        return module
    return None


def definition_source(obj: type | types.FunctionType) -> str:
    """A top-level class's or function's own source, dedented, without the `@records_args` decorator."""
    source = textwrap.dedent(inspect.getsource(obj))
    namespace = vars(sys.modules[obj.__module__])
    [node] = ast.parse(source).body
    lines = source.splitlines()
    for decorator in reversed(node.decorator_list):
        if _resolve(decorator, namespace) is records_args:
            del lines[decorator.lineno - 1:decorator.end_lineno]
    return "\n".join(lines) + "\n"


class Helpers:
    """The definitions the file copies, in an order where each comes after what it uses, and the imports
    they need; one definition per name (two different definitions of a name are refused)."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}
        self.objects: dict[str, Any] = {}
        self.imports: dict[str, str] = {}

    def add(self, obj: type | types.FunctionType) -> str:
        """Copy a class or function and, transitively, what it uses; its name in the file."""
        name = obj.__name__
        if self.objects.get(name) is obj:
            return name
        if name in self.objects or name in self.imports or name in _MODULE_NAMES:
            raise NinportError(f"two different definitions are named {name!r} ({obj.__module__} and another)")
        if not inspect.getsourcefile(obj) or obj.__module__ not in sys.modules:
            raise NinportError(f"{obj.__module__}.{name} has no Python source")
        self.objects[name] = obj  # before its dependencies: a cycle ends here
        source = definition_source(obj)
        namespace = vars(sys.modules[obj.__module__])
        for used in sorted(_loaded_names(ast.parse(source))):
            if used not in namespace or used == name:
                continue  # a local, a builtin or itself
            self._use(used, namespace[used], f"{obj.__module__}.{name}")
        self.parts[name] = source
        return name

    def _use(self, name: str, value: Any, where: str) -> None:
        if _HEADER.get(name) is value:
            return
        if name in _MODULE_NAMES or (name in self.imports and self.imports[name] is not value) or (
                name in self.objects and self.objects[name] is not value and not self._same_constant(name, value)):
            raise NinportError(f"{where} uses a {name!r} that differs from another definition of that name")
        if isinstance(value, (bool, int, float, str, tuple)) or value is None:
            text = f"{name} = {lit(value)}"
            if name in self.parts and self.parts[name] != text:
                raise NinportError(f"{where} uses a constant {name!r} that differs from another of that name")
            self.parts[name], self.objects[name] = text, value
            return
        module = _importable(value)
        if module is not None:
            if isinstance(value, types.ModuleType):
                line = f"import {module}" if module == name else f"import {module} as {name}"
            else:
                line = f"from {module} import {value.__name__}" + ("" if value.__name__ == name else f" as {name}")
            self.imports[name] = value
            self.parts.setdefault(f"import:{name}", line)
            return
        if inspect.isclass(value) or inspect.isfunction(value):
            if value.__name__ != name:
                raise NinportError(f"{where} uses {value.__module__}.{value.__name__} under the name {name!r}")
            self.add(value)
            return
        raise NinportError(f"{where} uses {name!r} ({type(value).__name__}), which a standalone file cannot hold")

    def _same_constant(self, name: str, value: Any) -> bool:
        text = self.parts.get(name)
        return isinstance(value, (bool, int, float, str, tuple)) and text == f"{name} = {lit(value)}"

    def names(self) -> set[str]:
        return set(self.objects) | set(self.imports)

    def source(self) -> list[str]:
        """Import lines first, then the definitions."""
        imports = sorted(text for key, text in self.parts.items() if key.startswith("import:"))
        definitions = [text for key, text in self.parts.items() if not key.startswith("import:")]
        return (["\n".join(imports)] if imports else []) + definitions


def constructor(module: nn.Module, helpers: Helpers) -> str:
    """The expression that builds a module like this one (its weights come from the file)."""
    torch_form = _torch_constructor(module)
    if torch_form is not None:
        return torch_form
    record = recorded_args(module)
    if record is None:
        raise NinportError(f"no Python source form for {type(module).__name__} modules: a module class is written "
                           "only when it records its constructor arguments (@ninport.records_args)")
    cls, args = record
    name = helpers.add(cls)
    return f"{name}(" + ", ".join(f"{key}={lit(value)}" for key, value in args.items()) + ")"


# --- the file -------------------------------------------------------------------------------------------------


def comment(text: object) -> str:
    """File text made safe for a `#` comment: escaped, one line, bounded."""
    return safe_text(text, COMMENT_CHARS)


_FORWARD_NAMES = {"self", "torch", "nn", "F", "math"}
# the file's own module-level names besides the helpers: the net's class must not shadow them
_MODULE_NAMES = {"annotations", "json", "math", "os", "struct", "sys", "Path", "torch", "F", "nn",
                 "SAFETENSORS_DTYPES", "read_safetensors", "load"}

_READER = '''
SAFETENSORS_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header naming
    each tensor's dtype, shape and byte range, then the raw little-endian data. No code runs."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        if end > start:
            tensor = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
            if sys.byteorder != "little":
                tensor = tensor.view(torch.uint8).view(-1, tensor.element_size()).flip(1).view(dtype)
        else:
            tensor = torch.empty(0, dtype=dtype)
        tensors[name] = tensor.reshape(info["shape"])
    return tensors
'''


def python_source(module: nn.Module, description: NetDescription | None = None) -> str:
    """The standalone Python source of a module built by `ninport.load` (see the module docstring)."""
    meta = description or describe(module)
    helpers = Helpers()
    init_lines: list[str] = []
    forward_lines: list[str] = []
    names: set[str] = set(_FORWARD_NAMES)

    def variable(blob: str) -> str:
        """The local name of a blob in forward: an identifier made from the blob name, as fx does."""
        return python_identifier(blob, names, "blob")

    variables: dict[str, str] = {}
    for blob in meta.inputs:
        variables[blob] = variable(blob)
    submodules = dict(module.named_children())
    for record in meta.layers:
        label = f"{comment(record.name)} ({comment(record.type)})"
        sub = submodules.get(record.module)
        if sub is None:
            raise ExportError(f'layer "{safe_text(record.name)}": the module has no submodule {record.module!r}')
        try:
            init = constructor(sub, helpers)
        except NinportError as exc:
            raise ExportError(f'{meta.source}: layer "{safe_text(record.name)}" ({safe_text(record.type)}): '
                              f"cannot write it as Python: {exc}") from None
        args = [variables[b] for b in record.bottoms]
        for top in record.tops:
            if top not in variables:
                variables[top] = variable(top)
        targets = ", ".join(variables[t] for t in record.tops)
        init_lines += [f"        # {label}", f"        self.{record.module} = {init}"]
        forward_lines.append(f"        {targets} = self.{record.module}({', '.join(args)})")
    class_name = net_class_name(meta.title)  # never a keyword, soft keyword or builtin
    while class_name in helpers.names() or class_name in _MODULE_NAMES:  # nor a name of the file: "f", "priorbox"
        class_name += "Net"
    outputs = [variables[b] for b in meta.outputs]
    forward_lines.append(f"        return {outputs[0] if len(outputs) == 1 else '(' + ', '.join(outputs) + ')'}")
    inputs = ", ".join(variables[b] for b in meta.inputs)
    shapes = ", ".join(f"{comment(name)} {shape_text(shape)}" for name, shape in meta.inputs.items())
    output_names = ", ".join(comment(b) for b in meta.outputs)

    import ninport

    returns = "its output" if len(outputs) == 1 else "a tuple of its outputs in Caffe's order"
    parts = [
        f'"""A Caffe net as plain PyTorch, written by ninport {ninport.__version__}.\n\n'
        "`load()` builds the model with the weights of the .safetensors file beside this file, in eval\n"
        "mode; `model.train()` gives Caffe's TRAIN-phase behaviour (Dropout, BatchNorm statistics).\n"
        "Needs only torch.\n"
        '"""',
        f"# Caffe net: {comment(meta.title)}" + ("" if meta.name else " (the prototxt has no name: the file's stem)")
        + f"\n# From: {comment(Path(meta.source).name)}"
        + (f" with weights {comment(Path(meta.weights).name)}" if meta.weights else " (random weights)")
        + f"\n# Inputs (reference shapes): {shapes}\n# Outputs: {output_names}",
        "from __future__ import annotations\n\nimport json\nimport math  # noqa: F401 - used by some helpers\n"
        "import os\nimport struct\nimport sys\nfrom pathlib import Path\n\nimport torch\n"
        "import torch.nn.functional as F  # noqa: F401 - used by some helpers\nfrom torch import nn",
        *helpers.source(),
        f"class {class_name}(nn.Module):\n"
        f'    """forward takes the inputs in the net\'s order and returns {returns}."""\n\n'
        "    def __init__(self) -> None:\n        super().__init__()\n" + "\n".join(init_lines)
        + ("\n" if init_lines else "")
        + f"\n    def forward(self, {inputs}):\n" + "\n".join(forward_lines),
        _READER.strip(),
        f"def load(weights: str | os.PathLike | None = None) -> {class_name}:\n"
        '    """The model with its weights (default: the .safetensors file beside this file), in eval mode."""\n'
        '    path = Path(weights) if weights is not None else Path(__file__).with_suffix(".safetensors")\n'
        '    with torch.device("meta"):  # no random init: every tensor comes from the file\n'
        f"        model = {class_name}()\n"
        "    model.load_state_dict(read_safetensors(path), assign=True)\n"
        "    return model.eval()",
    ]
    source = "\n\n\n".join(part.strip("\n") for part in parts) + "\n"
    _check_compiles(source, meta.source)
    return source


def _check_compiles(source: str, net_source: str) -> None:
    """Refuse to hand out a file Python cannot compile (an ExportError, so no broken file is written)."""
    try:
        compile(source, "<generated>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        where = f" (line {exc.lineno}: {exc.msg})" if isinstance(exc, SyntaxError) else f" ({type(exc).__name__})"
        raise ExportError(f"{net_source}: the generated Python source does not compile{where}; nothing was written. "
                          "Please report this") from None


def write_python(module: nn.Module, path: str | os.PathLike, *, description: NetDescription | None = None,
                 weights: bool = True) -> Path:
    """Write the module as a standalone Python file (atomically) and, with `weights`, its state dict as
    `<path stem>.safetensors` beside it (what the file's `load()` reads)."""
    source = python_source(module, description)
    target = Path(path)
    if weights:
        write_safetensors(module, target.with_suffix(".safetensors"))
    return write_atomic(target, lambda tmp: Path(tmp).write_text(source, encoding="utf-8"), "writing Python")
