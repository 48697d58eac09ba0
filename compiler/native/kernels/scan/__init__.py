"""The scan loop: a body of kernels run once per step; the lowering rule of scan, which
lowers the body in a Lowering of its own. The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import Dim, concrete, numel
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.program import Affine, Kernel, Load, contiguous, render, row_major
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class ScanKernel(Kernel):
    """for t in 0..length (or back): sizes[var] = t, then run the body's kernels.
    `independent`: no step reads what another wrote (a scan without carries), so the
    body's kernels fuse as a program's (fusion.epilogues)."""

    length: object
    reverse: bool
    var: str  # the symbol of the step index, "$t0", "$t1", ... by nesting depth
    body: list
    independent: bool = False

    def nested(self) -> list:
        return self.body

    def runs(self, sizes: dict) -> int:
        return concrete(self.length, sizes)

    def heading(self) -> str:
        return f"scan {self.var} in {self.length}{' reversed' if self.reverse else ''}"

    def text(self) -> list:
        return [f"{self.heading()}:{render.located(self)}"] + ["  " + line for k in self.body for line in k.text()]

    def accesses(self) -> tuple:
        """None of its own: each kernel of its body touches its buffers."""
        return set(), set()

    def emit(self, f):
        """A loop on the calling thread that calls the body's functions."""
        from dlc.compiler.native.kernels.scan.loops import scan_loop

        kb = f.serial()
        scan_loop(kb, self, f.prog, f.run_nested)
        return kb


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("scan")
def _scan(lw, n, ins, attrs, typ):
    """A loop over the body's kernels."""
    body, length, nc = attrs["body"], attrs["length"], attrs["n_carry"]
    xs_axes, ys_axes = attrs["xs_axes"], attrs["ys_axes"]
    var = f"$t{lw.depth}"
    t = Dim.sym(var)
    extra = {var} | (length.symbols() if isinstance(length, Dim) else set())
    lw.p.symbols = sorted(set(lw.p.symbols) | extra)
    outs = lw.graph.outputs_of(n)
    first = len(lw.p.buffers)  # buffers from here on may change from step to step
    # carries live in `current` buffers, set from their initial values before the loop
    current = []
    for x in ins[:nc]:
        buf = lw.p.buffer(x.dtype, numel(x.shape), "temp")
        lw.emit(MapKernel(x.shape, buf.id, Affine(0, row_major(x.shape)), lw.use(x), node=x.node))
        current.append(contiguous(buf.id, x.shape, x.dtype))
    args = list(current)
    for x, axis in zip(ins[nc : nc + len(xs_axes)], xs_axes):
        # step t of a sequence is a slice of its expression: a view of a buffer, or
        # (used only here) computed inside the loop, step by step — `xs @ W + b`
        # never goes through memory with its bias added
        args.append(
            lw.use(x).remap(
                lambda a, axis=axis: Affine(a.offset + a.coeffs[axis] * t, a.coeffs[:axis] + a.coeffs[axis + 1 :])
            )
        )
    args += [lw.use(x) for x in ins[nc + len(xs_axes) :]]
    if attrs.get("segment_of"):  # a checkpointed scan's segment: its steps are the plain scan's (scan.py)
        k, front = attrs["segment_of"]
        steps = lw.steps[:-1] + (lw.steps[-1] * k + t - front,)
    else:
        steps = lw.steps + (t,)
    sub = lw.nested(body, args, first, lw.fusion.bodies[n], steps)
    results = list(body.outputs.values())
    # each per-step output has a stacked buffer; a value the body computes into memory
    # is written at its place there (Lowering.place), any other is copied there at the end
    stacked, places = [], []
    carried = {y.key() for y in results[:nc]}
    for y, axis, out in zip(results[nc:], ys_axes, outs[nc:]):
        buf = lw.p.buffer(out.dtype, numel(out.shape), "temp")
        full = row_major(out.shape)
        places.append(Load(buf.id, Affine(t * full[axis], full[:axis] + full[axis + 1 :]), out.dtype))
        stacked.append(contiguous(buf.id, out.shape, out.dtype))
        if y.key() not in sub.slots and y.key() not in carried:
            sub.slots[y.key()] = places[-1]
    for m in body.order():
        sub.node(m)
    # new carries are computed first (into fresh buffers: the body may still read the
    # current ones), then the per-step outputs not in place yet, reading the fresh
    # carries when they are the same values, then the copies
    fresh = [sub.materialize(y) for y in results[:nc]]
    for y, place in zip(results[nc:], places):
        if sub.expr(y) != place:
            lw.emit(MapKernel(y.shape, place.buffer, place.at, sub.expr(y), node=n), into=sub.kernels)
    for cur, new, y in zip(current, fresh, results[:nc]):
        lw.emit(MapKernel(y.shape, cur.buffer, cur.at, new, node=n), into=sub.kernels)
    lw.emit(ScanKernel(length, attrs["reverse"], var, lw.fuse_maps(sub.kernels), independent=nc == 0, node=n))
    for j, value in enumerate(current + stacked):
        lw.set(n, value, j)
