"""Optimizers, learning-rate schedules, gradient clipping and penalties.

The update rules follow PyTorch's definitions (torch.optim), so a model trained here
and there from the same weights takes the same steps. Each optimizer keeps its state
as named numpy arrays per parameter ("m", "v", "momentum"), which checkpoints save.
"""
from __future__ import annotations

import math

import numpy as np

from dlc.compiler.errors import DlcError
from .config import Call


class Optimizer:
    name = ""
    options: dict = {}            # option -> default; "lr" is required

    def __init__(self, call: Call):
        call.check(list(self.options))
        self.hyper = {}
        for i, (opt, default) in enumerate(self.options.items()):
            kinds = (bool,) if isinstance(default, bool) else (int, float)
            value = call.arg(i, opt, default, kinds)
            if value is None:
                raise DlcError(f"{call.name} needs {opt} = ...", call.span)
            if not isinstance(value, bool) and value < 0:
                raise DlcError(f"{call.name}: {opt} must not be negative, got {value}", call.span)
            self.hyper[opt] = value
        if self.hyper["lr"] <= 0:
            raise DlcError(f"{call.name}: the learning rate must be positive, got {self.hyper['lr']}", call.span)

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
    options = {"lr": None, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def slots(self):
        return ("momentum",) if self.hyper["momentum"] else ()

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        if h["momentum"]:
            buf = s["momentum"]
            buf *= h["momentum"]
            buf += g
            g = g + h["momentum"] * buf if h["nesterov"] else buf
        p -= lr * g


class Momentum(SGD):
    name = "momentum"
    options = {"lr": None, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}


class Nesterov(SGD):
    name = "nesterov"
    options = {"lr": None, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}


class RMSprop(Optimizer):
    name = "rmsprop"
    options = {"lr": None, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}

    def slots(self):
        return ("v", "momentum") if self.hyper["momentum"] else ("v",)

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        v = s["v"]
        v *= h["alpha"]
        v += (1 - h["alpha"]) * g * g
        direction = g / (np.sqrt(v) + h["eps"])
        if h["momentum"]:
            buf = s["momentum"]
            buf *= h["momentum"]
            buf += direction
            direction = buf
        p -= lr * direction


class Adam(Optimizer):
    name = "adam"
    options = {"lr": None, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    decoupled = False

    def slots(self):
        return ("m", "v")

    def apply(self, p, g, s, lr, step):
        h = self.hyper
        if h["weight_decay"]:
            if self.decoupled:
                p *= 1 - lr * h["weight_decay"]
            else:
                g = g + h["weight_decay"] * p
        m, v = s["m"], s["v"]
        m *= h["beta1"]
        m += (1 - h["beta1"]) * g
        v *= h["beta2"]
        v += (1 - h["beta2"]) * g * g
        m_hat = m / (1 - h["beta1"] ** step)
        v_hat = v / (1 - h["beta2"] ** step)
        p -= lr * m_hat / (np.sqrt(v_hat) + h["eps"])


class AdamW(Adam):
    name = "adamw"
    options = {"lr": None, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
    decoupled = True


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam, AdamW)}


def make_optimizer(spec) -> Optimizer:
    call = spec if isinstance(spec, Call) else Call(str(spec), span=None)
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
        call.check(list(options) + ["warmup"])
        self.kind = call.name
        self.opts = {k: call.arg(i, k, d) for i, (k, d) in enumerate(options.items())}
        self.warmup = call.kwargs.get("warmup", 0)
        if not isinstance(self.warmup, (int, float)) or self.warmup < 0:
            raise DlcError(f"{call.name}: warmup must be a number of epochs >= 0", call.span)
        if self.kind == "step" and self.opts["every"] <= 0 or self.kind == "warm_restarts" and self.opts["period"] <= 0:
            raise DlcError(f"{call.name}: the period must be positive", call.span)
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


def make_schedule(spec, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
    call = spec if isinstance(spec, Call) else Call(str(spec or "constant"))
    return Schedule(call, base_lr, steps_per_epoch, epochs)


# ---- gradient transformations ---------------------------------------------------------------------
def add_penalties(grads: dict, params: dict, l1: float, l2: float):
    """Gradients of l1 * sum|p| and l2 * sum p^2 over the trained parameters."""
    for name, g in grads.items():
        if l1:
            g += l1 * np.sign(params[name])
        if l2:
            g += 2 * l2 * params[name]


def clip(grads: dict, spec: Call | None) -> float:
    """Clip in place by global norm or by value; returns the global norm before clipping."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if spec is None:
        return norm
    spec.check(["max"])
    limit = spec.arg(0, "max", None)
    if limit is None or limit <= 0:
        raise DlcError(f"{spec.name} needs a positive limit, as in {spec.name}(1.0)", spec.span)
    if spec.name == "global_norm":
        scale = limit / (norm + 1e-6)
        if scale < 1:
            for g in grads.values():
                g *= scale
    elif spec.name == "value":
        for g in grads.values():
            np.clip(g, -limit, limit, out=g)
    else:
        raise DlcError(f"unknown clipping '{spec.name}' (global_norm or value)", spec.span)
    return norm
