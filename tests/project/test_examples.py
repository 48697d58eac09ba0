"""Every example passes check, summary and a gradient check at a small size, trains for one
epoch offline on the native engine, and the examples that state a result reach it."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from dlc.runtime.cli import main

from helpers.photos import photo_folder

EXAMPLE_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(EXAMPLE_DIR.glob("*.dl"))
# the deep convolutional and attention examples take seconds per gradient check
HEAVY = {"resnet", "vgg_cnn", "char_transformer", "char_gpt", "transformer_seq2seq"}
# the deep CNNs' checks (10-20 s of CPU each) re-check at size the rules of their layers, which
# tests/ir/test_stdlib_gradcheck.py checks one by one (conv2d, batchnorm, residual_block, pooling)
SLOW_GRADCHECK = {"resnet", "vgg_cnn"}


def test_there_are_examples_of_every_family():
    names = {p.stem for p in EXAMPLES}
    for family in [
        "perceptron",
        "xor_mlp",
        "mnist_mlp",
        "lenet5",
        "alexnet_cnn",
        "inception_cnn",
        "vgg_cnn",
        "resnet",
        "autoencoder",
        "denoising_autoencoder",
        "vae",
        "word2vec",
        "simple_rnn",
        "char_lstm",
        "gru_forecast",
        "bilstm_tagger",
        "stacked_gru",
        "seq2seq",
        "seq2seq_bahdanau",
        "seq2seq_luong",
        "transformer_classifier",
        "char_transformer",
        "transformer_seq2seq",
    ]:
        assert family in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_check_and_summary(path, capsys):
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "parameters:" in out
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Total parameters:" in out and "Forward FLOPs:" in out


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW_GRADCHECK else []) for p in EXAMPLES],
    ids=lambda p: p.stem,
)
def test_gradcheck(path, capsys):
    entries = "1" if path.stem in HEAVY else "4"
    code = main(["gradcheck", str(path), "--entries", entries])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "parameters pass" in out


# ---- training ------------------------------------------------------------------------------------
# The data sets `dlc data fetch` downloads, as the converted files it leaves in the data folder
# (runtime/data/download.py): uint8 images [N, C, H, W] and uint8 labels, here random and tiny.
FETCHED_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
# one epoch of these takes more than a few seconds on 2 cores
SLOW_EPOCH = {
    "char_lstm",
    "char_transformer",
    "seq2seq",
    "seq2seq_bahdanau",
    "seq2seq_luong",
    "transformer_seq2seq",
    "resnet",
    "vgg_cnn",
}


@pytest.fixture
def fake_fetched_data(tmp_path, monkeypatch):
    """A data folder holding a tiny random stand-in of every data set the examples fetch."""
    rng = np.random.default_rng(0)
    for name, shape in FETCHED_SHAPES.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for split, n in [("train", 40), ("test", 10)]:
            np.savez(
                tmp_path / "data" / name / f"{split}.npz",
                x=rng.integers(0, 256, (n, *shape), np.uint8),
                y=rng.integers(0, 10, n, np.uint8),
            )
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "data"))


def train(path: Path, out: Path, capsys, *flags: str) -> dict:
    """`dlc train` on the native engine; the last epoch's numbers by name, and the test
    numbers as test_<name>."""
    code = main(["train", str(path), "--backend", "native", "--out", str(out), "--log-every", "1000000", *flags])
    printed = capsys.readouterr().out
    assert code == 0, printed
    numbers = {}
    for line in printed.splitlines():
        prefix = "test_" if line.startswith("test: ") else "" if line.startswith("trained ") else None
        if prefix is not None:
            numbers |= {
                prefix + name: float(value) for name, value in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)(?=\s|$)", line)
            }
    return numbers


@pytest.fixture
def quick_code(monkeypatch):
    """Quick code, not the session's unoptimized code (tests/conftest.py): a run of whole
    epochs computes more than it compiles."""
    monkeypatch.setenv("DLC_QUICK_CODE", "only")


@pytest.mark.usefixtures("quick_code")
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW_EPOCH else []) for p in EXAMPLES],
    ids=lambda p: p.stem,
)
def test_every_example_trains_one_epoch_offline(path, tmp_path, capsys, fake_fetched_data):
    # photos_cnn's folder of photos is the user's: a generated one stands in for it
    photos = (
        ["--data", f'images("{photo_folder(tmp_path / "photos")}", size = 64)'] if path.stem == "photos_cnn" else []
    )
    numbers = train(path, tmp_path / "run", capsys, "--epochs", "1", "--seed", "0", *photos)
    assert np.isfinite(numbers["loss"])
    assert (tmp_path / "run" / "last.npz").is_file()


@pytest.mark.usefixtures("quick_code")
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, metric, at_least",
    [
        ("bilstm_tagger", "val_accuracy", 0.93),
        ("transformer_classifier", "val_accuracy", 0.95),
        ("flowers_table", "val_accuracy", 0.9),
        ("text_classifier", "val_accuracy", 0.93),
    ],
)
def test_example_reaches_the_result_its_header_states(name, metric, at_least, tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / f"{name}.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers[metric] >= at_least


# ---- the milestone models of the course: each reaches the result its header states -------------------
@pytest.mark.usefixtures("quick_code")
@pytest.mark.parametrize(
    "name, metric, at_least",
    [
        pytest.param("alexnet_cnn", "test_accuracy", 0.94, marks=pytest.mark.slow),
        ("inception_cnn", "test_accuracy", 0.95),
    ],
)
def test_milestone_classifier_reaches_its_stated_accuracy(name, metric, at_least, tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / f"{name}.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers[metric] >= at_least


@pytest.mark.usefixtures("quick_code")
@pytest.mark.slow
def test_char_gpt_reaches_the_validation_loss_its_header_states(tmp_path, capsys):
    """600 steps by its own train block: random windows, the text's tail held out, decay groups."""
    numbers = train(EXAMPLE_DIR / "char_gpt.dl", tmp_path / "run", capsys)
    assert numbers["val_loss"] == pytest.approx(1.607, abs=2e-3)


def test_autoencoder_beats_the_best_linear_code(tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / "autoencoder.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers["test_loss"] < 0.024  # PCA with 8 components: 0.0239 (the example's header)


def test_denoising_autoencoder_fills_the_holes(tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / "denoising_autoencoder.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers["test_loss"] < 0.4 * numbers["test_holed_error"]
    assert (
        main(["eval", str(EXAMPLE_DIR / "denoising_autoencoder.dl"), "--weights", str(tmp_path / "run" / "last.npz")])
        == 0
    )  # the fixed holes: the same number again
    assert f"loss {numbers['test_loss']:.4f}" in capsys.readouterr().out


def test_vae_trains_and_writes_its_samples_as_an_image(tmp_path, capsys):
    numbers = train(EXAMPLE_DIR / "vae.dl", tmp_path / "run", capsys, "--seed", "0")
    assert numbers["test_loss"] < 26 and numbers["test_kl_divergence"] > 1  # the codes carry information
    np.savez(tmp_path / "images.npz", x=np.zeros((64, 64), np.float32))
    for backend in ["native", "reference"]:
        png = tmp_path / f"samples_{backend}.png"
        assert (
            main(
                [
                    "predict",
                    str(EXAMPLE_DIR / "vae.dl"),
                    "--weights",
                    str(tmp_path / "run" / "best.npz"),
                    "--data",
                    str(tmp_path / "images.npz"),
                    "--output",
                    str(png),
                    "--backend",
                    backend,
                ]
            )
            == 0
        )
        assert "samples [64, 1, 8, 8]" in capsys.readouterr().out
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", data[16:24])
        assert width == height == 8 * 33 - 1  # 8 x 8 samples of 8 x 8 pixels, zoomed 4x, 1-pixel gaps


def test_word2vec_puts_related_words_near(tmp_path, capsys):
    train(EXAMPLE_DIR / "word2vec.dl", tmp_path / "run", capsys, "--seed", "0")
    assert (
        main(
            [
                "neighbours",
                str(EXAMPLE_DIR / "word2vec.dl"),
                "--weights",
                str(tmp_path / "run" / "best.npz"),
                "abraham",
                "egypt",
            ]
        )
        == 0
    )
    near = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert "isaac" in near["abraham"] and ("goshen" in near["egypt"] or "canaan" in near["egypt"])
