"""The notebooks of examples/notebooks/ run: their code cells, executed in order in one
namespace as a kernel would, in a fresh folder (no Jupyter needed)."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))


def run_cells(path: Path) -> dict:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    namespace = {"__name__": "__main__"}
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    for i, cell in enumerate(code, 1):
        exec(compile("".join(cell["source"]), f"{path.name}, code cell {i}", "exec"), namespace)
    return namespace


def test_there_is_a_notebook():
    assert [p.name for p in NOTEBOOKS] == ["arrays.ipynb"]


def test_the_arrays_notebook_trains_stops_evaluates_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")     # a plot drawn off screen
    ns = run_cells(NOTEBOOKS[0])
    result = ns["result"]
    assert result.stopped == "stopped" and len(result.history) < 30       # its callback stopped it
    assert result.history["val_accuracy"][-1] >= 0.97
    assert ns["scores"]["accuracy"] > 0.9
    assert ns["probs"].shape == (200, 3)
    if "onnx_probs" in ns:
        assert float(abs(ns["onnx_probs"] - ns["probs"]).max()) < 1e-5
    if ns["plt"] is not None:
        ns["plt"].close("all")
