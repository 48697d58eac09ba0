"""Slow end-to-end learning tests (`pytest -m slow`): each trains an example on the
data that ships with dlc (or a built-in task) and checks it learned."""

from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.runtime.data import registry as data
from dlc.compiler.frontend.settings import Call

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parents[2] / "examples"
QUIET = dict(log=lambda m: None)


def unigram_cross_entropy(train_ids: np.ndarray, val_ids: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats/char) of the validation text under the training text's character frequencies."""
    counts = np.bincount(train_ids.ravel(), minlength=vocab) + 1.0
    p = counts / counts.sum()
    return float(-np.log(p[val_ids.ravel()]).mean())


@pytest.mark.parametrize("example", ["char_lstm", "char_transformer"])
def test_character_models_beat_the_unigram_baseline_and_generate(tmp_path, example):
    model = dlc.load(str(EXAMPLES / f"{example}.dl"))
    result = model.train(out=str(tmp_path), epochs=1, **QUIET)
    text = data.load(Call("text", [str(EXAMPLES / "data" / "genesis.txt")], {"seq": 64}), EXAMPLES)
    train, val = text.split(0.05, 1)  # the same split the trainer made
    baseline = unigram_cross_entropy(train.columns["y"], val.columns["y"], len(text.meta["vocab"]))
    val_loss = result.history[-1]["val_loss"]
    print(f"{example}: validation loss {val_loss:.3f} nats/char, unigram baseline {baseline:.3f}")
    assert val_loss < 0.8 * baseline
    model.load_weights(tmp_path / "best.npz")
    sample = model.generate("And God said", 40)
    assert len(sample) == 40 and set(sample) <= set(text.meta["vocab"])


def exact_match(model, n=300, seed=123) -> float:
    task = data.load(Call("reverse", [], {"min_len": 8, "max_len": 12, "symbols": 11, "n": n, "seed": seed}), EXAMPLES)
    src, want = task.columns["src"], task.columns["dec_out"]
    got = model.decode(src, want.shape[1])
    end = lambda seq: list(seq).index(2) + 1
    return float(np.mean([np.array_equal(g[: end(w)], w[: end(w)]) for g, w in zip(got, want)]))


@pytest.mark.parametrize("example, epochs", [("seq2seq_luong", 3), ("seq2seq_bahdanau", 3)])
def test_seq2seq_with_attention_learns_to_reverse(tmp_path, example, epochs):
    model = dlc.load(str(EXAMPLES / f"{example}.dl"))
    model.train(out=str(tmp_path), epochs=epochs, **QUIET)
    model.load_weights(tmp_path / "best.npz")
    score = exact_match(model)
    print(f"{example}: exact match {score:.3f} on unseen sequences")
    assert score >= 0.95


def test_gru_beats_persistence_on_sine_forecasting(tmp_path):
    model = dlc.load(str(EXAMPLES / "gru_forecast.dl"))
    result = model.train(out=str(tmp_path), epochs=5, validation="split(0.2)", **QUIET)
    sine = data.load(Call("sine", [], {"window": 30, "n": 4000, "noise": 0.05}), EXAMPLES)
    _, val = sine.split(0.2, 1)
    persistence = float(np.mean((val.columns["x"][:, -1, :] - val.columns["y"]) ** 2))
    val_mse = result.history[-1]["val_loss"]
    print(f"gru_forecast: validation MSE {val_mse:.5f}, persistence {persistence:.5f}")
    assert val_mse < persistence
