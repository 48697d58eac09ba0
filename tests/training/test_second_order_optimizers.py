"""The second-order optimizers (runtime/optim/second_order.py `LBFGS`, `Newton`, and their
algorithms): L-BFGS visits torch.optim.LBFGS's iterates, in float64 by
the algorithm alone and in float32 on both engines; a trial step whose loss is not finite
is shrunk where torch's run ends in NaN; Newton's method solves the logistic regression of
examples/logistic_newton.dl in at most 10 steps on both engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.passes.autodiff import train_step
from dlc.runtime.api import load
from dlc.runtime.engines import interpreter
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.optim import second_order
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call

from helpers.numeric import build

torch = pytest.importorskip("torch", reason="torch is not installed")

EXAMPLE = Path(__file__).parents[2] / "examples" / "logistic_newton.dl"
ENGINES = ("reference", "native")
LINE_SEARCHES = ("strong_wolfe", "none")

LOGISTIC = """
model logistic {
    input  x: f32[B, 4]
    target y: f32[B]
    param  w: f32[4] = zeros
    param  b: f32[] = zeros
    z = x @ w + b
    loss   mean(log1p(exp(z)) - y * z)
}"""


def logistic_data(dtype=np.float32):
    """Overlapping classes, so the loss has a finite minimum."""
    r = np.random.default_rng(0)
    x = r.standard_normal((64, 4))
    y = r.random(64) < 1 / (1 + np.exp(-(x @ np.array([1.0, -0.8, 0.5, 0.3]))))
    return {"x": x.astype(dtype), "y": y.astype(dtype)}


def start(dtype=np.float32) -> dict:
    return {"w": (0.1 * np.random.default_rng(1).standard_normal(4)).astype(dtype), "b": np.zeros((), dtype)}


class TorchLogistic:
    """torch.optim.LBFGS on the same loss, from the same start."""

    def __init__(self, params: dict, data: dict, line_search: str, max_iter: int):
        self.w, self.b = (torch.tensor(params[k], requires_grad=True) for k in ("w", "b"))
        self.x, self.y = torch.tensor(data["x"]), torch.tensor(data["y"])
        self.opt = torch.optim.LBFGS(
            [self.w, self.b],
            lr=1,
            history_size=10,
            max_iter=max_iter,
            line_search_fn=None if line_search == "none" else line_search,
        )

    def closure(self):
        self.opt.zero_grad()
        z = self.x @ self.w + self.b
        loss = (torch.log1p(torch.exp(z)) - self.y * z).mean()
        loss.backward()
        return loss

    def step(self) -> float:
        return float(self.opt.step(self.closure).detach())

    def params(self) -> dict:
        return {"w": self.w.detach().numpy(), "b": self.b.detach().numpy()}


class Float64Engine:
    """An engine's `gradients` in float64: the train-step graph in the interpreter."""

    def __init__(self, model):
        self.graph, self.trainable = train_step(model.graph), [p.name for p in model.params if p.trainable]

    def gradients(self, params, opt_state, batch, key):
        out = interpreter.run(self.graph, {**batch, "rng": key}, params, float_dtype="f64")
        return {"loss": float(out["loss"])}, np.concatenate([np.ravel(out[f"grad:{n}"]) for n in self.trainable])


def lbfgs(**options):
    return make_optimizer(Call("lbfgs", kwargs=options))


KEY = np.array([0, 1], np.int32)


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_takes_torchs_steps_in_float64(line_search):
    """The algorithm alone, on float64 losses and gradients: torch's iterates to round-off,
    over steps of three iterations whose memory carries from one step to the next."""
    data, params = logistic_data(np.float64), start(np.float64)
    ours, engine = lbfgs(line_search=line_search, max_iter=3), Float64Engine(build(LOGISTIC))
    theirs = TorchLogistic(params, data, line_search, max_iter=3)
    for _ in range(4):
        loss = ours.step(engine, params, {}, data, 1.0, KEY)["loss"]
        assert loss == pytest.approx(theirs.step(), rel=1e-12, abs=1e-14)
        for k, v in theirs.params().items():
            np.testing.assert_allclose(params[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
    state = theirs.opt.state[theirs.w]
    assert ours.memory.iterations == state["n_iter"] > 4 and len(ours.memory.s) == len(state["old_dirs"]) > 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_matches_torch_on_both_engines(engine, line_search):
    """float32 on the engines and in torch: the iterates agree within 1e-5 until the loss is
    flat to float32 (after six iterations here), one iteration per step."""
    data, params = logistic_data(), start()
    model = build(LOGISTIC)
    optimizer = lbfgs(line_search=line_search, max_iter=1)
    run = make_engine(engine, model, build(LOGISTIC, training=False), optimizer, ["w", "b"])
    theirs = TorchLogistic(params, data, line_search, max_iter=1)
    state = optimizer.init(params)
    losses = []
    for step in range(6):
        losses.append(run.train_step(params, state, data, 1.0, step + 1, KEY)["loss"])
        assert losses[-1] == pytest.approx(theirs.step(), rel=1e-6)
        for k, v in theirs.params().items():
            np.testing.assert_allclose(params[k], v, rtol=0, atol=1e-5, err_msg=f"step {step + 1}: {k}")
    assert losses[-1] < losses[0] - 0.1


BARRIER = """
model barrier {
    param w: f32[1] = ones
    loss  mean(10 * w - log(w))
}"""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_a_non_finite_trial_step_is_shrunk_where_torch_ends_in_nan(engine, line_search):
    """10 w - log(w) from w = 0.8: the first step of length 1 lands at w < 0, where log is
    NaN. torch's LBFGS takes it and never recovers; dlc halves it and reaches w = 0.1."""
    w = torch.tensor([0.8], requires_grad=True)
    opt = torch.optim.LBFGS([w], line_search_fn=None if line_search == "none" else line_search)

    def closure():
        opt.zero_grad()
        loss = (10 * w - torch.log(w)).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert not np.isfinite(float(closure().detach()))

    model = build(BARRIER)
    optimizer = lbfgs(line_search=line_search)
    run = make_engine(engine, model, build(BARRIER, training=False), optimizer, ["w"])
    params = {"w": np.array([0.8], np.float32)}
    for step in range(3):
        loss = run.train_step(params, optimizer.init(params), {}, 1.0, step + 1, KEY)["loss"]
        assert np.isfinite(loss)
    np.testing.assert_allclose(params["w"], [0.1], rtol=1e-5)
    assert loss == pytest.approx(1 + np.log(10), rel=1e-6)


def test_a_trial_step_that_stays_non_finite_is_not_taken():
    """A loss that is NaN on every side of x: the step is abandoned at x, its memory untouched."""
    calls = []

    class Everywhere:
        trainable = ["w"]

        def gradients(self, params, opt_state, batch, key):
            calls.append(params["w"].copy())
            w = float(params["w"][0])
            return {"loss": w * w if w == 0.5 else float("nan")}, np.array([2 * w])

    optimizer, params = lbfgs(line_search="none"), {"w": np.array([0.5])}
    optimizer.step(Everywhere(), params, {}, {}, 1.0, KEY)
    assert params["w"][0] == 0.5
    assert len(calls) == 1 + second_order.MAX_HALVINGS and not optimizer.memory.s


# ---- Newton's method ---------------------------------------------------------------------------------------
def newton_minimum(x: np.ndarray, y: np.ndarray) -> float:
    """The minimum of mean(log1p(exp(-y (x w + b)))) by exact Newton steps in float64."""
    a = np.c_[x, np.ones(len(x))].astype(np.float64)
    theta = np.zeros(a.shape[1])
    for _ in range(30):
        margin = y * (a @ theta)
        p = 1 / (1 + np.exp(margin))  # sigmoid(-margin)
        grad = -(a * (y * p)[:, None]).mean(0)
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(a)
        theta -= np.linalg.solve(hess, grad)
    return float(np.mean(np.log1p(np.exp(-y * (a @ theta)))))


def example_data():
    from dlc.runtime.training.config import make_config
    from dlc.runtime.training.inputs import prepare_data

    model = load(str(EXAMPLE))
    cfg = make_config(model.program, model.name, {}, model=model.train_model)
    return prepare_data(cfg, EXAMPLE.parent, model.train_model)[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_newton_solves_the_logistic_regression_example_in_at_most_10_steps(engine, tmp_path):
    data = example_data()
    best = newton_minimum(data["x"], data["y"])
    result = load(str(EXAMPLE), backend=engine).train(out=str(tmp_path), progress="none")
    losses = [row["loss"] for row in result.history]  # an epoch is one step; its loss is before it
    steps = next(i for i, loss in enumerate(losses) if loss - best < 1e-5)
    assert steps <= 10, losses
    assert result.history[-1]["accuracy"] > 0.95


def test_gradient_descent_is_still_short_of_the_minimum_after_100_steps(tmp_path):
    """What the example's header says of gradient descent (234 steps), at its best learning rate there."""
    best = newton_minimum(*example_data().values())
    result = load(str(EXAMPLE), backend="native").train(
        out=str(tmp_path), progress="none", epochs=100, optimizer=Call("sgd", kwargs={"lr": 1.0})
    )
    assert result.history[-1]["loss"] - best > 1e-5


@pytest.mark.parametrize("engine", ENGINES)
def test_newton_backtracks_on_a_non_convex_loss(engine, tmp_path):
    """xor_mlp from its initial weights: full Newton steps overshoot (the loss climbs to 8 and
    stays there); halved until the loss falls enough, they solve XOR in 17 steps."""
    result = load(str(EXAMPLE.parent / "xor_mlp.dl"), backend=engine).train(
        out=str(tmp_path), progress="none", epochs=20, optimizer=Call("newton")
    )
    losses = [row["loss"] for row in result.history]
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.01 and result.history[-1]["accuracy"] == 1.0


def test_lbfgs_trains_the_example_through_the_trainer(tmp_path):
    data = example_data()
    best = newton_minimum(data["x"], data["y"])
    result = load(str(EXAMPLE), backend="native").train(
        out=str(tmp_path), progress="none", epochs=3, optimizer=Call("lbfgs")
    )
    assert result.history[-1]["loss"] - best < 1e-5


# ---- settings ----------------------------------------------------------------------------------------------
def test_the_options_are_checked_where_written():
    assert lbfgs().hyper == {
        "lr": 1.0,
        "history": 10,
        "max_iter": 20,
        "line_search": "strong_wolfe",
        "tolerance_grad": 1e-7,
        "tolerance_change": 1e-9,
    }
    assert make_optimizer(Call("lbfgs", kwargs={"line_search": None})).hyper["line_search"] == "none"
    assert make_optimizer(Call("newton")).hyper == {"lr": 1.0, "damping": 1e-3, "cg_steps": 20}
    for call, message in (
        (Call("lbfgs", kwargs={"history": 0}), "'history' must be at least 1"),
        (Call("lbfgs", kwargs={"line_search": "armijo"}), "must be one of strong_wolfe, none"),
        (Call("newton", kwargs={"cg_steps": 2.5}), "'cg_steps' must be an integer"),
        (Call("newton", kwargs={"damping": -1}), "damping"),
    ):
        with pytest.raises(DlcError, match=message):
            make_optimizer(call)


def test_a_penalty_or_clipping_with_a_second_order_optimizer_is_refused(tmp_path):
    with pytest.raises(DlcError, match="newton takes no l1, l2 or clip"):
        load(str(EXAMPLE)).train(out=str(tmp_path), progress="none", l2=0.1)
