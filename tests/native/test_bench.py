"""`dlc bench`: kernels slowest first, shares of the step that sum to 100 %, GFLOP/s for
the kernels that contract (GEMMs and convolutions)."""

import re
from pathlib import Path

from dlc.runtime.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"
ROW = re.compile(r"^( *)(\d+) (\S+) .*?(\d+\.\d+)\s+(\d+\.\d+)%\s*(\S*)$")


def bench_rows(capsys, example, *args):
    assert main(["bench", str(EXAMPLES / example), "--steps", "3", *args]) == 0
    out = capsys.readouterr().out
    rows = [ROW.match(line) for line in out.splitlines()]
    return [(len(m.group(1)), m.group(3), float(m.group(4)), float(m.group(5)), m.group(6)) for m in rows if m]


def test_shares_of_the_top_level_sum_to_the_whole_step_slowest_first(capsys):
    rows = bench_rows(capsys, "lenet5.dl", "--batch", "8", "--top", "5")
    top = [r for r in rows if r[0] == 0 and r[1] != "others"]
    assert len(top) == 5 and rows[-1][1] == "others", "five kernels, then an others line"
    assert abs(sum(r[3] for r in rows if r[0] == 0) - 100) < 0.6  # each line rounded to 0.1 %
    assert [r[3] for r in top] == sorted((r[3] for r in top), reverse=True)


def test_convolutions_and_gemms_have_gflops(capsys):
    rows = bench_rows(capsys, "lenet5.dl", "--batch", "8", "--top", "100")
    kinds = {r[1] for r in rows if r[4]}
    assert {"conv", "gemm"} <= kinds
    assert not {r[1] for r in rows if r[4]} & {"map", "reduce"}


def test_a_scans_body_is_listed_under_it(capsys):
    rows = bench_rows(capsys, "simple_rnn.dl", "--batch", "4", "--top", "100")
    scans = [i for i, r in enumerate(rows) if r[1] == "scan"]
    assert scans and rows[scans[0] + 1][0] > rows[scans[0]][0]


def test_a_model_without_a_loss_profiles_its_prediction(capsys, tmp_path):
    """An imported classifier has no loss: bench times its prediction, --batch sizing its
    input's leading dim (N here, not B)."""
    path = tmp_path / "pointwise.dl"
    path.write_text(
        "model m {\n    input x: f32[N, 8, 6, 6]\n"
        "    output y = conv2d(conv2d(x, 8, 3, padding = 1, groups = 8), 16, 1)\n}\n"
    )
    assert main(["bench", str(path), "--batch", "3", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("native prediction of m: ") and "N=3" in out
    rows = [ROW.match(line) for line in out.splitlines()]
    assert {m.group(3) for m in rows if m} >= {"gemm"}  # the pointwise convolution is a GEMM


def test_the_header_names_the_thread_team_the_steps_ran_on(capsys, monkeypatch):
    for given, shown in (("1", "on 1 thread "), ("2", "on 2 threads ")):
        monkeypatch.setenv("DLC_NUM_THREADS", given)
        assert main(["bench", str(EXAMPLES / "xor_mlp.dl"), "--steps", "3"]) == 0
        assert shown in capsys.readouterr().out.splitlines()[0]


def test_int8_profiles_the_prediction_with_its_integer_products(capsys):
    """--int8: the prediction's profile, its products quantized (calibrated on the timed
    batch): the digits CNN's second convolution and its dense layers run as int8 kernels,
    its first convolution (one channel a tap) stays a float32 one."""
    rows = bench_rows(capsys, "digits_cnn.dl", "--batch", "4", "--top", "100", "--int8")
    kinds = {r[1] for r in rows}
    assert "int8" in kinds and "conv" in kinds
    assert abs(sum(r[3] for r in rows if r[0] == 0) - 100) < 1.5


def test_int8_and_bf16_together_are_refused(capsys):
    assert main(["bench", str(EXAMPLES / "digits_cnn.dl"), "--int8", "--precision", "bf16"]) != 0
    assert "--int8 or --precision bf16" in capsys.readouterr().err
