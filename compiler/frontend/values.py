"""The static values of the language: functions, builtins, scopes, and what a value is called in errors.

An expression evaluates to a tensor (graph.Tensor) or to a static value: an int, float,
bool, string, dim, tuple, none, a `def` (Func) or a builtin (Builtin). Static arithmetic
(static_binary) is shared by the evaluator, the builtins and the train-block settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.frontend import syntax
from dlc.compiler.ir.dims import Dim
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.ir.graph import Graph, Tensor
from dlc.compiler.frontend.syntax import in_range


@dataclass
class Func:
    """A `def`, closed over the scope it was defined in."""

    decl: syntax.Def
    env: "Env"

    @property
    def name(self):
        return self.decl.name


@dataclass
class Builtin:
    name: str
    fn: object  # python callable: fn(ev, *args, **kwargs)


@dataclass
class Partial:
    """A partial application, `leaky_relu(alpha = 0.2)`: a function given keyword arguments
    only, not its first argument. Calling it calls `func` with the call's arguments, then
    these keywords (a keyword of the call wins)."""

    func: Func | Builtin
    kwargs: dict  # name -> (value, span)
    span: Span  # where it was made

    @property
    def name(self):
        return self.func.name


FUNCTIONS = (Func, Builtin, Partial)


@dataclass
class LoopIndex:
    """The step variable of a scan; only valid as a direct index of a sequence."""

    body: Graph
    name: str


@dataclass
class Layer:
    """The parameters of one call of a def, named from outside: `h3.h` in `h3.h.W`."""

    scope: object  # the call's model.ParamScope
    path: str  # as written, for messages


class Env:
    def __init__(self, parent: "Env | None" = None):
        self.vars: dict = {}
        self.layers: dict = {}  # binding -> the ParamScopes of the calls with parameters that made it
        self.parent = parent

    def lookup(self, name: str):
        return self._binding(name).vars[name]

    def layers_of(self, name: str) -> list:
        """The calls with parameters whose value the binding `name` holds (`emb.W`)."""
        return self._binding(name).layers.get(name, [])

    def _binding(self, name: str) -> "Env":
        env = self
        while env is not None:
            if name in env.vars:
                return env
            env = env.parent
        raise KeyError(name)

    def child(self) -> "Env":
        return Env(self)

    def defines(self, name: str) -> bool:
        """Whether a name has a value here or in an enclosing scope (a const, an argument)."""
        try:
            self.lookup(name)
        except KeyError:
            return False
        return True

    def visible_names(self) -> set:
        """Every name in scope, for a did-you-mean hint (internal names start with __)."""
        names, env = set(), self
        while env is not None:
            names |= {k for k in env.vars if not k.startswith("__")}
            env = env.parent
        return names


def describe(v) -> str:
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return f"the bool {str(v).lower()}"
    if isinstance(v, int):
        return f"the int {v}"
    if isinstance(v, float):
        return f"the float {v:g}"
    if isinstance(v, Dim):
        return f"the dim {v}"
    if isinstance(v, str):
        return f"the string \"{v}\""
    if isinstance(v, tuple):
        return f"a tuple of {len(v)}"
    if isinstance(v, Partial):
        return f"the function {v.name}({', '.join(f'{k} = ...' for k in v.kwargs)})"
    if isinstance(v, (Func, Builtin)):
        return f"the function {v.name}"
    if v is None:
        return "none"
    if isinstance(v, LoopIndex):
        return f"the scan step '{v.name}'"
    if isinstance(v, Layer):
        return f"the layer {v.path}"
    return type(v).__name__


# ---- static arithmetic ------------------------------------------------------------------------
STATIC_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "^": lambda a, b: a**b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


LITERALS = (syntax.Number, syntax.String, syntax.Bool, syntax.NoneValue)


SPELLED_ITEMS = 8  # the items of a long tuple that `spelled` writes out


def spelled(v) -> str:
    """A static value as a program spells it: 3, 0.5, true, "same", (3, 3), relu, none;
    a tensor (in a tuple) as its type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _num(v)
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple) and len(v) > SPELLED_ITEMS:
        return "(" + ", ".join(map(spelled, v[:SPELLED_ITEMS])) + f", ... {len(v):,} items)"
    if isinstance(v, tuple):
        return "(" + ", ".join(map(spelled, v)) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, FUNCTIONS):
        return v.name
    if isinstance(v, Tensor):
        return str(v.type)
    return "none" if v is None else str(v)


def literal(e) -> int | float | str | bool | None:
    """The value of a literal (one of LITERALS); a float literal beyond the float range (the
    parser made it inf) is an error. (An integer literal too large is refused by the parser.)"""
    if isinstance(e, syntax.NoneValue):
        return None
    if isinstance(e, syntax.Number) and not in_range(e.value):
        raise DlcError("the number is too large for a float (at most about 1.8e308)", e.span)
    return e.value


def static_binary(op: str, a, b, span: Span):
    """`a op b` on static values (numbers, or strings compared), the operator written only.
    A number outside the language's (syntax.in_range) is an error at span, and so is a
    complex power; an integer power that would overflow is refused before it is computed."""
    if op == "^" and _power_overflows(a, b):
        raise DlcError(f"{_num(a)} ^ {_num(b)} overflows", span)
    try:
        out = STATIC_OPS[op](a, b)
    except ZeroDivisionError:
        raise DlcError("division by zero", span) from None
    except OverflowError:
        raise DlcError(f"{_num(a)} {op} {_num(b)} overflows", span) from None
    except TypeError:
        raise DlcError(f"cannot apply {op} to {describe(a)} and {describe(b)}", span) from None
    if isinstance(out, complex):
        raise DlcError(f"{_num(a)} ^ {_num(b)} is not a real number", span)
    if isinstance(out, (int, float)) and not in_range(out):
        raise DlcError(f"{_num(a)} {op} {_num(b)} overflows", span)
    return out


def _power_overflows(a, b) -> bool:
    """Whether a ^ b, for integers, is at least 2^64 by the bits of a: such a power is
    refused without computing it (9 ^ 9 ^ 9 would take hours)."""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (a, b)) or b < 0 or abs(a) < 2:
        return False
    return (abs(a).bit_length() - 1) * b >= 64


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
