"""The elementwise ONNX ops: one table of .dl templates (`ELEMENTWISE`), in the manner of
tinygrad's code_for_op, and the rules of those a template does not say (Div, Mod, Round,
Cast, Clip, the variadic Max, Min, Sum and Mean, ...)."""

from __future__ import annotations

from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.onnx.rule_api.node import Node, RULES, Rule, rule
from dlc.compiler.onnx.rule_api.values import DL_DTYPES, FLOAT, INT, LARGEST, NUMBER, type_name
from dlc.compiler.onnx.rule_api.writing import flt


def _spelled(prim) -> str:
    """A primitive as .dl writes it, over operands {0}, {1}, ...: exp({0}), {0} + {1}, not {0}."""
    operands = [f"{{{i}}}" for i in range(prim.arity)]
    if prim.builtin is not None:
        return f"{prim.builtin}({', '.join(operands)})"
    if prim.arity == 1:
        return prim.operator + (" " if prim.operator.isalpha() else "") + operands[0]
    return f" {prim.operator} ".join(operands)


# op: (.dl template over the inputs {0}, {1}, ... and the attributes, the attributes' defaults,
# the input dtypes it accepts). An ONNX op that a primitive computes is that primitive, as its
# record spells it; the others are compositions. Integer inputs of float-only templates take
# the INT_TEMPLATES.
ELEMENTWISE = {
    **{p.onnx: (_spelled(p), {}, p.dtypes) for p in PRIMITIVES.values() if p.onnx is not None},
    "Xor": ("{0} != {1}", {}, ("bool",)),
    "Reciprocal": ("1.0 / {0}", {}, FLOAT),
    "Floor": ("{0} - {0} % 1.0", {}, FLOAT),
    "Ceil": ("{0} + (-{0}) % 1.0", {}, FLOAT),
    "Tan": ("sin({0}) / cos({0})", {}, FLOAT),
    "Sinh": ("0.5 * (exp({0}) - exp(-{0}))", {}, FLOAT),
    "Cosh": ("0.5 * (exp({0}) + exp(-{0}))", {}, FLOAT),
    "Asinh": ("sign({0}) * log(abs({0}) + sqrt({0} ^ 2 + 1))", {}, FLOAT),
    "Acosh": ("log({0} + sqrt({0} ^ 2 - 1))", {}, FLOAT),
    "Atanh": ("0.5 * log1p(2 * {0} / (1 - {0}))", {}, FLOAT),
    "Relu": ("relu({0})", {}, FLOAT),
    "LeakyRelu": ("leaky_relu({0}, {alpha})", {"alpha": 0.01}, FLOAT),
    "Elu": ("elu({0}, {alpha})", {"alpha": 1.0}, FLOAT),
    "Selu": (
        "{gamma} * elu({0}, {alpha})",
        {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
        FLOAT,
    ),
    "Celu": ("maximum({0}, 0.0) + minimum({alpha} * expm1({0} / {alpha}), 0.0)", {"alpha": 1.0}, FLOAT),
    "ThresholdedRelu": ("select({0} > {alpha}, {0}, 0.0)", {"alpha": 1.0}, FLOAT),
    "HardSigmoid": ("minimum(maximum({alpha} * {0} + {beta}, 0.0), 1.0)", {"alpha": 0.2, "beta": 0.5}, FLOAT),
    "HardSwish": ("{0} * hard_sigmoid({0})", {}, FLOAT),
    "Softplus": ("softplus({0})", {}, FLOAT),
    "Softsign": ("{0} / (1 + abs({0}))", {}, FLOAT),
    "Mish": ("{0} * tanh(softplus({0}))", {}, FLOAT),
    "Swish": ("swish({0}, {alpha})", {"alpha": 1.0}, FLOAT),
    "PRelu": ("select({0} > 0, {0}, {1} * {0})", {}, FLOAT),
    "Shrink": (
        "select({0} < -{lambd}, {0} + {bias}, select({0} > {lambd}, {0} - {bias}, 0.0))",
        {"lambd": 0.5, "bias": 0.0},
        FLOAT,
    ),
    "IsNaN": ("{0} != {0}", {}, FLOAT),
}

# integer versions of the float templates (their builtins compute in f32)
INT_TEMPLATES = {
    "Abs": "select({0} < 0, 0 - {0}, {0})",
    "Neg": "0 - {0}",
    "Relu": "select({0} > 0, {0}, 0)",
    "Sign": "cast({0} > 0, \"{out}\") - cast({0} < 0, \"{out}\")",
}


def _elementwise(n: Node):
    template, defaults, dtypes = ELEMENTWISE[n.op]
    inputs = [i for i in range(len(n.proto.input)) if n.has(i)]
    if n.op == "Where":
        data = inputs[1:]
    elif n.op in ("PRelu", "Pow"):  # a float base takes any exponent
        data = inputs[:1]
    else:
        data = inputs
    kinds = {n.dtype(i) for i in data}
    if not kinds <= set(dtypes):
        ints = INT_TEMPLATES.get(n.op)
        if ints is None or not kinds <= set(INT):
            n.refuse(f"{', '.join(sorted(kinds))} inputs", "dtype")
        template = ints
    values = {k: flt(n.attr(k, v)) for k, v in defaults.items()}
    if "{out}" in template:
        values["out"] = n.out_dtype()
    return template.format(*[n.x(i) for i in range(len(n.proto.input))], **values)


for _op, (_t, _defaults, _dtypes) in ELEMENTWISE.items():
    RULES[_op] = Rule(_elementwise, attrs=tuple(_defaults))


@rule("Div")
def _div(n: Node):
    if {n.dtype(0), n.dtype(1)} <= set(INT):  # ONNX truncates toward zero; // floors
        q = n.let(f"{n.x(0)} // {n.x(1)}", n.label + "_floor")
        return f"select({n.x(0)} % {n.x(1)} != 0 and ({n.x(0)} < 0) != ({n.x(1)} < 0), {q} + 1, {q})"
    return _elementwise(n)


@rule("Pow")
def _pow(n: Node):
    """A float base takes any exponent; an integer one computes in floats, cast back."""
    if n.dtype(0) in INT:
        return f"cast(float({n.x(0)}) ^ float({n.x(1)}), \"{n.out_dtype()}\")"
    return _elementwise(n)


@rule("Mod", attrs=("fmod",))
def _mod(n: Node):
    a, b = n.x(0), n.x(1)
    if n.attr("fmod", 0) == 0:  # the sign of b, as Python's %
        return f"{a} % {b}"
    r = n.let(f"{a} % {b}", n.label + "_floor")  # the sign of b; fmod takes the sign of a
    return f"select({r} != 0 and ({a} < 0) != ({b} < 0), {r} - {b}, {r})"


@rule("Round")
def _round(n: Node):
    n.require_float()
    x = n.x(0)
    r = n.let(f"{x} + 0.5 - ({x} + 0.5) % 1.0", n.label + "_up")  # floor(x + 0.5)
    return f"select({r} - {x} == 0.5 and {r} % 2.0 == 1.0, {r} - 1.0, {r})"  # ties to even


@rule("IsInf", attrs=("detect_negative", "detect_positive"))
def _isinf(n: Node):
    n.require_float()
    x, big = n.x(0), LARGEST[n.dtype(0)]
    tests = ([f"{x} > {big}"] if n.attr("detect_positive", 1) else []) + (
        [f"{x} < -{big}"] if n.attr("detect_negative", 1) else []
    )
    return " or ".join(tests) if tests else f"{x} != {x} and {x} == {x}"


@rule("Gelu", attrs=("approximate",))
def _gelu(n: Node):
    n.require_float()
    return f"{'gelu' if n.attr('approximate', 'none') == 'tanh' else 'gelu_exact'}({n.x(0)})"


@rule("Identity")
def _identity(n: Node):
    return n.value(0)


@rule("Dropout", static=(1, 2), attrs=("ratio", "seed", "is_test"))
def _dropout(n: Node):
    """The identity, with a mask of ones, in inference and at ratio 0; dropping at random in
    training mode is refused (its numbers would not be ONNX's)."""
    ratio = float(n.setting("ratio", 1, 0.5))
    if n.has(2) and bool(n.static(2, "training_mode")) and ratio != 0:
        n.refuse(f"training_mode = true with ratio {ratio:g} (random)")
    mask = None
    if n.used(1):
        mask = f"full(shape({n.x(0)}), 1, \"{n.out_dtype(1)}\")"
    return [n.value(0), mask]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(n: Node):
    xs = [n.x(i) for i in range(len(n.proto.input)) if n.has(i)]
    if any(n.dtype(i) not in NUMBER for i in range(len(xs))):
        n.refuse("bool inputs", "dtype")
    if n.op in ("Sum", "Mean"):
        total = " + ".join(xs)
        if n.op == "Sum":
            return total
        n.require_float(*range(len(xs)))
        return f"({total}) / {len(xs)}" if len(xs) > 1 else xs[0]
    template = ELEMENTWISE[n.op][0]  # maximum({0}, {1})
    out = xs[0]
    for x in xs[1:]:
        out = template.format(out, x)
    return out if len(xs) > 1 else n.value(0)


@rule("Clip", attrs=("min", "max"))
def _clip(n: Node):
    out = n.x(0)
    low = flt(n.attr("min")) if "min" in n.attrs else (n.x(1) if n.has(1) else None)
    high = flt(n.attr("max")) if "max" in n.attrs else (n.x(2) if n.has(2) else None)
    if low is not None:
        out = f"maximum({out}, {low})"
    if high is not None:
        out = f"minimum({out}, {high})"
    return out if out != n.x(0) else n.value(0)


@rule("Cast", attrs=("to", "saturate", "round_mode"))
def _cast(n: Node):
    to = DL_DTYPES.get(n.attr("to"))
    if to is None:
        n.refuse(f"a cast to {type_name(n.attr('to'))}", "dtype")
    n.dtype(0)
    return f"cast({n.x(0)}, \"{to}\")"


@rule("CastLike", attrs=("saturate", "round_mode"))
def _cast_like(n: Node):
    n.dtype(0)
    return f"cast({n.x(0)}, \"{n.dtype(1)}\")"
