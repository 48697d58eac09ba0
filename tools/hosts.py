"""Hosts on one machine, for testing what crosses a network: K Linux network namespaces, each
a host with its own `eth0` (10.X.Y.k) on a bridge in the root namespace, and an `mpiexec`
that starts one rank in each over TCP.

MPICH is made to take the network path and no other: `MPIR_CVAR_NOLOCAL=1` (no shared
memory between the ranks, which share one kernel), the OFI netmod with libfabric's `tcp`
provider on `eth0`. The bytes the hosts sent over their links (`sent_bytes`) show it: an
allreduce of n bytes between two hosts has each send about n.

Each link can be shaped: a bandwidth cap (`rate`, a tbf queue on both ends), packet loss
(`loss`, an nftables rule dropping that share of what a host receives), cut (`cut`) and a
host stopped (`stop`: SIGSTOP to every process in its namespace). Delay is not shaped: the
kernels this was written on have no `sch_netem` (tc answers "Specified qdisc kind is
unknown"), and `available()` says so rather than pretending.

Needs root, iproute2 (`ip`, `tc`), nftables for `loss`, and MPICH's `mpiexec` (the `mpi`
extra). `available()` gives the reason when this machine cannot make them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

_made = itertools.count()  # Hosts made by this process

# what makes MPICH (ch4, OFI netmod) take TCP over eth0 between ranks on one kernel
TCP_ENV = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "eth0"}

# Hydra's "ssh": LAUNCHER [OPTIONS] HOST COMMAND... runs COMMAND in that host's namespace
LAUNCHER = """#!/bin/sh
while [ "${{1#-}}" != "$1" ]; do shift; done
host=$1; shift
exec ip netns exec {prefix}${{host##*.}} sh -c "$*"
"""


def _run(*argv: str, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def available(loss: bool = False) -> str | None:
    """None when hosts can be made here; else why not."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool in ("ip", "tc") + (("nft",) if loss else ()):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (Debian's {'nftables' if tool == 'nft' else 'iproute2'})"
    if shutil.which("mpiexec") is None:
        return 'needs MPICH\'s mpiexec: pip install "dlc[mpi]"'
    probe = f"dlcprobe{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


class Hosts:
    """`with Hosts(k, rate="1gbit") as hosts:` K hosts joined by a bridge, torn down on exit,
    whatever happened inside."""

    def __init__(self, count: int, rate: str | None = None):
        self.count, self.rate = count, rate
        tag = os.getpid() % 10000 * 100 + next(_made) % 100  # a namespace lingers a moment once deleted
        self.prefix, self.bridge = f"dlc{tag}h", f"dlc{tag}br"  # interface names: at most 15 bytes
        self.subnet = f"10.{78 + tag // 250 % 100}.{tag % 250}"  # apart from other runs' hosts
        self.dir = Path(tempfile.mkdtemp(prefix="dlc-hosts-"))
        self.launcher = self.dir / "launch"

    # -- the hosts --
    def address(self, k: int) -> str:
        return f"{self.subnet}.{k}"

    def namespace(self, k: int) -> str:
        return f"{self.prefix}{k}"

    def link(self, k: int) -> str:
        """Host k's end of its link in the root namespace (the other end is its eth0)."""
        return f"{self.prefix}l{k}"

    def __enter__(self) -> "Hosts":
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for k in range(1, self.count + 1):
                ns, link = self.namespace(k), self.link(k)
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", link, "master", self.bridge, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.address(k)}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                if self.rate:
                    for where in ((link,), ("-n", ns, "eth0")):
                        dev = where[-1]
                        _run(
                            "tc",
                            *where[:-1],
                            "qdisc",
                            "add",
                            "dev",
                            dev,
                            "root",
                            "tbf",
                            "rate",
                            self.rate,
                            "burst",
                            "256kb",
                            "latency",
                            "100ms",
                        )
            self.launcher.write_text(LAUNCHER.format(prefix=self.prefix))
            self.launcher.chmod(self.launcher.stat().st_mode | stat.S_IXUSR)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for k in range(1, self.count + 1):
            for pid in self.pids(k):
                _kill(pid, signal.SIGKILL)
            _run("ip", "link", "del", self.link(k), check=False)  # both ends, at once
            _run("ip", "netns", "del", self.namespace(k), check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- running ranks --
    def mpiexec(self, command: list, ranks: int | None = None) -> list:
        """The argv that starts `command` as `ranks` ranks (default: one per host), round
        robin over the hosts, talking over TCP (TCP_ENV)."""
        ranks = ranks or self.count
        hosts = ",".join(self.address(k) for k in range(1, self.count + 1))
        argv = [
            shutil.which("mpiexec"),
            "-launcher",
            "ssh",
            "-launcher-exec",
            str(self.launcher),
            "-localhost",
            f"{self.subnet}.254",
            "-hosts",
            hosts,
            "-n",
            str(ranks),
            "-ppn",
            "1",
        ]
        for name, value in TCP_ENV.items():
            argv += ["-genv", name, value]
        return argv + list(command)

    def pids(self, k: int) -> list:
        found = _run("ip", "netns", "pids", self.namespace(k), check=False)
        return [int(p) for p in found.stdout.split()]

    def sent_bytes(self) -> int:
        """Bytes the hosts have sent over their links (what the bridge received from them)."""
        return sum(
            int(Path(f"/sys/class/net/{self.link(k)}/statistics/rx_bytes").read_text())
            for k in range(1, self.count + 1)
        )

    # -- faults --
    def cut(self, k: int):
        """Host k's link goes down: nothing reaches it or leaves it."""
        _run("ip", "link", "set", self.link(k), "down")

    def loss(self, k: int, percent: int):
        """Host k drops `percent` % of the packets it receives, at random."""
        table = ("inet", "dlcloss")
        _run("ip", "netns", "exec", self.namespace(k), "nft", "add", "table", *table)
        _run(
            "ip",
            "netns",
            "exec",
            self.namespace(k),
            "nft",
            "add",
            "chain",
            *table,
            "in",
            "{ type filter hook input priority 0; }",
        )
        _run(
            "ip",
            "netns",
            "exec",
            self.namespace(k),
            "nft",
            "add",
            "rule",
            *table,
            "in",
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            str(percent),
            "drop",
        )

    def stop(self, k: int):
        """Host k stops: SIGSTOP to every process in its namespace."""
        for pid in self.pids(k):
            _kill(pid, signal.SIGSTOP)


def _kill(pid: int, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
