"""Checkpoints (runtime/interop/checkpoint.py) and the run folder: damaged metadata is one clear
error, a checkpoint of another model names the mismatches, --resume takes a checkpoint (of any
optimizer, at a position inside its epoch) and never the model file, --out is a folder, and a run
names only the checkpoints it wrote and removes stale temporary ones."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.runtime.cli import main
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.gradcheck import init_params
from dlc.runtime.training.trainer import Trainer

from helpers.cli import failure, usage_error
from helpers.programs import XOR, write

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model file and the last checkpoint of one epoch of training on the reference engine."""
    tmp = tmp_path_factory.mktemp("trained")
    path = write(tmp, XOR)
    assert main(["train", path, "--epochs", "1", "--out", str(tmp / "run"), "--backend", "reference"]) == 0
    return path, tmp / "run" / "last.npz"


def test_out_naming_an_existing_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    err = failure(["train", write(tmp_path, XOR), "--out", str(tmp_path / "taken"), "--backend", "reference"], capsys)
    assert f"cannot keep checkpoints in {tmp_path / 'taken'}: it is a file" in err
    assert (tmp_path / "taken").read_text() == "mine"


# ---- damaged checkpoint metadata ------------------------------------------------------------------
def _with_meta(source: Path, target: Path, edit):
    arrays = dict(np.load(source))
    meta = json.loads(arrays["meta"].tobytes())
    raw = edit(meta)
    arrays["meta"] = np.frombuffer(raw if isinstance(raw, bytes) else json.dumps(raw).encode(), np.uint8)
    np.savez(target, **arrays)


DAMAGE = {
    "not json": lambda m: b"{epoch: 1",
    "nested deeper than json reads": lambda m: b"[" * 10**5 + b"]" * 10**5,
    "not an object": lambda m: [1, 2, 3],
    "epoch a string": lambda m: m | {"epoch": "1"},
    "negative step": lambda m: m | {"step": -4},
    "fractional batch": lambda m: m | {"batch": 0.5},
    "history not a list": lambda m: m | {"history": {"epoch": 1}},
    "history rows not objects": lambda m: m | {"history": [1]},
    "early_stop a string": lambda m: m | {"early_stop": "patience"},
    "early_stop best a string": lambda m: m | {"early_stop": {"best": "low", "bad": 0}},
    "partial a list": lambda m: m | {"partial": [1, 2]},
    "partial totals not numbers": lambda m: m | {"batch": 1, "partial": {"totals": {"loss": "x"}, "seen": 4}},
    "model a number": lambda m: m | {"model": 3},
    "data settings damaged": lambda m: m | {"data": {"data": {"call": 3}}},
    "vocabulary a number": lambda m: m | {"meta": {"vocab": 7}},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_from_damaged_metadata_is_one_clear_error(tmp_path, capsys, trained, damage):
    path, last = trained
    bad = tmp_path / "bad.npz"
    _with_meta(last, bad, DAMAGE[damage])
    err = failure(
        ["train", path, "--resume", str(bad), "--out", str(tmp_path / "run"), "--backend", "reference"], capsys
    )
    assert f"{bad} is not a readable checkpoint: its metadata is damaged" in err
    err = failure(["eval", path, "--weights", str(bad), "--backend", "reference"], capsys)
    assert f"{bad} is not a readable checkpoint: its metadata is damaged" in err


def test_resume_refuses_a_position_beyond_the_epoch(tmp_path, capsys, trained):
    path, last = trained
    bad = tmp_path / "far.npz"
    _with_meta(last, bad, lambda m: m | {"epoch": 0, "batch": 5})
    err = failure(
        ["train", path, "--resume", str(bad), "--out", str(tmp_path / "run"), "--backend", "reference"], capsys
    )
    assert "after batch 5" in err and "1 batch" in err


def test_resume_with_another_optimizer_starts_its_state_afresh(tmp_path, capsys):
    path, run = write(tmp_path, XOR), str(tmp_path / "run")
    assert main(["train", path, "--epochs", "1", "--optimizer", "adam", "--out", run, "--backend", "reference"]) == 0
    assert (
        main(
            [
                "train",
                path,
                "--epochs",
                "2",
                "--optimizer",
                "sgd(lr = 0.1, momentum = 0.9)",
                "--resume",
                "--out",
                run,
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    assert "was trained with adam; sgd starts afresh" in capsys.readouterr().err
    arrays = dict(np.load(tmp_path / "run" / "last.npz"))
    assert set(k for k in arrays if k.startswith("opt:h.W")) == {"opt:h.W:momentum"}
    arrays["opt:h.W:momentum"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    err = failure(
        [
            "train",
            path,
            "--epochs",
            "3",
            "--optimizer",
            "sgd(lr = 0.1, momentum = 0.9)",
            "--resume",
            str(tmp_path / "bad.npz"),
            "--out",
            run,
            "--backend",
            "reference",
        ],
        capsys,
    )
    assert "the optimizer state h.W:momentum is float32[3], but h.W is [2, 4]" in err


# ---- --resume takes a checkpoint; a run names and leaves only the checkpoints it wrote ----------------
@pytest.mark.parametrize("argv", [["train", "--resume", "{f}"], ["train", "{f}", "--resume", "{f}"]])
def test_resume_refuses_the_model_file_as_its_checkpoint(tmp_path, capsys, argv):
    path = write(tmp_path, XOR)
    line = usage_error([a.format(f=path) for a in argv], capsys)
    assert "--resume: error: takes a checkpoint, not the model file" in line
    assert f"dlc train {path} --resume" in line


def test_zero_epochs_names_no_checkpoint_it_did_not_write(tmp_path, capsys):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    run.mkdir()
    old = {k: v + 1 for k, v in init_params(load(path).build(None, training=True)).items()}
    checkpoint.save(run / "best.npz", old, {}, {})  # a previous run's
    result = Trainer(load(path), None, {"epochs": 0}, run, log=lambda m: None, backend="reference").run(overwrite=True)
    assert not np.array_equal(result.params["h.W"], old["h.W"].astype(np.float32))
    assert main(["train", path, "--epochs", "0", "--out", str(run), "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints:" not in out and "no checkpoint written" in out


def test_stale_temporary_checkpoints_are_removed(tmp_path):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last-k2j3h4_x.npz", run / ".best-00000000.npz"]
    kept = [run / ".last-notmine.npz", run / "last-k2j3h4_x.npz", run / ".other-k2j3h4_x.npz"]
    for f in stale + kept:
        f.write_bytes(b"half a checkpoint")
        os.utime(f, (time.time() - 60, time.time() - 60))
    newer = run / ".last-abcdefgh.npz"  # another run's, being written after this one started
    newer.write_bytes(b"half a checkpoint")
    os.utime(newer, (time.time() + 60, time.time() + 60))
    Trainer(load(path), None, {"epochs": 1}, run, log=lambda m: None, backend="reference").run()
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept + [newer])


# ---- a checkpoint of another model ------------------------------------------------------------------
def test_mismatched_checkpoint_names_the_mismatches(tmp_path, capsys):
    assert main(["train", str(EXAMPLES / "xor_mlp.dl"), "--epochs", "1", "--out", str(tmp_path / "x")]) == 0
    code = main(["eval", str(EXAMPLES / "digits_mlp.dl"), "--weights", str(tmp_path / "x" / "best.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "does not match the model" in err and "missing h.0.W" in err and "unexpected h.W" in err


@pytest.mark.parametrize("decay_steps, warned", [(3, True), (6, False)])
def test_resume_past_the_end_of_the_schedule_warns(tmp_path, capsys, decay_steps, warned):
    """cosine(decay_steps = 3) has ended at the step 4 the first epoch stops at: the epoch left trains at
    min_lr = 0, which changes no parameter; one that has not ended by then says nothing."""
    path = write(
        tmp_path,
        XOR,
        "train xor { data = xor(repeat = 4) batch = 4 epochs = 2 optimizer = sgd(lr = 0.5) "
        f"schedule = cosine(decay_steps = {decay_steps}) }}",
    )
    run = tmp_path / "run"
    assert main(["train", path, "--epochs", "1", "--out", str(run), "--backend", "reference"]) == 0
    before = dict(np.load(run / "last.npz"))
    capsys.readouterr()
    assert main(["train", path, "--resume", "--out", str(run), "--backend", "reference"]) == 0
    err = capsys.readouterr().err
    after = dict(np.load(run / "last.npz"))
    line = Path(path).read_text().count("\n")  # the train block's, the file's last
    warning = (
        f"{path}:{line}:" in err
        and (
            "warning: resuming at step 4, where the cosine schedule has ended "
            "(at step 3): the 4 step(s) left all train at its final rate 0"
        )
        in err
    )
    assert warning == warned, err
    assert all(np.array_equal(before[k], after[k]) for k in before if not k.startswith(("meta", "opt:"))) == warned


def flipped_bit(raw: bytes, inside: bytes) -> bytes:
    """`raw` with one bit of the stored bytes `inside` flipped (a stored member's data, so its CRC fails)."""
    at = raw.index(inside) + len(inside) // 2
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]


def test_eval_names_what_is_wrong_with_a_damaged_checkpoint(tmp_path, capsys, trained):
    """A file that is no archive at all, and an archive whose parameter fails its CRC, each said as it is."""
    path, last = trained
    (tmp_path / "notzip.npz").write_text("these are not weights\n")
    err = failure(["eval", path, "--weights", str(tmp_path / "notzip.npz"), "--backend", "reference"], capsys)
    assert f"{tmp_path / 'notzip.npz'} is not a readable checkpoint: it is not an .npz archive" in err
    params = checkpoint.load(last)[0]
    name = sorted(params)[0]
    weights = np.full(params[name].shape, 0.5, np.float32)
    checkpoint.save(tmp_path / "good.npz", {**params, name: weights}, {}, {})
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "flipped.npz").write_bytes(flipped_bit(raw, weights.tobytes()))
    err = failure(["eval", path, "--weights", str(tmp_path / "flipped.npz"), "--backend", "reference"], capsys)
    assert f"is not a readable checkpoint: parameter {name} is damaged (CRC mismatch)" in err


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_checkpoints_are_written_as_the_umask_says(tmp_path, mask):
    """A checkpoint is meant to be shared: its mode is what the umask gives any new file, as history's files'."""
    old = os.umask(mask)
    try:
        checkpoint.save(tmp_path / "last.npz", {"w": np.ones(3, np.float32)}, {}, {})
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(old)
    assert (tmp_path / "last.npz").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "last.npz").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
