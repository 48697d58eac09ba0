"""Symbolic dimensions.

A dimension is an int or a `Dim`: a polynomial with integer coefficients over named
symbols (B, T, ...), so that `B*T`, `T - 1` and `2*T + 1` stay exact through reshape,
slice and concat. Arithmetic that yields a constant returns a plain int.

Symbols are rigid: a model must work for every size of B, so B never silently becomes
32 or T; two dims agree only when their polynomials are equal.
"""

from __future__ import annotations

import re
from math import prod


Monomial = tuple  # sorted tuple of symbol names; () is the constant term


class Dim:
    __slots__ = ("terms",)

    def __init__(self, terms: dict):
        self.terms = {m: c for m, c in terms.items() if c != 0}

    @staticmethod
    def sym(name: str) -> "Dim":
        return Dim({(name,): 1})

    # construction helpers -------------------------------------------------------
    @staticmethod
    def _terms(x) -> dict:
        if isinstance(x, Dim):
            return x.terms
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"not a dimension: {x!r}")
        return {(): x} if x else {}

    @staticmethod
    def make(terms: dict) -> "int | Dim":
        d = Dim(terms)
        if not d.terms:
            return 0
        if list(d.terms) == [()]:
            return d.terms[()]
        return d

    def __add__(self, other):
        t = dict(self.terms)
        for m, c in Dim._terms(other).items():
            t[m] = t.get(m, 0) + c
        return Dim.make(t)

    __radd__ = __add__

    def __neg__(self):
        return Dim.make({m: -c for m, c in self.terms.items()})

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        t: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Dim._terms(other).items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return Dim.make(t)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division by an int, or by a dim that is one of its factors."""
        if isinstance(other, int):
            if all(c % other == 0 for c in self.terms.values()):
                return Dim.make({m: c // other for m, c in self.terms.items()})
        elif isinstance(other, Dim) and len(other.terms) == 1:
            ((om, oc),) = other.terms.items()
            out = {}
            for m, c in self.terms.items():
                rest = list(m)
                for s in om:
                    if s not in rest:
                        return None
                    rest.remove(s)
                if c % oc:
                    return None
                out[tuple(rest)] = c // oc
            return Dim.make(out)
        return None

    def __eq__(self, other):
        if isinstance(other, (Dim, int)) and not isinstance(other, bool):
            return self.terms == Dim._terms(other)
        return NotImplemented

    def __hash__(self):
        return hash(frozenset(self.terms.items()))

    def symbols(self) -> set:
        return {s for m in self.terms for s in m}

    def subs(self, env: dict) -> "int | Dim":
        out: int | Dim = 0
        for m, c in self.terms.items():
            term: int | Dim = c
            for s in m:
                v = env[s] if s in env else derived_size(s, env)
                term = term * (Dim.sym(s) if v is None else v)
            out = out + term
        return out

    def __str__(self):
        parts = []
        for m in sorted(self.terms, key=lambda m: (-len(m), m)):
            c = self.terms[m]
            body = "*".join(m)
            if not m:
                text = str(abs(c))
            elif abs(c) == 1:
                text = body
            else:
                text = f"{abs(c)}*{body}"
            sign = "-" if c < 0 else "+"
            parts.append((sign, text))
        s = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, text in parts[1:]:
            s += f" {sign} {text}"
        return s

    __repr__ = __str__


def is_dim(x) -> bool:
    return isinstance(x, Dim) or (isinstance(x, int) and not isinstance(x, bool))


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def numel(shape):
    return prod(shape, start=1)


def exact_div(a, b):
    """a / b when it divides exactly, else None."""
    if isinstance(a, Dim):
        return a // b
    if isinstance(b, Dim) or not b or a % b:
        return None
    return a // b


def sign(d) -> int | None:
    """The sign of a dim for every size of its symbols (each at least 1: no input is empty),
    or None when it depends on them (T - 1 is 0 at T = 1)."""
    if not isinstance(d, Dim):
        return (d > 0) - (d < 0)
    coefficients = d.terms.values()
    if all(c > 0 for c in coefficients):
        return 1
    if all(c < 0 for c in coefficients):
        return -1
    return None


def symbols(shape) -> set:
    out = set()
    for d in shape:
        if isinstance(d, Dim):
            out |= d.symbols()
    return out


def concrete(d, env: dict) -> int:
    """A dim's value given sizes for its symbols."""
    if isinstance(d, Dim):
        v = d.subs(env)
        if isinstance(v, Dim):
            raise KeyError(f"no size for {', '.join(sorted(v.symbols()))}")
        return v
    return d


_CEIL = re.compile(r"ceil\((\w+)/(\d+)\)$")


def ceil_div(d, k: int):
    """⌈d / k⌉ as a dim: an int, an exact quotient, or for one symbol T the derived symbol
    `ceil(T/k)`, whose size follows from T's (derived_size). None for any other dim."""
    if not isinstance(d, Dim):
        return -(-d // k)
    exact = d // k
    if exact is not None:
        return exact
    (name,) = d.symbols() if len(d.symbols()) == 1 else (None,)
    return Dim.sym(f"ceil({name}/{k})") if name and d == Dim.sym(name) else None


def derived_size(name: str, env: dict) -> int | None:
    """The size of a derived symbol (`ceil(T/k)`) given its symbol's, else None."""
    m = _CEIL.match(name)
    return -(-env[m[1]] // int(m[2])) if m and m[1] in env else None


def derive(sizes: dict, names) -> dict:
    """`sizes` with the derived symbols among `names` added."""
    return sizes | {s: v for s in names if s not in sizes and (v := derived_size(s, sizes)) is not None}


def subs(d, env: dict):
    return d.subs(env) if isinstance(d, Dim) else d
