"""The optimizers a train block names (`optimizer = adam(lr = 1e-3)`): each first-order one a
class here (its options, state slots, per-step scalars and update rule: runtime/optim/optimizer.py
says what each is), and `OPTIMIZERS`, every optimizer by its name, the second-order ones
(runtime/optim/second_order.py) too.

The rules follow PyTorch's (torch.optim, single-tensor CPU path) down to the rounding: the
same float32 operations in the same order, and one rounding (ops.fma) where torch's
vectorized kernels fuse a multiply and an add; so a model trained here and there from the
same weights takes the same steps.
"""

from __future__ import annotations

from dlc.compiler.errors import DlcError, did_you_mean
from dlc.compiler.ir import ops
from dlc.compiler.ir.update import lerp
from dlc.compiler.frontend.settings import REQUIRED, as_call
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.optim.second_order import LBFGS, Newton


class SGD(Optimizer):
    name = "sgd"
    options = {"lr": REQUIRED, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def slots(self):
        return ("momentum",) if self.hyper["momentum"] else ()

    def rule(self, u):
        h, g, new = self.hyper, u.grad, {}
        if h["momentum"]:
            buf = new["momentum"] = u.state["momentum"] * h["momentum"] + g  # buf.mul_(momentum).add_(g)
            g = ops.fma(buf, h["momentum"], g) if h["nesterov"] else buf
        return ops.fma(g, -u.scalar("lr"), u.param), new  # param.add_(g, alpha=-lr)


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
        v = ops.fma((1 - h["alpha"]) * g, g, u.state["v"] * h["alpha"])  # v.mul_(alpha).addcmul_(g, g, 1 - alpha)
        avg = ops.unary("sqrt", v) + h["eps"]
        if h["momentum"]:  # buf.mul_(momentum).addcdiv_(g, avg)
            buf = u.state["momentum"] * h["momentum"] + g / avg
            return ops.fma(buf, -u.scalar("lr"), p), {"v": v, "momentum": buf}
        return p + -u.scalar("lr") * g / avg, {"v": v}  # param.addcdiv_(g, avg, value=-lr)


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
        m = lerp(u.state["m"], g, 1 - h["beta1"])  # m.lerp_(g, 1 - beta1)
        v = ops.fma((1 - h["beta2"]) * g, g, u.state["v"] * h["beta2"])  # v.mul_(beta2).addcmul_(g, g, 1 - beta2)
        den = ops.unary("sqrt", v) / u.scalar("bias2_sqrt") + h["eps"]
        return p + -u.scalar("step_size") * m / den, {"m": m, "v": v}  # param.addcdiv_(m, den, -step_size)


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
        total = ops.fma(g, g, u.state["sum"])  # sum.addcmul_(g, g, value=1)
        std = ops.unary("sqrt", total) + h["eps"]
        return p + -u.scalar("lr") * g / std, {"sum": total}  # param.addcdiv_(g, std, value=-clr)


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
        update = ops.unary("sign", ops.fma(g, 1 - h["beta1"], m * h["beta1"]))  # m * beta1 + (1 - beta1) * g
        m = ops.fma(g, 1 - h["beta2"], m * h["beta2"])  # m.mul_(beta2).add_(g, alpha=1 - beta2)
        return ops.fma(update, -u.scalar("lr"), u.param), {"m": m}  # param.add_(update.sign_(), alpha=-lr)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam, AdamW, Adagrad, Lion, LBFGS, Newton)}


def make_optimizer(spec) -> Optimizer:
    call = as_call(spec, "optimizer", "adam(lr = 1e-3)")
    if call.name not in OPTIMIZERS:
        raise DlcError(
            f"unknown optimizer '{call.name}'{did_you_mean(call.name, OPTIMIZERS)} (known: {', '.join(OPTIMIZERS)})",
            call.span,
        )
    return OPTIMIZERS[call.name](call)
