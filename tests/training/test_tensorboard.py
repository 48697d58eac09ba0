"""`dlc train --tensorboard DIR`: TensorBoard event files, read back (runtime/training/tensorboard.py)."""

import json
import struct
import sys
from pathlib import Path

import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime.cli import main

DIGITS_MLP = str(Path(__file__).parents[2] / "examples" / "digits_mlp.dl")  # 41 batches an epoch


def scalars(folder: Path) -> dict:
    """{tag: [(step, value)]} of the event files in `folder`: TFRecord frames (length, its
    CRC, the data, its CRC) of tensorboardX's Event protocol buffers."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_the_event_files_hold_lr_every_step_and_the_loss_and_metrics_every_epoch(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    board = tmp_path / "tb"
    assert (
        main(
            [
                "train",
                DIGITS_MLP,
                "--epochs",
                "2",
                "--schedule",
                "cosine()",
                "--out",
                str(tmp_path / "run"),
                "--tensorboard",
                str(board),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "run" / "history.json").read_text())
    train, validation = scalars(board / "train"), scalars(board / "validation")
    assert set(train) == {"step/lr", "epoch/loss", "epoch/accuracy"} and set(validation) == {
        "epoch/loss",
        "epoch/accuracy",
    }
    lr = dict(train["step/lr"])
    assert sorted(lr) == list(range(1, 83))
    assert lr[1] == pytest.approx(1e-3) and lr[41] == pytest.approx(rows[0]["lr"]) and lr[82] < lr[41] < lr[1]
    for tag, key in (("epoch/loss", "loss"), ("epoch/accuracy", "accuracy")):
        assert train[tag] == [(r["epoch"], pytest.approx(r[key])) for r in rows]
        assert validation[tag] == [(r["epoch"], pytest.approx(r[f"val_{key}"])) for r in rows]


def test_without_tensorboardx_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert (
        main(
            [
                "train",
                DIGITS_MLP,
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "run"),
                "--tensorboard",
                str(tmp_path / "tb"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "error: --tensorboard needs the 'tensorboardX' package: pip install \"dlc[tensorboard]\"" in err
    assert "compiling" not in err and not (tmp_path / "run").exists()


def test_a_tensorboard_folder_that_is_a_file_is_refused_before_the_run(tmp_path):
    pytest.importorskip("tensorboardX")
    (tmp_path / "tb").write_text("")
    with pytest.raises(DlcError, match="cannot write TensorBoard events to .*tb: it is a file"):
        dlc.load(DIGITS_MLP).train(out=str(tmp_path / "run"), tensorboard=str(tmp_path / "tb"))
