"""The options of the optimizers, the schedules and clipping, checked where they are written:
the allowed values of each number (`LIMITS`), the counts and choices, torch's tuple spellings
(`betas = (0.9, 0.99)`), and the limit of a clipping setting."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import REQUIRED, Call, choice, flag, integer, number, show

# the allowed values of every numeric option of the optimizers, schedules and clipping
LIMITS = {
    "lr": dict(positive=True),
    "momentum": dict(low=0),
    "weight_decay": dict(low=0),
    "eps": dict(positive=True),
    "beta1": dict(low=0, below=1),
    "beta2": dict(low=0, below=1),
    "alpha": dict(low=0, below=1),
    "lr_decay": dict(low=0),
    "every": dict(positive=True),
    "gamma": dict(positive=True),
    "min_lr": dict(low=0),
    "period": dict(positive=True),
    "mult": dict(low=1),
    "warmup": dict(low=0),  # mult < 1 would shrink the restart periods to nothing
    "max": dict(positive=True),
    "damping": dict(low=0),
    "tolerance_grad": dict(low=0),
    "tolerance_change": dict(low=0),
}
COUNTS = ("history", "max_iter", "cg_steps")  # integer options, at least 1
# torch.optim's options that take a tuple, and the options of ours they stand for
TUPLES = {"betas": ("beta1", "beta2")}
CHOICES = {"line_search": ("strong_wolfe", "none")}


def option(args, name: str, default):
    """One checked option of a bound call: a flag when its default is one, a count, a choice
    (`none` written bare is the choice "none"), else a number in LIMITS."""
    if isinstance(default, bool):
        return args.check(name, flag)
    if name in COUNTS:
        return args.check(name, integer, low=1)
    if name in CHOICES:
        if args[name] is None:
            args[name] = "none"
        return args.check(name, choice, options=CHOICES[name])
    return args.check(name, number, **LIMITS[name])


def untuple(call: Call, options: dict) -> Call:
    """The call with torch's tuple spellings (`betas = (0.9, 0.99)`) written as our options (beta1, beta2)."""
    kwargs, spans = dict(call.kwargs), dict(call.arg_spans)
    for spelling, names in TUPLES.items():
        if spelling not in kwargs or not set(names) <= set(options):
            continue
        value, span = kwargs.pop(spelling), spans.pop(spelling, call.span)
        if not isinstance(value, list) or len(value) != len(names):
            raise DlcError(
                f"{call.name}: '{spelling}' must be {len(names)} numbers in parentheses, "
                f"({', '.join(names)}), got {show(value)}",
                span,
            )
        for name, v in zip(names, value):
            if name in kwargs:
                raise DlcError(f"{call.name}: '{name}' is given twice (in '{spelling}' too)", span)
            kwargs[name], spans[name] = v, span
    return Call(call.name, call.args, kwargs, call.span, spans)


def clip_limit(spec: Call) -> float:
    """The limit of global_norm(max) or value(max), checked."""
    if spec.name not in ("global_norm", "value"):
        raise DlcError(f"unknown clipping '{spec.name}' (global_norm or value)", spec.span)
    return option(spec.bind({"max": REQUIRED}), "max", None)
