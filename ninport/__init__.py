"""ninport: Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe.

The public functions (`load`, `summary`, `verify`, `convert_files`, `check_onnx`, `classify`, ...) live
in modules with other names (`ninport.inspection`, `ninport.verification`, ...): importing a submodule
sets the package attribute of its name, which would shadow a function of the same name. Names are
imported on first use, so `import ninport` (and commands such as `ninport inspect` or `ninport upgrade`,
which never need torch) start without loading torch or the ONNX exporter.
"""
from __future__ import annotations

import importlib

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
    "register_layer": "ninport.registry",
    "unregister_layer": "ninport.registry",
    "register_dialect": "ninport.registry",
    "LayerShapes": "ninport.registry",
    "layer_param": "ninport.registry",
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
