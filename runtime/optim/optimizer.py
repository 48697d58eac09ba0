"""What every optimizer is: `Optimizer`, the class the optimizers of runtime/optim/optimizers.py
and runtime/optim/second_order.py subclass.

An optimizer has its options, its state slots, the scalars of a step as torch.optim computes
them in Python floats (`scalars`, written as formulas of the learning rate and the step:
runtime/optim/formula.py, which a `dlc build --train` library prints as C), and `rule`,
which builds its update as a graph over the flat parameter, gradient and state arrays
(compiler/ir/update.py), after the weight decay that every optimizer takes from here:
coupled (added to the gradient) or, with `decoupled`, AdamW's. Its options may differ by
parameter group (runtime/training/groups.py). The engines run that graph: the reference
engine in the interpreter (runtime/engines/reference.py `update`), the native engine
compiled into its step (compiler/native/update.py). Each optimizer keeps its state as named
numpy arrays per parameter ("m", "v", "momentum"), which checkpoints save.

The second-order optimizers are `full_batch`: they have no update graph; a step of theirs
runs many evaluations of the batch's loss, and the engines hand them the step (`step`).
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.ir import ops
from dlc.compiler.ir.update import Update, update_graph
from dlc.compiler.frontend.settings import Call
from dlc.runtime.optim.formula import INT, Formula, python_function, variable
from dlc.runtime.optim.options import clip_limit, option, untuple

# the variables of the per-step scalars: the learning rate and the step's number (from 1)
LR, STEP = variable("lr"), variable("step", INT)


class Optimizer:
    """An optimizer setting (`adam(lr = 1e-3)`) bound to its options; a subclass is one optimizer."""

    name = ""
    options: dict = {}  # option -> default; "lr" is required
    full_batch = False  # a step of its own (`step`) instead of an update graph
    default_lr = 1e-2  # the learning rate of a setting without one (not a required option's)
    # the weight decay shrinks the parameter (param *= 1 - lr * weight_decay, AdamW's) before
    # the rule, instead of adding weight_decay * param to the gradient (torch's L2 form)
    decoupled = False

    def __init__(self, call: Call):
        args = untuple(call, self.options).bind(self.options)
        self.hyper = {opt: option(args, opt, default) for opt, default in self.options.items()}
        if self.hyper.get("nesterov") and not self.hyper["momentum"]:
            raise DlcError(f"{call.name}: nesterov = true needs a momentum > 0", args.span("nesterov"))
        self._graphs: dict = {}
        self._formulas: dict | None = None
        self._scalars = None  # the formulas as a Python function
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
        (runtime/optim/formula.py): each group's, with its learning rate."""
        if self._formulas is None:
            if len(self.groups) == 1:
                self._formulas = self._group_scalars(LR, self.hyper)
            else:
                self._formulas = {
                    f"{k}@{g}": v
                    for g, (h, mult) in enumerate(zip(self.groups, self.lr_mults))
                    for k, v in self._group_scalars(LR * mult, h).items()
                }
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
            u.param = u.param * u.scalar("decay")  # param.mul_(1 - lr * weight_decay)
        elif self.decays:
            u.grad = ops.fma(u.param, self.option(u, "weight_decay"), u.grad)  # grad.add(param, alpha=weight_decay)
        return self.rule(u)

    def graph(
        self,
        n: int,
        l1: float = 0.0,
        l2: float = 0.0,
        clip: Call | None = None,
        norm: bool = False,
        dtype: str = "f32",
        starts: tuple | None = None,
    ):
        """The update graph of n flat parameters (compiler/ir/update.py), built once; `starts`:
        where groups 1, 2, ... begin when the flat arrays hold them one after another."""
        key = (n, l1, l2, clip and (clip.name, clip_limit(clip)), norm, dtype, tuple(map(str, self.groups)), starts)
        if key not in self._graphs:
            self._graphs[key] = update_graph(
                self._decayed_rule, self.slots(), n, l1, l2, key[3], norm, dtype, len(self.groups), starts
            )
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
                    state[n][slot] = flat[at : at + arrays[n].size].reshape(arrays[n].shape)
                    at += arrays[n].size
        return state
