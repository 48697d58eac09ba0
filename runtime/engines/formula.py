"""The numbers of a step, written once, computed in Python and in C.

An optimizer's per-step scalars (Adam's bias corrections, Adagrad's decayed rate) and a
schedule's learning rate are functions of the step, which the engines compute in Python at
every step and a `dlc build --train` library computes in C (runtime/deploy/training.py).
Each is written once, as Python over `Formula`s: called with variables (`variable`), the
definition gives its tree, which `evaluate` computes in Python and `c_statements` prints as
C. Both take the same operations in the same order, in IEEE double (int64_t for integers,
converted as C converts them), so they give the same bits: the library compiles without
contraction (runtime/deploy/toolchain.py), and pow, cos and floor are the C library's on
both sides. Arithmetic on plain numbers is Python's, done while the tree is built: a
constant of the tree, which C gets as its exact literal.

A definition branches on a formula with `select` (only the branch taken is computed, on
both sides), takes `minimum`, `maximum`, `floor`, `cos` and `**`, and repeats with `loop`.
A formula has no truth value and no float: `if` or `math.cos` on one is an error, so a
definition cannot compute outside the tree.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

INT, DOUBLE, BOOL = "int64_t", "double", "int"      # the C types of formulas' values
ARITHMETIC = ("+", "-", "*")
COMPARISONS = ("<", "<=", ">", ">=")


class Formula:
    """A node: `op` on `args` (formulas), of C type `type`; `data` is a constant's value, a
    variable's name, a loop's (state variables, condition, body) or a loop result's index."""
    __slots__ = ("op", "args", "type", "data")

    def __init__(self, op: str, args: tuple, type: str, data=None):
        self.op, self.args, self.type, self.data = op, args, type, data

    def __neg__(self):
        return Formula("neg", (self,), self.type)

    def __bool__(self):
        raise TypeError("a formula has no truth value while it is built: branch with select()")


# Python's operators on a formula: (method, C operator, whether it has a reflected twin)
for _method, _op, _reflected in (("add", "+", True), ("sub", "-", True), ("mul", "*", True), ("truediv", "/", True),
                                 ("pow", "**", True), ("lt", "<", False), ("le", "<=", False), ("gt", ">", False),
                                 ("ge", ">=", False)):
    setattr(Formula, f"__{_method}__", lambda self, other, op=_op: _binary(op, self, other))
    if _reflected:
        setattr(Formula, f"__r{_method}__", lambda self, other, op=_op: _binary(op, other, self))


def variable(name: str, type: str = DOUBLE) -> Formula:
    """A value given when the formula is evaluated (a parameter of the C function)."""
    return Formula("var", (), type, name)


def _lift(x) -> Formula:
    if isinstance(x, Formula):
        return x
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"a formula takes numbers, not {x!r}")
    return Formula("const", (), INT, int(x)) if isinstance(x, Integral) else Formula("const", (), DOUBLE, float(x))


def _binary(op: str, a, b) -> Formula:
    a, b = _lift(a), _lift(b)
    if op in COMPARISONS:
        return Formula(op, (a, b), BOOL)
    return Formula(op, (a, b), INT if op in ARITHMETIC and a.type == b.type == INT else DOUBLE)


def select(condition, then, otherwise):
    """`then` where `condition` holds, else `otherwise` (C's `?:`): a Python choice when the
    condition is a plain truth value."""
    if not isinstance(condition, Formula):
        return then if condition else otherwise
    a, b = _lift(then), _lift(otherwise)
    return Formula("select", (condition, a, b), INT if a.type == b.type == INT else DOUBLE)


def minimum(a, b):
    """Python's min(a, b): a unless b < a."""
    return select(b < a, b, a)


def maximum(a, b):
    """Python's max(a, b): a unless b > a."""
    return select(b > a, b, a)


def _pow(a: float, b: float) -> float:
    """C's pow: Python's math.pow calls it, but raises where C returns an infinity or NaN."""
    try:
        return math.pow(a, b)
    except OverflowError:
        odd = b.is_integer() and b % 2 == 1
        return -math.inf if a < 0 and odd else math.inf
    except ValueError:      # 0 to a negative power (a pole), or a negative base to a fraction
        if a == 0:
            return math.copysign(math.inf, a) if b.is_integer() and b % 2 == 1 else math.inf
        return math.nan


def _divide(a: float, b: float) -> float:
    """IEEE division, which Python refuses by zero."""
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


# op -> (its value in Python from its arguments' values, its C expression from theirs)
FUNCTIONS: dict = {
    "/": (_divide, "(double){0} / (double){1}"),
    "**": (_pow, "pow({0}, {1})"),
    "floor": (lambda x: float(math.floor(x)) if math.isfinite(x) else x, "floor({0})"),
    "cos": (lambda x: math.cos(x) if math.isfinite(x) else math.nan, "cos({0})"),
}


def _call(op: str, x):
    """A function of the C library: computed now on a plain number, else a node."""
    if not isinstance(x, Formula):
        return FUNCTIONS[op][0](float(x))
    return Formula(op, (x,), DOUBLE)


def floor(x):
    return _call("floor", x)


def cos(x):
    return _call("cos", x)


def loop(condition: Callable, body: Callable, *start) -> tuple:
    """The state after `while condition(*state): state = body(*state)` from `start`, each
    part a double."""
    state = tuple(Formula("state", (), DOUBLE) for _ in start)
    for k, s in enumerate(state):
        s.data = k
    definition = (state, _lift(condition(*state)), tuple(_lift(x) for x in body(*state)))
    node = Formula("loop", tuple(_lift(x) for x in start), DOUBLE, definition)
    return tuple(Formula("part", (node,), DOUBLE, k) for k in range(len(start)))


# ---- evaluation in Python --------------------------------------------------------------------------
class _Evaluation:
    """Values of formulas for given variables, each node computed once."""

    def __init__(self, values: dict, known: dict | None = None):
        self.values, self.known = values, dict(known or {})

    def __call__(self, f: Formula):
        if id(f) not in self.known:
            self.known[id(f)] = self._compute(f)
        return self.known[id(f)]

    def _compute(self, f: Formula):
        op, args = f.op, f.args
        if op == "const":
            return f.data
        if op in ("var", "state"):
            value = self.values[f.data if op == "var" else f]
            return int(value) if f.type == INT else float(value)
        if op == "select":
            value = self(args[1]) if self(args[0]) else self(args[2])
            return value if f.type == INT else float(value)
        if op == "loop":
            state_vars, condition, body = f.data
            state = [float(self(x)) for x in args]
            while True:
                inner = _Evaluation(self.values | dict(zip(state_vars, state)), self.known)
                if not inner(condition):
                    return state
                state = [float(inner(x)) for x in body]
        if op == "part":
            return self(args[0])[f.data]
        if op == "neg":
            return -self(args[0])
        xs = [self(a) for a in args]
        if op in FUNCTIONS:
            return FUNCTIONS[op][0](*map(float, xs))
        if f.type != INT and not all(a.type == INT for a in args):    # C's usual conversions
            xs = [float(x) for x in xs]
        return {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op](*xs)


def evaluate(formulas: dict, values: dict) -> dict:
    """The value of each formula (or plain number) of `formulas` with the variables' `values`,
    in Python floats (ints for an integer formula), as its C computes it."""
    run = _Evaluation(values)
    return {k: run(f) if isinstance(f, Formula) else f for k, f in formulas.items()}


# ---- C -------------------------------------------------------------------------------------------
def _literal(x) -> str:
    if isinstance(x, int):
        return str(x) if x >= 0 else f"({x})"
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return x.hex() if math.copysign(1.0, x) > 0 else f"({x.hex()})"


class _Printer:
    """C statements computing formulas: a temporary per node, in a scope per branch."""

    def __init__(self):
        self.lines: list = []
        self.count = 0

    def temporary(self, type: str, depth: int, expr: str | None = None) -> str:
        self.count += 1
        name = f"v{self.count}"
        self.lines.append("    " * depth + f"{type} {name}" + (f" = {expr};" if expr is not None else ";"))
        return name

    def line(self, depth: int, text: str):
        self.lines.append("    " * depth + text)

    def __call__(self, f: Formula, names: dict, depth: int) -> str:
        """A C expression of f's value (a literal, a variable or a temporary); `names`: the
        temporaries of the nodes already computed in this scope."""
        if f.op == "const":
            return _literal(f.data)
        if f.op == "var":
            return f.data
        if id(f) in names:
            return names[id(f)]
        args = f.args
        if f.op == "select":
            condition = self(args[0], names, depth)
            out = self.temporary(f.type, depth)
            for head, branch in ((f"if ({condition}) {{", args[1]), ("} else {", args[2])):
                self.line(depth, head)
                self.line(depth + 1, f"{out} = {self(branch, dict(names), depth + 1)};")
            self.line(depth, "}")
        elif f.op == "loop":
            state_vars, condition, body = f.data
            out = [self.temporary(DOUBLE, depth, self(x, names, depth)) for x in args]
            inner = names | {id(s): name for s, name in zip(state_vars, out)}
            self.line(depth, "for (;;) {")
            self.line(depth + 1, f"if (!({self(condition, inner, depth + 1)})) break;")
            new = [self.temporary(DOUBLE, depth + 1, self(x, inner, depth + 1)) for x in body]
            self.line(depth + 1, " ".join(f"{name} = {value};" for name, value in zip(out, new)))
            self.line(depth, "}")
        elif f.op == "part":
            out = self(args[0], names, depth)[f.data]
        else:
            xs = [self(a, names, depth) for a in args]
            expr = (FUNCTIONS[f.op][1].format(*xs) if f.op in FUNCTIONS else f"-{xs[0]}" if f.op == "neg"
                    else f"{xs[0]} {f.op} {xs[1]}")
            out = self.temporary(f.type, depth, expr)
        names[id(f)] = out
        return out


def c_statements(assignments: list, depth: int = 1) -> list:
    """Lines of C that compute each (target, formula or number) of `assignments` and store it
    in its target (`out[0]`, a variable the caller declares), indented `depth` levels; the
    formulas' variables are C variables of their names."""
    printer, names = _Printer(), {}
    for target, f in assignments:
        value = printer(f, names, depth) if isinstance(f, Formula) else _literal(f)
        printer.line(depth, f"{target} = {value};")
    return printer.lines
