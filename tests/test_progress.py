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

from conftest import XOR, write

DIGITS_MLP = str(Path(__file__).parent.parent / "examples" / "digits_mlp.dl")     # 41 batches an epoch
PROGRESS = re.compile(r"\d+/\d+ \[[# ]{8}\] \d+/\d+")      # the progress line: 1/2 [####    ] 20/41


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
            line[col:col + 1] = [ch]
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
    from dlc.runtime.training import trainer as T
    original = T.Trainer.progress

    def progress(self, *args):
        clock["t"] += 0.03          # a batch every 30 ms: at most one redraw in three
        return original(self, *args)
    monkeypatch.setattr(T.Trainer, "progress", progress)
    dlc.load(DIGITS_MLP).train(out=str(tmp_path / "run"), epochs=2, log=lambda m: None)
    lines = [w for w in terminal.writes if w.startswith("\r")]
    assert lines, "no progress line drawn"
    assert all(len(w) - 1 <= 79 for w in lines), max(len(w) for w in lines)
    assert len(lines) <= 2 * (41 // 3 + 2), f"{len(lines)} redraws for 82 batches"
    assert all("/2 [" in w and "eta " in w and "lr 0.001" in w for w in lines), lines[-1]


def test_on_a_terminal_each_epoch_line_replaces_the_progress_line_and_fits_it(tmp_path, monkeypatch):
    terminal = fake_terminal(monkeypatch)
    dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=2, log=lambda m: terminal.write(m + "\n"))
    assert any(w.startswith("\r2/2 [") for w in terminal.writes), terminal.writes
    lines = screen("".join(terminal.writes))[1:]       # after "compiling ..."
    assert not any(PROGRESS.match(line) for line in lines), lines
    # 85 columns: broken before the time, not cut
    assert [line.split("  ")[0] for line in lines[::2]] == ["epoch 1/2", "epoch 2/2"], lines
    assert all(re.fullmatch(r"    \(\d+\.\ds\)", line) for line in lines[1::2]), lines
    assert lines[0].endswith("val_accuracy 0.8403") and all(len(line) <= 79 for line in lines), lines


def test_a_nan_stop_ends_the_progress_line_before_the_error(tmp_path, monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setattr("dlc.runtime.training.progress.REDRAW_S", 0)      # every step drawn: the line is there at the NaN
    src = Path(DIGITS_MLP).read_text().replace("optimizer  = adam(lr = 1e-3)",
                                               "optimizer  = sgd(lr = 1e-3)\n    schedule = step(1, 1e33)")
    (tmp_path / "m.dl").write_text(src)
    with pytest.raises(DlcError, match="the loss became"):
        dlc.load(str(tmp_path / "m.dl")).train(out=str(tmp_path / "run"), epochs=4,
                                               log=lambda m: terminal.write(m + "\n"))
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
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(16, 4)).astype(np.float32),
             y=rng.normal(size=(16, 4)).astype(np.float32))
    (tmp_path / "ortho.dl").write_text("model m {\n input x: f32[B, 4]\n target y: f32[B, 4]\n"
                                       " out = dense(x @ random_orthogonal(4, 4), 4)\n loss mean((out - y) ^ 2)\n}\n"
                                       'train m { data = "data.npz"  epochs = 1  batch = 8 }\n')
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


@pytest.mark.parametrize("flags, message", [
    (["--log-every", "0"], "argument --log-every: needs a whole number, at least 1; got '0'"),
    (["-q", "--log-every", "5"], "argument --log-every: not allowed with argument -q/--quiet"),
])
def test_progress_flags_are_checked_as_usage(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["train", DIGITS_MLP, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


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
    assert bars and "41/41" in bars[-1] and "val_accuracy" in bars[-1], err     # the epoch's values, when it ends


def test_in_a_notebook_without_tqdm_the_api_prints_a_line_per_epoch(tmp_path, capsys, notebook, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)      # import tqdm fails
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
    assert [line.split("  ")[0] for line in lines if not line.startswith("compiling")] == \
        ["step 20", "step 40", "epoch 1/1"]


def test_the_history_plot_shows_the_learning_rate(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **kw: saved.append(fig))
    result = dlc.load(DIGITS_MLP).train(out=str(tmp_path), epochs=3, schedule="step(1, 0.5)", log=lambda m: None)
    lr_axes = [ax for ax in saved[-1].axes if ax.get_ylabel() == "lr"]
    assert len(lr_axes) == 1
    (line,) = lr_axes[0].get_lines()
    assert list(line.get_ydata()) == [row["lr"] for row in result.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])


# ---- a real terminal ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_on_an_80_column_tmux_pane_the_progress_is_one_line_that_never_wraps(tmp_path):
    """`dlc train examples/digits_cnn.dl` on a tmux pane of 80 x 24, its screen captured while it runs and
    at the end: `capture-pane -J` joins a wrapped line, so a progress line wider than the pane would show
    as one longer than 80 columns."""
    cnn = Path(DIGITS_MLP).parent / "digits_cnn.dl"
    script = tmp_path / "run.sh"      # a short command to type: a long one would wrap on the pane itself
    script.write_text(f"unset COLUMNS LINES\nexport PYTHONPATH='{os.environ.get('PYTHONPATH', '')}' "
                      f"DLC_CACHE_DIR='{os.environ['DLC_CACHE_DIR']}'\n"
                      f"'{sys.executable}' -m dlc.runtime.cli train '{cnn}' --epochs 2 --out '{tmp_path / 'run'}'\n"
                      "echo dlc-status-$?\n")
    tmux = ["tmux", "-L", f"dlc-test-{os.getpid()}"]       # a server of its own, whatever else runs tmux
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    subprocess.run(tmux + ["-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24", "-s", "dlc",
                           "bash --norc --noprofile"], check=True, env=env)
    screens = []
    try:
        subprocess.run(tmux + ["send-keys", "-t", "dlc", f"sh {script}", "Enter"], check=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screens.append(subprocess.run(tmux + ["capture-pane", "-p", "-J", "-t", "dlc"], capture_output=True,
                                          text=True, check=True).stdout.splitlines())
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
    assert [line.split("  ")[0] for line in end if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"], end
    assert all(len(line.rstrip()) <= 79 for line in end if line.startswith(("epoch ", "    ("))), end


def test_test_metrics_are_printed_once(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor(repeat = 4) test = split(0.25) epochs = 1 }")
    assert main(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert sum(line.startswith("test:") for line in lines) == 1
    assert any(line.startswith("test: loss") for line in captured.out.splitlines())
