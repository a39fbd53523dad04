"""ninport: Caffe models (prototxt + caffemodel) to PyTorch and ONNX, without Caffe."""
from ninport.api import load, load_spec, parse_input_shape
from ninport.convert.graph import forward_blobs
from ninport.errors import (ExportError, NinportError, NinportWarning, ParseError, ShapeError,
                            UnsupportedLayerError, WeightsError)

__version__ = "0.1.0"

__all__ = ["load", "load_spec", "parse_input_shape", "forward_blobs", "NinportError", "ParseError",
           "WeightsError", "UnsupportedLayerError", "ShapeError", "ExportError", "NinportWarning", "__version__"]
