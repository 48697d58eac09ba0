"""Readable text of a kernel program (`dlc compile --emit kernels`); each kind of
kernel writes its own lines (Kernel.text) with the helpers here."""

from __future__ import annotations

from dlc.compiler.native.program import KernelProgram


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
        if b.role != "temp":
            lines.append(f"# b{b.id}: {b.role} {b.name} {b.dtype}[{b.size}]".replace("  ", " "))
    for k in p.kernels:
        lines += k.text()
    return "\n".join(lines)
