"""The ONNX backend node tests as a conformance oracle for dlc's importer and engines.

    python -m dlc.tools.onnx_conformance                 # both engines; rewrites the table in docs/onnx.md
    python -m dlc.tools.onnx_conformance --engine reference --op Conv --show

The node tests ship inside the onnx wheel (onnx.backend.test): each is a one-node model (or
its expansion into a function body, `..._expanded`), inputs and the expected outputs,
generated in-process by onnx.backend.test.loader.load_model_tests(kind="node"). Each case
runs through runtime/interop/onnx_backend.py and ends in one of

- pass: every output has the expected shape and dtype and is within the case's tolerance;
- fail: a wrong result, or any error that is not a refusal (a bug of dlc);
- not supported: the importer refused the model (compiler/onnx_import.Unsupported) and says
  why: the op, a dtype, an attribute, a shape, an input needed when importing, the opset.

The native engine compiles one program per case; `run_batched` imports many cases as one
model (their graphs side by side, names prefixed) to compile once, and reruns a batch case
by case when anything in it fails, so that a failure is charged to its case.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError

ENGINES = ("reference", "native")
DOC = Path(__file__).resolve().parent.parent / "docs" / "onnx.md"
BEGIN, END = "<!-- conformance table: begin -->", "<!-- conformance table: end -->"


@dataclass
class NodeTestOutcome:
    status: str  # "pass", "fail" or "not supported"
    reason: str = ""  # why not supported: op, dtype, attribute, shape, input, opset (with the message)
    message: str = ""


def node_cases() -> list:
    """The node test cases of the installed onnx, each with the op it tests (`case.op`)."""
    import onnx.backend.test.loader as loader

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = loader.load_model_tests(kind="node")
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    for c in cases:
        base = re.sub(r"_expanded(_ver\d+)?$", "", c.name)
        c.op = single.get(base) or single.get(c.name) or _tested_op(c)
    return cases


def _tested_op(case) -> str:
    """The op of an expanded case without a one-node twin: the node whose snake-case name
    begins the case's name, else the graph's last node."""
    name = case.name[len("test_") :]
    ops = {n.op_type for n in case.model.graph.node}
    for op in sorted(ops, key=len, reverse=True):
        if name.startswith(re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()):
            return op
    return case.model.graph.node[-1].op_type


def is_float32(case) -> bool:
    """A case on float32 tensors: some input or output is float32, and no other float type."""
    types = {
        v.type.tensor_type.elem_type
        for v in (*case.model.graph.input, *case.model.graph.output)
        if v.type.HasField("tensor_type")
    }
    return 1 in types and not types & {10, 11, 16, 17, 18, 19, 20, 23, 24}  # f16, f64, bf16, the float8s and 4s


def _arrays(values) -> list:
    from onnx import TensorProto, numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in values]


def _compare(case, expected, got):
    from onnx.backend.test.runner import Runner

    Runner.assert_similar_outputs(_arrays(expected), list(got), case.rtol, case.atol)


def run_case(case, engines: tuple) -> dict:
    """The case's outcome on each engine, by engine; it is imported once for all."""

    def runs(rep):
        for inputs, expected in case.data_sets:
            _compare(case, expected, rep.run(_arrays(inputs)))

    reps = _prepared(case.model, engines)
    return {
        e: rep if isinstance(rep, NodeTestOutcome) else _outcome(lambda: runs(rep)) or NodeTestOutcome("pass")
        for e, rep in reps.items()
    }


def _prepared(model, engines: tuple) -> dict:
    """Each engine's prepared model, or the outcome its preparation made (the native engine
    may refuse what the reference runs); those prepared share one import."""
    from dlc.runtime.interop.onnx_backend import DlcBackend

    reps, shared = {}, None
    for e in engines:
        reps[e] = _outcome(lambda: shared.on(e) if shared else DlcBackend.prepare(model, engine=e))
        if shared is None and not isinstance(reps[e], NodeTestOutcome):
            shared = reps[e]
    return reps


def _outcome(step):
    """What `step()` gives, or the outcome its error makes: a refusal is not supported, any
    other error a failure of dlc."""
    from dlc.compiler.onnx.importer import Unsupported

    try:
        return step()
    except Unsupported as e:
        return NodeTestOutcome("not supported", e.kind, e.message)
    except AssertionError as e:
        return NodeTestOutcome("fail", message=str(e).strip())
    except (DlcError, Exception) as e:  # noqa: B014  (every other error is a failure of dlc)
        text = e.render() if isinstance(e, DlcError) else f"{type(e).__name__}: {e}"
        return NodeTestOutcome("fail", message=text)


# ---- batches: many cases, one program -------------------------------------------------------------
def batchable(case) -> bool:
    """One data set and no local functions: the case can sit in a merged model."""
    return len(case.data_sets) == 1 and not case.model.functions


def static_values(case) -> dict:
    """The values of the inputs the case's program needs as constants (static_inputs), from
    its data set, by name: what the backend binds when it is fed them."""
    from dlc.compiler.onnx.importer import static_inputs
    from dlc.runtime.interop.onnx_backend import fed_inputs

    feeds = dict(zip(fed_inputs(case.model), _arrays(case.data_sets[0][0])))
    return {name: np.asarray(feeds[name]) for name in static_inputs(case.model)}


def merged_model(cases: list):
    """The graphs of `cases` (one opset) side by side in one model, names prefixed `cK_`: the
    inputs a case's program needs as constants stay inputs, which the backend binds from the
    values fed, as it binds a lone case's."""
    from onnx import compose, helper

    graphs = [compose.add_prefix_graph(c.model.graph, f"c{k}_") for k, c in enumerate(cases)]
    graph = helper.make_graph(
        [n for g in graphs for n in g.node],
        "batch",
        [i for g in graphs for i in g.input],
        [o for g in graphs for o in g.output],
        [t for g in graphs for t in g.initializer],
        value_info=[v for g in graphs for v in g.value_info],
    )
    return helper.make_model(
        graph, opset_imports=list(cases[0].model.opset_import), ir_version=cases[0].model.ir_version
    )


def run_batched(cases: list, engines: tuple = ENGINES, size: int = 40) -> dict:
    """Outcomes by engine, then by case name; cases that can share a program are compiled
    together, and each program is imported once for every engine."""
    from dlc.compiler.onnx.importer import Unsupported, import_model

    out, alone = {e: {} for e in engines}, []
    groups = collections.defaultdict(list)
    for c in cases:
        if not batchable(c):
            alone.append((c, engines))
            continue
        try:  # what dlc does not import stays out of the batches (importing is cheap)
            import_model(c.model, static=static_values(c))
        except Unsupported as e:
            for e_out in out.values():
                e_out[c.name] = NodeTestOutcome("not supported", e.kind, e.message)
            continue
        except Exception:  # noqa: BLE001  (its own run says what)
            alone.append((c, engines))
            continue
        groups[tuple(sorted((o.domain, o.version) for o in c.model.opset_import))].append(c)
    for group in groups.values():
        for start in range(0, len(group), size):
            alone += _run_merged(group[start : start + size], engines, out)
    for c, on in alone:
        for e, outcome in run_case(c, on).items():
            out[e][c.name] = outcome
    return out


def _run_merged(chunk: list, engines: tuple, out: dict) -> list:
    """Runs `chunk` as one merged program on each engine, its outcomes into `out`; where it
    fails, its halves on the engines it failed on (a bad case costs a few compiles, not one
    per case of its chunk). The (case, engines) left to run alone: a single case that failed
    merged."""

    def passes(rep) -> bool:
        if isinstance(rep, NodeTestOutcome):  # not prepared
            return False
        try:
            got = rep.run([a for c in chunk for a in _arrays(c.data_sets[0][0])])
            k = 0
            for c in chunk:
                n = len(c.model.graph.output)
                _compare(c, c.data_sets[0][1], got[k : k + n])
                k += n
        except Exception:  # noqa: BLE001  (charged case by case: each one's own run says what)
            return False
        return True

    try:
        reps = _prepared(merged_model(chunk), engines)
    except Exception:  # noqa: BLE001  (cases onnx does not merge: as a failed run)
        reps = dict.fromkeys(engines, NodeTestOutcome("fail"))
    failed = tuple(e for e, rep in reps.items() if not passes(rep))
    for e in engines:
        if e not in failed:
            out[e].update((c.name, NodeTestOutcome("pass")) for c in chunk)
    if not failed:
        return []
    if len(chunk) == 1:
        return [(chunk[0], failed)]
    half = len(chunk) // 2
    return _run_merged(chunk[:half], failed, out) + _run_merged(chunk[half:], failed, out)


# ---- the table -------------------------------------------------------------------------------------------
def table(cases: list, results: dict) -> str:
    """The per-op table (markdown): pass / fail / not supported per engine, with totals, and
    why cases are not supported (the first engine's reason, else the next's)."""
    engines = list(results)
    rows = collections.defaultdict(lambda: {e: collections.Counter() for e in engines})
    reasons = collections.defaultdict(collections.Counter)
    for c in cases:
        for e in engines:
            rows[c.op][e][results[e][c.name].status] += 1
        refused = [results[e][c.name].reason for e in engines if results[e][c.name].status == "not supported"]
        if refused:
            reasons[c.op][refused[0]] += 1
    head = "| Op | " + " | ".join(f"{e}: pass / fail / not supported" for e in engines) + " | Not supported because |"
    lines = [head, "|---|" + "---|" * len(engines) + "---|"]
    totals = {e: collections.Counter() for e in engines}
    for op in sorted(rows):
        cells = []
        for e in engines:
            n = rows[op][e]
            totals[e].update(n)
            cells.append(f"{n['pass']} / {n['fail']} / {n['not supported']}")
        why = ", ".join(f"{k} ({v})" for k, v in sorted(reasons[op].items()))
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {why} |")
    lines.append(
        "| **total** | "
        + " | ".join(f"**{t['pass']} / {t['fail']} / {t['not supported']}**" for t in totals.values())
        + " | |"
    )
    floats = {e: collections.Counter(results[e][c.name].status for c in cases if is_float32(c)) for e in engines}
    lines.append(
        "| *of which float32 cases* | "
        + " | ".join(f"*{t['pass']} / {t['fail']} / {t['not supported']}*" for t in floats.values())
        + " | |"
    )
    return "\n".join(lines)


def write_table(text: str, path: Path = DOC):
    doc = path.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    path.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dlc.tools.onnx_conformance", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=ENGINES, action="append", help="default: both")
    p.add_argument("--op", action="append", help="only the cases of these ops")
    p.add_argument("--case", help="only the cases whose name contains this")
    p.add_argument("--show", action="store_true", help="print each case that does not pass, and why")
    p.add_argument("--no-write", action="store_true", help=f"do not rewrite the table in {DOC.name}")
    args = p.parse_args(argv)
    cases = node_cases()
    if args.op:
        cases = [c for c in cases if c.op in args.op]
    if args.case:
        cases = [c for c in cases if args.case in c.name]
    results = run_batched(cases, tuple(args.engine or ENGINES))
    for engine in results:
        counts = collections.Counter(o.status for o in results[engine].values())
        print(
            f"{engine}: {counts['pass']} pass, {counts['fail']} fail, {counts['not supported']} not supported",
            file=sys.stderr,
        )
        if args.show:
            for c in cases:
                o = results[engine][c.name]
                if o.status != "pass":
                    first = o.message.splitlines()[0] if o.message else ""
                    print(f"  {c.name} [{c.op}] {o.status} {o.reason}: {first}", file=sys.stderr)
    text = table(cases, results)
    if args.no_write or args.op or args.case:
        print(text)
    else:
        write_table(text)
        print(f"wrote the table to {DOC}", file=sys.stderr)
    return 1 if any(o.status == "fail" for r in results.values() for o in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
