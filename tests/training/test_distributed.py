"""Data-parallel `dlc train` on MPI (runtime/engines/distributed.py): 2 ranks on this machine against
one process. The tests that launch ranks need mpi4py and an mpirun (the `mpi` extra, which
CI installs) and are skipped with the reason otherwise."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime.engines import distributed
from dlc.runtime.training.run_plan import batch_bounds

from helpers.distributed import (
    LONG,
    MLP,
    MPIRUN,
    assert_same_run,
    checkpoint_arrays,
    checkpoint_meta,
    digits_cnn_without_dropout,
    ended,
    env,
    launch,
    needs_mpi,
    wait_training,
)

LSTM = """model lstm_forecast {
    input  x: f32[B, T, 1]
    target y: f32[B, 1]
    hs = lstm(x, 16)
    pred = dense(hs[:, -1], 1)
    loss   mse(pred, y)
    metric mae = mae(pred, y)
}
train lstm_forecast {
    data = sine(window = 10, n = 400, noise = 0.05)
    test = split(0.1)
    validation = split(0.1)
    batch = 16
    epochs = 1
    optimizer = adam(lr = 3e-3)
}
"""
BATCHNORM = """model bn {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = x |> dense(32) |> batchnorm |> relu |> dense(10)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
}
train bn {
    data = digits(image = false)
    test = split(0.2)
    batch = 64
    epochs = 1
}
"""

# batchnorm after a convolution without bias (a bias before batchnorm has no gradient, only
# rounding noise, which Adam would amplify); 1527 training examples: a last batch of 55, split 28/27
SYNC_CNN = """model cnn {
    input  x: f32[B, 1, 8, 8]
    target y: i32[B]
    h = x |> conv2d(8, 3, padding = "same", bias = false) |> batchnorm |> relu |> maxpool2d(2)
    logits = h |> flatten |> dense(10)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
}
train cnn {
    data = digits()
    test = split(0.15)
    batch = 64
    epochs = 1
    optimizer = adam(lr = 3e-3)
    sync_batchnorm = true
}
"""


def dlc_train(args: list, ranks: int = 1, **extra) -> subprocess.CompletedProcess:
    launch = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run(
        launch + [sys.executable, "-m", "dlc.runtime.cli", "train", *map(str, args)],
        capture_output=True,
        text=True,
        env=env(**extra),
        timeout=120,
    )


def model_file(tmp_path: Path, text: str, name: str = "model.dl") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sharded(text: str, optimizer: str = "adam(lr = 3e-3)") -> str:
    return text.replace("optimizer = adam(lr = 3e-3)", f"optimizer = {optimizer}\n    shard_optimizer = true")


# ---- without ranks ---------------------------------------------------------------------------------
def test_launched_ranks_reads_the_launchers_variables(monkeypatch):
    for name in distributed.LAUNCHER_SIZES + ("SLURM_NTASKS",):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_ranks() == 1 and distributed.world() is None
    monkeypatch.setenv("SLURM_NTASKS", "8")  # an allocation, not a job step: still one process
    assert distributed.launched_ranks() == 1
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.setenv(name, "4")
        assert distributed.launched_ranks() == 4
        monkeypatch.delenv(name)


def test_under_a_launcher_without_mpi4py_it_says_what_to_install(tmp_path):
    # an mpi4py that cannot be imported, first on the path
    fake = tmp_path / "no_mpi4py" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no mpi4py here')\n")
    path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "train", str(model_file(tmp_path, MLP))],
        capture_output=True,
        text=True,
        env={**os.environ, "PMI_SIZE": "2", "PYTHONPATH": path},
    )
    assert r.returncode == 1, r.stderr
    assert "training as 2 processes (mpirun, srun) needs the 'mpi4py' package" in r.stderr
    assert 'pip install "dlc[mpi]"' in r.stderr and "Traceback" not in r.stderr


def test_a_last_batch_too_small_to_share_joins_the_one_before():
    assert batch_bounds(10, 4, ranks=2) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4, ranks=2) == [(0, 4), (4, 9)]  # 1 example for 2 ranks
    assert batch_bounds(11, 4, merge_single=True, ranks=2) == [(0, 4), (4, 11)]  # 3 < 2 ranks x 2
    assert batch_bounds(12, 4, merge_single=True, ranks=2) == [(0, 4), (4, 8), (8, 12)]


def test_sync_batchnorm_in_one_process_compiles_what_it_compiles_without(tmp_path):
    """One process: sync_batchnorm = true builds no replica_mean, and the train step's
    kernel program is the one without the setting."""
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.native.lower import lower
    from dlc.compiler.native.program.render import program
    from dlc.compiler.passes.optimize import optimize
    from dlc.compiler.passes.autodiff import train_step
    from dlc.runtime.training.trainer import Trainer

    kernels = []
    for text in (SYNC_CNN, SYNC_CNN.replace("sync_batchnorm = true", "")):
        trainer = Trainer(load(str(model_file(tmp_path, text))), None, {}, tmp_path / "out")
        kernels.append(program(lower(optimize(train_step(trainer.train_model.graph)))))
    assert trainer.cfg.sync_batchnorm is False and "replica_mean" not in kernels[0]
    assert kernels[0] == kernels[1]


@pytest.mark.parametrize(
    "written, flag, expected",
    [
        ("", None, 128 << 10),
        ("allreduce_bucket = 256KB", None, 256 << 10),
        ("allreduce_bucket = 1MB", "0", 0),
        ("", "64KB", 64 << 10),
    ],
)
def test_the_bucket_size_is_a_size_from_the_block_or_the_flag(tmp_path, written, flag, expected):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.config import make_config

    path = model_file(tmp_path, MLP.replace("    epochs = 1\n", f"    epochs = 1\n    {written}\n"))
    assert make_config(load(str(path)), None, {"allreduce_bucket": flag}).allreduce_bucket == expected


@pytest.mark.parametrize("value", ["-1", '"lots"', "true"])
def test_a_bucket_size_that_is_not_a_size_is_refused_at_its_line(tmp_path, value):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.config import make_config

    path = model_file(tmp_path, MLP.replace("    epochs = 1\n", f"    epochs = 1\n    allreduce_bucket = {value}\n"))
    line = path.read_text().splitlines().index(f"    allreduce_bucket = {value}") + 1
    with pytest.raises(DlcError, match=r"allreduce_bucket must be a size such as 1MB or 256KB \(0: no buckets\)") as e:
        make_config(load(str(path)), None, {})
    assert e.value.span.line == line


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_replica_mean_calls_the_engines_replicas(backend):
    """A model built for 2 ranks, in one process with a stand-in for the other rank: both
    engines call it for the batch statistics and their gradients (the native one from its
    step, through a host call) and agree; an error in it stops the step."""
    from dlc.compiler.errors import DlcError
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.backends import make_engine
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.runtime.training.trainer import initial_parameters

    prog = load_text(SYNC_CNN, "cnn.dl")
    train, ev = prog.build(training=True, replicas=2), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((6, 1, 8, 8), dtype=np.float32), "y": rng.integers(0, 10, 6).astype(np.int32)}
    opt = make_optimizer(Call("adam", [], {"lr": 1e-2}))
    engine = make_engine(backend, train, ev, opt, trainable, split=True)
    calls = []

    def other_rank(values):  # the other rank holds values + 1; equal shares
        calls.append(values.size)
        values += 0.5
        return values

    engine.replicas = other_rank
    params = initial_parameters(train, 0)
    values, grads = engine.gradients(params, opt.init({n: params[n] for n in trainable}), batch, np.zeros(2, np.int32))
    assert calls == [8, 8, 1, 8, 8]  # mean, variance, count; the gradients of the variance and mean
    reference = make_engine("reference", train, ev, opt, trainable)
    reference.replicas = other_rank
    params = initial_parameters(train, 0)
    expected, expected_grads = reference.gradients(
        params, opt.init({n: params[n] for n in trainable}), batch, np.zeros(2, np.int32)
    )
    assert values["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-4, atol=1e-6)

    def failing(values):
        raise DlcError("no answer from the other ranks")

    engine.replicas = failing
    with pytest.raises(DlcError, match="no answer from the other ranks"):
        engine.gradients(params, opt.init({n: params[n] for n in trainable}), batch, np.zeros(2, np.int32))


# ---- two ranks -------------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize(
    "name, text, bucket", [("mlp", MLP, "1KB"), ("mlp", MLP, "0"), ("cnn", None, "1MB"), ("lstm", LSTM, "1KB")]
)
def test_two_ranks_train_as_one_process(tmp_path, name, text, bucket):
    """20+ steps on 2 ranks: the same losses, metrics and parameters as one process with the
    same global batch (the digits CNN with its augmentation; the last batch is split unevenly),
    the gradients averaged in buckets of 1 KB (a bucket per parameter or two), of 1 MB (one)
    or after the backward pass, between two calls (0)."""
    path = model_file(tmp_path, text or digits_cnn_without_dropout())
    extra = (["--epochs", "1", "--batch", "64"] if name == "cnn" else []) + ["--allreduce-bucket", bucket]
    one = dlc_train([path, "--out", tmp_path / "one", *extra])
    two = dlc_train([path, "--out", tmp_path / "two", *extra], ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert checkpoint_meta(tmp_path / "two" / "last.npz")["step"] >= 20
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # rank 0 alone reports: one result line, the test metrics reduced over both ranks
    assert two.stdout.count("trained ") == 1
    assert two.stdout.splitlines()[1] == one.stdout.splitlines()[1]  # "test: ..."


@needs_mpi
def test_resume_with_another_number_of_ranks(tmp_path):
    """1 epoch on one process, the second on 2 ranks, the third on one: the run of three
    epochs on one process."""
    path = model_file(tmp_path, MLP)
    whole = dlc_train([path, "--epochs", "3", "--out", tmp_path / "whole"])
    assert whole.returncode == 0, whole.stderr
    parts = tmp_path / "parts"
    for epochs, ranks in ((1, 1), (2, 2), (3, 1)):
        r = dlc_train([path, "--epochs", epochs, "--out", parts] + (["--resume"] if epochs > 1 else []), ranks)
        assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr
    assert_same_run(tmp_path / "whole", parts)


@needs_mpi
def test_batch_statistics_are_per_rank_and_the_ranks_stay_identical(tmp_path):
    """batchnorm: each rank normalizes its slice and the running statistics are averaged;
    DLC_CHECK_RANKS=1 checks every step that the ranks' parameters are one."""
    path = model_file(tmp_path, BATCHNORM)
    r = dlc_train([path, "--out", tmp_path / "run"], ranks=2)
    assert r.returncode == 0, r.stderr
    saved = checkpoint_arrays(tmp_path / "run" / "last.npz")
    var = next(v for k, v in saved.items() if k.endswith("running_var") or k.endswith(".var"))
    assert np.all(np.isfinite(var)) and not np.allclose(var, 1.0)


@needs_mpi
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_sync_batchnorm_trains_as_one_process(tmp_path, backend):
    """sync_batchnorm = true: 2 ranks normalize with the statistics of the global batch, so
    24 steps (the last batch split 28/27) give one process's losses, running statistics
    and parameters; per-rank statistics (the default) do not."""
    synced = model_file(tmp_path, SYNC_CNN)
    one = dlc_train([synced, "--backend", backend, "--out", tmp_path / "one"])
    # buckets of 1 KB: their host calls come between those of replica_mean's allreduces
    two = dlc_train([synced, "--backend", backend, "--out", tmp_path / "two", "--allreduce-bucket", "1KB"], ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert checkpoint_meta(tmp_path / "two" / "last.npz")["step"] >= 20
    assert_same_run(tmp_path / "one", tmp_path / "two")
    if backend == "native":  # the check can fail: without sync_batchnorm the runs differ
        per_rank = model_file(tmp_path, SYNC_CNN.replace("sync_batchnorm = true", "sync_batchnorm = false"), "b.dl")
        r = dlc_train([per_rank, "--out", tmp_path / "per_rank"], ranks=2)
        assert r.returncode == 0, r.stderr
        with pytest.raises(AssertionError):
            assert_same_run(tmp_path / "one", tmp_path / "per_rank")


@needs_mpi
def test_what_cannot_be_shared_is_refused(tmp_path):
    path = model_file(tmp_path, MLP)
    r = dlc_train([path, "--batch", "33", "--out", tmp_path / "a"], ranks=2)
    assert r.returncode == 1 and "batch = 33 does not divide among 2 processes" in r.stderr
    r = dlc_train([path, "--test", "split(0.0006)", "--out", tmp_path / "b"], ranks=2)
    assert r.returncode == 1 and "the test data has 1 example(s), fewer than the 2 processes" in r.stderr


def _ranks(run: subprocess.Popen, out: Path) -> list:
    """The pids of the run's two ranks, once both are training (rank 0 wrote an epoch)."""
    wait_training(run, out)
    pids = subprocess.run(["pgrep", "-f", "--", f"--out {out}"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in pids if int(p) != run.pid]


def launched_rank(pid: int) -> int:
    """The rank the launcher gave process `pid` (MPICH's PMI_RANK, Open MPI's OMPI_COMM_WORLD_RANK)."""
    variables = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    return int(variables.get("PMI_RANK", variables.get("OMPI_COMM_WORLD_RANK", -1)))


@needs_mpi
@pytest.mark.parametrize("how", ["killed", "hangs"])
def test_a_rank_that_dies_or_hangs_ends_the_run_with_an_error(tmp_path, how):
    out = tmp_path / "run"
    run = launch([MPIRUN, "-n", "2"], [model_file(tmp_path, LONG), "--out", out], DLC_MPI_TIMEOUT="2")
    try:
        ranks = _ranks(run, out)
        assert len(ranks) == 2, ranks
        stopped = launched_rank(max(ranks))
        os.kill(max(ranks), signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    finally:
        stdout, stderr, took = ended(run, 30)
    assert run.returncode != 0 and took < 10
    if how == "hangs":  # dlc's watchdog
        assert f"no answer from rank {stopped} (on " in stderr and "unreachable, stopped or gone, for 2 s" in stderr
    else:  # the launcher's report, MPICH's or Open MPI's
        assert any(s in stdout + stderr for s in ("BAD TERMINATION", "Killed", "signal 9", "exited on signal"))


@needs_mpi
def test_a_rank_that_stops_while_rank_0_writes_is_noticed_within_the_deadline(tmp_path):
    """The others wait for rank 0's write up to WRITE_TIMEOUT_S, but rank 0 comes to that
    barrier last: a rank stopped meanwhile is named within DLC_MPI_TIMEOUT, not 600 s."""
    script = tmp_path / "write.py"
    script.write_text("""
import os, signal, sys, time
from dlc.runtime.engines import distributed
world = distributed.world()
world.host_names()
if world.rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)      # its host stops while rank 0 writes
time.sleep(1)                                  # rank 0's write
world.await_writer()
""")
    run = subprocess.Popen(
        [MPIRUN, "-n", "2", sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(DLC_MPI_TIMEOUT="2"),
        start_new_session=True,
    )
    _, stderr, took = ended(run, 60)
    assert run.returncode != 0 and took < 2 + distributed.PROBE_S + 10, (took, stderr)
    assert "no answer from rank 1 (on " in stderr and "at rank 0 writing its checkpoints" in stderr, stderr


@needs_mpi
@pytest.mark.parametrize("shard", [False, True], ids=["unsharded", "sharded"])
def test_ctrl_c_stops_every_rank_and_saves_once(tmp_path, shard):
    """Sharded, the checkpoint of the stop gathers the optimizer state: the whole of it."""
    out = tmp_path / "run"
    path = model_file(tmp_path, sharded(LONG) if shard else LONG)
    run = launch([MPIRUN, "-n", "2"], [path, "--out", out])
    try:
        assert len(_ranks(run, out)) == 2
        run.send_signal(signal.SIGINT)  # mpirun forwards it to the ranks
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, stderr
    assert stderr.count("interrupted: saved") == 1
    meta = checkpoint_meta(out / "last.npz")
    assert meta["epoch"] >= 1
    saved = checkpoint_arrays(out / "last.npz")
    assert {k for k in saved if k.startswith("opt:")} == {
        f"opt:{k[6:]}:{slot}" for k in saved if k.startswith("param:") for slot in ("m", "v")
    }
    assert all(np.any(v) for k, v in saved.items() if k.startswith("opt:"))
    # it resumes, on one process
    r = dlc_train([path, "--epochs", meta["epoch"] + 1, "--out", out, "--resume"])
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_the_split_step_is_the_single_call(backend):
    """gradients + apply_update (a distributed step's two halves) update exactly as train_step."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.backends import make_engine
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.runtime.training.trainer import initial_parameters

    prog = load_text(BATCHNORM, "bn.dl")
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((16, 64), dtype=np.float32), "y": rng.integers(0, 10, 16).astype(np.int32)}
    runs = []
    for split in (False, True):
        opt = make_optimizer(Call("adam", [], {"lr": 1e-2}))
        params = initial_parameters(train, 0)
        state = opt.init({n: params[n] for n in trainable})
        engine = make_engine(backend, train, ev, opt, trainable, split=split)
        losses = []
        for step in range(1, 4):
            key = np.array([0, step], np.int32)
            if split:
                values, grads = engine.gradients(params, state, batch, key)
                engine.apply_update(params, state, grads, 1e-2, step)
            else:
                values = engine.train_step(params, state, batch, 1e-2, step, key)
            losses.append(values["loss"])
        runs.append((losses, {k: np.array(v) for k, v in params.items()}))
    (losses, single), (split_losses, split_params) = runs
    assert losses == split_losses
    for name, value in single.items():
        np.testing.assert_array_equal(split_params[name], value, err_msg=name)


class Recording:
    """A gradient allreduce (distributed.BucketAllreduce's interface) that keeps a copy of
    each bucket it is handed and, in `finish`, the step's values, and zeroes the gradients."""

    def __init__(self, grads: np.ndarray):
        self.grads, self.handed = grads, []

    def start(self, bucket: np.ndarray):
        self.handed.append(((bucket.ctypes.data - self.grads.ctypes.data) // 4, bucket.copy()))

    def finish(self, values: dict):
        self.handed.append(values)
        self.grads[:] = 0


@pytest.mark.parametrize("text", [BATCHNORM, LSTM], ids=["batchnorm", "lstm"])
def test_each_bucket_is_handed_over_final_and_the_update_waits_for_finish(text):
    """A step built with buckets hands every gradient over once, in buckets that follow one
    another in the flat gradient array, each already holding its final values (those of the
    split step's gradients); then `finish`, with the step's loss and metrics; and the update
    reads what `finish` left (zero gradients: Adam leaves the parameters as they were)."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.native import NativeEngine
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.runtime.training.trainer import initial_parameters

    prog = load_text(text, "m.dl")
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng(0)
    if text == BATCHNORM:
        batch = {"x": rng.standard_normal((16, 64), dtype=np.float32), "y": rng.integers(0, 10, 16).astype(np.int32)}
    else:
        batch = {
            "x": rng.standard_normal((16, 10, 1), dtype=np.float32),
            "y": rng.standard_normal((16, 1), dtype=np.float32),
        }
    key = np.array([0, 1], np.int32)
    opt = make_optimizer(Call("adam", [], {"lr": 1e-2}))
    split = NativeEngine(train, ev, opt, trainable, split=True)
    params = initial_parameters(train, 0)
    _, expected = split.gradients(params, opt.init({n: params[n] for n in trainable}), batch, key)
    expected = {n: expected[split.offsets[n] : split.offsets[n] + params[n].size].copy() for n in trainable}

    bucketed = NativeEngine(train, ev, opt, trainable, split=True, buckets=1024)
    assert len(bucketed.train_exe.buckets) > 1
    assert sorted(n for bucket in bucketed.train_exe.buckets for n in bucket) == sorted(trainable)
    bucketed.allreduce = recording = Recording(bucketed.grads)
    params = initial_parameters(train, 0)
    before = {n: np.array(params[n]) for n in trainable}
    values = bucketed.train_step(params, opt.init({n: params[n] for n in trainable}), batch, 1e-2, 1, key)
    *handed, last = recording.handed
    assert last == values and "loss" in values and len(handed) == len(bucketed.train_exe.buckets)
    at = 0
    for (start, values), bucket in zip(handed, bucketed.train_exe.buckets):
        assert start == at
        for name in bucket:
            got = values[bucketed.offsets[name] - start :][: params[name].size]
            np.testing.assert_allclose(got, expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
        at += len(values)
    assert at == bucketed.n_trained
    for name in trainable:
        np.testing.assert_array_equal(params[name], before[name], err_msg=name)


@needs_mpi
def test_the_checksum_sees_ranks_that_differ(tmp_path):
    script = tmp_path / "check.py"
    script.write_text("""
from pathlib import Path
import numpy as np
from dlc.compiler.errors import DlcError
from dlc.runtime.engines import distributed
world = distributed.world()
params = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
world.checksum(params, 1)
params["b"][1] += world.rank * 1e-7
try:
    world.checksum(params, 2)
except DlcError as e:
    # a file a rank: the ranks' lines on mpirun's one stdout may interleave
    (Path(__file__).parent / f"rank{world.rank}.txt").write_text(e.message)
""")
    r = subprocess.run(
        [MPIRUN, "-n", "2", sys.executable, str(script)], capture_output=True, text=True, env=env(), timeout=60
    )
    assert r.returncode == 0, r.stderr
    said = [p.read_text() for p in sorted(tmp_path.glob("rank*.txt"))]
    assert len(said) == 2 and all("after step 2 the ranks' parameters differ" in line for line in said), said


# ---- sharded optimizer state (shard_optimizer = true) ------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adamw(lr = 3e-3, weight_decay = 0.1)", "sgd(lr = 0.05, momentum = 0.9)"])
def test_each_shard_updates_its_range_only_as_the_whole_update_does(optimizer):
    """Each rank's engine of 2 and of 3, in one process, the allgather done by hand: a rank's
    engine holds the optimizer state of its share only (contiguous shares that start on a
    cache line and cover the parameters), its update reads the share's gradient at the start
    of the gradient array and writes that share of the parameters and nothing else, and
    two steps give the unsharded update's parameters bit for bit."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.runtime.training.config import make_config
    from dlc.runtime.training.trainer import initial_parameters

    # 1746 parameters: the second and third of 3 ranks' shares (592 and 578) start after whole parameters
    text = sharded(MLP, optimizer).replace("dense(32, relu)", "dense(8, relu) |> dense(64, relu)")
    prog = load_text(text, "m.dl")
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((16, 64), dtype=np.float32), "y": rng.integers(0, 10, 16).astype(np.int32)}
    key = np.array([0, 1], np.int32)
    opt = make_optimizer(make_config(prog, None, {}).optimizer)
    for ranks in (1, 2, 3):
        engines = [
            NativeEngine(train, ev, opt, trainable, split=True, shard=(r, ranks) if ranks > 1 else None)
            for r in range(ranks)
        ]
        runs = [(p := initial_parameters(train, 0), opt.init({n: p[n] for n in trainable})) for _ in engines]
        n = engines[0].n_trained
        for step in (1, 2):  # the second step reads the state the first left
            for engine, (params, state) in zip(engines, runs):
                _, grads = engine.gradients(params, state, batch, key)
                lo, hi = engine.shard
                grads[: hi - lo] = grads[lo:hi].copy()  # where the reduce-scatter leaves the share
                before = engine.flat[:n].copy()
                engine.apply_update(params, state, grads, 0.05, step)
                assert not np.array_equal(engine.flat[lo:hi], before[lo:hi])
                before[lo:hi] = engine.flat[lo:hi]
                np.testing.assert_array_equal(engine.flat[:n], before)
            for engine in engines:  # the allgather
                for other in engines:
                    other.flat[slice(*engine.shard)] = engine.flat[slice(*engine.shard)]
        if ranks == 1:
            expected = engines[0].flat[:n].copy()
            continue
        bounds = [e.shard[0] for e in engines] + [n]
        assert [e.shard for e in engines] == list(zip(bounds, bounds[1:])) and bounds[0] == 0
        for engine in engines:
            lo, hi = engine.shard
            assert lo % 16 == 0 and engine.state and all(a.size == hi - lo for a in engine.state.values())
            np.testing.assert_array_equal(engine.flat[:n], expected)


@needs_mpi
@pytest.mark.parametrize("optimizer", ["adam(lr = 3e-3)", "sgd(lr = 0.05, momentum = 0.9)"])
def test_two_ranks_sharded_train_as_unsharded(tmp_path, optimizer):
    """2 ranks with shard_optimizer = true (the gradients reduce-scattered, each rank updating
    its half, the parameters all-gathered): the parameters, the optimizer state in the
    checkpoint (gathered on rank 0) and the history are those of 2 ranks unsharded, bit for
    bit (a sum of two numbers does not depend on its order), and one process's within the
    tolerance of the other tests."""
    path = model_file(tmp_path, sharded(MLP, optimizer))
    unsharded = model_file(tmp_path, MLP.replace("adam(lr = 3e-3)", optimizer), "unsharded.dl")
    one = dlc_train([unsharded, "--out", tmp_path / "one"])
    plain = dlc_train([unsharded, "--out", tmp_path / "plain", "--allreduce-bucket", "0"], ranks=2)
    two = dlc_train([path, "--out", tmp_path / "two"], ranks=2)
    assert one.returncode == 0 and plain.returncode == 0 and two.returncode == 0, one.stderr + plain.stderr + two.stderr
    assert checkpoint_meta(tmp_path / "two" / "last.npz")["step"] >= 20
    a, b = checkpoint_arrays(tmp_path / "plain" / "last.npz"), checkpoint_arrays(tmp_path / "two" / "last.npz")
    assert a.keys() == b.keys() and any(k.startswith("opt:") for k in a)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    assert checkpoint_meta(tmp_path / "two" / "last.npz")["history"] == [
        {**row, "time": row2["time"]}
        for row, row2 in zip(
            checkpoint_meta(tmp_path / "plain" / "last.npz")["history"],
            checkpoint_meta(tmp_path / "two" / "last.npz")["history"],
        )
    ]
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert two.stdout.splitlines()[1] == one.stdout.splitlines()[1]  # "test: ..."


@needs_mpi
def test_resume_between_sharded_and_unsharded(tmp_path):
    """Epoch 1 on 2 ranks sharded, the second on one process, the third on 2 ranks sharded:
    each resumes from the single checkpoint the one before wrote (the whole optimizer state),
    and the run ends where one process's 3 epochs end."""
    path = model_file(tmp_path, sharded(MLP))
    whole = dlc_train([path, "--epochs", "3", "--out", tmp_path / "whole"])
    assert whole.returncode == 0, whole.stderr
    assert "note: shard_optimizer = true in one process: it holds the whole optimizer state" in whole.stderr
    parts = tmp_path / "parts"
    for epochs, ranks in ((1, 2), (2, 1), (3, 2)):
        r = dlc_train([path, "--epochs", epochs, "--out", parts] + (["--resume"] if epochs > 1 else []), ranks)
        assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr
    assert_same_run(tmp_path / "whole", parts)


@pytest.mark.parametrize(
    "optimizer, change, message",
    [
        ("lbfgs()", "", "shard_optimizer = true cannot shard lbfgs: its state and step are over all the parameters"),
        ("newton()", "", "shard_optimizer = true cannot shard newton: its state and step are over all the parameters"),
        ("adam(lr = 3e-3)", "clip = 1.0", "shard_optimizer = true cannot clip by global_norm: no rank holds the whole"),
        ("adam(lr = 3e-3)", "shard_optimizer = 1", "shard_optimizer must be true or false, got 1"),
    ],
)
def test_what_cannot_shard_is_refused_at_the_setting(tmp_path, optimizer, change, message):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.config import make_config

    setting = change if change.startswith("shard_optimizer") else "shard_optimizer = true"
    text = sharded(MLP, optimizer).replace(
        "shard_optimizer = true", setting + (f"\n    {change}" if change and change != setting else "")
    )
    path = model_file(tmp_path, text)
    with pytest.raises(DlcError, match=re.escape(message)) as e:
        make_config(load(str(path)), None, {})
    assert e.value.span.line == path.read_text().splitlines().index(f"    {setting}") + 1


def test_the_reference_engine_refuses_to_shard(tmp_path):
    path = model_file(tmp_path, sharded(MLP))
    r = dlc_train([path, "--backend", "reference", "--out", tmp_path / "out"])
    line = path.read_text().splitlines().index("    shard_optimizer = true") + 1
    assert r.returncode == 1 and f"model.dl:{line}:5: error: shard_optimizer = true needs the native engine" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "last.npz").exists()
