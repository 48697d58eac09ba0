"""The optimizer update on the same gradients, step after step: the native engine's
compiled update graph (compiler/native/update.py) keeps exactly the parameters and state
of the reference (the same graph, runtime/optim/optimizers.py, run by the interpreter), and those
are exactly torch.optim's once the interpreter takes torch's float32 sqrt, which is not
correctly rounded (up to 0.55 ulp; 0.7% of results are 1 ulp from IEEE sqrt): the same
operations, in the same order, rounded alike. An optimizer torch.optim lacks (Lion) is held
to the reference alone.

The model's loss is sum(w * g), so the gradient of w is exactly the input g: all three
see the same gradients. 1037 entries: whole vectors and a remainder."""

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.frontend.settings import Call
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.reference import update
from dlc.runtime.optim.optimizers import make_optimizer

N, STEPS = 1037, 6
W0 = np.random.default_rng(3).standard_normal(N).astype(np.float32)
MODEL = f"""
model update_rule {{
    input g: f32[{N}]
    param w: f32[{N}]
    loss sum(w * g)
}}
"""

# (dlc optimizer, its options, the torch.optim class, its options)
CASES = [
    ("adam", {"lr": 1e-2}, "Adam", {}),
    ("adam", {"lr": 1e-2, "beta1": 0.4, "weight_decay": 0.1}, "Adam", {"betas": (0.4, 0.999), "weight_decay": 0.1}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}, "AdamW", {"weight_decay": 0.1}),
    ("rmsprop", {"lr": 1e-3}, "RMSprop", {}),
    (
        "rmsprop",
        {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01},
        "RMSprop",
        {"momentum": 0.9, "weight_decay": 0.01},
    ),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}, "SGD", {"weight_decay": 0.01}),
    ("momentum", {"lr": 0.1}, "SGD", {"momentum": 0.9}),
    ("nesterov", {"lr": 0.1, "weight_decay": 0.01}, "SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adagrad", {"lr": 1e-2}, "Adagrad", {}),
    (
        "adagrad",
        {"lr": 1e-2, "lr_decay": 0.1, "weight_decay": 0.01},
        "Adagrad",
        {"lr_decay": 0.1, "weight_decay": 0.01},
    ),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]
# optimizers torch.optim does not have: (dlc optimizer, its options), against the reference only
NOT_IN_TORCH = [("lion", {"lr": 1e-3}), ("lion", {"lr": 1e-3, "beta1": 0.5, "weight_decay": 0.1})]
# dlc's optimizer state -> torch's, per torch class
ADAM_STATE = {"m": "exp_avg", "v": "exp_avg_sq"}
TORCH_STATE = {
    "Adam": ADAM_STATE,
    "AdamW": ADAM_STATE,
    "RMSprop": {"v": "square_avg", "momentum": "momentum_buffer"},
    "SGD": {"momentum": "momentum_buffer"},
    "Adagrad": {"sum": "sum"},
}


def gradients():
    """Gradients over four decades of magnitude, some exactly zero."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(STEPS):
        g = rng.standard_normal(N) * 10.0 ** rng.uniform(-4, 0, N)
        g[rng.random(N) < 0.05] = 0
        out.append(g.astype(np.float32))
    return out


def native_steps(name, opts):
    """(parameters, state) after every step of the native engine's fused update."""
    program = load_text(MODEL)
    train = program.build(training=True)
    opt = make_optimizer(Call(name, [], opts))
    engine = NativeEngine(train, program.build(training=False), opt, ["w"])
    params = {"w": W0.copy()}
    state = opt.init(params)
    for t, g in enumerate(gradients(), 1):
        engine.train_step(params, state, {"g": g}, opts["lr"], t, np.array([0, t], np.int32))
        yield params["w"].copy(), {k: v.copy() for k, v in state["w"].items()}


def reference_steps(name, opts):
    opt = make_optimizer(Call(name, [], opts))
    params = {"w": W0.copy()}
    state = opt.init(params)
    for t, g in enumerate(gradients(), 1):
        update(opt, params, {"w": g.copy()}, state, opts["lr"], t)
        yield params["w"].copy(), {k: v.copy() for k, v in state["w"].items()}


def torch_steps(torch, cls, opts, lr, slots):
    w = torch.tensor(W0)
    opt = getattr(torch.optim, cls)([w], lr=lr, **opts)
    for g in gradients():
        w.grad = torch.from_numpy(g)
        opt.step()
        yield w.numpy().copy(), {s: opt.state[w][TORCH_STATE[cls][s]].numpy().copy() for s in slots}


def assert_same_steps(ours, theirs, what):
    for t, ((p, s), (q, r)) in enumerate(zip(ours, theirs, strict=True), 1):
        assert s.keys() == r.keys()
        for key, a, b in [("w", p, q)] + [(k, s[k], r[k]) for k in s]:
            try:
                np.testing.assert_array_equal(a, b)
            except AssertionError as e:
                raise AssertionError(f"{what}, step {t}, {key}: {e}") from None


@pytest.mark.parametrize(
    "name, opts",
    [c[:2] for c in CASES] + NOT_IN_TORCH,
    ids=IDS + [f"{c[0]}-{i}" for i, c in enumerate(NOT_IN_TORCH, len(CASES))],
)
def test_native_update_is_the_reference_rule(name, opts):
    assert_same_steps(native_steps(name, opts), reference_steps(name, opts), "native vs runtime/optim/optimizers.py")


@pytest.mark.parametrize("name, opts, cls, torch_opts", CASES, ids=IDS)
def test_reference_update_is_torch_rule(name, opts, cls, torch_opts, monkeypatch):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    # the reference update with torch's float32 sqrt, which is not correctly rounded: then to the bit
    monkeypatch.setattr(PRIMITIVES["sqrt"], "impl", lambda ctx, xs: [torch.from_numpy(np.array(xs[0])).sqrt().numpy()])
    slots = make_optimizer(Call(name, [], opts)).slots()
    assert_same_steps(
        reference_steps(name, opts),
        torch_steps(torch, cls, torch_opts, opts["lr"], slots),
        "runtime/optim/optimizers.py (torch's sqrt) vs torch.optim",
    )
