"""What `dlc train` and `dlc predict` leave behind and print: a new run never silently
replaces another run's checkpoints (refused unless --resume or --overwrite; the README's
`dlc train` then `dlc eval ... best.npz` still works), predictions.csv's header row, and the
final `trained ...` line broken between values on a narrow terminal."""

import io

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime.cli import main
from dlc.runtime.training.progress import wrap_items

from helpers.cli import failure, flag_error
from helpers.programs import XOR, write


def test_a_new_run_refuses_a_folder_holding_another_run_s_checkpoints(tmp_path, capsys):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    assert main(["train", path, "--out", str(run), "--backend", "reference"]) == 0
    best = (run / "best.npz").read_bytes()
    err = failure(["train", path, "--epochs", "1", "--out", str(run), "--backend", "reference"], capsys)
    assert f"{run} holds the checkpoints of another run (last.npz, best.npz)" in err
    assert "--resume" in err and "--overwrite" in err and "--out DIR" in err
    assert (run / "best.npz").read_bytes() == best  # untouched
    # the sequence of the README: dlc eval of the run's best.npz scores that run
    assert main(["eval", path, "--weights", str(run / "best.npz"), "--backend", "reference"]) == 0


def test_overwrite_replaces_the_whole_run_and_resume_continues_it(tmp_path, capsys):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    assert main(["train", path, "--out", str(run), "--backend", "reference"]) == 0
    assert main(["train", path, "--out", str(run), "--backend", "reference", "--resume", "--epochs", "3"]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert main(["train", path, "--out", str(run), "--backend", "reference", "--overwrite", "--epochs", "0"]) == 0
    assert "no checkpoint written" in capsys.readouterr().out
    assert not any((run / name).exists() for name in ("last.npz", "best.npz", "history.json", "history.csv"))


def test_the_python_api_refuses_the_folder_too(tmp_path):
    model = dlc.load(write(tmp_path, XOR), backend="reference")
    model.train(out=str(tmp_path / "run"), progress="none")
    with pytest.raises(DlcError, match="holds the checkpoints of another run"):
        model.train(out=str(tmp_path / "run"), progress="none")
    assert model.train(out=str(tmp_path / "run"), progress="none", overwrite=True).stopped == "done"


def test_a_failed_run_with_overwrite_replaces_nothing(tmp_path, capsys):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    assert main(["train", path, "--out", str(run), "--backend", "reference"]) == 0
    capsys.readouterr()
    err = flag_error(["train", path, "--out", str(run), "--overwrite", "--data", "missing.npz"], capsys)
    assert "data file not found" in err and (run / "best.npz").exists()


def test_predictions_csv_has_a_header_of_the_output_s_columns(tmp_path, capsys):
    path = write(tmp_path, XOR)
    assert main(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    out = tmp_path / "predictions.csv"
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                str(tmp_path / "run" / "best.npz"),
                "--data",
                "xor()",
                "--output",
                str(out),
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "prob" and len(lines) == 5
    assert np.loadtxt(out, delimiter=",", skiprows=1).shape == (4,)


def test_a_csv_of_several_columns_names_each(tmp_path, capsys):
    program = XOR.replace("output prob = p", "output both = concat([p, 1 - p], axis = 1)")
    path = write(tmp_path, program)
    assert main(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                str(tmp_path / "run" / "last.npz"),
                "--data",
                "xor()",
                "--output",
                str(out),
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    assert out.read_text().splitlines()[0] == "both_0,both_1"


def test_the_summary_line_breaks_between_values_never_inside_one():
    items = [
        "trained digits_cnn for 20 epochs (early stop): loss 0.1936",
        "accuracy 0.9359",
        "val_loss 0.1302",
        "val_accuracy 0.9583",
    ]
    assert wrap_items(items, None) == "  ".join(items)
    text = wrap_items(items, 80)
    assert text.splitlines() == [
        "trained digits_cnn for 20 epochs (early stop): loss 0.1936  accuracy 0.9359",
        "    val_loss 0.1302  val_accuracy 0.9583",
    ]
    for width in (60, 70, 80, 100):
        lines = wrap_items(items, width).splitlines()
        assert all(len(line) <= width for line in lines)
        assert set(" ".join(lines).split()) == set(" ".join(items).split())  # no word cut


def test_dlc_train_wraps_its_summary_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, XOR)
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["train", path, "--out", str(tmp_path / "a"), "--backend", "reference", "-q"]) == 0
    (trained,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trained")]
    assert "loss" in trained and "accuracy" in trained and len(trained) > 40  # not a terminal: one line

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    assert main(["train", path, "--out", str(tmp_path / "b"), "--backend", "reference", "-q"]) == 0
    lines = terminal.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("trained"))
    summary = lines[start : next(i for i, line in enumerate(lines) if line.startswith(("test:", "checkpoints:")))]
    assert len(summary) > 1 and all(len(line) <= 40 for line in summary[1:]), summary
    assert all(
        part.split()[0].isidentifier() and float(part.split()[1]) >= 0
        for line in summary[1:]
        for part in line.strip().split("  ")
    ), summary
