"""The numbers of a step, written once, computed in Python and in C.

An optimizer's per-step scalars (Adam's bias corrections, Adagrad's decayed rate) and a
schedule's learning rate are functions of the step, which the engines compute in Python at
every step and a `dlc build --train` library computes in C (runtime/deploy/training.py).
Each is written once, as Python over `Formula`s: called with variables (`variable`), the
definition gives its tree, which `python_function` and `c_statements` print as Python and
as C: the same statements, a temporary per node, which take the same operations in the same
order in IEEE double (int64_t for integers, converted to double explicitly as C would), so
they give the same bits: the library compiles without contraction
(runtime/deploy/toolchain.py), and pow, cos and floor are the C library's on both sides
(Python's math module calls them). Arithmetic on plain numbers is Python's, done while the
tree is built: a constant of the tree, which C gets as its exact literal.

A definition branches on a formula with `select` (only the branch taken is computed, on
both sides), takes `minimum`, `maximum`, `floor`, `cos` and `**`, and repeats with `loop`.
A formula has no truth value and no float: `if` or `math.cos` on one is an error, so a
definition cannot compute outside the tree.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

INT, DOUBLE, BOOL = "int64_t", "double", "int"  # the C types of formulas' values
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
for _method, _op, _reflected in (
    ("add", "+", True),
    ("sub", "-", True),
    ("mul", "*", True),
    ("truediv", "/", True),
    ("pow", "**", True),
    ("lt", "<", False),
    ("le", "<=", False),
    ("gt", ">", False),
    ("ge", ">=", False),
):
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
    except ValueError:  # 0 to a negative power (a pole), or a negative base to a fraction
        if a == 0:
            return math.copysign(math.inf, a) if b.is_integer() and b % 2 == 1 else math.inf
        return math.nan


def _divide(a: float, b: float) -> float:
    """IEEE division, which Python refuses by zero."""
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _floor(x: float) -> float:
    """C's floor (Python's gives an int, so no -0.0, and refuses infinities)."""
    return float(math.floor(x)) if math.isfinite(x) and x != 0 else x


def _cos(x: float) -> float:
    """C's cos (Python's refuses infinities)."""
    return math.cos(x) if math.isfinite(x) else math.nan


# op -> (its value in Python from double arguments, its C expression)
FUNCTIONS: dict = {
    "/": (_divide, "{0} / {1}"),
    "**": (_pow, "pow({0}, {1})"),
    "floor": (_floor, "floor({0})"),
    "cos": (_cos, "cos({0})"),
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


# ---- Python and C ------------------------------------------------------------------------------------
class _C:
    """How the printer writes C."""

    indent, end = "    ", "}"

    @staticmethod
    def literal(x) -> str:
        if isinstance(x, int):
            return str(x) if x >= 0 else f"({x})"
        if math.isnan(x):
            return "NAN"
        if math.isinf(x):
            return "INFINITY" if x > 0 else "(-INFINITY)"
        return x.hex() if math.copysign(1.0, x) > 0 else f"({x.hex()})"

    @staticmethod
    def to_double(expr: str) -> str:
        return f"(double){expr}"

    @staticmethod
    def declare(type: str, name: str, expr: str | None) -> str:
        return f"{type} {name}" + (f" = {expr};" if expr is not None else ";")

    @staticmethod
    def assign(name: str, expr: str) -> str:
        return f"{name} = {expr};"

    @staticmethod
    def call(op: str, xs: list) -> str:
        return FUNCTIONS[op][1].format(*xs)

    @staticmethod
    def when(condition: str) -> str:
        return f"if ({condition}) {{"

    otherwise, forever = "} else {", "for (;;) {"

    @staticmethod
    def stop_unless(condition: str) -> str:
        return f"if (!({condition})) break;"


class _Python(_C):
    """How the printer writes Python: the same statements, with C's conversions and functions."""

    end, otherwise, forever = None, "else:", "while True:"

    @staticmethod
    def literal(x) -> str:
        return repr(x)  # repr round-trips every float; inf and nan are names of the namespace

    @staticmethod
    def to_double(expr: str) -> str:
        return f"float({expr})"

    @staticmethod
    def declare(type: str, name: str, expr: str | None) -> str | None:
        return None if expr is None else f"{name} = {expr}"

    @staticmethod
    def assign(name: str, expr: str) -> str:
        return f"{name} = {expr}"

    @staticmethod
    def call(op: str, xs: list) -> str:
        return f"{FUNCTIONS[op][0].__name__}({', '.join(xs)})"

    @staticmethod
    def when(condition: str) -> str:
        return f"if {condition}:"

    @staticmethod
    def stop_unless(condition: str) -> str:
        return f"if not {condition}: break"


class _Printer:
    """Statements that compute formulas, in C or in Python, alike: a temporary per node, in a
    scope per branch; an integer converted to double explicitly wherever a double is made of it."""

    def __init__(self, language):
        self.language, self.lines, self.count = language, [], 0

    def line(self, depth: int, text: str | None):
        if text is not None:
            self.lines.append(self.language.indent * depth + text)

    def temporary(self, type: str, depth: int, expr: str | None = None) -> str:
        self.count += 1
        name = f"v{self.count}"
        self.line(depth, self.language.declare(type, name, expr))
        return name

    def double(self, f, names: dict, depth: int) -> str:
        """f's value as a double."""
        expr = self(f, names, depth)
        return self.language.to_double(expr) if f.type != DOUBLE else expr

    def __call__(self, f: Formula, names: dict, depth: int) -> str:
        """An expression of f's value (a literal, a variable or a temporary); `names`: the
        temporaries of the nodes already computed in this scope."""
        lang = self.language
        if f.op == "const":
            return lang.literal(f.data)
        if f.op == "var":
            return f.data
        if id(f) in names:
            return names[id(f)]
        args = f.args
        if f.op == "select":
            condition = self(args[0], names, depth)
            out = self.temporary(f.type, depth)
            for head, branch in ((lang.when(condition), args[1]), (lang.otherwise, args[2])):
                self.line(depth, head)
                value = (
                    self.double(branch, dict(names), depth + 1)
                    if f.type == DOUBLE
                    else self(branch, dict(names), depth + 1)
                )
                self.line(depth + 1, lang.assign(out, value))
            self.line(depth, lang.end)
        elif f.op == "loop":
            state_vars, condition, body = f.data
            out = [self.temporary(DOUBLE, depth, self.double(x, names, depth)) for x in args]
            inner = names | {id(s): name for s, name in zip(state_vars, out)}
            self.line(depth, lang.forever)
            self.line(depth + 1, lang.stop_unless(self(condition, inner, depth + 1)))
            new = [self.temporary(DOUBLE, depth + 1, self.double(x, inner, depth + 1)) for x in body]
            for name, value in zip(out, new):
                self.line(depth + 1, lang.assign(name, value))
            self.line(depth, lang.end)
        elif f.op == "part":
            out = self(args[0], names, depth)[f.data]
        elif f.op == "neg":
            out = self.temporary(f.type, depth, f"-{self(args[0], names, depth)}")
        else:
            mixed = f.type == DOUBLE or any(a.type == DOUBLE for a in args)  # C's usual conversions
            xs = [self.double(a, names, depth) if mixed else self(a, names, depth) for a in args]
            out = self.temporary(f.type, depth, lang.call(f.op, xs) if f.op in FUNCTIONS else f"{xs[0]} {f.op} {xs[1]}")
        names[id(f)] = out
        return out


def _statements(language, assignments: list, depth: int) -> list:
    printer, names = _Printer(language), {}
    for target, f in assignments:
        value = printer(f, names, depth) if isinstance(f, Formula) else language.literal(f)
        printer.line(depth, language.assign(target, value))
    return printer.lines


def c_statements(assignments: list, depth: int = 1) -> list:
    """Lines of C that compute each (target, formula or number) of `assignments` and store it
    in its target (`out[0]`, a variable the caller declares), indented `depth` levels; the
    formulas' variables are C variables of their names."""
    return _statements(_C, assignments, depth)


def python_function(formulas: dict, variables: list) -> Callable[..., dict]:
    """A function of the `variables` (by their names) that returns the value of each formula
    (or plain number) of `formulas` by its key, computed by the same statements as its C."""
    head = [f"def formulas({', '.join(v.data for v in variables)}):"]
    head += [f"    {v.data} = {'int' if v.type == INT else 'float'}({v.data})" for v in variables]
    body = _statements(_Python, [(f"out[{k!r}]", f) for k, f in formulas.items()], 1)
    source = "\n".join(head + ["    out = {}"] + body + ["    return out"])
    namespace = {f.__name__: f for f, _ in FUNCTIONS.values()} | {"inf": math.inf, "nan": math.nan}
    exec(compile(source, "<formulas>", "exec"), namespace)
    return namespace["formulas"]
