"""benchmarks/gpt.py on its 1-layer `tiny` configuration, a few iterations: the two models
are the same function (checked by the script before it runs them), have the same number of
parameters, start near ln(vocab) and get a row each with finite figures, from runs in
rounds (no timing is asserted: the machine is shared)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpt.py"


def test_the_gpt_benchmark_runs_its_tiny_configuration(tmp_path):
    # the session's cache (conftest.py): dlc's GEMM kernels compiled once, not in every cold child
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--only",
            "tiny",
            "--iters",
            "6",
            "--rounds",
            "2",
            "--json",
            str(tmp_path / "g.json"),
            "--cache",
            os.environ["DLC_CACHE_DIR"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tiny ")]
    assert [row.split("|")[3].strip() for row in rows] == ["dlc", "torch"], out.stdout
    (result,) = json.loads((tmp_path / "g.json").read_text())["results"]
    assert result["config"] == "tiny" and result["check"] < 1e-4
    runs = result["runs"]
    # wte 60x16 (tied to the output), wpe 16x16, c_attn 16x48, c_proj 16x16, c_fc 16x64, c_proj 64x16, 3 gains
    assert runs["dlc"]["params"] == runs["torch"]["params"] == 60 * 16 + 16 * 16 + 12 * 16 * 16 + 3 * 16
    for r in runs.values():
        assert len(r["losses"]) == 6 and abs(r["losses"][0] - math.log(60)) < 0.1
        assert len(r["ms"]) == 4 and all(t > 0 for t in r["ms"])
        assert r["first_s"] > 0 and r["rss_mb"] > 0 and math.isfinite(r["val_loss"])
        assert all(t > 0 for t in r["phases_s"].values()) and max(r["rss_mb_after"].values()) <= r["rss_mb"]
    assert all(len(r["ms_per_iter_of_each_round"]) == 2 for r in runs.values())
    assert len(result["others"]) == 2 and result["dlc/torch"]["rounds"] == 2
    assert list(runs["dlc"]["phases_s"]) == ["imports", "load", "compile", "first step"]
