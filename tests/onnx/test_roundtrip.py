"""Export, import, export again: every example leaves dlc as ONNX, comes back as a .dl
program with a checkpoint (`dlc import`), and leaves again, and all three give the same
predictions (docs/interop.md). The CLI does the same with files."""

from __future__ import annotations


import pytest

onnx = pytest.importorskip("onnx")

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from helpers.onnx_runs import (
    EXAMPLES,
    SIZES,
    assert_close,
    exported,
    float32_feeds,
    initial_params,
    reimported,
    run_onnx,
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_export_import_export_keeps_the_predictions(path, tmp_path):
    original = DlcModel(str(path), backend="reference")
    original.params = initial_params(original.train_model, original.eval_model)
    first = exported(original.eval_model, original.params)
    back = reimported(first, tmp_path)
    second = exported(back.eval_model, back.params)
    for k, sizes in enumerate(SIZES):
        feeds = float32_feeds(original.eval_model, sizes, seed=k)
        ref = original.predict(feeds)
        for what, got in (("imported", back.predict(feeds)), ("re-exported", run_onnx(second, feeds))):
            assert got.keys() == ref.keys(), what
            for name in ref:
                assert_close(got[name], ref[name], f"{path.stem} {name} {what} at {sizes}")


def test_the_cli_round_trip(tmp_path, capsys):
    example = next(p for p in EXAMPLES if p.stem == "digits_cnn")
    assert main(["export", str(example), "-o", str(tmp_path / "a.onnx")]) == 0
    assert main(["import", str(tmp_path / "a.onnx"), "-o", str(tmp_path / "b.dl")]) == 0
    assert (
        main(["export", str(tmp_path / "b.dl"), "--weights", str(tmp_path / "b.npz"), "-o", str(tmp_path / "c.onnx")])
        == 0
    )
    capsys.readouterr()
    a, c = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "c.onnx"))
    model = load_text((tmp_path / "b.dl").read_text(), str(tmp_path / "b.dl")).build(None, training=False)
    feeds = float32_feeds(model, SIZES[0])
    ra, rc = run_onnx(a, feeds), run_onnx(c, feeds)
    assert ra.keys() == rc.keys()
    for name in ra:
        assert_close(rc[name], ra[name], f"digits_cnn {name} after export, import, export")
