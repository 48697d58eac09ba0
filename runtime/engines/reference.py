"""The reference engine: it runs the graphs with the numpy interpreter, the optimizer's
update graph too (`update`: an optimizer of runtime/optim/ builds it). The native engine
(runtime/engines/native.py) has the same members (runtime/engines/protocol.py `Engine`) and
runs each step in one native call. This module also holds what both engines share: the
prediction graph and the scalars a step reports. runtime/engines/backends.py picks the engine
for a run."""

from __future__ import annotations

import numpy as np

from dlc.compiler.frontend.settings import Call
from dlc.compiler.ir.dims import symbols
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.ir.update import GROUP, NORM
from dlc.compiler.native import bf16
from dlc.compiler.passes.autodiff import copy_graph, hvp_graph, prune, train_step
from dlc.compiler.frontend.model import Model
from dlc.runtime.engines import budget, interpreter, numerics
from dlc.runtime.engines.parameters import require_writable
from dlc.runtime.optim import second_order
from dlc.runtime.optim.optimizer import Optimizer


def predict_graph(model: Model):
    """The evaluation graph cut down to the model's outputs: needs no targets, nor inputs the
    outputs do not read, unless an output uses the size of one of their dims alone
    (`random_normal((B, 8))`): such an input stays, for its array to bind the size."""
    g, _ = copy_graph(model.graph)
    g.outputs = {k: t for k, t in g.outputs.items() if k.startswith("output:")}
    declared = {i.name: i for i in model.inputs if not i.is_target}
    inputs = {g.attrs(n)["name"]: n for n in g.nodes_with("input") if g.attrs(n)["name"] in declared}
    read, _ = copy_graph(g, keep_ids=True)
    prune(read)
    bound = set().union(*(symbols(declared[name].type.shape) for name, n in inputs.items() if n in read.nx))
    used = set().union(*(symbols(t.shape) for n in read.nx.nodes for t in read.types(n)))
    return prune(g, keep=[n for name, n in inputs.items() if symbols(declared[name].type.shape) & (used - bound)])


class ReferenceEngine:
    """An `Engine` (runtime/engines/protocol.py) on the numpy interpreter."""

    name = "reference"
    world = None  # one process: a data-parallel run wraps the engine (DataParallel)
    evaluator = Eval  # what computes each node (runtime/engines/int8.py: the int8 products)

    def __init__(
        self,
        train_model: Model,
        eval_model: Model,
        optimizer: Optimizer | None = None,
        trainable: list | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        clip=None,
        check_numerics=False,
        precision: str = "f32",
    ):
        """`check_numerics`: every node of the train step is tested, and the first non-finite
        value stops the step with its origin (runtime/engines/numerics.py). `precision`: of the
        operands of matmuls and convolutions ("bf16": those the native kernels round, rounded
        as they round them: compiler/native/bf16.py)."""
        self.check_numerics = check_numerics
        self.bf16 = bf16.in_bf16 if precision == "bf16" else None
        self.step_graph = train_step(train_model.graph) if optimizer is not None else None
        self.train_graph, self._hvp_graph = train_model.graph, None
        self.model = train_model  # where a refusal of memory points (the declaration, its layers' bindings)
        self.eval_graph = eval_model.graph
        self.predict_graph = predict_graph(eval_model)
        self.optimizer, self.l1, self.l2, self.clip = optimizer, l1, l2, clip
        self.trainable = trainable or []
        self.checked: set = set()  # (graph, sizes) whose memory was checked
        self.replicas = None  # replica_mean of a data-parallel run (runtime/engines/distributed.py)

    def train_step(self, params: dict, opt_state: dict, batch: dict, lr: float, step: int, key: np.ndarray) -> dict:
        """One optimizer step on a batch, in place; returns the loss and metrics."""
        if self.optimizer.full_batch:  # L-BFGS, Newton: many evaluations of the batch
            return self.optimizer.step(self, params, opt_state, batch, lr, key)
        out = self._run("the train step", self.step_graph, {**batch, "rng": key}, params, opt_state)
        grads = {name: out[f"grad:{name}"] for name in self.trainable}
        norm = update(self.optimizer, params, grads, opt_state, lr, step, self.l1, self.l2, self.clip)
        for k, v in out.items():
            if k.startswith("update:"):
                params[k[7:]] = v
        return _scalars(out) | {"grad_norm": norm}

    def gradients(self, params: dict, opt_state: dict, batch: dict, key: np.ndarray) -> tuple[dict, np.ndarray]:
        """A step's first half, as the native engine's split step: (loss and metrics, the
        trained parameters' gradients in one flat float32 array, for `apply_update`)."""
        out = self._run("the train step", self.step_graph, {**batch, "rng": key}, params, opt_state)
        for k, v in out.items():
            if k.startswith("update:"):
                params[k[7:]] = v
        grads = [np.asarray(out[f"grad:{name}"], np.float32).ravel() for name in self.trainable]
        return _scalars(out), np.concatenate(grads) if grads else np.zeros(0, np.float32)

    def apply_update(self, params: dict, opt_state: dict, grads: np.ndarray, lr: float, step: int):
        """A step's second half: the optimizer's update from the flat gradients of `gradients`."""
        parts, at = {}, 0
        for name in self.trainable:
            size = np.size(params[name])
            parts[name] = grads[at : at + size].reshape(np.shape(params[name]))
            at += size
        update(self.optimizer, params, parts, opt_state, lr, step, self.l1, self.l2, self.clip)

    def hvp(self, params: dict, batch: dict, key: np.ndarray, v: np.ndarray) -> np.ndarray:
        """H v, flat over the trained parameters like v, H the Hessian of the batch's loss
        (autodiff.hvp_graph), in the interpreter's float32."""
        if self._hvp_graph is None:
            self._hvp_graph = hvp_graph(self.train_graph)
        graph = self._hvp_graph
        feeds = {**batch, "rng": key, **second_order.direction_feeds(graph, self.trainable, params, v)}
        out = self._run("a Hessian-vector product", graph, feeds, params)
        return np.concatenate([np.ravel(out[f"hvp:{name}"]) for name in self.trainable])

    def evaluate(self, params: dict, batch: dict) -> dict:
        return _scalars(self._run("a forward pass", self.eval_graph, {**batch, "rng": np.zeros(2, np.int32)}, params))

    def predict(self, params: dict, batch: dict) -> dict:
        out = self._run("a forward pass", self.predict_graph, {**batch, "rng": np.zeros(2, np.int32)}, params)
        return {k[7:]: v for k, v in out.items()}

    def _run(self, what: str, graph, feeds: dict, params: dict, opt_state: dict | None = None) -> dict:
        """interpreter.run, once the memory of a step at these sizes is known to fit (runtime/engines/budget.py)."""
        sizes = interpreter.bind_sizes(graph, feeds)
        key = (id(graph), tuple(sorted(sizes.items())))
        if key not in self.checked:
            state = [a for slots in (opt_state or {}).values() for a in slots.values()]
            held = {
                "parameters": sum(np.asarray(p).nbytes for p in params.values()),
                "optimizer state": sum(np.asarray(a).nbytes for a in state),
            }
            budget.require_step(what, graph, sizes, held, lambda s: budget.interpreter_parts(graph, s), self.model)
            budget.require_work(what, graph, sizes, threads=1)
            self.checked.add(key)
        if self.check_numerics and graph is self.step_graph:
            return numerics.run(graph, feeds, params, replicas=self.replicas, bf16=self.bf16)
        return interpreter.run(graph, feeds, params, replicas=self.replicas, bf16=self.bf16, evaluator=self.evaluator)


def update(
    optimizer: Optimizer,
    params: dict,
    grads: dict,
    state: dict,
    lr: float,
    step: int,
    l1: float = 0.0,
    l2: float = 0.0,
    clip: Call | None = None,
) -> float:
    """One step of `optimizer` (step counts from 1), in place, for the parameters in `grads`:
    its update graph run by the interpreter on their flat concatenation; returns the
    gradient's global norm. In float32, or float64 when a parameter is (a check by hand)."""
    require_writable(params, "an optimizer's update")
    names = list(grads)
    if not names:
        return 0.0
    dtype = "f64" if any(np.asarray(params[n]).dtype == np.float64 for n in names) else "f32"
    flat = lambda arrays: np.concatenate([np.asarray(a, DTYPES[dtype]).ravel() for a in arrays])
    feeds = {
        "param": flat(params[n] for n in names),
        "grad": flat(grads[n] for n in names),
        **{s: flat(state[n][s] for n in names) for s in optimizer.slots()},
        **optimizer.step_scalars(lr, step),
    }
    group = optimizer.group_index(names, [np.size(grads[n]) for n in names])
    if group is not None:
        feeds[GROUP] = group
    graph = optimizer.graph(feeds["param"].size, l1, l2, clip, True, dtype)
    out = interpreter.run(graph, feeds, {}, float_dtype=None)
    at = 0
    for n in names:
        size = np.size(grads[n])
        params[n][...] = out["param"][at : at + size].reshape(np.shape(params[n]))
        for s in optimizer.slots():
            state[n][s][...] = out[s][at : at + size].reshape(np.shape(state[n][s]))
        at += size
    return float(out[NORM])


def _scalars(out: dict) -> dict:
    vals = {"loss": float(out["loss"])} if "loss" in out else {}
    vals.update({k[7:]: float(v) for k, v in out.items() if k.startswith("metric:")})
    return vals
