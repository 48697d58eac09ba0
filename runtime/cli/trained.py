"""A command's model with its trained weights (--weights), through the Python API."""

from __future__ import annotations

from dlc.runtime.api import DlcModel


def weighted_model(args) -> DlcModel:
    return DlcModel(args.file, args.model, args.backend).load_weights(args.weights)
