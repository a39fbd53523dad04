"""ninport: Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe.

The public functions (`load`, `summary`, `verify`, `convert_files`, `check_onnx`, `classify`, ...) live
in modules with other names (`ninport.apps.inspection`, `ninport.check.verification`, ...): importing a submodule
sets the package attribute of its name, which would shadow a function of the same name. Names are
imported on first use, so `import ninport` (and commands such as `ninport inspect` or `ninport upgrade`,
which never need torch) start without loading torch or the ONNX exporter.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ninport.errors import (
    ExportError,
    NinportError,
    NinportWarning,
    ParseError,
    PreprocessError,
    ShapeError,
    UnsupportedLayerError,
    WeightsError,
)

__version__ = "0.1.0"

_LAZY = {
    "load": "ninport.api",
    "load_spec": "ninport.api",
    "parse_input_shape": "ninport.api",
    "forward_blobs": "ninport.build.graph",
    "describe": "ninport.build.description",
    "optimize": "ninport.speedup",
    "NetDescription": "ninport.build.description",
    # for plugin authors: register a type, read its parameters, what its converter gets
    "register_layer": "ninport.registry",
    "unregister_layer": "ninport.registry",
    "register_python_layer": "ninport.registry",
    "unregister_python_layer": "ninport.registry",
    "python_params": "ninport.layers.python_layer",
    "register_dialect": "ninport.registry",
    "LayerShapes": "ninport.registry",
    "LayerType": "ninport.registry",
    "layer_param": "ninport.registry",
    "layer_fields": "ninport.registry",
    "LayerSpec": "ninport.caffe.spec",
    "LayerContext": "ninport.build.context",
    "load_plugin": "ninport.plugins",
    "export_onnx": "ninport.export.onnx",
    "convert_files": "ninport.export.conversion",
    "ConversionResult": "ninport.export.conversion",
    "summary": "ninport.apps.inspection",
    "NetSummary": "ninport.apps.inspection",
    "verify": "ninport.check.verification",
    "VerifyReport": "ninport.check.verification",
    "check_onnx": "ninport.check.selfcheck",
    "SelfCheck": "ninport.check.selfcheck",
    "BlobComparison": "ninport.check.parity",
    "classify": "ninport.apps.predict",
    "resolve_preprocessing": "ninport.apps.predict",
    "PredictResult": "ninport.apps.predict",
    "select_detections": "ninport.apps.detect",
    "DetectionSelection": "ninport.apps.detect",
    "write_pt2": "ninport.export.artifacts",
    "write_safetensors": "ninport.export.safetensors",
    "write_python": "ninport.export.codegen",
    "records_args": "ninport.build.recorded",
}

if TYPE_CHECKING:  # what type checkers see: the real signatures behind the lazy names above
    from ninport.api import load, load_spec, parse_input_shape
    from ninport.apps.detect import DetectionSelection, select_detections
    from ninport.apps.inspection import NetSummary, summary
    from ninport.apps.predict import PredictResult, classify, resolve_preprocessing
    from ninport.build.context import LayerContext
    from ninport.build.description import NetDescription, describe
    from ninport.build.graph import forward_blobs
    from ninport.build.recorded import records_args
    from ninport.caffe.spec import LayerSpec
    from ninport.check.parity import BlobComparison
    from ninport.check.selfcheck import SelfCheck, check_onnx
    from ninport.check.verification import VerifyReport, verify
    from ninport.export.artifacts import write_pt2
    from ninport.export.codegen import write_python
    from ninport.export.conversion import ConversionResult, convert_files
    from ninport.export.onnx import export_onnx
    from ninport.export.safetensors import write_safetensors
    from ninport.layers.python_layer import python_params
    from ninport.plugins import load_plugin
    from ninport.registry import (
        LayerShapes,
        LayerType,
        layer_fields,
        layer_param,
        register_dialect,
        register_layer,
        register_python_layer,
        unregister_layer,
        unregister_python_layer,
    )
    from ninport.speedup import optimize

__all__ = [*_LAZY, "NinportError", "ParseError", "WeightsError", "UnsupportedLayerError", "ShapeError",
           "ExportError", "PreprocessError", "NinportWarning", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ninport' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
