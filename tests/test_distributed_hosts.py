"""Data-parallel `dlc train` with each rank on a host of its own: Linux network namespaces joined
by a bridge (dlc/tools/hosts.py), MPICH over TCP between them, never shared memory. Skipped with
the reason on a machine that cannot make namespaces (not root, no iproute2, no MPICH)."""
import subprocess
import sys

import pytest

from dlc.tools import hosts

from helpers.distributed import assert_same_run, checkpoint_arrays, checkpoint_meta, digits_cnn_without_dropout, env

unavailable = hosts.available()
needs_hosts = pytest.mark.skipif(unavailable is not None, reason=f"no hosts on this machine: {unavailable}")


def train(args: list, launch: list = (), **extra) -> subprocess.CompletedProcess:
    return subprocess.run([*launch, sys.executable, "-m", "dlc.runtime.cli", "train", *map(str, args)],
                          capture_output=True, text=True, env=env(**extra), timeout=300)


@needs_hosts
@pytest.mark.parametrize("count, bucket", [(2, "64KB"), (4, "0")])
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

