"""How each node is computed where there is more than one way: for each primitive, an ordered
list of implementations, each with the test of when it applies and the reason it wins
then, read top to bottom, the first that applies chosen (as oneDNN's lists of
implementations per primitive). The lowering rules (compiler/native/rules/), the bf16 rule
(compiler/native/bf16.py) and the layouts the lowering stores (compiler/native/lower.py)
all read these lists; the kinds of kernels/ compute what they are told, each
implementation a rule registered under its name in the package of the kind it emits
(program/registry.py `register_implementation`). `conv.py`: conv2d and its two gradients;
`matmul.py`: matmul (its gradients are matmuls), and the order of the GEMM's paths at run
time; `int8.py`: an int8 program's integer convolutions (kernels/int8), whose choice is
the packing of their weights; its integer matmuls have one implementation, and no list.
Which products are integer is compiler/passes/int8.py's, below the backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Implementation:
    """A way of computing a primitive: `name`, the rule registered under it computes it;
    `kernel`, the kind of kernel that multiplies (what compiler/native/bf16.py reads:
    "gemm" and "small_gemm" round operands to bfloat16); `applies`, whether it computes a
    node, given what the list reads of it, those above it not applying; `why`, why it
    wins where it applies."""

    name: str
    kernel: str
    applies: Callable[[object], bool]
    why: str


def first(implementations: tuple, node) -> Implementation:
    """The first of `implementations` that applies to `node` (every list ends with one that
    always does)."""
    return next(i for i in implementations if i.applies(node))
