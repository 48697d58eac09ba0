"""Parameter groups: sets of trained parameters that the optimizer treats with settings
of their own, as torch.optim's param_groups, Hugging Face's "no_decay" parameters or
Caffe's `lr_mult`.

The train setting `param_groups` lists `group(...)` calls; each says which parameters it
takes (a name, a pattern or a list of them, and/or `ndim`, the parameters of that many
dimensions) and what differs for them: `weight_decay`, `lr_mult` (a factor on the
learning rate, the schedule's included). A parameter is in the first group that takes
it; the others keep the optimizer's own settings. The optimizer (optim.py) builds one
update for all of them, which picks each element's group's values (compiler/ir/update.py).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from dlc.compiler.errors import DlcError, Span, plural
from dlc.compiler.ir.dims import numel
from dlc.compiler.frontend.settings import Call, Symbol, as_call, integer, number, to_text

GROUP_OPTIONS = {"params": None, "ndim": None, "weight_decay": None, "lr_mult": 1.0}


def param_matches(name: str, pattern: str) -> bool:
    """A parameter name taken by a name (`f5` takes f5.W and f5.b), a full parameter name,
    or a shell-style pattern ("conv*", "*.b")."""
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatch(name, pattern)


def patterns_of(value, setting: str, span: Span | None) -> list:
    """The names or patterns a setting gives: one, or a list of them."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    out = []
    for p in items:
        if not isinstance(p, (str, Symbol)):
            raise DlcError(f"{setting} takes names or patterns, got {to_text(p)}", span)
        out.append(p.name if isinstance(p, Symbol) else p)
    return out


@dataclass
class Group:
    text: str  # the group(...) as written
    weight_decay: float | None  # None: the optimizer's
    lr_mult: float
    members: list  # the names of its trained parameters, in the model's order
    size: int  # their element count


def make_groups(spec, params: list, trained: list, span: Span | None = None) -> list:
    """The groups of `param_groups` (a group(...) or a list of them) over the `trained`
    parameter names (`params`: the model's ParamInfos), each checked where it is written."""
    if spec is None or spec == []:
        return []
    specs = spec if isinstance(spec, list) else [spec]
    shapes = {p.name: p.type.shape for p in params}
    taken: set = set()
    groups = []
    for item in specs:
        call = as_call(item, "param_groups", "group(ndim = 1, weight_decay = 0)", span)
        if call.name != "group":
            raise DlcError(
                f"param_groups takes group(...) calls, such as group(ndim = 1, weight_decay = 0), got {call.name}(...)",
                call.span or span,
            )
        args = call.bind(GROUP_OPTIONS)
        pats = patterns_of(args["params"], "group: 'params'", args.span("params"))
        ndim = None if args["ndim"] is None else args.check("ndim", integer, low=0)
        if not pats and ndim is None:
            raise DlcError(
                "group needs the parameters it takes: names or patterns (group(\"*.b\", ...)), ndim = k, or both",
                call.span or span,
            )
        decay = None if args["weight_decay"] is None else args.check("weight_decay", number, low=0)
        mult = args.check("lr_mult", number, low=0)
        if decay is None and mult == 1.0:
            raise DlcError("group changes nothing: give it weight_decay or lr_mult", call.span or span)
        hits = [
            n
            for n in shapes
            if (not pats or any(param_matches(n, p) for p in pats)) and (ndim is None or len(shapes[n]) == ndim)
        ]
        if not hits:
            raise DlcError(f"{to_text(call)}: no parameter of the model is in this group", call.span or span)
        members = [n for n in hits if n in trained and n not in taken]
        taken |= set(members)
        groups.append(Group(to_text(call), decay, mult, members, sum(int(numel(shapes[n])) for n in members)))
    return groups


def describe(groups: list, optimizer: Call, trained: list, params: list) -> str:
    """The groups as `dlc summary` shows them: each one's settings and parameters, then the rest."""
    sizes = {p.name: int(numel(p.type.shape)) for p in params}
    grouped = {n for g in groups for n in g.members}
    rest = [n for n in trained if n not in grouped]
    decay = optimizer.kwargs.get("weight_decay")
    lines = [f"Parameter groups ({to_text(optimizer)}):"]
    for g in groups:
        settings = (f"weight_decay {g.weight_decay:g}" if g.weight_decay is not None else "") + (
            f"{', ' if g.weight_decay is not None else ''}lr x{g.lr_mult:g}" if g.lr_mult != 1.0 else ""
        )
        lines.append(
            f"  {g.text}: {settings}; {plural(len(g.members), 'tensor')}, {g.size:,} parameters: " + _names(g.members)
        )
    lines.append(
        f"  the rest: the optimizer's settings{f' (weight_decay {decay:g})' if decay is not None else ''}; "
        f"{plural(len(rest), 'tensor')}, {sum(sizes[n] for n in rest):,} parameters: " + _names(rest)
    )
    return "\n".join(lines)


def _names(names: list, most: int = 8) -> str:
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f", ... ({len(names) - most} more)" if len(names) > most else "")
