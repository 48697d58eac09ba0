"""What a training run shows while it runs (runtime/training/progress.py): the redrawn line on a
terminal, a line per epoch elsewhere, -q, --log-every, tqdm's bar in a notebook, the test metrics
printed once."""

import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime.cli import main

from helpers.programs import XOR, write

DIGITS_MLP = str(Path(__file__).parents[2] / "examples" / "digits_mlp.dl")  # 41 batches an epoch
PROGRESS = re.compile(r"\d+/\d+ \[[# ]{8,30}\] \d+/\d+")  # the progress line: 1/2 [####    ] 20/41
BUILT = (
    "compiled the native train step",
    "loaded the native train step",
)  # and "...'s quick code" or "... unoptimized"


class FakeTerminal:
    """stderr as an 80-column terminal that records every write."""

    def __init__(self):
        self.writes = []

    def isatty(self):
        return True

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass


def screen(text: str) -> list:
    """The lines a terminal shows after `text`: a carriage return goes back to the start of the line."""
    lines, line, col = [], [], 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
    return lines + (["".join(line).rstrip()] if line else [])


def fake_terminal(monkeypatch) -> FakeTerminal:
    """In the test's body: pytest's capture sets sys.stderr again between set-up and the test."""
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((80, 24)))
    return terminal


def test_the_progress_line_fits_80_columns_and_is_redrawn_at_most_ten_times_a_second(tmp_path, monkeypatch):
    import os as _os
    import shutil

    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): _os.terminal_size((80, 24)))
    clock = {"t": 0.0}
    monkeypatch.setattr("dlc.runtime.training.trainer.time.perf_counter", lambda: clock["t"])
    from dlc.runtime.training.progress import TerminalLine

    original = TerminalLine.on_batch_end

    def on_batch_end(self, *args):
        clock["t"] += 0.03  # a batch every 30 ms: at most one redraw in three
        return original(self, *args)

    monkeypatch.setattr(TerminalLine, "on_batch_end", on_batch_end)
    dlc.load(DIGITS_MLP).train(out=str(tmp_path / "run"), epochs=2, log=lambda m: None)
    lines = [w for w in terminal.writes if w.startswith("\r")]
    assert lines, "no progress line drawn"
    assert all(len(w) - 1 <= 79 for w in lines), max(len(w) for w in lines)
    assert len(lines) <= 2 * (41 // 3 + 2), f"{len(lines)} redraws for 82 batches"
    # 80 columns hold the loss and accuracy, ms/step and the epoch's ETA; lr and samples/s are left out
    assert all(
        re.search(r"/2 \[.*  loss [\d.]+  accuracy [\d.]+  30 ms/step  epoch eta 0:0\d$", w[1:].rstrip()) for w in lines
    ), lines[-1]


def test_on_a_terminal_each_epoch_line_replaces_the_progress_line_and_fits_it(tmp_path, monkeypatch):
    terminal = fake_terminal(monkeypatch)
    dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=2, log=lambda m: terminal.write(m + "\n"))
    assert any(w.startswith("\r2/2 [") for w in terminal.writes), terminal.writes
    lines = screen("".join(terminal.writes))
    assert lines[0].startswith(BUILT), lines
    # 91 columns in full: ms/step and the training accuracy are left out, no line is broken
    assert [line.split("  ")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2"], lines
    assert all(
        re.fullmatch(r"epoch \d/2  loss [\d.]+  val_loss [\d.]+  val_accuracy [\d.]+  [\d.]+ m?s", line)
        for line in lines[1:]
    ), lines
    assert " val_accuracy 0.8403 " in lines[1] and all(len(line) <= 79 for line in lines), lines


def test_a_nan_stop_ends_the_progress_line_before_the_error(tmp_path, monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setattr("dlc.runtime.training.progress.REDRAW_S", 0)  # every step drawn: the line is there at the NaN
    src = (
        Path(DIGITS_MLP)
        .read_text()
        .replace("optimizer  = adam(lr = 1e-3)", "optimizer  = sgd(lr = 1e-3)\n    schedule = step(1, 1e33)")
    )
    (tmp_path / "m.dl").write_text(src)
    with pytest.raises(DlcError, match="the loss became"):
        dlc.load(str(tmp_path / "m.dl")).train(
            out=str(tmp_path / "run"), epochs=4, log=lambda m: terminal.write(m + "\n")
        )
    assert terminal.writes[-2].startswith("\r2/4 [") and terminal.writes[-1] == "\n", terminal.writes[-3:]


def _train(tmp_path, capsys, *flags):
    code = main(["train", DIGITS_MLP, "--epochs", "2", "--out", str(tmp_path / "run"), *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("trained digits_mlp for 2 epochs (done): loss "), out
    return err


def test_without_a_terminal_a_line_per_epoch_and_no_carriage_return(tmp_path, capsys):
    err = _train(tmp_path, capsys)
    assert "\r" not in err
    assert [line.split("  ")[0] for line in err.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]


def test_quiet_shows_the_summary_only(tmp_path, capsys):
    assert _train(tmp_path, capsys, "-q") == ""


def test_quiet_still_shows_warnings(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz",
        x=rng.normal(size=(16, 4)).astype(np.float32),
        y=rng.normal(size=(16, 4)).astype(np.float32),
    )
    (tmp_path / "ortho.dl").write_text(
        "model m {\n input x: f32[B, 4]\n target y: f32[B, 4]\n"
        " out = dense(x @ random_orthogonal(4, 4), 4)\n loss mean((out - y) ^ 2)\n}\n"
        'train m { data = "data.npz"  epochs = 1  batch = 8 }\n'
    )
    assert main(["train", str(tmp_path / "ortho.dl"), "-q", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "warning: the native backend does not compile random orthogonal" in err
    assert "compiling" not in err and "epoch 1/1" not in err


def test_log_every_prints_a_plain_line_every_n_steps(tmp_path, capsys):
    err = _train(tmp_path, capsys, "--log-every", "10")
    assert "\r" not in err
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[0] for line in steps] == [f"step {n}" for n in range(10, 83, 10)]
    assert steps[4].startswith("step 50  epoch 2/2  batch 9/41  loss ") and " lr 0.001  " in steps[4], steps[4]
    assert "eta " in steps[4]
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 2


def test_a_run_by_steps_counts_its_epochs_batches_and_eta_from_max_steps(tmp_path, capsys):
    """max_steps = 12 over epochs of 8 batches (the block's default epochs are 10): two epochs, the
    second cut at its 4th batch; the run's eta is the steps left to max_steps at the epoch's pace."""
    path = write(
        tmp_path, XOR, "train xor { data = xor(repeat = 8) batch = 4 max_steps = 12 optimizer = sgd(lr = 0.5) }"
    )
    steps = []

    class Record(dlc.Callback):
        def on_batch_end(self, step, logs):
            now = time.perf_counter()
            steps.append(
                (
                    logs.step,
                    logs.epochs,
                    logs.batch,
                    logs.total,
                    logs.eta_run(now),
                    (12 - logs.step) * logs.per_batch(now),
                )
            )

    dlc.load(path, backend="reference").train(out=str(tmp_path / "api"), log=lambda m: None, callbacks=[Record()])
    assert [s[:4] for s in steps] == [(n, 2, (n - 1) % 8 + 1, 8 if n <= 8 else 4) for n in range(1, 13)]
    assert all(eta == pytest.approx(left, rel=0.01) for *_, eta, left in steps)
    assert main(["train", path, "--log-every", "3", "--backend", "reference", "--out", str(tmp_path / "run")]) == 0
    lines = [
        line.split("  ")[:3] for line in capsys.readouterr().err.splitlines() if re.match(r"step \d+  ", line)
    ]  # not the history's rows, `step 3/12  loss ...`
    assert lines == [[f"step {n}", f"epoch {(n - 1) // 8 + 1}/2", f"batch {(n - 1) % 8 + 1}/8"] for n in (3, 6, 9, 12)]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--log-every", "0"], "--log-every: error: needs a whole number, at least 1; got '0'"),
        (["-q", "--log-every", "5"], "--log-every: error: not allowed with argument -q/--quiet"),
    ],
)
def test_progress_flags_are_checked_as_usage(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["train", DIGITS_MLP, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


# ---- the formatting --------------------------------------------------------------------------------------------
def test_times_are_as_precise_as_their_size_asks():
    from dlc.runtime.terminal import span

    assert [span(t) for t in (0.0004, 0.008, 0.0123, 0.0996, 0.43, 4.2, 12.34, 62, 3725)] == [
        "0.4 ms",
        "8 ms",
        "12 ms",
        "0.10 s",
        "0.43 s",
        "4.20 s",
        "12.3 s",
        "1:02",
        "1h02m",
    ]


def _step(**kw):
    from dlc.runtime.training.progress import Step

    return Step(
        **{
            "step": 60,
            "steps": 200,
            "epoch": 1,
            "epochs": 5,
            "first": 0,
            "done": 20,
            "total": 40,
            "per_epoch": 40,
            "totals": {"loss": 8.0, "accuracy": 16.0},
            "seen": 20,
            "fresh": 20,
            "started": 0.0,
            "lr": 1e-3,
            **kw,
        }
    )


def test_the_progress_line_uses_the_width_it_has_and_labels_both_etas():
    from dlc.runtime.training.progress import progress_line

    wide = progress_line(_step(), 0.24, 132)  # 12 ms a batch: 20 left in this epoch, 3 epochs of 40 after it
    assert (
        wide == f"2/5 [{'#' * 15:<30}] 20/40  loss 0.4000  accuracy 0.8000  12 ms/step  elapsed 0:00  "
        "epoch eta 0:00  run eta 0:01"
    ), wide
    assert progress_line(_step(), 0.24, 200) == wide + "  lr 0.001  83/s"  # the bar at most 30
    assert (
        progress_line(_step(), 0.24, 100)
        == "2/5 [#######       ] 20/40  loss 0.4000  accuracy 0.8000  12 ms/step  epoch eta 0:00  run eta 0:01"
    )
    assert (
        progress_line(_step(), 0.24, 79)
        == "2/5 [####    ] 20/40  loss 0.4000  accuracy 0.8000  12 ms/step  epoch eta 0:00"
    )
    assert progress_line(_step(), 0.24, 40) == "2/5 [####    ] 20/40  loss 0.4000"
    assert progress_line(_step(), 0.24, 12) == "2/5 [####   "  # cut only when the bar itself does not fit
    assert _step().eta_epoch(12.0) == 12.0 and _step().eta_run(12.0) == 12.0 + 3 * 40 * 0.6


def test_streamed_data_shows_the_share_of_the_time_spent_waiting_for_it():
    from dlc.runtime.training.progress import epoch_line, progress_line

    assert "data" not in progress_line(_step(), 0.24, 300)  # data in memory: no share
    line = progress_line(_step(waited=0.06), 0.24, 300)
    assert line.endswith("  83/s  data 25%"), line
    row = {"epoch": 1, "lr": 1e-3, "time": 0.008, "data_wait": 0.25, "loss": 0.5}
    assert epoch_line(row, 2, 40) == "epoch 1/2  loss 0.5000  8 ms  data wait 25%  0.2 ms/step"


def test_an_epoch_line_too_wide_leaves_out_ms_per_step_then_the_training_metrics_then_the_time():
    from dlc.runtime.training.progress import epoch_line, epoch_parts, fitted

    row = {"epoch": 1, "lr": 1e-3, "time": 0.008, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91}
    full = "epoch 1/2  loss 0.5000  accuracy 0.9000  val_loss 0.4000  val_accuracy 0.9100  8 ms  0.2 ms/step"
    assert epoch_line(row, 2, 40) == full
    assert "  ".join(fitted(epoch_parts(row, 2, 40), len(full))) == full
    assert "  ".join(fitted(epoch_parts(row, 2, 40), len(full) - 1)) == full[: full.index("  0.2 ms")]
    assert (
        "  ".join(fitted(epoch_parts(row, 2, 40), 79))
        == "epoch 1/2  loss 0.5000  val_loss 0.4000  val_accuracy 0.9100  8 ms"
    )
    assert "  ".join(fitted(epoch_parts(row, 2, 40), 60)) == "epoch 1/2  loss 0.5000  val_loss 0.4000  8 ms"
    assert "  ".join(fitted(epoch_parts(row, 2, 40), 40)) == "epoch 1/2  loss 0.5000  val_loss 0.4000"


def test_the_second_run_of_a_model_loads_its_train_step_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    said = []
    for run in ("a", "b"):
        dlc.load(DIGITS_MLP).train(out=str(tmp_path / run), epochs=1, log=said.append)
    said = [line for line in said if not line.startswith("epoch ")]
    # its quick code (runtime/engines/tiers.py), or its O3 code once the first run made it hot
    step = r"the native train step(?:'s quick code| unoptimized)?"
    assert re.fullmatch(rf"compiled {step} in [\d.]+ m?s \(cached for the next runs\)", said[0]), said
    assert re.fullmatch(rf"loaded {step} from the cache \([\d.]+ m?s\)", said[1]), said
    assert len(said) == 2, said


# ---- the Python API in a notebook ---------------------------------------------------------------------------
@pytest.fixture
def notebook(monkeypatch):
    """A Jupyter kernel, as the display sees it: ipykernel imported, stderr not a terminal."""
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))


def test_in_a_notebook_the_api_shows_tqdms_bar(tmp_path, capsys, notebook):
    pytest.importorskip("tqdm")
    dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=2)
    err = capsys.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("epoch 1/2:")]
    assert bars and "41/41" in bars[-1] and "val_accuracy" in bars[-1], err  # the epoch's values, when it ends


def test_in_a_notebook_without_tqdm_the_api_prints_a_line_per_epoch(tmp_path, capsys, notebook, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=2)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [line.split("  ")[0] for line in err.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]


def test_progress_values_of_the_api_are_checked(monkeypatch):
    model = dlc.load(DIGITS_MLP)
    with pytest.raises(DlcError, match="got 'epoch'; did you mean 'epochs'"):
        model.train(progress="epoch")
    with pytest.raises(DlcError, match="at least 1"):
        model.train(progress=0)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(DlcError, match=r'needs the \'tqdm\' package: pip install "dlc\[notebook\]"'):
        model.train(progress="bar")


def test_the_api_logs_a_line_every_n_steps(tmp_path):
    lines = []
    dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=1, progress=20, log=lines.append)
    assert [line.split("  ")[0] for line in lines if not line.startswith(BUILT)] == ["step 20", "step 40", "epoch 1/1"]


def test_the_history_plot_shows_the_learning_rate(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setenv("DLC_PLOT", "1")
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **kw: saved.append(fig))
    result = dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=3, schedule="step(1, 0.5)", log=lambda m: None)
    lr_axes = [ax for ax in saved[-1].axes if ax.get_ylabel() == "lr"]
    assert len(lr_axes) == 1
    (line,) = lr_axes[0].get_lines()
    assert list(line.get_ydata()) == [row["lr"] for row in result.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])


# ---- a real terminal ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_on_an_80_column_tmux_pane_the_progress_is_one_line_that_never_wraps(tmp_path):
    """`dlc train examples/digits_mlp.dl`, then `examples/digits_cnn.dl`, on a tmux pane of 80 x 24 (their
    standard error: the summaries print paths), its screen captured while they run and at the end:
    `capture-pane -J` joins a wrapped line, so a line wider than the pane would show as one longer than 80
    columns. The runs compile into an empty cache: an epoch of the digits takes a few milliseconds, and the
    line drawn at its last batch stays on the screen while the evaluation's code compiles, long enough to
    be captured (with the code cached, only by chance)."""
    cnn = Path(DIGITS_MLP).parent / "digits_cnn.dl"
    script = tmp_path / "run.sh"  # a short command to type: a long one would wrap on the pane itself
    script.write_text(
        f"unset COLUMNS LINES\nexport PYTHONPATH='{os.environ.get('PYTHONPATH', '')}' "
        f"DLC_CACHE_DIR='{tmp_path / 'cache'}'\n"
        f"'{sys.executable}' -m dlc.runtime.cli train '{DIGITS_MLP}' --epochs 2 --out '{tmp_path / 'mlp'}' >/dev/null\n"
        f"'{sys.executable}' -m dlc.runtime.cli train '{cnn}' --epochs 2 --out '{tmp_path / 'run'}' >/dev/null\n"
        "echo dlc-status-$?\n"
    )
    tmux = ["tmux", "-L", f"dlc-test-{os.getpid()}"]  # a server of its own, whatever else runs tmux
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    subprocess.run(
        tmux + ["-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24", "-s", "dlc", "bash --norc --noprofile"],
        check=True,
        env=env,
    )
    screens = []
    try:
        subprocess.run(tmux + ["send-keys", "-t", "dlc", f"sh {script}", "Enter"], check=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screens.append(
                subprocess.run(
                    tmux + ["capture-pane", "-p", "-J", "-t", "dlc"], capture_output=True, text=True, check=True
                ).stdout.splitlines()
            )
            if any(line.startswith("dlc-status-") for line in screens[-1]):
                break
            time.sleep(0.05)
    finally:
        subprocess.run(tmux + ["kill-server"])
    end = screens[-1]
    assert "dlc-status-0" in end, "\n".join(end)
    drawn = [[line for line in screen if PROGRESS.search(line)] for screen in screens]
    assert any(drawn), "no progress line was captured while the run ran"
    assert all(len(lines) <= 1 for lines in drawn), [lines for lines in drawn if len(lines) > 1][0]
    assert all(len(line.rstrip()) <= 79 and PROGRESS.match(line) for lines in drawn for line in lines), drawn
    epochs = [line for line in end if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"] * 2, end  # the mlp's, the cnn's
    assert all(
        re.search(r"  \d[\d.]* m?s$", line.rstrip()) and not re.search(r"  0(\.0+)? m?s$", line.rstrip())
        for line in epochs
    ), epochs  # each epoch's time, never rounded to nothing (the mlp's take ms)
    shown = [line for screen in screens for line in screen if "run.sh" not in line]  # but the command typed
    assert all(len(line.rstrip()) <= 80 for line in shown), max(shown, key=len)


def test_test_metrics_are_printed_once(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor(repeat = 4) test = split(0.25) epochs = 1 }")
    assert main(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert sum(line.startswith("test:") for line in lines) == 1
    assert any(line.startswith("test: loss") for line in captured.out.splitlines())


def test_the_api_takes_false_for_no_progress_and_true_for_auto():
    from dlc.runtime.training.progress import EpochLines, make_display

    assert make_display(True, print).__class__ is make_display("auto", print).__class__
    quiet = make_display(False, print)
    assert quiet.__class__ is make_display("none", print).__class__ and not isinstance(quiet, EpochLines)
