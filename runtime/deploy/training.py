"""The train step of a `dlc build --train` library: the train block's step as the native
engine runs it (runtime/engines/native.py: the train step graph lowered, its driver ending
with the optimizer's update over the flat arrays), and the C of what the trainer computes
in Python floats at each step: the learning rate of the schedule and the optimizer's
per-step scalars, printed from the formulas the engines evaluate (runtime/optim/optimizers.py,
schedules.py and formula.py), so the same bits.
"""

from __future__ import annotations

import json

from dlc.compiler.errors import DlcError
from dlc.runtime.deploy.library import ModelIO, Training
from dlc.runtime.optim.formula import c_statements
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.optim.schedules import make_schedule


def step_scalars(optimizer: Optimizer, names: list) -> str:
    """C of Optimizer.step_scalars: out[k] is the scalar names[k] at learning rate lr."""
    formulas = optimizer.step_formulas()
    lines = c_statements([(f"out[{k}]", formulas[name]) for k, name in enumerate(names)])
    return (
        "static void step_scalars(double lr, int64_t step, double *out) {\n    (void)lr, (void)step, (void)out;\n"
        + "\n".join(lines)
        + "\n}"
    )


def schedule_lr(spec, base_lr: float) -> str:
    """C of Schedule.__call__(step): its steps per epoch and total steps given at run time."""
    lines = c_statements([("rate", make_schedule(spec, base_lr, 1, 1).formula)])
    return (
        "static double schedule_lr(int64_t step, double per_epoch, double total) {\n"
        "    (void)step, (void)per_epoch, (void)total;\n    double rate;\n" + "\n".join(lines) + "\n    return rate;\n}"
    )


def train_parts(file: str, model: str | None, overrides: dict):
    """(the train step graph, the precision of its matmuls, what the library's train unit
    needs besides the program (Training), the parameters in flat order, their shapes, the
    train step's inputs but its random key)."""
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.native.update import lower_update
    from dlc.compiler.passes.autodiff import train_step
    from dlc.compiler.ir.dims import numel
    from dlc.runtime.deploy.description import input_limits
    from dlc.runtime.training.run_plan import plan_run
    from dlc.runtime.training.trainer import Trainer
    from dlc.runtime.interop.checkpoint import FORMAT
    import dlc

    trainer = Trainer(load(file), model, overrides, None, progress="none")
    cfg, tm = trainer.cfg, trainer.train_model
    run = plan_run(cfg, trainer.base, tm)
    trainer.meta, optimizer, bounds = run.meta, run.optimizer, run.bounds
    if not run.trainable:
        raise DlcError(f"model {tm.name} trains no parameter: there is no train step to build", cfg.span("freeze"))
    trainable = sorted(run.trainable, key=optimizer.group_number)  # group by group, as the native engine's
    if optimizer.full_batch:
        raise DlcError(
            f"{optimizer.name} is not a step of one batch (its line search calls the step again): "
            "dlc build --train takes a first-order optimizer",
            cfg.span("optimizer"),
        )
    not_f32 = [p.name for p in tm.params if p.type.dtype != "f32"]
    if not_f32:
        raise DlcError(f"dlc build --train keeps parameters in f32; {not_f32[0]} is not", cfg.span("precision"))
    size = {p.name: int(numel(p.type.shape)) for p in tm.params}
    order = trainable + [p.name for p in tm.params if p.name not in trainable]
    n_trained = sum(size[k] for k in trainable)
    update = lower_update(optimizer.graph(n_trained, cfg.l1, cfg.l2, cfg.clip))
    from dlc.compiler.ir.update import GROUP

    slots = list(optimizer.slots())
    scalar_names = [b for b in update.inputs if b not in ("param", "grad", GROUP, *slots)]
    index = optimizer.group_index(trainable, [size[k] for k in trainable])
    runs, at = [], 0
    for k in trainable:
        if index is not None and index[at]:
            runs.append((at, size[k], int(index[at])))
        at += size[k]
    meta = json.dumps({"format": FORMAT, "dlc_version": dlc.__version__, **trainer.checkpoint_meta()})
    functions = schedule_lr(cfg.schedule, optimizer.lr) + "\n" + step_scalars(optimizer, scalar_names)
    training = Training(
        update,
        len(trainable),
        slots,
        scalar_names,
        runs,
        cfg.seed,
        meta[:-1],
        functions,
        (len(bounds), run.last_step),
        cfg.optimizer.name,
    )
    graph = train_step(tm.graph)
    inputs = []
    for v in graph.nodes_with("input"):
        name, typ = graph.attrs(v)["name"], graph.types(v)[0]
        if name != "rng":  # an integer input's limits: dlc train's, which train_step checks too
            inputs.append(ModelIO(name, typ.dtype, tuple(typ.shape), input_limits(tm, name, typ.dtype)))
    shapes = {p.name: tuple(int(d) for d in p.type.shape) for p in tm.params}
    return graph, cfg.precision, training, order, shapes, inputs
