"""The ONNX backend node tests (onnx.backend.test) as a conformance oracle, on both engines:
tools/onnx_conformance.py runs them, docs/onnx.md holds the table this test checks."""
import re

import pytest

pytest.importorskip("onnx")
import onnx  # noqa: E402

from dlc.tools.onnx_conformance import DOC, ENGINES, is_float32, node_cases, run_batched, table  # noqa: E402

REASONS = {"op", "dtype", "attribute", "shape", "input", "opset", "native"}


@pytest.fixture(scope="module")
def cases():
    return node_cases()


@pytest.fixture(scope="module")
def results(cases):
    return {}


def outcomes(cases, results, engine):
    if engine not in results:
        results[engine] = run_batched(cases, engine)
    return results[engine]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_node_test_passes_or_is_refused_with_a_reason(cases, results, engine):
    got = outcomes(cases, results, engine)
    failed = [f"{c.name} [{c.op}]: {got[c.name].message.splitlines()[0]}" for c in cases if got[c.name].status == "fail"]
    assert not failed, f"{len(failed)} node tests fail on the {engine} engine:\n" + "\n".join(failed)
    refused = [got[c.name] for c in cases if got[c.name].status == "not supported"]
    assert all(o.reason in REASONS and o.message for o in refused)
    # float32 cases are the claim: most of them pass
    floats = [c for c in cases if is_float32(c)]
    assert sum(got[c.name].status == "pass" for c in floats) > 0.75 * len(floats)


def test_the_table_in_the_docs_is_the_suites(cases, results):
    """docs/onnx.md shows what this onnx's node tests give (rerun the tool to update it)."""
    doc = DOC.read_text()
    version = re.search(r"onnx (\d+\.\d+\.\d+)", doc).group(1)
    if version != onnx.__version__:
        pytest.skip(f"the table is of onnx {version}, this is onnx {onnx.__version__}")
    expected = table(cases, {e: outcomes(cases, results, e) for e in ENGINES})
    assert expected in doc, "docs/onnx.md is out of date: run python -m dlc.tools.onnx_conformance"
