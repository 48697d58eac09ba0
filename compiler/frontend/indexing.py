"""Indexing in the evaluator: `x[i, a:b, ...]` on tensors and tuples, an initializer
applied to a shape (`zeros[B, units]`), and a sequence indexed by a scan's step variable
(`xs[:, t]`, which makes it one of the scan's sequences). A part of the Evaluator
(compiler/frontend/evaluator.py), which it mixes in."""

from __future__ import annotations

from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.values import FUNCTIONS, Env, LoopIndex, describe
from dlc.compiler.ir import ops
from dlc.compiler.ir.dims import Dim, numel
from dlc.compiler.ir.graph import Tensor, TensorType
from dlc.compiler.ir.primitives import slice_length


class Indexing:
    def index(self, e: syntax.IndexExpr, env: Env):
        subs = [s if isinstance(s, (syntax.Slice, syntax.AnyDims)) else self.expr(s, env) for s in e.subscripts]
        if any(isinstance(s, LoopIndex) for s in subs) and isinstance(e.value, syntax.Name):
            value = self.lookup(e.value.id, env, e.value.span)  # a sequence: sliced, not captured whole
        else:
            value = self.expr(e.value, env)
        if isinstance(value, FUNCTIONS):  # zeros[B, units]: an initializer applied to a shape
            shape = tuple(self.dim_value(s, e.span) for s in subs)
            fan_in, fan_out = fans(shape)
            return self.call(value, [(shape, e.span), (fan_in, e.span), (fan_out, e.span)], {}, e.span)
        if isinstance(value, tuple):
            if len(subs) != 1 or not isinstance(subs[0], int):
                self.fail("a tuple is indexed by one integer", e.span)
            try:
                return value[subs[0]]
            except IndexError:
                self.fail(f"index {subs[0]} is out of range for a tuple of {len(value)}", e.span)
        if not isinstance(value, Tensor):
            self.fail(f"cannot index {describe(value)}", e.span)
        return self.index_tensor(value, subs, e, env)

    def index_tensor(self, x: Tensor, subs, e: syntax.IndexExpr, env: Env):
        n_ellipsis = sum(isinstance(s, syntax.AnyDims) for s in subs)
        if n_ellipsis > 1:
            self.fail("at most one '...' in an index", e.span)
        explicit = len(subs) - n_ellipsis
        if explicit > x.rank:
            self.fail(f"too many indices ({explicit}) for {x.type}", e.span)
        full = []
        for s in subs:
            if isinstance(s, syntax.AnyDims):
                full += [None] * (x.rank - explicit)
            else:
                full.append(s)
        full += [None] * (x.rank - len(full))
        full = [None if isinstance(s, syntax.Slice) and s.start is s.stop is s.step is None else s for s in full]
        loop = [(i, s) for i, s in enumerate(full) if isinstance(s, LoopIndex)]
        if loop:
            return self.sequence_step(x, full, loop, e)
        starts, stops, steps, drop = [], [], [], []
        for axis, (s, d) in enumerate(zip(full, x.shape)):
            if s is None:
                starts.append(0), stops.append(d), steps.append(1)
            elif isinstance(s, syntax.Slice):
                a, b, st = (self.expr(p, env) if p is not None else None for p in (s.start, s.stop, s.step))
                st = 1 if st is None else st
                if not isinstance(st, int) or st <= 0:
                    self.fail("slice steps must be positive integers", s.span)
                a = 0 if a is None else self.norm_index(a, d, s.span)
                b = d if b is None else self.norm_index(b, d, s.span)
                length = slice_length(a, b, st)
                if isinstance(length, int) and length <= 0:
                    self.fail(f"the index selects nothing from {x.type}", e.span)
                starts.append(a), stops.append(b), steps.append(st)
            elif isinstance(s, (int, Dim)) and not isinstance(s, bool):
                i = self.norm_index(s, d, e.span)
                if isinstance(i, int) and isinstance(d, int) and i >= d:
                    self.fail(f"index {s} is out of range for a dim of size {d}", e.span)
                starts.append(i), stops.append(i + 1), steps.append(1)
                drop.append(axis)
            else:
                self.fail(
                    f"a tensor index must be an integer, a slice or '...', got {describe(s)}; "
                    "use gather(table, indices) to index with a tensor",
                    e.span,
                )
        out = ops.slice_(x, starts, stops, steps)
        if drop:
            out = ops.reshape(out, tuple(d for i, d in enumerate(out.shape) if i not in drop))
        return out

    def norm_index(self, i, size, span):
        if isinstance(i, int) and i < 0:
            i = size + i
        if isinstance(i, int) and isinstance(size, int) and not 0 <= i <= size:
            self.fail(f"index {i} is out of range for a dim of size {size}", span)
        if not isinstance(i, (int, Dim)) or isinstance(i, bool):
            self.fail(f"an index must be an integer, got {describe(i)}", span)
        return i

    def sequence_step(self, x: Tensor, full, loop, e: syntax.IndexExpr):
        if len(loop) > 1 or any(s is not None for i, s in enumerate(full) if i != loop[0][0]):
            self.fail("index a sequence with the step variable alone, as in xs[:, t]", e.span)
        axis, t = loop[0]
        if t.body is not self.graph:
            self.fail(f"'{t.name}' belongs to another scan", e.span)
        if x.graph is self.graph:
            self.fail(f"only a sequence from outside the scan can be indexed with '{t.name}'", e.value.span)
        source = self.capture(x, self.graph.parent)
        key = (id(self.graph), source.key(), axis)
        if key not in self.sequences:
            shape = source.shape[:axis] + source.shape[axis + 1 :]
            self.sequences[key] = self.new_arg(self.graph, TensorType(source.dtype, shape), ("sequence", source, axis))
        return self.sequences[key]


def fans(shape) -> tuple:
    """fan_in, fan_out of a weight: dense [in, out]; conv [out, in, *kernel]."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = numel(shape[2:])
    return shape[1] * receptive, shape[0] * receptive
