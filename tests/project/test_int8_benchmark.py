"""benchmarks/int8.py on the digits CNN with its initial weights, at batch 1 and one short
round: dlc's quantization and onnxruntime's in both its formats run on the same batches and the
rows have finite errors and times, the float32 and int8 libraries' too, and the faster
onnxruntime format is named (no figure is asserted: the machine is shared)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "int8.py"


def test_the_int8_benchmark_runs_the_digits_cnn(tmp_path):
    from dlc.runtime.api import DlcModel
    from dlc.runtime.interop import checkpoint
    from dlc.runtime.training.trainer import initial_parameters

    model = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"))
    checkpoint.save(tmp_path / "w.npz", initial_parameters(model.train_model, 0), {}, {})
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--only",
            "digits_cnn",
            "--weights",
            f"digits_cnn={tmp_path / 'w.npz'}",
            "--batch",
            "1",
            "--rounds",
            "1",
            "--seconds",
            "0.05",
            "--json",
            str(tmp_path / "i.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # the session's compile cache
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "i.json").read_text())
    (error,) = result["error"]
    assert error["model"] == "digits_cnn" and error["examples"] == 359 and error["qdq_quanta"] <= 1
    for k in ("dlc_int8", "ort_qdq", "ort_qop"):
        assert 0 <= error[f"{k}_agreement"] <= 1 and math.isfinite(error[f"{k}_sqnr_db"])
        assert 0 <= error[f"{k}_accuracy"] <= 1
    (row,) = result["time"]
    assert row["batch"] == 1 and len(row["others"]) == 1
    # the libraries too, each checked to be its engine's bits before it is timed
    timed = ("dlc_f32", "dlc_int8", "dlc_f32_lib", "dlc_int8_lib", "ort_f32", "ort_qdq", "ort_qop")
    assert all(row[k] > 0 for k in timed)
    # ort_int8 is the faster of onnxruntime's two formats, and its ratios are taken against it
    faster = {"QDQ": "ort_qdq", "QOperator": "ort_qop"}[row["ort_int8_format"]]
    assert row["ort_int8"] == row[faster] == min(row["ort_qdq"], row["ort_qop"])
    assert row["dlc_int8/ort_int8"]["rounds"] == row["dlc_int8_lib/dlc_f32_lib"]["rounds"] == 1
    assert "dlc_int8_lib/dlc_f32_lib" in out.stdout
