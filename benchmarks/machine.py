"""How busy the machine is: the cores other processes use while a benchmark runs (the
`others` column of every table), a wait for a quiet moment, and the tables' printing. The machines are shared:
a figure measured while others used a core is not comparable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from dlc.runtime.engines.cores import machine_busy_s


def own_cpu_s(pids=()) -> float:
    """CPU seconds of this process, of its children waited for, and of the running processes
    `pids` (a server the benchmark drives)."""
    t = os.times()
    running = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        running += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return t.user + t.system + t.children_user + t.children_system + running


def status_kb(field: str) -> int:
    """A field of this process's /proc/self/status in kB: VmRSS, or VmHWM, its peak resident
    memory, which belongs to its own address space (getrusage's ru_maxrss, of a process or
    of a waited child, starts from the parent's resident size at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}: memory is measured on Linux only")


class OtherLoad:
    """Cores used by other processes while a block runs: the machine's busy time minus this
    process's CPU time, its finished children's (a C timer the block ran) and that of the
    running processes `pids`, over the wall time. nan where /proc/stat is not available."""

    def __init__(self, pids=()):
        self.pids = pids

    def __enter__(self):
        self.busy, self.own, self.wall = machine_busy_s(), own_cpu_s(self.pids), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = machine_busy_s()
        wall = time.perf_counter() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            self.cores = float("nan")
        else:
            self.cores = max(0.0, (busy - self.busy) - (own_cpu_s(self.pids) - self.own)) / wall
        return False


def wait_idle(limit_s: float, threshold: float = 0.25):
    """Wait (at most limit_s) until other processes use less than `threshold` cores over 1 s."""
    start = time.perf_counter()
    while True:
        with OtherLoad() as o:
            time.sleep(1.0)
        if not o.cores == o.cores or o.cores < threshold:  # nan: cannot tell, do not wait
            return
        if time.perf_counter() - start >= limit_s:
            print(
                f"  note: still busy after waiting {limit_s:.0f} s (others use {o.cores:.2f} cores); going on",
                flush=True,
            )
            return


@contextmanager
def cpu_hogs(n: int):
    """n processes that each keep one core busy while the block runs: a busy neighbour."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if hogs else 0)  # let them start spinning
        yield
    finally:
        for p in hogs:
            p.kill()
            p.wait()


def print_results(table: str, rows: list, json_path: str | None):
    """A benchmark's table under the `others` legend, and its rows as JSON at json_path."""
    print("\nothers: cores used by other processes while timing (0 = quiet machine)\n")
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {json_path}")
