"""ninport: Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe."""
from ninport.api import load, load_spec, parse_input_shape
from ninport.artifacts import convert_files, write_pt2, write_safetensors
from ninport.convert.graph import forward_blobs
from ninport.errors import (ExportError, NinportError, NinportWarning, ParseError, PreprocessError, ShapeError,
                            UnsupportedLayerError, WeightsError)

__version__ = "0.1.0"


def export_onnx(*args, **kwargs):
    """Export a module from `load()` to ONNX; see ninport.onnx.export_onnx (imported lazily: onnxscript is heavy)."""
    from ninport.onnx import export_onnx as _export_onnx

    return _export_onnx(*args, **kwargs)


__all__ = ["load", "load_spec", "export_onnx", "convert_files", "write_pt2", "write_safetensors", "parse_input_shape", "forward_blobs", "NinportError", "ParseError",
           "WeightsError", "UnsupportedLayerError", "ShapeError", "ExportError", "PreprocessError", "NinportWarning", "__version__"]
