"""Optimizers, learning-rate schedules and the clipping setting.

Each optimizer is one class: its options, its state slots, the scalars of a step as
torch.optim computes them in Python floats (`scalars`, written as formulas of the learning
rate and the step: runtime/engines/formula.py, which a `dlc build --train` library prints
as C), and `rule`, which builds its update as a graph over the flat parameter, gradient
and state arrays (compiler/ir/update.py), after the weight decay that every optimizer
takes from `Optimizer`: coupled (added to the gradient) or, with `decoupled`, AdamW's.
The rules follow PyTorch's (torch.optim, single-tensor CPU path) down to the rounding:
the same float32 operations in the same order, and one rounding (ops.fma) where torch's
vectorized kernels fuse a multiply and an add; so a model trained here and there from
the same weights takes the same steps. The reference engine runs that graph with the
interpreter (`Optimizer.update`), the native engine compiles it into its step
(compiler/native/update.py). Each optimizer keeps its state as named numpy arrays per
parameter ("m", "v", "momentum"), which checkpoints save.

The second-order optimizers (`LBFGS`, `Newton`) are `full_batch`: they have no update graph;
a step of theirs runs many evaluations of the batch's loss (runtime/engines/second_order.py),
and the engines hand them the step (`step`).

A schedule is one function of the steps after its warmup (`@schedule`), a formula too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.ir.update import GROUP, NORM, Update, lerp, update_graph
from dlc.compiler.frontend.settings import REQUIRED, Call, as_call, choice, flag, integer, number, show
from dlc.runtime.engines.formula import (INT, Formula, cos, floor, loop, maximum, minimum, python_function, select,
                                         variable)

# the allowed values of every numeric option of the optimizers, schedules and clipping
LIMITS = {
    "lr": dict(positive=True), "momentum": dict(low=0), "weight_decay": dict(low=0), "eps": dict(positive=True),
    "beta1": dict(low=0, below=1), "beta2": dict(low=0, below=1), "alpha": dict(low=0, below=1),
    "lr_decay": dict(low=0),
    "every": dict(positive=True), "gamma": dict(positive=True), "min_lr": dict(low=0), "period": dict(positive=True),
    "mult": dict(low=1), "warmup": dict(low=0),         # mult < 1 would shrink the restart periods to nothing
    "max": dict(positive=True),
    "damping": dict(low=0), "tolerance_grad": dict(low=0), "tolerance_change": dict(low=0),
}
COUNTS = ("history", "max_iter", "cg_steps")        # integer options, at least 1
# torch.optim's options that take a tuple, and the options of ours they stand for
TUPLES = {"betas": ("beta1", "beta2")}
CHOICES = {"line_search": ("strong_wolfe", "none")}


def _option(args, name: str, default):
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


def _untuple(call: Call, options: dict) -> Call:
    """The call with torch's tuple spellings (`betas = (0.9, 0.99)`) written as our options (beta1, beta2)."""
    kwargs, spans = dict(call.kwargs), dict(call.arg_spans)
    for spelling, names in TUPLES.items():
        if spelling not in kwargs or not set(names) <= set(options):
            continue
        value, span = kwargs.pop(spelling), spans.pop(spelling, call.span)
        if not isinstance(value, list) or len(value) != len(names):
            raise DlcError(f"{call.name}: '{spelling}' must be {len(names)} numbers in parentheses, "
                           f"({', '.join(names)}), got {show(value)}", span)
        for name, v in zip(names, value):
            if name in kwargs:
                raise DlcError(f"{call.name}: '{name}' is given twice (in '{spelling}' too)", span)
            kwargs[name], spans[name] = v, span
    return Call(call.name, call.args, kwargs, call.span, spans)


# the variables of the per-step scalars: the learning rate and the step's number (from 1)
LR, STEP = variable("lr"), variable("step", INT)


class Optimizer:
    name = ""
    options: dict = {}            # option -> default; "lr" is required
    full_batch = False            # a step of its own (`step`) instead of an update graph
    default_lr = 1e-2             # the learning rate of a setting without one (not a required option's)
    # the weight decay shrinks the parameter (param *= 1 - lr * weight_decay, AdamW's) before
    # the rule, instead of adding weight_decay * param to the gradient (torch's L2 form)
    decoupled = False

    def __init__(self, call: Call):
        args = _untuple(call, self.options).bind(self.options)
        self.hyper = {opt: _option(args, opt, default) for opt, default in self.options.items()}
        if self.hyper.get("nesterov") and not self.hyper["momentum"]:
            raise DlcError(f"{call.name}: nesterov = true needs a momentum > 0", args.span("nesterov"))
        self._graphs: dict = {}
        self._formulas: dict | None = None
        self._scalars = None            # the formulas as a Python function
        # the parameter groups (groups.py): the settings of each, the optimizer's own first
        self.groups, self.lr_mults, self.group_of = [self.hyper], [1.0], {}

    def set_groups(self, groups: list):
        """Train the parameters of each Group (runtime/training/groups.py) with its settings."""
        if groups and self.full_batch:
            raise DlcError(f"{self.name} takes no param_groups: it has no per-parameter update")
        for g in groups:
            self.groups.append(self.hyper | ({} if g.weight_decay is None else {"weight_decay": g.weight_decay}))
            self.lr_mults.append(g.lr_mult)
            self.group_of.update({name: len(self.groups) - 1 for name in g.members})
        self._formulas = self._scalars = None

    def group_index(self, names: list, sizes: list) -> np.ndarray | None:
        """The group of every element of the flat concatenation of `names` (None: one group)."""
        if len(self.groups) == 1:
            return None
        return np.repeat(np.array([self.group_number(n) for n in names], np.int32), sizes)

    def group_number(self, name: str) -> int:
        """The parameter group of parameter `name` (0: the optimizer's own settings)."""
        return self.group_of.get(name, 0)

    def option(self, u: Update, name: str):
        """An option as the rule reads it: a number, or per element when the groups differ in it."""
        return u.per_group([h[name] for h in self.groups])

    def step_scalars(self, lr: float, step: int) -> dict:
        """The scalars every input of the update graph is fed, in Python floats."""
        if self._scalars is None:
            self._scalars = python_function(self.step_formulas(), [LR, STEP])
        return self._scalars(lr, step)

    def step_formulas(self) -> dict:
        """The scalars every input of the update graph is fed, as formulas of LR and STEP
        (runtime/engines/formula.py): each group's, with its learning rate."""
        if self._formulas is None:
            if len(self.groups) == 1:
                self._formulas = self._group_scalars(LR, self.hyper)
            else:
                self._formulas = {f"{k}@{g}": v for g, (h, mult) in enumerate(zip(self.groups, self.lr_mults))
                                  for k, v in self._group_scalars(LR * mult, h).items()}
        return self._formulas

    def _group_scalars(self, lr: Formula, h: dict) -> dict:
        decay = {"decay": 1 - lr * h["weight_decay"]} if self.decoupled and "weight_decay" in h else {}
        return self.scalars(lr, STEP, h) | decay

    @property
    def lr(self) -> float:
        return self.hyper["lr"]

    @property
    def decays(self) -> bool:
        """Whether some group has a weight decay."""
        return any(h.get("weight_decay") for h in self.groups)

    def slots(self) -> tuple:
        return ()

    def scalars(self, lr: Formula, step: Formula, h: dict) -> dict:
        """The per-step scalars the rule reads (Update.scalar) as formulas of the learning
        rate `lr` and the step `step` (from 1), for a group of options `h`, computed as torch
        computes them in Python floats (a decoupled weight decay's `decay` is Optimizer's)."""
        return {"lr": lr}

    def rule(self, u: Update) -> tuple:  # pragma: no cover - every optimizer defines it
        """(new parameter, {slot: new state}) from u's flat arrays, the weight decay applied."""
        raise NotImplementedError

    def _decayed_rule(self, u: Update) -> tuple:
        """The rule after the weight decay, the one place it is written."""
        if self.decays and self.decoupled:
            u.param = u.param * u.scalar("decay")                       # param.mul_(1 - lr * weight_decay)
        elif self.decays:
            u.grad = ops.fma(u.param, self.option(u, "weight_decay"), u.grad)   # grad.add(param, alpha=weight_decay)
        return self.rule(u)

    def graph(self, n: int, l1: float = 0.0, l2: float = 0.0, clip: Call | None = None, norm: bool = False,
              dtype: str = "f32", starts: tuple | None = None):
        """The update graph of n flat parameters (compiler/ir/update.py), built once; `starts`:
        where groups 1, 2, ... begin when the flat arrays hold them one after another."""
        key = (n, l1, l2, clip and (clip.name, clip_limit(clip)), norm, dtype, tuple(map(str, self.groups)), starts)
        if key not in self._graphs:
            self._graphs[key] = update_graph(self._decayed_rule, self.slots(), n, l1, l2, key[3], norm, dtype,
                                             len(self.groups), starts)
        return self._graphs[key]

    def init(self, params: dict) -> dict:
        """Zeros: the state of each slot is one allocation per dtype, of which every
        parameter's is a view, so it takes no memory until it is written (the native
        engine copies it into its own arrays: GPT-2's two Adam slots, 680 MB, were
        written twice)."""
        arrays = {name: np.asarray(p) for name, p in params.items()}
        state: dict = {name: {} for name in params}
        for slot in self.slots():
            for dtype in {a.dtype for a in arrays.values()}:
                names = [n for n, a in arrays.items() if a.dtype == dtype]
                flat, at = np.zeros(sum(arrays[n].size for n in names), dtype), 0
                for n in names:
                    state[n][slot] = flat[at:at + arrays[n].size].reshape(arrays[n].shape)
                    at += arrays[n].size
        return state

    def update(self, params: dict, grads: dict, state: dict, lr: float, step: int, l1: float = 0.0,
               l2: float = 0.0, clip: Call | None = None) -> float:
        """One step (step counts from 1), in place, for the parameters in `grads`, by the
        interpreter on their flat concatenation; returns the gradient's global norm. In
        float32, or float64 when a parameter is (a check by hand)."""
        names = list(grads)
        if not names:
            return 0.0
        dtype = "f64" if any(np.asarray(params[n]).dtype == np.float64 for n in names) else "f32"
        flat = lambda arrays: np.concatenate([np.asarray(a, DTYPES[dtype]).ravel() for a in arrays])
        feeds = {"param": flat(params[n] for n in names), "grad": flat(grads[n] for n in names),
                 **{s: flat(state[n][s] for n in names) for s in self.slots()}, **self.step_scalars(lr, step)}
        group = self.group_index(names, [np.size(grads[n]) for n in names])
        if group is not None:
            feeds[GROUP] = group
        from dlc.runtime.engines import interpreter     # what runs a step, not what checks a setting (dlc check)
        out = interpreter.run(self.graph(feeds["param"].size, l1, l2, clip, True, dtype), feeds, {}, float_dtype=None)
        at = 0
        for n in names:
            size = np.size(grads[n])
            params[n][...] = out["param"][at:at + size].reshape(np.shape(params[n]))
            for s in self.slots():
                state[n][s][...] = out[s][at:at + size].reshape(np.shape(state[n][s]))
            at += size
        return float(out[NORM])


class SGD(Optimizer):
    name = "sgd"
    options = {"lr": REQUIRED, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def slots(self):
        return ("momentum",) if self.hyper["momentum"] else ()

    def rule(self, u):
        h, g, new = self.hyper, u.grad, {}
        if h["momentum"]:
            buf = new["momentum"] = u.state["momentum"] * h["momentum"] + g     # buf.mul_(momentum).add_(g)
            g = ops.fma(buf, h["momentum"], g) if h["nesterov"] else buf
        return ops.fma(g, -u.scalar("lr"), u.param), new                # param.add_(g, alpha=-lr)


class Momentum(SGD):
    name = "momentum"
    options = {"lr": REQUIRED, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}


class Nesterov(SGD):
    name = "nesterov"
    options = {"lr": REQUIRED, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}


class RMSprop(Optimizer):
    name = "rmsprop"
    default_lr = 1e-3
    options = {"lr": REQUIRED, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}

    def slots(self):
        return ("v", "momentum") if self.hyper["momentum"] else ("v",)

    def rule(self, u):
        h, g, p = self.hyper, u.grad, u.param
        v = ops.fma((1 - h["alpha"]) * g, g, u.state["v"] * h["alpha"])    # v.mul_(alpha).addcmul_(g, g, 1 - alpha)
        avg = ops.unary("sqrt", v) + h["eps"]
        if h["momentum"]:                                               # buf.mul_(momentum).addcdiv_(g, avg)
            buf = u.state["momentum"] * h["momentum"] + g / avg
            return ops.fma(buf, -u.scalar("lr"), p), {"v": v, "momentum": buf}
        return p + -u.scalar("lr") * g / avg, {"v": v}                  # param.addcdiv_(g, avg, value=-lr)


class Adam(Optimizer):
    name = "adam"
    default_lr = 1e-3
    options = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}

    def slots(self):
        return ("m", "v")

    def scalars(self, lr, step, h):
        return {"lr": lr, "step_size": lr / (1 - h["beta1"] ** step), "bias2_sqrt": (1 - h["beta2"] ** step) ** 0.5}

    def rule(self, u):
        h, g, p = self.hyper, u.grad, u.param
        m = lerp(u.state["m"], g, 1 - h["beta1"])                       # m.lerp_(g, 1 - beta1)
        v = ops.fma((1 - h["beta2"]) * g, g, u.state["v"] * h["beta2"])     # v.mul_(beta2).addcmul_(g, g, 1 - beta2)
        den = ops.unary("sqrt", v) / u.scalar("bias2_sqrt") + h["eps"]
        return p + -u.scalar("step_size") * m / den, {"m": m, "v": v}   # param.addcdiv_(m, den, -step_size)


class AdamW(Adam):
    name = "adamw"
    options = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
    decoupled = True


class Adagrad(Optimizer):
    name = "adagrad"
    options = {"lr": REQUIRED, "lr_decay": 0.0, "weight_decay": 0.0, "eps": 1e-10}

    def slots(self):
        return ("sum",)

    def scalars(self, lr, step, h):
        return {"lr": lr / (1 + (step - 1) * h["lr_decay"])}

    def rule(self, u):
        h, g, p = self.hyper, u.grad, u.param
        total = ops.fma(g, g, u.state["sum"])                           # sum.addcmul_(g, g, value=1)
        std = ops.unary("sqrt", total) + h["eps"]
        return p + -u.scalar("lr") * g / std, {"sum": total}            # param.addcdiv_(g, std, value=-clr)


class Lion(Optimizer):
    """Lion ("Symbolic Discovery of Optimization Algorithms", Chen et al. 2023) as
    lion-pytorch computes it: the step is lr times the sign of the momentum moved towards
    the gradient by 1 - beta1; then the momentum moves towards the gradient by 1 - beta2.
    Its steps are larger than Adam's for the same rate: it takes a smaller one."""
    name = "lion"
    options = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}
    decoupled = True
    default_lr = 1e-4

    def slots(self):
        return ("m",)

    def rule(self, u):
        h, g, m = self.hyper, u.grad, u.state["m"]
        update = ops.unary("sign", ops.fma(g, 1 - h["beta1"], m * h["beta1"]))   # m * beta1 + (1 - beta1) * g
        m = ops.fma(g, 1 - h["beta2"], m * h["beta2"])                  # m.mul_(beta2).add_(g, alpha=1 - beta2)
        return ops.fma(update, -u.scalar("lr"), u.param), {"m": m}      # param.add_(update.sign_(), alpha=-lr)


class LBFGS(Optimizer):
    """torch.optim.LBFGS (its `history_size` is `history`, `line_search_fn` `line_search`), with
    trial steps whose loss or gradient is not finite halved instead of taken. Its memory
    lives in the optimizer, not in checkpoints: a resumed run starts it afresh."""
    name = "lbfgs"
    options = {"lr": 1.0, "history": 10, "max_iter": 20, "line_search": "strong_wolfe", "tolerance_grad": 1e-7,
               "tolerance_change": 1e-9}
    full_batch = True

    def __init__(self, call: Call):
        super().__init__(call)
        from dlc.runtime.engines import second_order     # the algorithms run a step: not imported to check a setting
        self.memory = second_order.LbfgsMemory()

    def step(self, engine, params: dict, opt_state: dict, batch: dict, lr: float, key) -> dict:
        """Up to `max_iter` iterations on `batch`, in place; the loss and metrics before them."""
        from dlc.runtime.engines import second_order
        objective = second_order.Objective(engine, params, opt_state, batch, key)
        second_order.lbfgs(objective, self.memory, **(self.hyper | {"lr": lr}))
        return objective.first


class Newton(Optimizer):
    """Newton's method: (H + damping I) p = -g by `cg_steps` of conjugate gradients on
    Hessian-vector products, then x + lr p."""
    name = "newton"
    options = {"lr": 1.0, "damping": 1e-3, "cg_steps": 20}
    full_batch = True

    def step(self, engine, params: dict, opt_state: dict, batch: dict, lr: float, key) -> dict:
        """One Newton step on `batch`, in place; the loss and metrics before it."""
        from dlc.runtime.engines import second_order
        objective = second_order.Objective(engine, params, opt_state, batch, key)
        second_order.newton(objective, **(self.hyper | {"lr": lr}))
        return objective.first


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam, AdamW, Adagrad, Lion, LBFGS, Newton)}


def make_optimizer(spec) -> Optimizer:
    call = as_call(spec, "optimizer", "adam(lr = 1e-3)")
    if call.name not in OPTIMIZERS:
        raise DlcError(f"unknown optimizer '{call.name}'{did_you_mean(call.name, OPTIMIZERS)} "
                       f"(known: {', '.join(OPTIMIZERS)})", call.span)
    return OPTIMIZERS[call.name](call)


# ---- schedules ---------------------------------------------------------------------------------
# the variables of a schedule's formula: the step (from 0), the steps of an epoch and of the run
STEP0, PER_EPOCH, TOTAL = variable("step", INT), variable("per_epoch"), variable("total")
SCHEDULES: dict = {}        # name -> its options (defaults)
_RATES: dict = {}           # name -> (its rate after the warmup, whether it decays: takes decay_steps)


@dataclass
class After:
    """What a schedule's rate after the warmup is a formula of: the base rate `lr`, the
    steps `after` the warmup, the warmup's steps `warm`, `end` (decay_steps, else the run's
    total) and `span(epochs)`, the steps of that many epochs (decay_steps when given)."""
    lr: float
    after: Formula
    warm: object
    end: object
    decay_steps: int | None

    def span(self, epochs):
        return self.decay_steps if self.decay_steps is not None else epochs * PER_EPOCH


def schedule(name: str, decays: bool = True, **options):
    """Registers a schedule: `rate(o, t)`, its learning rate after the warmup from its options
    `o` and `t` (After); the steps of a setting without decay_steps count in epochs. One that
    does not `decays` refuses decay_steps."""
    def register(rate):
        SCHEDULES[name], _RATES[name] = options, (rate, decays)
        return rate
    return register


@schedule("linear_warmup", decays=False)         # (decorators apply from the bottom: constant is the first)
@schedule("constant", decays=False)
def _base_rate(o, t):
    """The base rate: linear_warmup is constant after its warmup."""
    return t.lr


@schedule("step", every=10, gamma=0.1)
def _step_decay(o, t):
    """gamma times smaller every `every` epochs."""
    return t.lr * o["gamma"] ** floor(t.after / t.span(o["every"]))


@schedule("exponential", gamma=0.95)
def _exponential(o, t):
    """gamma times smaller every epoch."""
    return t.lr * o["gamma"] ** floor(t.after / t.span(1))


@schedule("cosine", min_lr=0.0)
def _cosine(o, t):
    """Half a cosine from lr down to min_lr at `end`, then min_lr."""
    progress = minimum(t.after / maximum(t.end - t.warm, 1e-9), 1.0)
    return o["min_lr"] + 0.5 * (t.lr - o["min_lr"]) * (1 + cos(math.pi * progress))


@schedule("warm_restarts", period=10, mult=1, min_lr=0.0)
def _warm_restarts(o, t):
    """A cosine from lr to min_lr over `period` epochs, restarted, each period `mult` times the last."""
    into, period = loop(lambda into, period: into >= period, lambda into, period: (into - period, period * o["mult"]),
                        t.after, t.span(o["period"]))
    return o["min_lr"] + 0.5 * (t.lr - o["min_lr"]) * (1 + cos(math.pi * into / period))


class Schedule:
    """The learning rate at every step: a base schedule, after an optional linear warmup from
    0 over `warmup` epochs or `warmup_steps` steps (capped at the base rate, however short).
    The base schedules count in epochs of `steps_per_epoch` steps, or in steps with
    `decay_steps`: the steps of one decay of `step` and `exponential`, the first period of
    `warm_restarts`, the step at which `cosine` reaches min_lr. A run of `total` steps
    (max_steps, else epochs x steps per epoch) is what `cosine` decays over by default.
    The rate is one formula (`formula`) of the step, the steps per epoch and the total, which
    a `dlc build --train` library computes in C with the numbers it is given."""

    def __init__(self, call: Call, base_lr: float, steps_per_epoch: int, epochs: int, total: int | None = None):
        options = SCHEDULES.get(call.name)
        if options is None:
            raise DlcError(f"unknown schedule '{call.name}'{did_you_mean(call.name, SCHEDULES)} "
                           f"(known: {', '.join(SCHEDULES)})", call.span)
        args = call.bind(options | WARMUP)
        self.name = call.name
        self.opts = {k: _option(args, k, d) for k, d in options.items()}
        self.per_epoch = max(1, steps_per_epoch)
        if args["warmup_steps"] is not None and args["warmup"]:
            raise DlcError(f"{call.name}: give warmup (epochs) or warmup_steps, not both", args.span("warmup_steps"))
        # the warmup's steps, a formula of the steps per epoch when counted in epochs
        warm = (args.check("warmup_steps", integer, low=0) if args["warmup_steps"] is not None
                else _option(args, "warmup", 0) * PER_EPOCH)
        decay_steps = None
        if args["decay_steps"] is not None:
            if not _RATES[call.name][1]:
                decaying = [n for n, (_, decays) in _RATES.items() if decays]
                raise DlcError(f"{call.name} does not decay: decay_steps is for {', '.join(decaying[:-1])} and "
                               f"{decaying[-1]}", args.span("decay_steps"))
            decay_steps = args.check("decay_steps", integer, low=1)
        self.base = base_lr
        self.total = total if total is not None else epochs * self.per_epoch
        # the numbers end() reports: the warmup in steps of this run, and decay_steps
        self.warm = args["warmup_steps"] if args["warmup_steps"] is not None else _option(args, "warmup", 0) * self.per_epoch
        self.decay_steps = decay_steps
        t = After(base_lr, STEP0 - warm, warm, TOTAL if decay_steps is None else decay_steps, decay_steps)
        self.formula = select(STEP0 < warm, base_lr * minimum(1.0, (STEP0 + 1) / warm), _RATES[self.name][0](self.opts, t))
        self._rate = python_function({"lr": self.formula}, [STEP0, PER_EPOCH, TOTAL])

    def end(self) -> tuple[int, float] | None:
        """(the step from which the rate no longer changes, that final rate) of a schedule that
        decays to an end: cosine, at decay_steps or the run's end. None for those that decay
        for ever (step, exponential), cycle (warm_restarts) or do not decay."""
        if self.name != "cosine":
            return None
        end = self.decay_steps if self.decay_steps is not None else self.total
        return max(end, self.warm), self.opts["min_lr"]

    def __call__(self, step: int) -> float:
        """Learning rate for global step `step` (0-based)."""
        return self._rate(step, self.per_epoch, self.total)["lr"]


WARMUP = {"warmup": 0, "warmup_steps": None, "decay_steps": None}     # options of every schedule


def make_schedule(spec, base_lr: float, steps_per_epoch: int, epochs: int, span: Span | None = None,
                  total: int | None = None) -> Schedule:
    """The schedule a `schedule` setting names (none: constant); `span`, where the setting
    is written, locates the errors of a value that does not carry its own (a string, 0).
    `total`: the run's steps when it is counted in steps (max_steps)."""
    call = as_call("constant" if spec is None else spec, "schedule", "cosine(warmup = 1)", span)
    return Schedule(call, base_lr, steps_per_epoch, epochs, total)


# ---- clipping ------------------------------------------------------------------------------------
def clip_limit(spec: Call) -> float:
    """The limit of global_norm(max) or value(max), checked."""
    if spec.name not in ("global_norm", "value"):
        raise DlcError(f"unknown clipping '{spec.name}' (global_norm or value)", spec.span)
    return _option(spec.bind({"max": REQUIRED}), "max", None)
