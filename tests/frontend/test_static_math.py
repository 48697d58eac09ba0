"""A unary math builtin computes the same on a number, at compile time, as on a tensor: the
static value comes from the primitive's own numpy reference (compiler/frontend/builtins.py),
so it is finite and equal where the tensor op's value is, and an error where that is not."""

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.runtime.engines import interpreter

UNARY = sorted(p.builtin for p in PRIMITIVES.values() if p.builtin is not None and p.arity == 1)
VALUES = (-1000.0, 1000.0, -1000, 1000, 0.5)


def static(name: str, v) -> float:
    """name(v) folded into a constant when the model is built."""
    model = load_text(f'const C = {name}({v})\nmodel m {{\n    output y = full((1,), C, "f64")\n}}\n').build(
        training=False
    )
    return interpreter.run(model.graph, {}, {}, float_dtype=None)["output:y"][0]


@pytest.fixture(scope="module")
def tensor() -> dict:
    """name -> v -> name(x) of an f64 tensor x holding v, by the reference interpreter."""
    outputs = "\n".join(f"    output {name} = {name}(x)" for name in UNARY)
    model = load_text(f"model m {{\n    input x: f64[{len(VALUES)}]\n{outputs}\n}}\n").build(training=False)
    out = interpreter.run(model.graph, {"x": np.array(VALUES, np.float64)}, {}, float_dtype=None)
    return {name: dict(zip(VALUES, out[f"output:{name}"])) for name in UNARY}


def test_every_unary_math_builtin_is_checked():
    assert {"exp", "expm1", "log", "log1p", "sqrt", "tanh", "sigmoid", "sin", "cos", "erf", "abs", "sign"} <= set(UNARY)


@pytest.mark.parametrize("v", VALUES, ids=repr)
@pytest.mark.parametrize("name", UNARY)
def test_a_static_unary_builtin_is_its_tensor_op(tensor, name, v):
    want = tensor[name][v]
    if np.isfinite(want):
        got = static(name, v)
        assert np.isfinite(got) and got == want, f"{name}({v}): static {got!r}, tensor {want!r}"
    else:
        with pytest.raises(DlcError, match=rf"{name}\({v}\) is undefined"):
            static(name, v)


def test_sigmoid_of_a_large_negative_number_is_zero_at_compile_time():
    """1 / (1 + exp(1000)) overflowed in the float arithmetic statics once used."""
    assert static("sigmoid", -1000.0) == 0.0 and static("sigmoid", 1000.0) == 1.0
