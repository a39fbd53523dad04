"""A built module written as files: ONNX, .pt2, safetensors, the generated .py; `convert_files` runs them."""
