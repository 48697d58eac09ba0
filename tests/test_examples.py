"""Every example passes check, summary and a gradient check at a small size, trains for one
epoch offline on the native engine, and the examples that state a result reach it."""
import re
from pathlib import Path

import numpy as np
import pytest

from dlc.runtime.cli import main

EXAMPLE_DIR = Path(__file__).parent.parent / "examples"
EXAMPLES = sorted(EXAMPLE_DIR.glob("*.dl"))
# the deep convolutional and attention examples take seconds per gradient check
HEAVY = {"resnet", "vgg_cnn", "char_transformer", "transformer_seq2seq"}


def test_there_are_examples_of_every_family():
    names = {p.stem for p in EXAMPLES}
    for family in ["perceptron", "xor_mlp", "mnist_mlp", "lenet5", "vgg_cnn", "resnet", "simple_rnn", "char_lstm",
                   "gru_forecast", "bilstm_tagger", "stacked_gru", "seq2seq", "seq2seq_bahdanau", "seq2seq_luong",
                   "transformer_classifier", "char_transformer", "transformer_seq2seq"]:
        assert family in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_check_and_summary(path, capsys):
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "parameters:" in out
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Total parameters:" in out and "Forward FLOPs:" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_gradcheck(path, capsys):
    entries = "2" if path.stem in HEAVY else "4"
    code = main(["gradcheck", str(path), "--entries", entries])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "parameters pass" in out


# ---- training ------------------------------------------------------------------------------------
# The data sets `dlc data fetch` downloads, as the converted files it leaves in the data folder
# (runtime/data/download.py): uint8 images [N, C, H, W] and uint8 labels, here random and tiny.
FETCHED_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
# one epoch of these takes more than a few seconds on 2 cores
SLOW_EPOCH = {"char_lstm", "char_transformer", "seq2seq", "seq2seq_bahdanau", "seq2seq_luong",
              "transformer_seq2seq", "resnet", "vgg_cnn"}


@pytest.fixture
def fake_fetched_data(tmp_path, monkeypatch):
    """A data folder holding a tiny random stand-in of every data set the examples fetch."""
    rng = np.random.default_rng(0)
    for name, shape in FETCHED_SHAPES.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for split, n in [("train", 40), ("test", 10)]:
            np.savez(tmp_path / "data" / name / f"{split}.npz", x=rng.integers(0, 256, (n, *shape), np.uint8),
                     y=rng.integers(0, 10, n, np.uint8))
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "data"))


def train(path: Path, out: Path, capsys, *flags: str) -> dict:
    """`dlc train` on the native engine; the last epoch's numbers by name."""
    code = main(["train", str(path), "--backend", "native", "--out", str(out), "--log-every", "1000000", *flags])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = next(line for line in printed.splitlines() if line.startswith("trained "))
    return {name: float(value) for name, value in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)(?=\s|$)", summary)}


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW_EPOCH else [])
                                  for p in EXAMPLES], ids=lambda p: p.stem)
def test_every_example_trains_one_epoch_offline(path, tmp_path, capsys, fake_fetched_data):
    numbers = train(path, tmp_path / "run", capsys, "--epochs", "1", "--seed", "0")
    assert np.isfinite(numbers["loss"])
    assert (tmp_path / "run" / "last.npz").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name, metric, at_least", [("bilstm_tagger", "val_accuracy", 0.93),
                                                    ("transformer_classifier", "val_accuracy", 0.95)])
def test_example_reaches_the_result_its_header_states(name, metric, at_least, tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / f"{name}.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers[metric] >= at_least
