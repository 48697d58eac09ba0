"""Optimizers, learning-rate schedules, gradient clipping and penalties.

The update rules follow PyTorch's (torch.optim, single-tensor CPU path) down to the
rounding: the same float32 operations in the same order, scalars computed in Python
floats as torch does, and one rounding where torch's vectorized kernels fuse a multiply
and an add (`_fma`); so a model trained here and there from the same weights takes the
same steps, and so does the native engine's fused update (compiler/native/update.py).
Each optimizer keeps its state as named numpy arrays per parameter ("m", "v",
"momentum"), which checkpoints save.
"""
from __future__ import annotations

import math

import numpy as np

from dlc.compiler.errors import DlcError, Span
from .config import REQUIRED, Call, as_call, flag, number

# the allowed values of every numeric option of the optimizers, schedules and clipping
LIMITS = {
    "lr": dict(positive=True), "momentum": dict(low=0), "weight_decay": dict(low=0), "eps": dict(positive=True),
    "beta1": dict(low=0, below=1), "beta2": dict(low=0, below=1), "alpha": dict(low=0, below=1),
    "every": dict(positive=True), "gamma": dict(positive=True), "min_lr": dict(low=0), "period": dict(positive=True),
    "mult": dict(low=1), "warmup": dict(low=0),         # mult < 1 would shrink the restart periods to nothing
    "max": dict(positive=True),
}


def _option(args, name: str, default):
    """One checked option of a bound call: a flag when its default is one, else a number in LIMITS."""
    return args.check(name, flag) if isinstance(default, bool) else args.check(name, number, **LIMITS[name])


class Optimizer:
    name = ""
    options: dict = {}            # option -> default; "lr" is required

    def __init__(self, call: Call):
        args = call.bind(self.options)
        self.hyper = {opt: _option(args, opt, default) for opt, default in self.options.items()}
        if self.hyper.get("nesterov") and not self.hyper["momentum"]:
            raise DlcError(f"{call.name}: nesterov = true needs a momentum > 0", args.span("nesterov"))

    @property
    def lr(self) -> float:
        return self.hyper["lr"]

    def slots(self) -> tuple:
        return ()

    def init(self, params: dict) -> dict:
        return {name: {s: np.zeros_like(p) for s in self.slots()} for name, p in params.items()}

    def update(self, params: dict, grads: dict, state: dict, lr: float, step: int):
        """One step (step counts from 1), in place, for the parameters in `grads`."""
        for name, g in grads.items():
            self.apply(params[name], g, state[name], lr, step)

    def apply(self, p, g, s, lr, step):  # pragma: no cover - every optimizer defines it
        raise NotImplementedError


class SGD(Optimizer):
    name = "sgd"
    options = {"lr": REQUIRED, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def slots(self):
        return ("momentum",) if self.hyper["momentum"] else ()

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            g = _fma(p, h["weight_decay"], g)
        if h["momentum"]:
            buf = s["momentum"]
            buf *= h["momentum"]
            buf += g
            g = _fma(buf, h["momentum"], g) if h["nesterov"] else buf
        p[...] = _fma(g, -lr, p)


class Momentum(SGD):
    name = "momentum"
    options = {"lr": REQUIRED, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}


class Nesterov(SGD):
    name = "nesterov"
    options = {"lr": REQUIRED, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}


class RMSprop(Optimizer):
    name = "rmsprop"
    options = {"lr": REQUIRED, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}

    def slots(self):
        return ("v", "momentum") if self.hyper["momentum"] else ("v",)

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            g = _fma(p, h["weight_decay"], g)
        v = s["v"]
        v *= h["alpha"]
        v[...] = _fma((1 - h["alpha"]) * g, g, v)
        avg = np.sqrt(v) + h["eps"]
        if h["momentum"]:
            buf = s["momentum"]
            buf *= h["momentum"]
            buf += g / avg
            p[...] = _fma(buf, -lr, p)
        else:
            p += -lr * g / avg


class Adam(Optimizer):
    name = "adam"
    options = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    decoupled = False

    def slots(self):
        return ("m", "v")

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            if self.decoupled:
                p *= 1 - lr * h["weight_decay"]
            else:
                g = _fma(p, h["weight_decay"], g)
        m, v = s["m"], s["v"]
        m[...] = _lerp(m, g, 1 - h["beta1"])
        v *= h["beta2"]
        v[...] = _fma((1 - h["beta2"]) * g, g, v)
        step_size = lr / (1 - h["beta1"] ** step)
        den = np.sqrt(v) / (1 - h["beta2"] ** step) ** 0.5 + h["eps"]
        p += -step_size * m / den


def _fma(a, b, c):
    """a * b + c rounded once, in c's dtype (scalars rounded to it first). For float32 the
    product is exact in float64 and the sum rounds twice only in ties, vanishingly rare."""
    t = c.dtype
    return (np.multiply(np.asarray(a, t), np.asarray(b, t), dtype=np.float64) + c).astype(t)


def _lerp(start, end, weight: float):
    """torch.lerp: from the nearer end, in one fused multiply-add."""
    w = start.dtype.type(weight)
    return _fma(w, end - start, start) if abs(w) < 0.5 else _fma(w - 1, end - start, end)


class AdamW(Adam):
    name = "adamw"
    options = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
    decoupled = True


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam, AdamW)}


def make_optimizer(spec) -> Optimizer:
    call = as_call(spec, "optimizer", "adam(lr = 1e-3)")
    if call.name not in OPTIMIZERS:
        raise DlcError(f"unknown optimizer '{call.name}' (known: {', '.join(OPTIMIZERS)})", call.span)
    return OPTIMIZERS[call.name](call)


# ---- schedules ---------------------------------------------------------------------------------
class Schedule:
    """The learning rate at every step: a base schedule in epochs, after an optional
    linear warmup from 0 over `warmup` epochs."""

    def __init__(self, call: Call, base_lr: float, steps_per_epoch: int, epochs: int):
        options = SCHEDULES.get(call.name)
        if options is None:
            raise DlcError(f"unknown schedule '{call.name}' (known: {', '.join(SCHEDULES)})", call.span)
        args = call.bind(options | {"warmup": 0})
        self.kind = call.name
        self.opts = {k: _option(args, k, d) for k, d in options.items()}
        self.warmup = _option(args, "warmup", 0)
        self.base, self.per_epoch, self.epochs = base_lr, max(1, steps_per_epoch), epochs

    def __call__(self, step: int) -> float:
        """Learning rate for global step `step` (0-based)."""
        warm = self.warmup * self.per_epoch
        if step < warm:
            return self.base * (step + 1) / warm
        epoch = (step - warm) / self.per_epoch
        total = max(self.epochs - self.warmup, 1e-9)
        o, lr = self.opts, self.base
        if self.kind == "step":
            return lr * o["gamma"] ** math.floor(epoch / o["every"])
        if self.kind == "exponential":
            return lr * o["gamma"] ** math.floor(epoch)
        if self.kind == "cosine":
            return o["min_lr"] + 0.5 * (lr - o["min_lr"]) * (1 + math.cos(math.pi * min(epoch / total, 1.0)))
        if self.kind == "warm_restarts":
            period, t = o["period"], epoch
            while t >= period:
                t -= period
                period *= o["mult"]
            return o["min_lr"] + 0.5 * (lr - o["min_lr"]) * (1 + math.cos(math.pi * t / period))
        return lr       # constant, linear_warmup


SCHEDULES = {
    "constant": {},
    "linear_warmup": {},
    "step": {"every": 10, "gamma": 0.1},
    "exponential": {"gamma": 0.95},
    "cosine": {"min_lr": 0.0},
    "warm_restarts": {"period": 10, "mult": 1, "min_lr": 0.0},
}


def make_schedule(spec, base_lr: float, steps_per_epoch: int, epochs: int, span: Span | None = None) -> Schedule:
    """The schedule a `schedule` setting names (none: constant); `span`, where the setting
    is written, locates the errors of a value that does not carry its own (a string, 0)."""
    call = as_call("constant" if spec is None else spec, "schedule", "cosine(warmup = 1)", span)
    return Schedule(call, base_lr, steps_per_epoch, epochs)


# ---- gradient transformations ---------------------------------------------------------------------
def add_penalties(grads: dict, params: dict, l1: float, l2: float):
    """Gradients of l1 * sum|p| and l2 * sum p^2 over the trained parameters."""
    for name, g in grads.items():
        if l1:
            g += l1 * np.sign(params[name])
        if l2:
            g += 2 * l2 * params[name]


def clip_limit(spec: Call) -> float:
    """The limit of global_norm(max) or value(max), checked."""
    if spec.name not in ("global_norm", "value"):
        raise DlcError(f"unknown clipping '{spec.name}' (global_norm or value)", spec.span)
    return _option(spec.bind({"max": REQUIRED}), "max", None)


def clip(grads: dict, spec: Call | None) -> float:
    """Clip in place by global norm or by value; returns the global norm before clipping."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if spec is None:
        return norm
    limit = clip_limit(spec)
    if spec.name == "global_norm":
        scale = limit / (norm + 1e-6)
        if scale < 1:
            for g in grads.values():
                g *= scale
    else:
        for g in grads.values():
            np.clip(g, -limit, limit, out=g)
    return norm
