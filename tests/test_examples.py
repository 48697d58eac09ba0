"""Every example passes check, summary and a gradient check at a small size."""
from pathlib import Path

import pytest

from dlc.runtime.cli import main

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.dl"))
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
