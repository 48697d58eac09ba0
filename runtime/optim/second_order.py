"""The second-order optimizers, `LBFGS` and `Newton`, and their algorithms.

A first-order optimizer's update is a graph compiled into the train step; a step of these
is a loop in Python around the loss of one batch as a function of the flat trained
parameters (`Objective`): each evaluation is one call of the engine's loss-and-gradient
step (`Engine.gradients`: the native engine's compiled train step without an update,
compiled once and called by every trial of the line search), and Newton's method adds
Hessian-vector products (`Engine.hvp`, the graph of compiler/passes/autodiff.py `hvp_graph`).

L-BFGS follows torch.optim.LBFGS (two-loop recursion over the last `history` pairs,
Moré–Thuente-style strong Wolfe search by cubic interpolation, the same stopping tests), in
the parameters' dtype, so that from the same weights it visits the same iterates. One
difference: a trial point whose loss or gradient is not finite is never given to the line
search or the memory; its step is halved until it is finite (`Trial`), where torch's
comparisons with NaN poison the search (pytorch issue #5953).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlc.compiler.frontend.settings import Call
from dlc.runtime.optim.optimizer import Optimizer

MAX_HALVINGS = 30  # a trial step shrinks at most 2^30-fold before the step is abandoned (t = 0)
CURVATURE_FLOOR = 1e-10  # a pair (s, y) with y.s at or below it would make the inverse Hessian indefinite


class LBFGS(Optimizer):
    """torch.optim.LBFGS (its `history_size` is `history`, `line_search_fn` `line_search`), with
    trial steps whose loss or gradient is not finite halved instead of taken. Its memory
    lives in the optimizer, not in checkpoints: a resumed run starts it afresh."""

    name = "lbfgs"
    options = {
        "lr": 1.0,
        "history": 10,
        "max_iter": 20,
        "line_search": "strong_wolfe",
        "tolerance_grad": 1e-7,
        "tolerance_change": 1e-9,
    }
    full_batch = True

    def __init__(self, call: Call):
        super().__init__(call)
        self.memory = LbfgsMemory()

    def step(self, engine, params: dict, opt_state: dict, batch: dict, lr: float, key) -> dict:
        """Up to `max_iter` iterations on `batch`, in place; the loss and metrics before them."""
        objective = Objective(engine, params, opt_state, batch, key)
        lbfgs(objective, self.memory, **(self.hyper | {"lr": lr}))
        return objective.first


class Newton(Optimizer):
    """Newton's method: (H + damping I) p = -g by `cg_steps` of conjugate gradients on
    Hessian-vector products, then x + lr p."""

    name = "newton"
    options = {"lr": 1.0, "damping": 1e-3, "cg_steps": 20}
    full_batch = True

    def step(self, engine, params: dict, opt_state: dict, batch: dict, lr: float, key) -> dict:
        """One Newton step on `batch`, in place; the loss and metrics before it."""
        objective = Objective(engine, params, opt_state, batch, key)
        newton(objective, **(self.hyper | {"lr": lr}))
        return objective.first


class Objective:
    """The loss of `batch` on `engine` as a function of the engine's trained parameters,
    flattened in `engine.trainable` order (the order of the engine's flat gradient). Every
    evaluation writes the point into `params`; `finish` leaves the chosen one there."""

    def __init__(self, engine, params: dict, opt_state: dict, batch: dict, key: np.ndarray):
        self.engine, self.params, self.opt_state, self.batch, self.key = engine, params, opt_state, batch, key
        self.names = list(engine.trainable)
        self.sizes = [np.size(params[n]) for n in self.names]
        self.x0 = np.concatenate([np.ravel(params[n]) for n in self.names]) if self.names else np.zeros(0, np.float32)
        self.evaluations = 0  # of the loss and gradient
        self.first: dict | None = None  # the loss and metrics at x0: what the step reports

    def _set(self, x: np.ndarray):
        at = 0
        for name, size in zip(self.names, self.sizes):
            self.params[name][...] = x[at : at + size].reshape(np.shape(self.params[name]))
            at += size

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, gradient) at x, the gradient a copy in x's dtype."""
        self._set(x)
        values, grads = self.engine.gradients(self.params, self.opt_state, self.batch, self.key)
        self.evaluations += 1
        if self.first is None:
            self.first = values
        return values["loss"], np.array(grads[: x.size], x.dtype)

    def hvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """H v at x, H the Hessian of the loss."""
        self._set(x)
        return np.asarray(self.engine.hvp(self.params, self.batch, self.key, v.astype(x.dtype)), x.dtype)

    def finish(self, x: np.ndarray):
        self._set(x)


def finite(loss: float, grad: np.ndarray) -> bool:
    return bool(np.isfinite(loss) and np.isfinite(grad).all())


@dataclass
class Trial:
    """Evaluations of the objective along x + t d. A trial whose loss or gradient is not
    finite is retried at half the step, at most MAX_HALVINGS times, then abandoned for x
    itself (t = 0, the loss and gradient there); `at` returns the step actually taken."""

    objective: Objective
    x: np.ndarray
    d: np.ndarray
    loss: float  # at x
    grad: np.ndarray  # at x

    def at(self, t: float) -> tuple[float, float, np.ndarray]:
        for _ in range(MAX_HALVINGS):
            loss, grad = self.objective(self.x + t * self.d)
            if finite(loss, grad):
                return t, loss, grad
            t /= 2
        return 0.0, self.loss, self.grad


# ---- L-BFGS --------------------------------------------------------------------------------------------
@dataclass
class LbfgsMemory:
    """What L-BFGS keeps from one step to the next (torch's optimizer state): the last
    direction and step length, the curvature pairs, the gradient and loss before the last move."""

    iterations: int = 0
    d: np.ndarray | None = None
    t: float = 0.0
    s: list = field(default_factory=list)  # parameter changes
    y: list = field(default_factory=list)  # gradient changes
    rho: list = field(default_factory=list)  # 1 / y.s
    h_diag: float = 1.0  # the scale of the initial inverse Hessian
    prev_grad: np.ndarray | None = None
    prev_loss: float = 0.0


def lbfgs(
    objective: Objective,
    memory: LbfgsMemory,
    lr: float,
    history: int,
    max_iter: int,
    line_search: str,
    tolerance_grad: float,
    tolerance_change: float,
):
    """One L-BFGS step (up to `max_iter` iterations, torch's `max_iter * 5 // 4` evaluations)
    from the objective's x0; leaves the parameters at the last iterate."""
    max_eval = max_iter * 5 // 4
    x = objective.x0
    loss, grad = objective(x)
    if np.abs(grad).max(initial=0.0) <= tolerance_grad or not finite(loss, grad):
        return objective.finish(x)
    m = memory
    for iteration in range(1, max_iter + 1):
        m.iterations += 1
        d = -grad if m.iterations == 1 else _direction(m, grad, history)
        m.prev_grad, m.prev_loss = grad.copy(), loss
        t = min(1.0, 1.0 / float(np.abs(grad).sum())) * lr if m.iterations == 1 else lr
        gtd = float(grad.dot(d))
        if gtd > -tolerance_change:
            break
        trial = Trial(objective, x, d, loss, grad)
        if line_search == "strong_wolfe":
            t, loss, grad = strong_wolfe(trial, t, gtd, tolerance_change, max_eval - objective.evaluations)
        else:
            t, loss, grad = trial.at(t)
        x = x + t * d
        m.d, m.t = d, t
        if iteration == max_iter or objective.evaluations >= max_eval or np.abs(grad).max() <= tolerance_grad:
            break
        if np.abs(d * t).max() <= tolerance_change or abs(loss - m.prev_loss) < tolerance_change:
            break
    objective.finish(x)


def _direction(m: LbfgsMemory, grad: np.ndarray, history: int) -> np.ndarray:
    """The memory updated with the last move, then -H grad by the two-loop recursion."""
    y, s = grad - m.prev_grad, m.d * m.t
    ys = y.dot(s)
    if ys > CURVATURE_FLOOR:
        if len(m.s) == history:
            del m.s[0], m.y[0], m.rho[0]
        m.s.append(s)
        m.y.append(y)
        m.rho.append(1.0 / ys)
        m.h_diag = ys / y.dot(y)
    q = -grad
    alphas = [0.0] * len(m.s)
    for i in reversed(range(len(m.s))):
        alphas[i] = m.s[i].dot(q) * m.rho[i]
        q = q - alphas[i] * m.y[i]
    r = q * m.h_diag
    for i in range(len(m.s)):
        beta = m.y[i].dot(r) * m.rho[i]
        r = r + (alphas[i] - beta) * m.s[i]
    return r


def cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None) -> float:
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clamped
    to `bounds` (default: between the points); their midpoint where the cubic has none."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if disc < 0:
        return (lo + hi) / 2.0
    d2 = disc**0.5
    if x1 <= x2:
        t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(t, lo), hi)


@dataclass
class Point:
    """A trial of the line search: step, loss, gradient, slope along d."""

    t: float
    loss: float
    grad: np.ndarray
    slope: float


def strong_wolfe(
    trial: Trial, t: float, gtd: float, tolerance_change: float, max_ls: int, c1: float = 1e-4, c2: float = 0.9
) -> tuple[float, float, np.ndarray]:
    """A step along d satisfying the strong Wolfe conditions (sufficient decrease c1,
    curvature c2), or the best point found in `max_ls` evaluations: first bracket one,
    growing the step by cubic extrapolation, then zoom into the bracket by cubic
    interpolation. Returns (t, loss, gradient) there."""
    d_norm = float(np.abs(trial.d).max())
    start = Point(0.0, trial.loss, trial.grad, gtd)

    def evaluate(t):
        t, loss, grad = trial.at(t)
        return Point(t, loss, grad, float(grad.dot(trial.d)))

    def armijo_fails(p: Point) -> bool:
        return p.loss > start.loss + c1 * p.t * gtd

    def curvature_holds(p: Point) -> bool:
        return abs(p.slope) <= -c2 * gtd

    prev, new = start, evaluate(t)
    searches, bracket, done = 0, None, False
    while searches < max_ls:
        if armijo_fails(new) or (searches > 1 and new.loss >= prev.loss):
            bracket = [prev, new]
            break
        if curvature_holds(new):
            bracket, done = [new], True
            break
        if new.slope >= 0:  # past a minimum
            bracket = [prev, new]
            break
        t = cubic_minimum(
            prev.t,
            prev.loss,
            prev.slope,
            new.t,
            new.loss,
            new.slope,
            bounds=(new.t + 0.01 * (new.t - prev.t), new.t * 10),
        )
        prev, new = new, evaluate(t)
        searches += 1
    if searches == max_ls:
        bracket = [start, new]
    if done:
        return new.t, new.loss, new.grad

    # zoom: shrink the bracket around a point satisfying the conditions
    low, high = (0, 1) if bracket[0].loss <= bracket[-1].loss else (1, 0)
    stalled = False
    while searches < max_ls:
        lo_t, hi_t = min(bracket[0].t, bracket[1].t), max(bracket[0].t, bracket[1].t)
        if (hi_t - lo_t) * d_norm < tolerance_change:
            break
        a, b = bracket
        t = cubic_minimum(a.t, a.loss, a.slope, b.t, b.loss, b.slope)
        # a trial too near an end of the bracket is moved a tenth of its width inside, at the
        # second time running or at the end itself
        margin = 0.1 * (hi_t - lo_t)
        if min(hi_t - t, t - lo_t) < margin:
            if stalled or t >= hi_t or t <= lo_t:
                t = hi_t - margin if abs(t - hi_t) < abs(t - lo_t) else lo_t + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        new = evaluate(t)
        searches += 1
        if armijo_fails(new) or new.loss >= bracket[low].loss:
            bracket[high] = new
            low, high = (0, 1) if bracket[0].loss <= bracket[1].loss else (1, 0)
        else:
            if curvature_holds(new):
                done = True
            elif new.slope * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = new
            if done:
                break
    best = bracket[low]
    return best.t, best.loss, best.grad


# ---- Newton's method -------------------------------------------------------------------------------------
def newton(objective: Objective, lr: float, damping: float, cg_steps: int, c1: float = 1e-4):
    """One Newton step: x + t p with (H + damping I) p = -g solved by conjugate gradients
    on Hessian-vector products, to the relative residual min(0.5, sqrt(|g|)) (a truncated
    Newton method, superlinear near a minimum). t starts at lr and is halved while the loss
    there is not finite or falls short of sufficient decrease (Armijo, c1), which a full
    step from far away on a non-convex loss can overshoot; at most MAX_HALVINGS times,
    after which the step is not taken."""
    x = objective.x0
    loss, grad = objective(x)
    if not finite(loss, grad):
        return objective.finish(x)
    p = conjugate_gradients(
        lambda v: objective.hvp(x, v) + damping * v, -grad, cg_steps, min(0.5, float(np.linalg.norm(grad)) ** 0.5)
    )
    slope, t = float(grad.dot(p)), lr
    for _ in range(MAX_HALVINGS):
        trial, _ = objective(x + t * p)
        if np.isfinite(trial) and trial <= loss + c1 * t * slope:
            return objective.finish(x + t * p)
        t /= 2
    objective.finish(x)


def conjugate_gradients(apply, b: np.ndarray, steps: int, rtol: float) -> np.ndarray:
    """x with apply(x) ~ b, from x = 0, in at most `steps` products, stopped once the
    residual is below rtol |b|; at a direction of non-positive curvature it stops with
    the x so far (b itself if that is the first), which is still a descent direction."""
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), float(r.dot(r))
    goal = (rtol**2) * rr
    for k in range(steps):
        if rr <= goal:
            break
        ap = apply(p)
        curvature = float(p.dot(ap))
        if curvature <= 0 or not np.isfinite(curvature):
            return b if k == 0 else x
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr, rr_prev = float(r.dot(r)), rr
        p = r + (rr / rr_prev) * p
    return x


# ---- the engines' Hessian-vector products ------------------------------------------------------------------
def direction_feeds(graph, trainable: list, params: dict, v: np.ndarray) -> dict:
    """The inputs `v:NAME` of an hvp_graph from v, flat over the `trainable` parameters; zero
    for the graph's other (frozen) trainable parameters."""
    feeds, at = {}, 0
    for name in trainable:
        size = np.size(params[name])
        feeds[f"v:{name}"] = v[at : at + size].reshape(np.shape(params[name]))
        at += size
    for n in graph.nodes_with("input"):
        name = graph.attrs(n)["name"]
        if name.startswith("v:") and name not in feeds:
            feeds[name] = np.zeros_like(params[name[2:]])
    return feeds
