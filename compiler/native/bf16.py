"""Which products of a graph multiply bfloat16 operands under `precision = "bf16"`, and why
each other one stays float32 (docs/native.md, "Which products run in bf16").

A product runs in bf16 where a GEMM computes it: a GemmKernel (and a scan's PackKernel)
rounds its operands while it packs them and multiplies them by bfloat16 dot products (AMX
tiles, vdpbf16ps, BFDOT) or in float32 on rounded panels, a SmallGemmKernel rounds as it
loads. Which kernel computes a matmul, a convolution or one of its gradients is the
`kernel` of the implementation its list chooses in a bf16 program, the one its lowering
computes (compiler/native/choose/: every matmul's is a GEMM). The other
kernels that multiply (the direct convolution, and the grouped convolutions' maps,
reductions and accumulations) multiply float32 vectors: bfloat16 operands there would only
add a pass rounding each one, so their products stay float32 and those kernels are the
float32 program's, to the bit. The lowering follows this rule (only GEMM kernels are
flagged bf16), the reference engine emulates it (compiler/ir/evaluate.py `Eval.operands`)
and `dlc summary --bf16` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.errors import Span
from dlc.compiler.ir.graph import Graph, nested_graphs
from dlc.compiler.native.choose import conv, matmul

PRODUCTS = ("matmul", "conv2d", "conv2d_input_grad", "conv2d_weight_grad")

# why a product stays float32, by the kind of kernel that computes it; the GEMMs' ("gemm",
# "small_gemm") run in bf16. The direct convolution multiplied bfloat16 pairs of taps by
# vdpbf16ps once: on a Xeon with AMX (vdpbf16ps at half the FMA's rate) LeNet's ran at
# 0.4-0.5x their float32 time, and its step at 0.7x (docs/native.md)
WHY_FLOAT32 = {
    "direct conv": "a direct convolution: float32 FMAs, where bf16 only adds rounding passes",
    "map": "a grouped convolution's map over its outputs: float32 FMAs",
    "reduction": "a grouped weight gradient's reduction over few pixels: float32 FMAs",
    "accumulation": "a grouped input gradient's accumulation: float32 FMAs",
}


@dataclass
class Bf16Product:
    """A matmul, convolution or convolution gradient of a graph (or of a scan's body):
    node `node`, multiplying operands of shapes `operands`, computed by a kernel of kind
    `kernel`."""

    node: int
    op: str
    operands: tuple
    kernel: str
    span: Span | None

    @property
    def bf16(self) -> bool:
        return self.kernel not in WHY_FLOAT32

    @property
    def reason(self) -> str:
        """Why it stays float32 ("" in bf16)."""
        return WHY_FLOAT32.get(self.kernel, "")


def kernel_of(graph: Graph, n: int) -> str:
    """The kind of kernel that computes product node n: "gemm", "small_gemm", or a key of
    WHY_FLOAT32."""
    if graph.op(n) == "matmul":
        return matmul.chosen(matmul.Matmul.of_graph(graph, n)).kernel
    return conv.chosen(conv.Conv.node(graph, n, bf16=True)).kernel


def in_bf16(graph: Graph, n: int) -> bool:
    """Whether product node n multiplies bfloat16 operands in a bf16 program."""
    return kernel_of(graph, n) not in WHY_FLOAT32


def products(graph: Graph) -> list[Bf16Product]:
    """Every product of the graph and of its scans' bodies, each graph in order."""
    return [
        Bf16Product(n, g.op(n), tuple(t.shape for t in g.inputs(n)), kernel_of(g, n), g.nx.nodes[n]["span"])
        for g in nested_graphs(graph)
        for n in g.order()
        if g.op(n) in PRODUCTS
    ]
