"""Tiny random-weight Hugging Face image models against their import: a folder written by
`save_pretrained` (and a preprocessor_config.json of the photos' size), imported as `dlc import`
imports it, and the outputs and gradients of both compared (tests/huggingface/test_resnet.py,
test_vit.py, test_mobilenet_v2.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
pytest.importorskip("transformers", reason="transformers is not installed: parity tests skipped")
pytest.importorskip("safetensors")

from dlc.compiler.huggingface import import_folder  # noqa: E402
from dlc.compiler.huggingface.folder import read_folder  # noqa: E402
from dlc.compiler.passes.autodiff import train_step  # noqa: E402
from helpers.numeric import assert_close, build, check_params_given, forward  # noqa: E402
from dlc.runtime.engines import interpreter  # noqa: E402

RTOL = 1e-5
FEATURES = {
    "last_hidden_state": "last_hidden_state",
    "pooler_output": "pooler_output",
}  # a base model's outputs, both sides


def saved(model, folder: Path, size: int | None = None) -> Path:
    """`model` (a transformers model) written as a folder: config.json and model.safetensors, and with
    `size` a preprocessor_config.json that reads photos of size x size."""
    model.save_pretrained(folder, safe_serialization=True)
    if size is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": size, "width": size}}))
    return folder


def read(folder: Path) -> tuple:
    """(config, tensors) of a folder, as dlc import reads them."""
    read_ = read_folder(folder)
    return read_.config, read_.tensors


def imported(folder: Path, training: bool = False) -> tuple:
    """(the built dlc model, its parameters) of the folder imported as dlc import imports it."""
    result = import_folder(folder, "m")
    model = build(result.text, training)
    check_params_given(model, result.weights)
    return model, result.weights


def pixels(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def check_forward(hf_model, folder: Path, head: str, size: int, outputs: dict):
    """The import's outputs (dlc name -> transformers' output name) equal transformers' in eval mode."""
    model, params = imported(saved(hf_model, folder, size))
    x = pixels(3, size)
    hf_model.eval()
    with torch.no_grad():
        expected = hf_model(torch.tensor(x))
    feeds = {"x": x, "y": np.zeros(3, np.int32)} if head == "image" else {"x": x}
    got = forward(model, feeds, params)
    for dlc_name, hf_name in outputs.items():
        want = getattr(expected, hf_name).numpy()
        assert np.abs(want).max() > 1e-3, f"{hf_name} is near zero: the comparison would test nothing"
        assert_close(got[f"output:{dlc_name}"].reshape(want.shape), want, RTOL, dlc_name)


def check_gradients(family, hf_model, folder: Path, size: int, classes: int):
    """The gradient of the mean cross-entropy of a batch with respect to every parameter equals
    torch's (in training mode: batchnorm on the batch's statistics), both in float64."""
    config, _ = read(saved(hf_model, folder, size))
    model, params = imported(folder, training=True)
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


def trained_statistics(model, size: int):
    """`model` with batchnorm running statistics other than the initial 0 and 1 (a training-mode pass
    over random photos of size x size), so that importing them is tested."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size))
    return model


def check_round_trip(family, hf_model, folder: Path):
    """The family's weights of a classifier's folder, written back, are its tensors under their names,
    the same bits (but batchnorm's step counters, which dlc does not keep)."""
    cfg, tensors = read(saved(hf_model, folder))
    back = family.tensors(cfg, family.weights(cfg, tensors, "image"), "image")
    assert set(back) == set(tensors)
    for name, value in tensors.items():
        if not name.endswith("num_batches_tracked"):
            assert np.array_equal(back[name], value), name
