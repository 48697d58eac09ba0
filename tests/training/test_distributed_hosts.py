"""Data-parallel `dlc train` with each rank on a host of its own: Linux network namespaces joined
by a bridge (dlc/tools/hosts.py), MPICH over TCP between them, never shared memory. Skipped with
the reason on a machine that cannot make namespaces (not root, no iproute2, no MPICH)."""

import subprocess
import sys

import pytest

from dlc.runtime.engines import distributed
from dlc.tools import hosts

from helpers.distributed import (
    LONG,
    MLP,
    assert_same_run,
    checkpoint_arrays,
    checkpoint_meta,
    digits_cnn_without_dropout,
    ended,
    env,
    launch,
    wait_training,
)

unavailable = hosts.available()
needs_hosts = pytest.mark.skipif(unavailable is not None, reason=f"no hosts on this machine: {unavailable}")


def train(args: list, launch: list = (), **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*launch, sys.executable, "-m", "dlc.runtime.cli", "train", *map(str, args)],
        capture_output=True,
        text=True,
        env=env(**extra),
        timeout=300,
    )


@needs_hosts
# 4 hosts: the 2 hosts' path with more ranks (each bucket size on 2 ranks: test_distributed.py)
@pytest.mark.parametrize("count, bucket", [(2, "64KB"), pytest.param(4, "0", marks=pytest.mark.slow)])
def test_ranks_on_separate_hosts_train_the_digits_cnn_as_one_process(tmp_path, count, bucket):
    """2 and 4 hosts, each rank's gradients crossing the network in buckets during the
    backward pass (or all at once after it): the run of one process with the same global
    batch, and every step's gradients went over the hosts' links."""
    path = tmp_path / "cnn.dl"
    path.write_text(digits_cnn_without_dropout())
    flags = ["--epochs", "1", "--batch", "64", "--allreduce-bucket", bucket]
    one = train([path, "--out", tmp_path / "one", *flags])
    assert one.returncode == 0, one.stderr
    with hosts.Hosts(count) as network:
        before = network.sent_bytes()
        many = train([path, "--out", tmp_path / "many", *flags], network.mpiexec([]))
        sent = network.sent_bytes() - before
    assert many.returncode == 0, many.stderr
    assert_same_run(tmp_path / "one", tmp_path / "many")
    # each step's allreduce makes every host send about the gradients' size (ring: 2(K-1)/K of it)
    last = tmp_path / "many" / "last.npz"
    params = sum(a.size for k, a in checkpoint_arrays(last).items() if k.startswith("param:"))
    steps = checkpoint_meta(last)["step"]
    assert sent >= count * steps * params * 4 * (count - 1) / count, (sent, steps, params)


# ---- faults between hosts ------------------------------------------------------------------------------
@needs_hosts
@pytest.mark.parametrize("fault", ["cut", "stop"])
def test_a_host_cut_off_or_stopped_ends_every_rank_naming_it_and_the_run_resumes(tmp_path, fault):
    """Host 2's link goes down mid-run, or its host stops (SIGSTOP): every rank ends within the
    deadline with a message naming rank 1, the checkpoint is whole, and training resumes from it
    on the host left, as one process, to the run one process makes."""
    path, out = tmp_path / "mlp.dl", tmp_path / "run"
    path.write_text(LONG)
    with hosts.Hosts(2) as network:
        run = launch(network.mpiexec([]), [path, "--out", out], DLC_MPI_TIMEOUT="3")
        try:
            wait_training(run, out)
            network.cut(2) if fault == "cut" else network.stop(2)
        finally:
            _, stderr, took = ended(run, 60)
    assert run.returncode != 0 and took < 3 + distributed.PROBE_S + 10, (took, stderr)
    assert "no answer from rank 1 (on " in stderr and "unreachable, stopped or gone" in stderr, stderr
    epochs = checkpoint_meta(out / "last.npz")["epoch"] + 1
    resumed = train([path, "--epochs", epochs, "--out", out, "--resume"])
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    whole = train([path, "--epochs", epochs, "--out", tmp_path / "whole"])
    assert whole.returncode == 0, whole.stderr
    assert_same_run(tmp_path / "whole", out)


@pytest.mark.skipif(hosts.available(loss=True) is not None, reason=f"no lossy hosts: {hosts.available(loss=True)}")
def test_ten_percent_packet_loss_slows_the_run_but_changes_nothing(tmp_path):
    path = tmp_path / "mlp.dl"
    path.write_text(MLP)
    one = train([path, "--out", tmp_path / "one"])
    with hosts.Hosts(2) as network:
        network.loss(2, 10)
        lossy = train([path, "--out", tmp_path / "lossy"], network.mpiexec([]))
    assert one.returncode == 0 and lossy.returncode == 0, one.stderr + lossy.stderr
    assert_same_run(tmp_path / "one", tmp_path / "lossy")
