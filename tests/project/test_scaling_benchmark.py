"""benchmarks/scaling.py, on its smallest sizes with few steps: every point passes the
first-step loss check against PyTorch and gets a row with finite times, ratio and memory
(no timing is asserted: the machine is shared)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


def test_the_scaling_benchmark_runs_its_smallest_points(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--only",
            "mlp",
            "--axis",
            "batch",
            "--json",
            str(tmp_path / "s.json"),
            "--plot",
            str(tmp_path / "s.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # the session's compile cache: its GEMM kernels
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 16 ") or line.startswith("| 32 ")]
    assert len(rows) == 2, out.stdout
    points = json.loads((tmp_path / "s.json").read_text())["points"]
    assert [(p["model"], p["axis"], p["size"]) for p in points] == [("mlp", "batch", 16), ("mlp", "batch", 32)]
    for p in points:
        assert p["check"].startswith("ok"), p["check"]
        assert math.isfinite(p["ratio"]) and p["ratio"] > 0
        assert p["dlc"]["steps"] >= 3 and p["torch"]["steps"] >= 3
        # the engine's accounting: 784-512-256-10 is 535,818 parameters, Adam keeps two more of each
        memory = p["dlc"]["memory_mib"]
        assert memory["parameters"] * 2**20 == 535_818 * 4 == memory["optimizer state"] * 2**20 / 2
        assert memory["activations"] > 0 and p["dlc"]["rss_mib"] > 0 and p["torch"]["rss_mib"] > 0
    assert points[1]["dlc"]["memory_mib"]["activations"] > points[0]["dlc"]["memory_mib"]["activations"]
    plotted = (tmp_path / "s.png").exists()
    assert plotted or "plot skipped: matplotlib is not installed" in out.stdout
