"""Data-parallel runs in tests: the launcher, the environment of a run's ranks, the digits CNN
without its dropout, and two runs compared."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIRUN), reason="needs mpi4py and mpirun: pip install \"dlc[mpi]\"")


# no dropout, so that 2 ranks and one process draw nothing differently (dropout masks are per rank)
MLP = """model mlp {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = x |> dense(32, relu) |> dense(10)
    loss   sparse_cross_entropy(logits, y) + 1e-4 * l2(params)
    metric accuracy = accuracy(logits, y)
}
train mlp {
    data = digits(image = false)
    test = split(0.2)
    validation = split(0.1)
    batch = 64
    optimizer = adam(lr = 3e-3)
    epochs = 1
}
"""
LONG = MLP.replace("epochs = 1", "epochs = 100000")  # runs until stopped


def digits_cnn_without_dropout() -> str:
    """The digits CNN (with its augmentation) minus its dropout: 2 ranks and one process then
    draw nothing differently (dropout masks are per rank)."""
    text = (EXAMPLES / "digits_cnn.dl").read_text().replace("dropout(flatten(s4), 0.25)", "flatten(s4)")
    assert "dropout(" not in text
    return text


def env(**extra) -> dict:
    # Open MPI refuses root without these; DLC_CHECK_RANKS compares the ranks' parameters every step
    return {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "DLC_CHECK_RANKS": "1",
        "DLC_NUM_THREADS": "1",
        **extra,
    }


def checkpoint_arrays(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k].astype(np.float64) for k in f.files if k.startswith(("param:", "opt:"))}


def assert_same_run(one: Path, two: Path, rtol=1e-5):
    """Parameters, optimizer state and the history of two runs agree within rtol (relative
    to each array's largest value)."""
    a, b = checkpoint_arrays(one / "last.npz"), checkpoint_arrays(two / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= rtol * max(np.abs(a[k]).max(), 1e-30), k
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (one, two))
    assert len(ha) == len(hb)
    for ra, rb in zip(ha, hb):
        for k, v in ra.items():
            if k not in ("time", "data_wait"):  # measured, not computed
                assert rb[k] == pytest.approx(v, rel=rtol, abs=1e-7), k


def checkpoint_meta(path: Path) -> dict:
    from dlc.runtime.interop import checkpoint

    return checkpoint.load(path)[2]


def launch(launcher: list, args: list, **extra) -> subprocess.Popen:
    """`dlc train ARGS` as ranks `launcher` starts (`mpirun -n 2`, Hosts.mpiexec), in a session
    of its own, its output piped."""
    return subprocess.Popen(
        [*launcher, sys.executable, "-m", "dlc.runtime.cli", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(**extra),
        start_new_session=True,
    )


def wait_training(run: subprocess.Popen, out: Path):
    """Until rank 0 has written an epoch to `out`: every rank is training."""
    deadline = time.monotonic() + 120
    while not (out / "history.json").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)


def ended(run: subprocess.Popen, timeout: float) -> tuple:
    """(stdout, stderr, seconds) once a launched run ends; past `timeout` its session is killed."""
    start = time.monotonic()
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    return stdout, stderr, time.monotonic() - start
