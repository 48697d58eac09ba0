"""The ONNX backend node tests (onnx.backend.test) as a conformance oracle, on both engines:
tools/onnx_conformance.py runs them, docs/onnx.md holds the table this test checks."""

import pickle
import re

import pytest

pytest.importorskip("onnx")
import onnx  # noqa: E402

from dlc.compiler.onnx.rules import RULES  # noqa: E402
from dlc.tools.onnx_conformance import DOC, ENGINES, is_float32, node_cases, run_batched, table  # noqa: E402
from helpers.session_once import session_folder  # noqa: E402

REASONS = {"op", "dtype", "attribute", "shape", "input", "opset", "native"}
# one pytest-xdist worker runs the file, so that the table's test never waits for another's run
pytestmark = pytest.mark.xdist_group("test_conformance")


@pytest.fixture(scope="module")
def cases():
    return node_cases()


def outcomes(cases, engine) -> dict:
    """The engine's outcomes by case name, computed once per test session for both engines,
    which share each import (a worker may tear the module's fixtures down between this file's
    tests)."""

    def run(folder):
        (folder / "outcomes.pickle").write_bytes(pickle.dumps(run_batched(cases)))

    return pickle.loads((session_folder("onnx-conformance", run) / "outcomes.pickle").read_bytes())[engine]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_node_test_passes_or_is_refused_with_a_reason(cases, engine):
    got = outcomes(cases, engine)
    failed = [
        f"{c.name} [{c.op}]: {got[c.name].message.splitlines()[0]}" for c in cases if got[c.name].status == "fail"
    ]
    assert not failed, f"{len(failed)} node tests fail on the {engine} engine:\n" + "\n".join(failed)
    refused = [got[c.name] for c in cases if got[c.name].status == "not supported"]
    assert all(o.reason in REASONS and o.message for o in refused)
    # the one-node float32 cases of an op with a rule pass, or are refused for what the rule
    # does not express (an attribute, a dtype among the inputs, a shape), never as an unknown op
    mapped = [c for c in cases if c.op in RULES and is_float32(c) and len(c.model.graph.node) == 1]
    assert len(mapped) > 500
    wrong = [
        f"{c.name}: {got[c.name].message}"
        for c in mapped
        if got[c.name].status != "pass" and got[c.name].reason in ("op", "opset")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_table_in_the_docs_is_the_suites(cases):
    """docs/onnx.md shows what this onnx's node tests give (rerun the tool to update it)."""
    doc = DOC.read_text()
    version = re.search(r"onnx (\d+\.\d+\.\d+)", doc).group(1)
    if version != onnx.__version__:
        pytest.skip(f"the table is of onnx {version}, this is onnx {onnx.__version__}")
    expected = table(cases, {e: outcomes(cases, e) for e in ENGINES})
    assert expected in doc, "docs/onnx.md is out of date: run python -m dlc.tools.onnx_conformance"
