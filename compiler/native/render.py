"""Readable text of a kernel program (`dlc compile --emit kernels`)."""
from __future__ import annotations

from dlc.compiler.native.program import (AccumulateKernel, Affine, Const, ConvKernel, FusedMapKernel, Gather, GemmKernel, HostCallKernel, Guarded,
                      Index, KernelProgram, Load, MapKernel, MaxPoolGradKernel, Op, PackKernel, Random, ReduceKernel,
                      ScanKernel, ScatterAddKernel, Size, SmallGemmKernel)


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
        name = f"cast_{e.dtype}" if e.name == "cast" else e.name
        return f"{name}({', '.join(expr(a) for a in e.args)})"
    return repr(e)


def source(k) -> str:
    """file:line of the graph node a kernel computes ('' for code of no node)."""
    return _where(k.origin[0][1]) if k.origin else ""


def _where(span) -> str:
    return f"{span.file.rsplit('/', 1)[-1]}:{span.line}" if span else ""


def kernel(k, depth=0) -> list:
    pad = "  " * depth
    where = f"  @{source(k)}" if source(k) else ""
    shape = lambda s: "[" + ", ".join(str(d) for d in s) + "]"
    if isinstance(k, MapKernel):
        return [f"{pad}map {shape(k.shape)}: b{k.out}[{affine(k.out_at)}] = {expr(k.expr)}{where}"]
    if isinstance(k, FusedMapKernel):
        return [f"{pad}fused map {shape(k.shape)}:"] + [
            line.replace(": b", ": (register) b", 1) if m.out in k.registers else line
            for m in k.maps for line in kernel(m, depth + 1)]
    if isinstance(k, ReduceKernel):
        return [f"{pad}reduce {k.op} over axes {list(k.axes)} of {shape(k.shape)}: b{k.out} <- {expr(k.expr)}{where}"]
    if isinstance(k, GemmKernel):
        packed = f" (packed in b{k.packed})" if k.packed is not None else ""
        return [f"{pad}gemm {k.batch} x [{k.m} x {k.k}] @ [{k.k} x {k.n}]: b{k.c[0]} = "
                f"{'T' if k.trans_a else ''}b{k.a[0]} @ {'T' if k.trans_b else ''}b{k.b[0]}{packed}{where}"]
    if isinstance(k, PackKernel):
        return [f"{pad}pack [{k.k} x {k.n}]: b{k.out} = panels of {'T' if k.trans_b else ''}b{k.b[0]}{where}"]
    if isinstance(k, SmallGemmKernel):
        return [f"{pad}small_gemm sum over {k.batch} of [{k.m} x {k.k}] @ [{k.k} x {k.n}]: "
                f"b{k.c[0]} = b{k.a[0]} @ b{k.b[0]}{where}"]
    if isinstance(k, ScanKernel):
        lines = [f"{pad}scan {k.var} in {k.length}{' reversed' if k.reverse else ''}:{where}"]
        for inner in k.body:
            lines += kernel(inner, depth + 1)
        return lines
    if isinstance(k, AccumulateKernel):
        return [f"{pad}accumulate {shape(k.shape)}: b{k.out}[{affine(k.at)}] += {expr(k.expr)}{where}"]
    if isinstance(k, ScatterAddKernel):
        return [f"{pad}scatter_add {shape(k.idx_shape)}: b{k.out}[{expr(k.idx)}] += b{k.upd}{where}"]
    if isinstance(k, MaxPoolGradKernel):
        return [f"{pad}maxpool_grad: b{k.out} <- b{k.g} at argmax of b{k.x}{where}"]
    if isinstance(k, ConvKernel):
        what = f"b{k.x} * b{k.w}" if k.g is None else f"weight gradient of b{k.x} * w from b{k.g}"
        return [f"{pad}direct conv {shape(k.x_shape)} by {shape(k.w_shape)}: b{k.out} = {what}{where}"]
    if isinstance(k, HostCallKernel):
        return [f"{pad}host_call b{k.host}(b{k.buffer}): in place{where}"]
    return [f"{pad}{k!r}"]


def program(p: KernelProgram) -> str:
    lines = [f"# {len(p.buffers)} buffers, symbols {', '.join(p.symbols) or 'none'}"]
    for b in p.buffers:
        if b.kind != "temp":
            lines.append(f"# b{b.id}: {b.kind} {b.name} {b.dtype}[{b.size}]".replace("  ", " "))
    for k in p.kernels:
        lines += kernel(k)
    return "\n".join(lines)

