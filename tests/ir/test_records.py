"""The primitive records are complete: every primitive has a native lowering rule, every
elementwise one a scalar rule for each dtype class its type rule accepts (and no rule for
one it refuses). (tests/project/test_imports.py checks that the modules import one another without
cycles.)"""

import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import DTYPES, Graph, Pattern, TensorType
from dlc.compiler.native.rules import lowering_rule
from dlc.compiler.native.codegen.scalar import EMIT, LOWERING_ONLY
from dlc.compiler.ir.primitives import PRIMITIVES

CLASS = {"f32": "float", "f64": "float", "i32": "int", "i64": "int", "bool": "bool"}


def scalar_primitives() -> list:
    """The elementwise primitives that become Op nodes (stop_gradient is a free view)."""
    return [p for p in PRIMITIVES.values() if p.pattern is Pattern.ELEMENTWISE and not p.view]


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_every_primitive_has_a_lowering_rule(name):
    assert lowering_rule(name) is not None, f"{name}: no native lowering rule (compiler/native/rules/)"


@pytest.mark.parametrize("prim", scalar_primitives(), ids=lambda p: p.name)
def test_every_elementwise_primitive_has_a_scalar_rule_per_dtype_class(prim):
    missing = {CLASS[d] for d in prim.dtypes} - {cls for name, cls in EMIT if name == prim.name}
    assert not missing, f"{prim.name}: no scalar rule on {sorted(missing)} (compiler/native/codegen/scalar.py)"


def test_no_scalar_rule_for_a_dtype_class_the_type_rules_refuse():
    assert {name for name, _ in EMIT if name not in PRIMITIVES} == set(LOWERING_ONLY)
    dead = [
        (name, cls)
        for name, cls in EMIT
        if name in PRIMITIVES and cls not in {CLASS[d] for d in PRIMITIVES[name].dtypes}
    ]
    assert not dead, f"scalar rules no graph can reach: {dead}"


@pytest.mark.parametrize("prim", scalar_primitives(), ids=lambda p: p.name)
def test_the_type_rule_accepts_exactly_the_record_dtypes(prim):
    """Operands of one dtype (a select's condition bool): accepted iff the record lists it."""
    arity = (
        3
        if prim.name in ("select", "fma")
        else 1
        if prim.infer.__name__ == "_unary_type" or prim.name in ("cast", "logical_not")
        else 2
    )
    for dtype in DTYPES:
        g = Graph()
        xs = [g.add1("input", type=TensorType(dtype, (3,)), name=f"x{i}") for i in range(arity)]
        if prim.name == "select":
            xs[0] = g.add1("input", type=TensorType("bool", (3,)), name="c")
        attrs = {"dtype": "f32"} if prim.name == "cast" else {}
        try:
            g.add1(prim.name, xs, **attrs)
            accepted = True
        except DlcError:
            accepted = False
        assert accepted == (dtype in prim.dtypes), (prim.name, dtype)
