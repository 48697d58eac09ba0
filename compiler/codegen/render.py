"""Readable text of a kernel program (`dlc compile --emit kernels|fused`)."""
from __future__ import annotations

from ..lower import (AccumulateKernel, Affine, Const, Gather, GemmKernel, Guarded, Index, Load, MapKernel,
                     MaxPoolGradKernel, Op, Program, Random, ReduceKernel, ScanKernel, ScatterAddKernel, Size)


def affine(a: Affine) -> str:
    terms = [f"{c}*i{r}" if c != 1 else f"i{r}" for r, c in enumerate(a.coeffs) if not (isinstance(c, int) and c == 0)]
    if not (isinstance(a.offset, int) and a.offset == 0):
        terms.insert(0, str(a.offset))
    return " + ".join(terms) or "0"


def expr(e) -> str:
    if isinstance(e, Load):
        return f"b{e.buffer}[{affine(e.at)}]"
    if isinstance(e, Guarded):
        return f"guarded({expr(e.load)}, else {e.fill:g})"
    if isinstance(e, Const):
        return f"{e.value:g}" if isinstance(e.value, float) else str(e.value)
    if isinstance(e, Index):
        return f"({affine(e.at)})"
    if isinstance(e, Size):
        return str(e.dim)
    if isinstance(e, Random):
        return f"uniform(b{e.key}, stream {e.stream}, {affine(e.at)})"
    if isinstance(e, Gather):
        return f"b{e.table}[{expr(e.idx)} * {e.stride} + {affine(e.rows)}]"
    if isinstance(e, Op):
        return f"{e.name}({', '.join(expr(a) for a in e.args)})"
    return repr(e)


def kernel(k, graph, depth=0) -> list:
    pad = "  " * depth
    span = graph.g.nodes[k.node]["span"] if k.node in graph.g.nodes else None
    where = f"  @{span.file.rsplit('/', 1)[-1]}:{span.line}" if span else ""
    shape = lambda s: "[" + ", ".join(str(d) for d in s) + "]"
    if isinstance(k, MapKernel):
        return [f"{pad}map {shape(k.shape)}: b{k.out}[{affine(k.out_at)}] = {expr(k.expr)}{where}"]
    if isinstance(k, ReduceKernel):
        return [f"{pad}reduce {k.op} over axes {list(k.axes)} of {shape(k.shape)}: b{k.out} <- {expr(k.expr)}{where}"]
    if isinstance(k, GemmKernel):
        return [f"{pad}gemm {k.batch} x [{k.m} x {k.k}] @ [{k.k} x {k.n}]: b{k.c[0]} = "
                f"{'T' if k.trans_a else ''}b{k.a[0]} @ {'T' if k.trans_b else ''}b{k.b[0]}{where}"]
    if isinstance(k, ScanKernel):
        lines = [f"{pad}scan {k.var} in {k.length}{' reversed' if k.reverse else ''}:{where}"]
        for inner in k.body:
            lines += kernel(inner, graph, depth + 1)
        return lines
    if isinstance(k, AccumulateKernel):
        return [f"{pad}accumulate {shape(k.shape)}: b{k.out}[{affine(k.at)}] += {expr(k.expr)}{where}"]
    if isinstance(k, ScatterAddKernel):
        return [f"{pad}scatter_add {shape(k.idx_shape)}: b{k.out}[{expr(k.idx)}] += b{k.upd}{where}"]
    if isinstance(k, MaxPoolGradKernel):
        return [f"{pad}maxpool_grad: b{k.out} <- b{k.g} at argmax of b{k.x}{where}"]
    return [f"{pad}{k!r}"]


def program(p: Program, graph) -> str:
    lines = [f"# {len(p.buffers)} buffers, symbols {', '.join(p.symbols) or 'none'}"]
    for b in p.buffers:
        if b.kind != "temp":
            lines.append(f"# b{b.id}: {b.kind} {b.name} {b.dtype}[{b.size}]".replace("  ", " "))
    for k in p.kernels:
        lines += kernel(k, graph)
    return "\n".join(lines)
