"""ONNX export and import: the rule of each primitive out, of each ONNX op in."""
