"""The settings of a `train` block, evaluated statically.

A setting's value is a number, string, bool, none, list, a `Symbol` (a bare name such
as `val_loss` or `conv1`) or a `Call` (`adam(lr = 1e-3)`, `split(0.1)`). The trainer
gives them meaning; this module only evaluates them and keeps their source spans so a
bad setting is reported where it was written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dlc.compiler import syntax as A
from dlc.compiler.errors import DlcError, Span


@dataclass
class Symbol:
    name: str
    span: Span | None = None


@dataclass
class Call:
    name: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    span: Span | None = None

    def arg(self, index: int, name: str, default=None, kinds=(int, float)):
        """Positional argument `index` or keyword `name`, checked against `kinds`."""
        if index < len(self.args):
            value = self.args[index]
        else:
            value = self.kwargs.get(name, default)
        if value is not None and kinds and (isinstance(value, bool) and bool not in kinds or
                                            not isinstance(value, kinds)):
            kind = " or ".join(k.__name__ for k in kinds)
            raise DlcError(f"{self.name}: '{name}' must be {kind}, got {value!r}", self.span)
        return value

    def check(self, allowed: list[str]):
        """Refuse keywords this call does not take and extra positional arguments."""
        for k in self.kwargs:
            if k not in allowed:
                raise DlcError(f"{self.name} has no option '{k}' (it takes: {', '.join(allowed) or 'nothing'})",
                               self.span)
        if len(self.args) > len(allowed):
            raise DlcError(f"{self.name} takes at most {len(allowed)} arguments, got {len(self.args)}", self.span)


def evaluate(node) -> object:
    """The static value of a setting's expression."""
    if isinstance(node, (A.Number, A.String, A.Bool)):
        return node.value
    if isinstance(node, A.NoneValue):
        return None
    if isinstance(node, A.Name):
        return Symbol(node.id, node.span)
    if isinstance(node, A.Tuple):
        return [evaluate(x) for x in node.items]
    if isinstance(node, A.Unary) and node.op == "-":
        v = evaluate(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(node, A.Binary) and node.op in ("+", "-", "*", "/", "^"):
        a, b = evaluate(node.left), evaluate(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            try:
                return {"+": a + b, "-": a - b, "*": a * b, "^": a ** b}[node.op] if node.op != "/" else a / b
            except ZeroDivisionError:
                raise DlcError("division by zero", node.span) from None
    if isinstance(node, A.Call) and isinstance(node.func, A.Name):
        args, kwargs = [], {}
        for a in node.args:
            if isinstance(a, A.Keyword):
                kwargs[a.name] = evaluate(a.value)
            else:
                args.append(evaluate(a))
        return Call(node.func.id, args, kwargs, node.span)
    raise DlcError("a train setting must be a number, a string, a name, a list or a call such as adam(lr = 1e-3)",
                   node.span)


def settings(train: A.Train | None) -> dict:
    """name -> (value, span) for every setting of a train block."""
    if train is None:
        return {}
    return {k.name: (evaluate(k.value), k.span) for k in train.settings}
