"""Tiny random-weight Hugging Face image models against their import: a folder written by
`save_pretrained`, read back as `dlc import` reads it (config.json, model.safetensors), and the
outputs and gradients of both compared (tests/huggingface/test_resnet.py, test_vit.py, test_mobilenet_v2.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
pytest.importorskip("transformers", reason="transformers is not installed: parity tests skipped")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from dlc.compiler.passes.autodiff import train_step  # noqa: E402
from helpers.numeric import assert_close, build, check_params_given, forward  # noqa: E402
from dlc.runtime.engines import interpreter  # noqa: E402

RTOL = 1e-5


def saved(model, folder: Path) -> Path:
    """`model` (a transformers model) written as a folder: config.json and model.safetensors."""
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def read(folder: Path) -> tuple:
    """(config, tensors) of a folder, as numpy arrays."""
    config = json.loads((folder / "config.json").read_text())
    return config, safetensors_numpy.load_file(str(folder / "model.safetensors"))


def imported(family, folder: Path, head: str, size: int, training: bool = False) -> tuple:
    """(the built dlc model, its parameters) of the folder imported by `family`, reading photos of
    `size` x `size` (as a preprocessor_config.json says)."""
    config, tensors = read(folder)
    model = build(family.program(config, head, preprocessor={"size": {"height": size, "width": size}}), training)
    params = family.weights(config, tensors, head)
    check_params_given(model, params)
    return model, params


def pixels(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def check_forward(family, hf_model, folder: Path, head: str, size: int, outputs: dict):
    """The import's outputs (dlc name -> transformers' output name) equal transformers' in eval mode."""
    model, params = imported(family, saved(hf_model, folder), head, size)
    x = pixels(3, size)
    hf_model.eval()
    with torch.no_grad():
        expected = hf_model(torch.tensor(x))
    feeds = {"x": x, "y": np.zeros(3, np.int32)} if head == "image" else {"x": x}
    got = forward(model, feeds, params)
    for dlc_name, hf_name in outputs.items():
        want = getattr(expected, hf_name).numpy()
        assert_close(got[f"output:{dlc_name}"].reshape(want.shape), want, RTOL, dlc_name)


def check_gradients(family, hf_model, folder: Path, size: int, classes: int):
    """The gradient of the mean cross-entropy of a batch with respect to every parameter equals
    torch's (in training mode: batchnorm on the batch's statistics), both in float64."""
    config, tensors = read(saved(hf_model, folder))
    model, params = imported(family, folder, "image", size, training=True)
    x = pixels(4, size, seed=1)
    y = np.arange(4, dtype=np.int32) % classes
    step = interpreter.run(
        train_step(model.graph), {"x": x, "y": y, "rng": np.array([0, 1], np.int32)}, params, float_dtype="f64"
    )
    hf_model.double().train()
    logits = hf_model(torch.tensor(x, dtype=torch.float64)).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y, dtype=torch.long))
    loss.backward()
    assert_close(step["loss"], loss.item(), RTOL, "loss")
    named = dict(hf_model.named_parameters())
    trainable = {p.name for p in model.params if p.trainable}
    checked = 0
    for dlc_name, hf_name, how in family.names(config, "image"):
        if dlc_name not in trainable:
            continue
        g = named[hf_name].grad.numpy()
        assert_close(step[f"grad:{dlc_name}"], g.T if how == "linear" else g, RTOL, f"grad:{dlc_name} ({hf_name})")
        checked += 1
    assert checked == len(trainable) == len(named)
