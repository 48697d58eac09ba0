"""The native engine's side of the graph page: the kernels a graph compiles to, the graph
nodes fused into each, and the optimized LLVM IR of each kernel's function — what
`dlc compile --emit kernels` and `--emit llvm` print, cut along the kernels — and the
kernel boundaries with the fusion pass's reasons, the records `--explain-fusion` prints."""

from __future__ import annotations

import re

from dlc.compiler.ir.graph import Graph
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.fusion import Fusion
from dlc.compiler.native.lower import NotLowerable, lower
from dlc.compiler.passes.optimize import optimize

DEFINE = re.compile(r'^define [^@]*@"?([^"(]+)"?\(')


def native_kernels(graph: Graph) -> dict:
    """{"kernels": [...], "ir": {function: text}, "boundaries": [...]} for the graph the
    engine compiles, each kernel with its kind, its text, the graph nodes it computes (for
    a kernel inside a scan, nodes of the scan's body: none listed) and its function; each
    boundary of the graph's fusion (not of a scan's body) as [producer, consumer, why]; or
    {"error": why} when the native backend cannot compile the graph."""
    optimized = optimize(graph)
    try:
        program = lower(optimized)
    except NotLowerable as e:
        return {"error": e.render()}
    step = build_module(program)
    ir = functions(jit.optimized_ir(step.module))
    kernels = []

    def walk(ks: list, depth: int):
        for k in ks:
            name = step.functions[len(kernels)]
            kernels.append(
                {
                    "class": k.class_name,
                    "depth": depth,
                    "text": "\n".join(k.text()),
                    "nodes": list(k.nodes) if depth == 0 else [],
                    "function": name,
                    "gemm": k.calls_gemm,
                }
            )
            walk(k.nested(), depth + 1)

    walk(program.kernels, 0)
    used = {k["function"] for k in kernels}
    return {
        "kernels": kernels,
        "boundaries": [[b.producer, b.consumer, b.why()] for b in Fusion(optimized).boundaries],
        "ir": {
            name: "\n\n".join(text for f, text in ir.items() if f == name or f.startswith(name + ".")) for name in used
        },
    }


def functions(ir: str) -> dict:
    """The functions defined in a module's IR text: name -> its definition."""
    out, name, lines = {}, None, []
    for line in ir.splitlines():
        match = DEFINE.match(line)
        if match:
            name, lines = match.group(1), []
        if name is not None:
            lines.append(line)
            if line == "}":
                out[name] = "\n".join(lines)
                name = None
    return out
