"""The notebooks of examples/notebooks/ run: their code cells, executed in order by IPython's
shell as a kernel would (no Jupyter needed), in a fresh folder, with matplotlib's inline
backend as in a notebook: what each cell displays is kept, so a plot that a cell draws must
come out as an image (training writes history.png without touching that backend)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "examples" / "notebooks").glob("*.ipynb"))


def run_cells(path: Path) -> tuple[dict, list]:
    """The namespace after the notebook's code cells, and what each cell displayed (its rich
    outputs, by MIME type: {"image/png": ..., "text/plain": ...})."""
    pytest.importorskip("IPython", reason="IPython runs the notebook's cells (pip install ipython)")
    pytest.importorskip("matplotlib_inline", reason="the inline backend comes with IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4

    class Shell(InteractiveShell):
        def enable_gui(self, gui=None):  # a kernel's inline backend runs no GUI event loop
            pass

    shell = Shell.instance()
    try:
        shell.run_line_magic("matplotlib", "inline")
        displayed = []
        for cell in (c for c in notebook["cells"] if c["cell_type"] == "code"):
            with capture_output() as captured:
                result = shell.run_cell("".join(cell["source"]))
            result.raise_error()
            displayed.append([output.data for output in captured.outputs])
        return dict(shell.user_ns), displayed
    finally:
        Shell.clear_instance()


def test_there_is_a_notebook():
    assert [p.name for p in NOTEBOOKS] == ["arrays.ipynb"]


def test_the_arrays_notebook_trains_stops_evaluates_plots_and_exports(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("DLC_PLOT", "1")
    ns, displayed = run_cells(NOTEBOOKS[0])
    result = ns["result"]
    assert result.stopped == "stopped" and len(result.history) < 30  # its callback stopped it
    assert (tmp_path / "runs" / "rings" / "history.png").stat().st_size > 0  # written beside the run
    assert result.history["val_accuracy"][-1] >= 0.97
    assert ns["scores"]["accuracy"] > 0.9
    assert ns["probs"].shape == (200, 3)
    if "onnx_probs" in ns:
        assert float(abs(ns["onnx_probs"] - ns["probs"]).max()) < 1e-5
    # the notebook's own plot, drawn after training, is shown by the inline backend
    import matplotlib

    assert "inline" in matplotlib.get_backend()
    code = [c for c in json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    (plot,) = [i for i, c in enumerate(code) if "plt.subplots" in "".join(c["source"])]
    assert any("image/png" in output for output in displayed[plot]), displayed[plot]
    assert repr(ns["model"]).startswith("<dlc model rings from rings.dl: inputs x: f32[B, 2] -> outputs probs")
    ns["plt"].close("all")
