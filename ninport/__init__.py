"""ninport: Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe.

The public functions (`load`, `summary`, `verify`, `convert_files`, `check_onnx`, `classify`, ...) live
in modules with other names (`ninport.inspection`, `ninport.verification`, ...): importing a submodule
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
    "forward_blobs": "ninport.convert.graph",
    "describe": "ninport.description",
    "optimize": "ninport.speedup",
    "NetDescription": "ninport.description",
    # for plugin authors: register a type, read its parameters, what its converter gets
    "register_layer": "ninport.registry",
    "unregister_layer": "ninport.registry",
    "register_dialect": "ninport.registry",
    "LayerShapes": "ninport.registry",
    "LayerType": "ninport.registry",
    "layer_param": "ninport.registry",
    "layer_fields": "ninport.registry",
    "LayerSpec": "ninport.caffe.spec",
    "LayerContext": "ninport.convert.registry",
    "load_plugin": "ninport.plugins",
    "export_onnx": "ninport.onnx",
    "convert_files": "ninport.conversion",
    "ConversionResult": "ninport.conversion",
    "summary": "ninport.inspection",
    "NetSummary": "ninport.inspection",
    "verify": "ninport.verification",
    "VerifyReport": "ninport.verification",
    "check_onnx": "ninport.selfcheck",
    "SelfCheck": "ninport.selfcheck",
    "BlobComparison": "ninport.parity",
    "classify": "ninport.predict",
    "resolve_preprocessing": "ninport.predict",
    "PredictResult": "ninport.predict",
    "select_detections": "ninport.detect",
    "DetectionSelection": "ninport.detect",
    "write_pt2": "ninport.artifacts",
    "write_safetensors": "ninport.artifacts",
    "write_python": "ninport.codegen",
    "records_args": "ninport.convert.recorded",
}

if TYPE_CHECKING:  # what type checkers see: the real signatures behind the lazy names above
    from ninport.api import load, load_spec, parse_input_shape
    from ninport.artifacts import write_pt2, write_safetensors
    from ninport.caffe.spec import LayerSpec
    from ninport.codegen import write_python
    from ninport.conversion import ConversionResult, convert_files
    from ninport.convert.graph import forward_blobs
    from ninport.convert.recorded import records_args
    from ninport.convert.registry import LayerContext
    from ninport.description import NetDescription, describe
    from ninport.detect import DetectionSelection, select_detections
    from ninport.inspection import NetSummary, summary
    from ninport.onnx import export_onnx
    from ninport.parity import BlobComparison
    from ninport.plugins import load_plugin
    from ninport.predict import PredictResult, classify, resolve_preprocessing
    from ninport.registry import (
        LayerShapes,
        LayerType,
        layer_fields,
        layer_param,
        register_dialect,
        register_layer,
        unregister_layer,
    )
    from ninport.selfcheck import SelfCheck, check_onnx
    from ninport.speedup import optimize
    from ninport.verification import VerifyReport, verify

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
