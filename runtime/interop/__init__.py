"""Weights in and out: safetensors and torch layouts, the ONNX backend."""
