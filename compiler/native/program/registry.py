"""The lowering rules' registry: each primitive's rule, registered by name
(`register_lowering`), as JAX registers its rules beside each primitive. A rule is
rule(lowering, node, operands, attrs, type of output 0) -> None and sets the node's values
(compiler/native/lower.py `Lowering`). The rules live with the kernel kind they emit
(compiler/native/kernels/<kind>/__init__.py) or, when they emit no kernel of their own,
in compiler/native/rules/ by family, which also finds them all (`rules.load`) and looks a
primitive's rule up (`rules.lowering_rule`). Where a primitive is computed more than one
way, each way is an implementation registered by name (`register_implementation`) in the
package of the kind it emits, and the primitive's rule (compiler/native/rules/) calls the
one compiler/native/choose/'s list names. This module imports neither: the kinds and the
families register here, below both."""

from __future__ import annotations

from typing import Callable

from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import Pattern


class NotLowerable(DlcError):
    """The native backend does not compile this primitive yet (located at its node)."""


# primitive name -> its rule
LOWERINGS: dict[str, Callable] = {}
# fusion pattern -> the rule of a primitive of that pattern without one of its own (elementwise: an Op node)
PATTERN_RULES: dict[Pattern, Callable] = {}
# the float dtypes a rule computes in, where it is not every dtype the type rule accepts
LOWERED_FLOATS: dict[str, tuple] = {}
# primitive name -> its rule as an integer product of a quantized program (kernels/int8)
INT8_LOWERINGS: dict[str, Callable] = {}


def register_lowering(*names: str, floats: tuple | None = None, pattern: Pattern | None = None, int8: bool = False):
    """Decorator: the lowering rule of the primitives `names`, or of every primitive of
    `pattern` that has none; `floats`, the only float dtypes it computes in (the GEMM
    and the window kernels: f32); `int8`, their rule as integer products instead."""

    def register(rule):
        for name in names:
            (INT8_LOWERINGS if int8 else LOWERINGS)[name] = rule
            if floats is not None:
                LOWERED_FLOATS[name] = floats
        if pattern is not None:
            PATTERN_RULES[pattern] = rule
        return rule

    return register


# (primitive name, implementation name) -> the rule that computes the primitive so (compiler/native/choose/)
IMPLEMENTATIONS: dict[tuple, Callable] = {}


def register_implementation(op: str, name: str):
    """Decorator: the rule that computes primitive `op` by the implementation `name` of its
    choice list (compiler/native/choose/): rule(lowering, node, operands, attrs, type of
    output 0, shape), its shape as the list's entries read it."""

    def register(rule):
        IMPLEMENTATIONS[op, name] = rule
        return rule

    return register
