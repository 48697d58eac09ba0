"""Fusion: which graph nodes the native lowering computes in one kernel, decided before
lowering from each primitive's record (compiler/ir/graph.py `Primitive`): its pattern
kind, its `view`, `cheap` and `recompute` properties, and what its native kernel does
with its operands (`memory_operands`, `memory_reason`, `recomputed_operand`, `pieces`,
`part`), as TVM's fuse_ops groups by pattern kind. The pass names no primitive: a new
rule is a field of the records (docs/architecture.md, "A fusion rule").

A value reaches its readers in one of four forms (`Form`): in memory (a load), free (a
scalar constant, an iota, a symbolic size), one cheap operation on those, or an
expression. A view only re-indexes its operand, so it has its operand's form. A value not
in memory is computed inside the kernel of each of its readers (fused into them) unless
it is stored by a map kernel of its own, for one of the reasons of `Reason`: it is a
graph output, a reader reads it from memory (a GEMM operand, ...), or it is an expression
read several times — unless it is one cheap operation, which each reader redoes, or is
read only through slices that do not overlap, each part computed where it is read. Every
producer not fused into one of its readers is a `Boundary`, with the reason.

It lives with the native backend, not among the graph passes (compiler/passes/, graph →
graph rewrites every engine runs): its rules are facts about the native kernels — a GEMM
call and the window kernels read their operands from memory, a reshape needs contiguous
data, a reduction or a GEMM writes its result — and only the lowering (lower.py) and
`dlc compile --emit fused` read it.

Horizontal fusion (`fuse_maps`, `fuse_sums`, `keep_in_registers`, at the end of this module)
runs after lowering, on the kernels: consecutive maps over one iteration space become one
loop, consecutive sums over one space one pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum

from dlc.compiler.ir.graph import Graph, Pattern, Tensor
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.memory import linearize
from dlc.compiler.native.program import KernelProgram, Load
from dlc.compiler.native.program.render import where


class Form(Enum):
    """How a value reaches its readers."""

    MEMORY = "in memory"
    FREE = "free"  # a scalar constant, an iota, a symbolic size: nothing to load
    CHEAP = "cheap"  # one `recompute` operation on values in memory or free
    EXPRESSION = "expression"


class Reason(Enum):
    """Why a producer is not computed in the kernel of a reader."""

    READERS = "read several times"
    OUTPUT = "a graph output"
    STEP = "a result of a scan's step"
    GEMM_OPERAND = "a GEMM operand must be in memory"
    WINDOW_OPERAND = "read through windows (convolution, pooling), so from memory"
    MEMORY_OPERAND = "read from memory by its reader"
    REDUCTION = "the result of a reduction"
    KERNEL = "written by a kernel of its own"
    SCAN = "a result of a scan"


@dataclass(frozen=True)
class Boundary:
    """A producer not fused into one of its readers, and why. `reads`: how many times the
    producer's value is read, by every reader (the count the READERS rule looked at)."""

    producer: int
    consumer: int
    reason: Reason
    reads: int

    def why(self) -> str:
        """The reason in plain English: `read 3 times`, `a GEMM operand must be in memory`."""
        return f"read {self.reads} times" if self.reason is Reason.READERS else self.reason.value


# the kinds whose kernels write their result to memory, and the reason that gives each reader
WRITTEN = {
    Pattern.REDUCTION: Reason.REDUCTION,
    Pattern.CONTRACTION: Reason.KERNEL,
    Pattern.WINDOW: Reason.KERNEL,
    Pattern.OPAQUE: Reason.KERNEL,
    Pattern.CONTROL: Reason.SCAN,
}
# why a reader's kernel reads an operand from memory, by its record's `memory_reason`
OPERAND_REASONS = {"gemm": Reason.GEMM_OPERAND, "window": Reason.WINDOW_OPERAND, "memory": Reason.MEMORY_OPERAND}
LEAVES = (Form.MEMORY, Form.FREE)


def memory_operands(op: str) -> tuple:
    """(the positions of the operands op's kernel reads from memory, None for all; why),
    from its record (compiler/ir/graph.py `Primitive`)."""
    prim = PRIMITIVES[op]
    return prim.memory_operands, OPERAND_REASONS[prim.memory_reason] if prim.memory_operands != () else None


def disjoint(boxes: list) -> bool:
    """Whether no two boxes — a (first, last) pair of indices per axis — share an element.
    Sorted by their first index along an axis, the boxes fall into runs whose extents do
    not meet, each apart from the others there; each run is then looked at along the next
    axis, and boxes still together after the last are compared pair by pair. That is
    n log n per axis for slices apart along one axis (an LSTM's gates), not every pair."""

    def apart(x, y):
        return any(_known(p + q) and (p[1] < q[0] or q[1] < p[0]) for p, q in zip(x, y))

    def runs(group: list, axis: int) -> list:
        if len(group) < 2 or axis == len(group[0]):
            return [group]
        if not _known([b for box in group for b in box[axis]]):
            return runs(group, axis + 1)
        out, run, last = [], [], None
        for box in sorted(group, key=lambda b: b[axis][0]):
            if run and box[axis][0] > last:
                out += runs(run, axis + 1)
                run = []
            last = box[axis][1] if not run else max(last, box[axis][1])
            run.append(box)
        return out + runs(run, axis + 1)

    return all(apart(x, y) for run in runs(list(boxes), 0) for i, x in enumerate(run) for y in run[:i])


def _known(bounds) -> bool:
    return all(isinstance(b, int) for b in bounds)


class Fusion:
    """The fusion of one graph: the values stored by a kernel of their own (`stored`, each
    with its reason), the boundaries, and the fusion of each scan's body (`bodies`).
    `args`: the forms of a scan body's arguments (None: the graph is not a body).
    `quantized`: the integer products of an int8 program (kernels/int8), whose operand the
    map that quantizes it computes, as any elementwise reader would."""

    def __init__(self, graph: Graph, args: list | None = None, quantized: frozenset = frozenset()):
        self.graph = graph
        self.quantized = quantized
        self.forms: dict = {}  # value key -> its form as its readers take it (MEMORY once stored)
        self.stored: dict = {}  # value key -> Reason
        self.boundaries: list[Boundary] = []
        self.bodies: dict = {}  # scan node -> Fusion of its body
        self.readers: dict = {}  # value key -> the nodes that read it, once per use
        self.groups: dict = {}  # node -> its group, once asked for
        self.origins: dict = {}  # node -> (op, source place) of each node of its group, once asked for
        self.computed_in: dict = {}  # node -> the roots of the kernels computing it, once asked for
        for u, v, out in graph.nx.edges(data="out"):
            self.readers.setdefault((u, out), []).append(v)
        self.outputs = {t.key() for t in graph.outputs.values()}
        output = Reason.OUTPUT if args is None else Reason.STEP
        for n in graph.order():
            taken = self._taken(n)
            form = self._form(n, taken, args)
            for t in graph.outputs_of(n):
                self._decide(t, form, output)
            if PRIMITIVES[graph.op(n)].pattern is Pattern.CONTROL:
                nc = graph.attrs(n)["n_carry"]  # carries are copied into buffers of the loop
                self.bodies[n] = Fusion(graph.attrs(n)["body"], [Form.MEMORY] * nc + taken[nc:])

    def _taken(self, n: int) -> list:
        """The forms in which node n takes its operands: in memory where its kernel reads
        them from there."""
        where, _ = self._memory_operands(n)
        return [
            Form.MEMORY if where is None or i in where else self.forms[x.key()]
            for i, x in enumerate(self.graph.inputs(n))
        ]

    def _form(self, n: int, operands: list, args: list | None) -> Form:
        """The form of node n's values, from those it takes its operands in."""
        op = self.graph.op(n)
        prim = PRIMITIVES[op]
        if prim.argument:
            return args[self.graph.attrs(n)["index"]]
        if prim.pattern in WRITTEN or prim.pieces or prim.given:
            return Form.MEMORY
        if prim.holds_value:
            return Form.FREE if getattr(self.graph.attrs(n)["value"], "ndim", 0) == 0 else Form.MEMORY
        if prim.pattern is Pattern.SOURCE and prim.cheap:
            return Form.FREE
        if prim.view:
            return operands[0]
        if prim.recompute and all(f in LEAVES for f in operands):
            return Form.CHEAP
        return Form.EXPRESSION

    def _decide(self, t: Tensor, form: Form, output: Reason):
        """Whether value t, computed in `form`, is stored, and the boundaries it makes."""
        key, readers = t.key(), self.readers.get(t.key(), [])
        self.forms[key] = form
        prim = PRIMITIVES[self.graph.op(t.node)]
        if form is Form.FREE or form is Form.MEMORY and (prim.view or prim.pattern is Pattern.SOURCE):
            return
        if form is Form.MEMORY:
            reason = WRITTEN.get(prim.pattern, Reason.KERNEL)
        else:
            reason = self._why_stored(t, form, readers, output)
            if reason is None:
                return
            self.stored[key] = reason
            self.forms[key] = Form.MEMORY
        self.boundaries += [Boundary(t.node, v, reason, len(readers)) for v in dict.fromkeys(readers)]

    def _why_stored(self, t: Tensor, form: Form, readers: list, output: Reason) -> Reason | None:
        if t.key() in self.outputs:
            return output
        for v in dict.fromkeys(readers):
            where, why = self._memory_operands(v)
            if why is not None and any(
                x.key() == t.key() and (where is None or i in where) for i, x in enumerate(self.graph.inputs(v))
            ):
                return why
        counted = [v for v in readers if not self._recomputes(v, t)]
        if form is Form.CHEAP or len(counted) <= 1 or self._split(counted):
            return None
        return Reason.READERS

    def _memory_operands(self, n: int) -> tuple:
        """memory_operands of node n: none for an integer product, which reads its own copies."""
        return ((), None) if n in self.quantized else memory_operands(self.graph.op(n))

    def _recomputes(self, reader: int, t: Tensor) -> bool:
        """Whether `reader` takes t as the operand it computes afresh (its record's
        `recomputed_operand`)."""
        i = PRIMITIVES[self.graph.op(reader)].recomputed_operand
        if i is None:  # most readers: their operands are not asked for (a concat of 2,000 has 2,000)
            return False
        inputs = self.graph.inputs(reader)
        return i < len(inputs) and inputs[i].key() == t.key()

    def _split(self, readers: list) -> bool:
        """Whether a value is read only by slices that do not overlap, as an LSTM's four gates
        read `xw[:, t] + h @ Wh + bh`: each part is computed where it is read, and the whole
        never goes through memory."""
        boxes = []
        for v in readers:
            part = PRIMITIVES[self.graph.op(v)].part
            if part is None:
                return False
            boxes.append(part(self.graph.types(v)[0].shape, **self.graph.attrs(v)))
        return disjoint(boxes)

    # ---- what the lowering and `--emit fused` read ----
    def in_memory(self, t: Tensor) -> bool:
        return self.forms[t.key()] is Form.MEMORY

    def group(self, n: int) -> tuple:
        """Node n and the producers computed in its kernel — values fused into it and
        free views — n first, then in graph order. Kept once made: every piece of a
        concat is a kernel of the concat's node."""
        g = self.graph
        if n in self.groups or n not in g.nx.nodes:
            return self.groups.get(n, ())
        seen, todo = {n}, [n] if PRIMITIVES[g.op(n)].pattern is not Pattern.CONTROL else []
        while todo:
            v = todo.pop()
            where, _ = self._memory_operands(v)
            for i, x in enumerate(g.inputs(v)):
                prim = PRIMITIVES[g.op(x.node)]
                fused = not self.in_memory(x) and where is not None and i not in where
                if x.node not in seen and not prim.given and (prim.view or fused):
                    seen.add(x.node)
                    todo.append(x.node)
        self.groups[n] = (n, *sorted(seen - {n}))
        return self.groups[n]

    def origin(self, n: int) -> tuple:
        """(op, source place) of each node of n's group."""
        if n not in self.origins:
            self.origins[n] = tuple((self.graph.op(v), self.graph.nx.nodes[v]["span"]) for v in self.group(n))
        return self.origins[n]

    def roots(self) -> list:
        """The nodes that have kernels of their own, in graph order: those whose kind writes
        memory, the stored values and the graph outputs (but inputs, parameters, arguments)."""
        g = self.graph
        own = {n for n in g.nx.nodes if PRIMITIVES[g.op(n)].pattern in WRITTEN or PRIMITIVES[g.op(n)].pieces}
        own |= {key[0] for key in self.stored} | {key[0] for key in self.outputs if not PRIMITIVES[g.op(key[0])].given}
        return [n for n in g.order() if n in own]

    def kernels(self, depth: int = 0):
        """(depth, fusion, root) of every kernel and scan, in graph order, a scan's body's
        kernels after it, one deeper."""
        for n in self.roots():
            yield depth, self, n
            if PRIMITIVES[self.graph.op(n)].pattern is Pattern.CONTROL:
                yield from self.bodies[n].kernels(depth + 1)

    def text(self) -> str:
        """The groups, each with its nodes and their source lines; a scan's body under it."""
        lines, number = [], iter(range(1 << 30))
        for depth, f, n in self.kernels():
            pad, g = "  " * depth, f.graph
            if PRIMITIVES[g.op(n)].pattern is Pattern.CONTROL:
                lines.append(pad + _scan_title(g, n))
                continue
            origin = f.origin(n)
            why = {f.stored[t.key()].value for t in g.outputs_of(n) if t.key() in f.stored}
            lines.append(
                f"{pad}{_group_title(g, n, next(number))}, {len(origin)} "
                f"op{'s' * (len(origin) != 1)}" + (f"; stored: {', '.join(sorted(why))}" if why else "")
            )
            for op, span in origin:
                text = (span.source_line() or "").strip() if span else ""
                lines.append(f"{pad}    {op:<16}{where(span):<22}{text}")
        return "\n".join(lines)

    def explanation(self) -> str:
        """`dlc compile --explain-fusion`: every boundary once, under the first kernel that
        computes its reader (the kernels numbered as in text(), a scan's body's under the
        scan) — the two operations, why the producer is not computed in that kernel, both
        source lines (and the user's call of a line in the standard library), the other
        kernels that read it — then the count of kernels and of boundaries by reason."""
        titles, labels, number = {}, {}, iter(range(1 << 30))
        for depth, f, n in self.kernels():
            g = f.graph
            if PRIMITIVES[g.op(n)].pattern is Pattern.CONTROL:
                titles[f, n], labels[f, n] = (depth, _scan_title(g, n)), f"the scan @{where(g.nx.nodes[n]['span'])}"
            else:
                k = next(number)
                titles[f, n], labels[f, n] = (depth, _group_title(g, n, k)), f"group {k}"
        under = {key: [] for key in titles}
        fusions = list(dict.fromkeys(f for f, _ in titles))
        for f in fusions:
            for b in f.boundaries:
                first, *others = f.computing(b.consumer)
                under[f, first].append((b, [labels[f, r] for r in others]))
        lines = []
        for (f, n), (depth, title) in titles.items():
            pad, g = "  " * depth, f.graph
            if under[f, n] or PRIMITIVES[g.op(n)].pattern is Pattern.CONTROL:
                lines.append(pad + title)
            for b, others in under[f, n]:
                also = f" (also read in {', '.join(others)})" if others else ""
                lines.append(f"{pad}    {g.op(b.producer)} -> {g.op(b.consumer)}: {b.why()}{also}")
                for role, v in (("from", b.producer), ("into", b.consumer)):
                    for k, place in enumerate(_places(g.nx.nodes[v]["span"])):
                        lines.append(f"{pad}        {role if k == 0 else '':<6}{g.op(v) if k == 0 else '':<16}{place}")
        reasons = Counter(b.reason.value for f in fusions for b in f.boundaries)
        kernels, total = next(number), sum(reasons.values())  # the groups were numbered from 0
        by_reason = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        lines.append(
            f"{kernels} kernels, {total} boundar{'y' if total == 1 else 'ies'}"
            + (f": {by_reason}" if by_reason else "")
        )
        return "\n".join(lines)

    def computing(self, v: int) -> list:
        """The roots of the kernels that compute node v, in graph order: those whose group
        holds it (a view or a cheap operation is redone in each reader's), or for a value a
        scan takes unstored, computed in its body, its readers'."""
        if not self.computed_in:
            for n in self.roots():
                for m in self.group(n):
                    self.computed_in.setdefault(m, []).append(n)
        if v not in self.computed_in:
            readers = {r for w in self.graph.nx.successors(v) for r in self.computing(w)}
            self.computed_in[v] = [n for n in self.roots() if n in readers]
        return self.computed_in[v]


def _scan_title(g: Graph, n: int) -> str:
    a = g.attrs(n)
    return f"scan in {a['length']}{' reversed' if a['reverse'] else ''}  @{where(g.nx.nodes[n]['span'])}"


def _group_title(g: Graph, n: int, number: int) -> str:
    return f"group {number}: {g.op(n)} ({PRIMITIVES[g.op(n)].pattern.value})"


def _places(span) -> list:
    """`layers.dl:8  return act(x @ W + b)`, and for a line in the standard library the user's
    call that led there: `called at xor_mlp.dl:5  h = dense(x, 4, tanh)`."""
    if span is None:
        return ["(no source place)"]
    return [
        f"{prefix + s.place():<27} {(s.source_line() or '').strip()}"
        for prefix, s in (("", span), ("called at ", span.caller))
        if s is not None
    ]


# ---- horizontal fusion: map kernels over one space in one loop, after lowering ----------------------
def _fusable(group: list, k: MapKernel) -> bool:
    """Whether k can join the group's loop: every access to a buffer the group (with k)
    writes is a plain load or store at one and the same index — or the buffer is
    written only by the pieces of one concat (disjoint parts) and read by none."""
    members = group + [k]
    writers: dict = {}
    for m in members:
        writers.setdefault(m.out, []).append(m)
    at: dict = {}
    for m in members:
        for x in m.expr.leaves():
            buf = x.read_buffer
            if buf in writers and (not isinstance(x, Load) or at.setdefault(buf, x.at) != x.at):
                return False
    for buf, ms in writers.items():
        one_concat = (
            buf not in at
            and len({m.node for m in ms}) == 1
            and ms[0].origin[:1]
            and PRIMITIVES[ms[0].origin[0][0]].pieces == "disjoint"
        )
        if not one_concat and len({m.out_at for m in ms} | ({at[buf]} if buf in at else set())) > 1:
            return False
    return True


def fuse_maps(kernels: list) -> list:
    """Consecutive map kernels over the same iteration space become one loop (an RNN
    step's gates, cell, saved values and carries: one pass instead of a dozen)."""
    out, group = [], []

    def close():
        if len(group) > 1:
            out.append(
                FusedMapKernel(
                    group[0].shape,
                    list(group),
                    node=group[0].node,
                    nodes=tuple(dict.fromkeys(v for m in group for v in m.nodes)),
                    origin=tuple(dict.fromkeys(o for m in group for o in m.origin)),
                )
            )
        else:
            out.extend(group)
        group.clear()

    for k in kernels:
        space = k.map_space()
        if group and not (space is not None and space == group[0].shape and _fusable(group, k)):
            close()
        (group if space is not None else out).append(k)
    close()
    return out


def fuse_sums(kernels: list) -> list:
    """Consecutive sums over one space (Kernel.sum_space), none touching what another
    writes, become one pass over it (batchnorm's gradient sums three expressions of its
    output's gradient over the batch and the pixels: one read of them instead of three).
    The pass starts every output before it reads anything: a sum may not write what an
    earlier one reads, nor read what it writes."""
    out = []
    for k in kernels:
        space = k.sum_space()
        if space is not None and out and out[-1].sum_space() == space:
            (reads, writes), (its_reads, its_writes) = out[-1].accesses(), k.accesses()
            if not (its_reads | its_writes) & writes and not its_writes & reads:
                out[-1] = out[-1].with_sum(k)
                continue
        out.append(k)
    return out


def keep_in_registers(program: KernelProgram):
    """Mark the stores of fused maps that nothing reads: a temporary written by one member
    and read by no other kernel — only by later members of its loop, which take the value
    from a register (an LSTM step's cell and hidden state before their carry copies)."""
    fused, readers, writers = [], {}, {}
    for _, k, _ in linearize(program.kernels):
        parts = k.members()
        if len(parts) > 1:
            fused.append(k)
        for j, (reads, writes) in enumerate(parts):
            for bid in reads:
                readers.setdefault(bid, set()).add((id(k), j))
            for bid in writes:
                writers.setdefault(bid, set()).add((id(k), j))
    for k in fused:
        k.registers = frozenset(
            m.out
            for j, m in enumerate(k.maps)
            if program.buffers[m.out].role == "temp"
            and writers[m.out] == {(id(k), j)}
            and all(f == id(k) and i > j for f, i in readers.get(m.out, ()))
        )


def epilogues(program: KernelProgram):
    """A map that alone reads what a GEMM (a direct convolution, an int8 product) wrote
    runs in that kernel's store (its epilogue: Kernel.with_epilogue), on each part of C
    while it is in cache: a convolution's bias, batchnorm's affine, residual add and
    activation, a dense layer's bias and activation. The kernel moves to the map's place,
    so nothing between may write what it reads; C must be a temporary that no other kernel
    touches. A scan's body keeps its kernels, but that of a scan whose steps are
    independent (ScanKernel.independent: no carry), whose kernels fuse as a program's do.
    Where C then lives in the map's output (in_place), C's own buffer is left empty."""
    _fuse_epilogues(program.kernels, program.buffers, set())


def _fuse_epilogues(kernels: list, buffers: list, outside: set):
    """epilogues on one list of kernels (a program's, an independent scan's body), where
    the buffers `outside` are touched by kernels of other lists too."""
    reads, writes = [set() for _ in kernels], [set() for _ in kernels]  # of each kernel, nested ones included
    top = -1
    for pos, k, span in linearize(kernels):
        top += pos == span[0]
        r, w = k.accesses()
        reads[top] |= r
        writes[top] |= w
    touched: dict = {}  # buffer -> the kernels of the list that read or write it
    for i in range(len(kernels)):
        for bid in reads[i] | writes[i]:
            touched.setdefault(bid, set()).add(i)
    for i, k in enumerate(kernels):
        if getattr(k, "independent", False):
            others = set().union(*(reads[p] | writes[p] for p in range(len(kernels)) if p != i))
            _fuse_epilogues(k.body, buffers, outside | others)
    fused: dict = {}  # position -> its kernel now (None: moved into a later one)
    for i, k in enumerate(kernels):
        if len(writes[i]) != 1:
            continue
        (c,) = writes[i]
        readers = touched[c] - {i}
        if buffers[c].role != "temp" or c in outside or len(readers) != 1:
            continue
        (j,) = readers
        if j < i or j in fused or writes[j] & reads[i] or any(writes[p] & reads[i] for p in range(i + 1, j)):
            continue
        both = k.with_epilogue(kernels[j])
        if both is not None:
            fused[i], fused[j] = None, both
            if c not in set().union(*both.accesses()):  # C now lives in the map's output
                buffers[c].size = 0
    kernels[:] = [fused.get(i, k) for i, k in enumerate(kernels) if fused.get(i, k) is not None]
