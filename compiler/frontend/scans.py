"""`scan` in the evaluator: a loop over a body graph, its carries, the sequences its body
indexes by the step variable (compiler/frontend/indexing.py) and the values it captures,
and the checkpoints of a recurrent layer (`checkpoint = k`, a train block's `remat = k`).
A part of the Evaluator (compiler/frontend/evaluator.py), which it mixes in."""

from __future__ import annotations

from dlc.compiler.errors import STDLIB_PREFIX, DlcError, Span
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.values import Env, LoopIndex, describe
from dlc.compiler.ir.graph import Graph, Tensor

RECURRENT_LAYERS = STDLIB_PREFIX + "recurrent.dl"  # the scans a train block's `remat = k` checkpoints


def checkpoint_every(v, span: Span, name: str) -> int:
    """A scan's `checkpoint = k`, a train block's `remat = k`: keep every k-th carry, k >= 1."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DlcError(f"{name} must be an integer >= 1 (keep every k-th carry), got {describe(v)}", span)
    return v


class Scans:
    def scan(self, e: syntax.Scan, env: Env):
        length = self.expr(e.length, env)
        length = self.static_int(length, e.length.span, "the length of a scan")
        opts = {"reverse": False, "axis": 1, "checkpoint": None}
        for k in e.options:
            if k.name not in opts:
                self.fail(f"unknown scan option '{k.name}' (reverse, axis, checkpoint)", k.span)
            opts[k.name] = self.expr(k.value, env)
            if k.name == "checkpoint":
                opts[k.name] = checkpoint_every(opts[k.name], k.value.span, "checkpoint")
        if not isinstance(opts["reverse"], bool):
            self.fail("reverse must be true or false", e.span)
        if opts["checkpoint"] is None and e.span.file == RECURRENT_LAYERS:
            opts["checkpoint"] = self.remat  # the train block's `remat = k`
        outer = self.graph
        body = Graph(f"scan_body@{e.span.line}", parent=outer, budget=self.budget)
        body.span = e.span.called_from(outer.span, outer.calls)  # a library scan's body remembers the user's call
        body.calls = outer.calls
        benv = env.child()
        carries = []
        for c in e.carries:
            init = self.tensor(self.expr(c.value, env), c.value.span, f"carry {c.name}")
            carries.append((c.name, init, c.span))
            benv.vars[c.name] = self.new_arg(body, init.type, ("carry",))
        benv.vars[e.var] = LoopIndex(body, e.var)
        self.graph = body
        try:
            result = self.block(e.body, benv, in_scan=True, in_def=False)
            ys = result[1] if result else []
            finals = []
            for name, init, span in carries:
                final = self.local(benv.vars[name])
                if not isinstance(final, Tensor):
                    self.fail(f"carry '{name}' must stay a tensor", span)
                if final.type != init.type:
                    self.fail(f"carry '{name}' starts as {init.type} but the body makes it {final.type}", span)
                finals.append(final)
        finally:
            self.graph = outer
        axis = opts["axis"]
        for y in ys:
            if not isinstance(axis, int) or not 0 <= axis <= y.rank:
                self.fail(f"cannot stack {y.type} along axis {axis}", e.span)
        # order body arguments: carries, sequences, invariants
        roles = {"carry": 0, "sequence": 1, "invariant": 2}
        body.set_args(sorted(body.args, key=lambda a: roles[body.nx.nodes[a.node]["role"][0]]))
        body.outputs = {f"carry{i}": t for i, t in enumerate(finals)}
        body.outputs.update({f"y{i}": t for i, t in enumerate(ys)})
        seqs = [body.nx.nodes[a.node]["role"] for a in body.args if body.nx.nodes[a.node]["role"][0] == "sequence"]
        invs = [body.nx.nodes[a.node]["role"][1] for a in body.args if body.nx.nodes[a.node]["role"][0] == "invariant"]
        operands = [init for _, init, _ in carries] + [self.local(r[1]) for r in seqs] + [self.local(t) for t in invs]
        with outer.at(e.span):
            outs = outer.add(
                "scan",
                operands,
                body=body,
                length=length,
                reverse=opts["reverse"],
                n_carry=len(carries),
                xs_axes=tuple(r[2] for r in seqs),
                ys_axes=(axis,) * len(ys),
                **({"checkpoint": opts["checkpoint"]} if opts["checkpoint"] else {}),
            )
        results = outs[len(carries) :] if ys else outs[: len(carries)]
        return results[0] if len(results) == 1 else tuple(results)
