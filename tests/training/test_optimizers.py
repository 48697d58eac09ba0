"""Every optimizer and schedule against values computed by hand (numpy, written out
step by step), on the tiny problem loss = sum(w * w * c) / 2 whose gradient is w * c."""

import math

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import Call
from dlc.runtime.engines.reference import update
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.optim.schedules import make_schedule

C = np.array([1.0, 3.0])
W0 = np.array([1.0, -2.0])


def run(name, steps=3, **kw):
    opt = make_optimizer(Call(name, [], kw))
    p = {"w": W0.copy()}
    state = opt.init(p)
    for t in range(1, steps + 1):
        update(opt, p, {"w": p["w"] * C}, state, opt.lr, t)
    return p["w"]


def by_hand_sgd(lr, momentum=0.0, nesterov=False, wd=0.0):
    w, buf = W0.copy(), np.zeros(2)
    for _ in range(3):
        g = w * C + wd * w
        if momentum:
            buf = momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def test_sgd():
    np.testing.assert_allclose(run("sgd", lr=0.1), by_hand_sgd(0.1), rtol=1e-12)
    # three steps of plain gradient descent: w_i * (1 - lr c_i)^3
    np.testing.assert_allclose(run("sgd", lr=0.1), W0 * (1 - 0.1 * C) ** 3, rtol=1e-12)


def test_momentum_and_nesterov():
    np.testing.assert_allclose(run("momentum", lr=0.1), by_hand_sgd(0.1, 0.9), rtol=1e-12)
    np.testing.assert_allclose(run("sgd", lr=0.1, momentum=0.5), by_hand_sgd(0.1, 0.5), rtol=1e-12)
    np.testing.assert_allclose(run("nesterov", lr=0.1), by_hand_sgd(0.1, 0.9, True), rtol=1e-12)
    np.testing.assert_allclose(run("sgd", lr=0.1, weight_decay=0.01), by_hand_sgd(0.1, wd=0.01), rtol=1e-12)
    # first momentum step equals plain SGD; the second adds 0.9 of the first
    w1 = W0 - 0.1 * W0 * C
    w2 = w1 - 0.1 * (0.9 * W0 * C + w1 * C)
    np.testing.assert_allclose(run("momentum", steps=2, lr=0.1), w2, rtol=1e-12)


def test_rmsprop():
    w, v = W0.copy(), np.zeros(2)
    for _ in range(3):
        g = w * C
        v = 0.99 * v + 0.01 * g * g
        w = w - 0.01 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(run("rmsprop", lr=0.01), w, rtol=1e-12)
    # first step: v = 0.01 g^2, so the step is lr * g / (0.1 |g|) = 10 lr sign(g)
    np.testing.assert_allclose(run("rmsprop", steps=1, lr=0.01), W0 - 0.1 * np.sign(W0), rtol=1e-6)


def adam_by_hand(lr, wd=0.0, decoupled=False):
    w, m, v = W0.copy(), np.zeros(2), np.zeros(2)
    for t in (1, 2, 3):
        g = w * C
        if wd and not decoupled:
            g = g + wd * w
        if wd and decoupled:
            w = w * (1 - lr * wd)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def test_adam_and_adamw():
    np.testing.assert_allclose(run("adam", lr=0.1), adam_by_hand(0.1), rtol=1e-12)
    np.testing.assert_allclose(run("adam", lr=0.1, weight_decay=0.1), adam_by_hand(0.1, 0.1), rtol=1e-12)
    np.testing.assert_allclose(run("adamw", lr=0.1, weight_decay=0.1), adam_by_hand(0.1, 0.1, True), rtol=1e-12)
    # Adam's first step moves every weight by lr against the sign of its gradient
    np.testing.assert_allclose(run("adam", steps=1, lr=0.1), W0 - 0.1 * np.sign(W0), rtol=1e-6)


def test_lion():
    """lion-pytorch's update: decoupled decay, the sign of beta1's interpolation, then the momentum by beta2."""
    w, m = W0.copy(), np.zeros(2)
    for _ in range(3):
        g = w * C
        w = w * (1 - 0.1 * 0.2)
        w = w - 0.1 * np.sign(0.8 * m + 0.2 * g)
        m = 0.9 * m + 0.1 * g
    np.testing.assert_allclose(run("lion", lr=0.1, beta1=0.8, beta2=0.9, weight_decay=0.2), w, rtol=1e-12)
    # every step moves every weight by lr (without decay): W0 - 3 lr sign(W0) while the signs hold
    np.testing.assert_allclose(run("lion", lr=0.1), W0 - 0.3 * np.sign(W0), rtol=1e-12)


def lr_at(spec, step, base=0.1, per_epoch=10, epochs=20):
    return make_schedule(spec, base, per_epoch, epochs)(step)


def test_schedules():
    assert lr_at(None, 57) == 0.1
    assert lr_at(Call("constant"), 3) == 0.1
    assert lr_at(Call("step", [], {"every": 5, "gamma": 0.5}), 49) == 0.1
    assert lr_at(Call("step", [], {"every": 5, "gamma": 0.5}), 50) == 0.05
    assert math.isclose(lr_at(Call("step", [], {"every": 5, "gamma": 0.5}), 120), 0.1 * 0.25)
    assert math.isclose(lr_at(Call("exponential", [0.9]), 35), 0.1 * 0.9**3)
    assert math.isclose(lr_at(Call("cosine"), 0), 0.1)
    assert math.isclose(lr_at(Call("cosine"), 100), 0.05)  # halfway through 20 epochs
    assert math.isclose(lr_at(Call("cosine", [], {"min_lr": 0.01}), 200), 0.01)
    restarts = Call("warm_restarts", [], {"period": 4, "mult": 2})
    assert math.isclose(lr_at(restarts, 20), 0.05)  # middle of the first period
    assert math.isclose(lr_at(restarts, 40), 0.1)  # restart at epoch 4
    assert math.isclose(lr_at(restarts, 80), 0.05)  # middle of the 8-epoch period
    warm = Call("cosine", [], {"warmup": 2})
    assert math.isclose(lr_at(warm, 0), 0.1 / 20) and math.isclose(lr_at(warm, 9), 0.05)
    assert math.isclose(lr_at(warm, 20), 0.1)  # warmup over, cosine starts
    assert math.isclose(lr_at(Call("linear_warmup", [], {"warmup": 1}), 4), 0.05)


def clipped(grads: dict, spec: Call) -> tuple:
    """(the global norm, the gradients as clipped): one sgd(lr = 1) step from zero."""
    params = {k: np.zeros_like(g, np.float32) for k, g in grads.items()}
    opt = make_optimizer(Call("sgd", [], {"lr": 1.0}))
    norm = update(opt, params, grads, opt.init(params), 1.0, 1, clip=spec)
    return norm, {k: -p for k, p in params.items()}


def test_clipping():
    norm, grads = clipped({"a": np.array([3.0, 0.0]), "b": np.array([4.0])}, Call("global_norm", [1.0]))
    assert norm == 5.0
    np.testing.assert_allclose(np.concatenate([grads["a"], grads["b"]]), [0.6, 0, 0.8], rtol=1e-6)
    _, grads = clipped({"a": np.array([3.0, -0.2])}, Call("value", [0.5]))
    np.testing.assert_allclose(grads["a"], [0.5, -0.2], rtol=1e-6)


@pytest.mark.parametrize(
    "call, phrase",
    [
        (Call("adamx", [], {"lr": 0.1}), "unknown optimizer 'adamx'"),
        (Call("adam", [], {"lr": -0.1}), "must not be negative"),
        (Call("sgd", [], {"lr": 0.0}), "must be positive"),
        (Call("sgd", [], {"lr": 0.1, "beta": 2}), "no option 'beta'"),
        (Call("sgd", [], {"lr": "fast"}), "'lr' must be"),
    ],
)
def test_bad_optimizers(call, phrase):
    with pytest.raises(DlcError) as e:
        make_optimizer(call)
    assert phrase in e.value.message


def test_bad_schedule():
    with pytest.raises(DlcError) as e:
        make_schedule(Call("cosine_decay"), 0.1, 10, 5)
    assert "unknown schedule 'cosine_decay'" in e.value.message


def test_the_initial_state_is_zeros_in_one_allocation_per_slot_and_dtype():
    params = {"w": np.ones((3, 4), np.float32), "b": np.ones(4, np.float32), "s": np.ones((), np.float64)}
    state = make_optimizer(Call("adam", [], {"lr": 1e-3})).init(params)
    for slot in ("m", "v"):
        assert all(
            state[n][slot].shape == p.shape and state[n][slot].dtype == p.dtype and not state[n][slot].any()
            for n, p in params.items()
        )
        assert np.shares_memory(state["w"][slot], state["b"][slot].base)  # views of one array
        state["w"][slot][...] = 1.0  # yet each parameter's own
        assert not state["b"][slot].any() and not state["s"][slot].any()
    assert not np.shares_memory(state["w"]["m"].base, state["w"]["v"].base)
