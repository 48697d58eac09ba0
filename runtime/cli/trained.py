"""A command's model with its trained weights (--weights), through the Python API."""

from __future__ import annotations

import sys

from dlc.runtime.api import DlcModel
from dlc.runtime.interop import quantized


def weighted_model(args) -> DlcModel:
    """The model with its weights; a command of --int8 (predict, eval) given a quantized
    checkpoint without it says, on stderr, that it computes in float32."""
    model = DlcModel(args.file, args.model, args.backend).load_weights(args.weights)
    if getattr(args, "int8", None) is False and "quantization" in model.meta:
        print(f"note: {quantized.read_in_float32(args.weights)}", file=sys.stderr)
    return model
