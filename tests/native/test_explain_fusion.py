"""`dlc compile FILE --explain-fusion` (Fusion.explanation in compiler/native/fusion.py): every
boundary the fusion pass recorded, once, under the kernel that reads it, with its reason
in plain English and the source lines of both operations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlc.compiler.frontend.loader import load
from dlc.compiler.native.fusion import Fusion, Reason
from dlc.compiler.passes import autodiff
from dlc.compiler.passes.optimize import PIPELINE, optimize
from dlc.runtime.cli import main

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.dl"))
HEADER = re.compile(r"^ *(\S+) -> (\S+): (.+)$")


def fusion_of(path) -> Fusion:
    """The fusion `dlc compile` explains: of the train step, or the forward graph without a loss."""
    graph = load(str(path)).build(None, training=True).graph
    return Fusion(optimize(autodiff.train_step(graph) if "loss" in graph.outputs else graph, PIPELINE))


def all_boundaries(f: Fusion) -> list:
    return [(f, b) for b in f.boundaries] + [x for body in f.bodies.values() for x in all_boundaries(body)]


def entries(text: str) -> list:
    """Each boundary of the output: (producer op, consumer op, reason, its lines under the header)."""
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        m = HEADER.match(line)
        if m:
            block = []
            for below in lines[i + 1 :]:
                if HEADER.match(below) or not below.startswith(" " * (len(line) - len(line.lstrip()) + 4)):
                    break
                block.append(below)
            out.append((*m.groups(), block))
    return out


def explain(tmp_path, source: str, capsys) -> str:
    path = tmp_path / "m.dl"
    path.write_text(source)
    assert main(["compile", str(path), "--explain-fusion"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_boundary_of_every_example_has_a_reason_and_both_source_lines(path):
    f = fusion_of(path)
    records = all_boundaries(f)
    text = f.explanation()
    shown = entries(text)
    assert sorted((fu.graph.op(b.producer), fu.graph.op(b.consumer), b.why()) for fu, b in records) == sorted(
        (p, c, why.split(" (also read in ")[0]) for p, c, why, _ in shown
    )  # each record once
    assert re.fullmatch(rf"\d+ kernels, {len(records)} boundar(y|ies): .+", text.splitlines()[-1])
    assert all(b.why() for _, b in records)
    place = re.compile(r"^ *(from|into)? +\S+ +(called at )?[\w.<>-]+\.dl:\d+ +\S")  # a place and its line's text
    for _, _, _, block in shown:
        assert [line.split()[0] for line in block if line.split()[0] in ("from", "into")] == ["from", "into"]
        assert all(
            place.match(line) or line.lstrip().startswith("called at ") and re.search(r"\.dl:\d+ +\S", line)
            for line in block
        ), block
    spans = [fu.graph.nx.nodes[v]["span"] for fu, b in records for v in (b.producer, b.consumer)]
    assert None not in spans
    assert text.count("called at ") == sum(s.caller is not None for s in spans)  # the user's call of every stdlib line


TWICE = """model twice {
    input  x: f32[B, 4]
    param  w: f32[4, 3] = normal
    h = tanh(x)
    s = sum(h, 1)
    output a = s / 4.0
    output b = exp(h) @ w
}
"""


def test_a_value_read_twice_a_gemm_operand_and_a_reduction_name_their_reasons_and_lines(tmp_path, capsys):
    shown = {(p, c): (why, "\n".join(block)) for p, c, why, block in entries(explain(tmp_path, TWICE, capsys))}
    why, block = shown["tanh", "reduce_sum"]
    assert why == "read 2 times" and "m.dl:4" in block and "h = tanh(x)" in block and "s = sum(h, 1)" in block
    assert shown["tanh", "exp"][0] == "read 2 times" and "output b = exp(h) @ w" in shown["tanh", "exp"][1]
    assert shown["exp", "matmul"][0] == "a GEMM operand must be in memory"
    why, block = shown["reduce_sum", "div"]
    assert why == "the result of a reduction" and "m.dl:5" in block and "output a = s / 4.0" in block
    assert len(shown) == 4


def test_a_scan_its_steps_results_and_the_users_call_of_the_standard_library(tmp_path, capsys):
    text = explain(
        tmp_path,
        """model r {
    input  x: f32[B, T, 2]
    hs = lstm(x, 4)
    output last = hs[:, -1]
}
""",
        capsys,
    )
    shown = {(p, c, why): "\n".join(block) for p, c, why, block in entries(text)}
    block = shown["scan", "slice", Reason.SCAN.value]
    assert re.search(r"from  scan +recurrent\.dl:\d+ +hs, cs = scan t in T", block)
    assert re.search(r"called at m\.dl:3 +hs = lstm\(x, 4\)", block) and "m.dl:4" in block
    assert any(why == Reason.STEP.value for _, _, why in shown)  # inside the body, indented under the scan
    assert text.index("scan in T") < text.index(Reason.STEP.value)
    assert text.splitlines()[-1].endswith(f"1 {Reason.SCAN.value}, 1 {Reason.STEP.value}")


def test_the_cli_explains_the_train_step_of_an_example(capsys):
    perceptron = Path(__file__).parents[2] / "examples" / "perceptron.dl"
    assert main(["compile", str(perceptron), "--explain-fusion"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "11 kernels, 11 boundaries: 5 read several times, 2 written by a kernel of its "
        "own, 2 the result of a reduction, 2 read from memory by its reader"
    )
    line = next(
        i
        for i, text in enumerate(
            (Path(__file__).parents[2] / "compiler" / "stdlib" / "losses.dl").read_text().splitlines(), 1
        )
        if text.startswith("def perceptron_loss")
    )
    place = f"losses.dl:{line}"
    assert (
        f"""group 3: div (elementwise)
    reduce_sum -> div: the result of a reduction
        from  reduce_sum      {place:<28}def perceptron_loss(z, y) = mean(maximum(-y * z, 0.0))
                              called at perceptron.dl:10  loss   perceptron_loss(score, y)
        into  div             {place:<28}def perceptron_loss(z, y) = mean(maximum(-y * z, 0.0))
                              called at perceptron.dl:10  loss   perceptron_loss(score, y)
"""
        in out
    )
    assert (
        "group 1: mul (elementwise)\n    matmul -> reshape: written by a kernel of its own (also read in group 4)"
    ) in out


def test_explain_fusion_and_emit_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["compile", str(EXAMPLES[0]), "--emit", "fused", "--explain-fusion"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_boundary_inside_a_library_recurrence_names_the_users_call():
    f = fusion_of(Path(__file__).parents[2] / "examples" / "char_lstm.dl")
    inside = [(fu, b) for body in f.bodies.values() for fu, b in all_boundaries(body)]
    assert inside
    for fu, b in inside:
        for v in (b.producer, b.consumer):
            span = fu.graph.nx.nodes[v]["span"]
            assert span.in_stdlib() and span.caller is not None and span.caller.file.endswith("char_lstm.dl"), span
