"""Readable text of a kernel program (`dlc compile --emit kernels`); each kind of
kernel writes its own lines (Kernel.text) with the helpers here."""
from __future__ import annotations

from dlc.compiler.native.program import Affine, Const, Gather, Guarded, Index, KernelProgram, Load, Op, Random, Size


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


def shape(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def source(k) -> str:
    """file:line of the graph node a kernel computes ('' for code of no node)."""
    return where(k.origin[0][1]) if k.origin else ""


def bf16(k) -> str:
    """' (bf16)' on the line of a kernel whose operands are rounded to bfloat16."""
    return " (bf16)" if k.bf16 else ""


def located(k) -> str:
    """What ends a kernel's line: '  @file:line' of the graph node it computes, if any."""
    return f"  @{source(k)}" if source(k) else ""


def where(span) -> str:
    """`layers.dl:53`, or '' for no place."""
    return span.place() if span else ""


def program(p: KernelProgram) -> str:
    lines = [f"# {len(p.buffers)} buffers, symbols {', '.join(p.symbols) or 'none'}"]
    for b in p.buffers:
        if b.kind != "temp":
            lines.append(f"# b{b.id}: {b.kind} {b.name} {b.dtype}[{b.size}]".replace("  ", " "))
    for k in p.kernels:
        lines += k.text()
    return "\n".join(lines)

