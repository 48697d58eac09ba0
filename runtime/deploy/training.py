"""The train step of a `dlc build --train` library: the train block's step as the native
engine runs it (runtime/engines/native.py: the train step graph lowered, its driver ending
with the optimizer's update over the flat arrays), and the C of what the trainer computes
in Python floats at each step (runtime/engines/optim.py): the learning rate of the
schedule and the optimizer's per-step scalars, written to do the same double operations in
the same order (the library compiles them without contraction), so the same bits.
"""
from __future__ import annotations

import json

from dlc.compiler.errors import DlcError
from dlc.runtime.deploy.library import ModelIO, Training
from dlc.runtime.engines.optim import Adagrad, Adam, Optimizer, make_optimizer, make_schedule


def _c(v) -> str:
    """A number as a C double literal, exactly."""
    return float(v).hex()


def _scalar_exprs(optimizer: Optimizer, h: dict, lr: str) -> dict:
    """C expressions of Optimizer.scalars(lr, step, h), `step` the step number (from 1)."""
    scalars = type(optimizer).scalars
    if scalars is Optimizer.scalars:
        return {"lr": lr}
    if scalars is Adam.scalars:
        return {"lr": lr, "step_size": f"{lr} / (1.0 - pow({_c(h['beta1'])}, (double)step))",
                "bias2_sqrt": f"pow(1.0 - pow({_c(h['beta2'])}, (double)step), 0.5)",
                "decay": f"1.0 - {lr} * {_c(h['weight_decay'])}"}
    if scalars is Adagrad.scalars:
        return {"lr": f"{lr} / (1.0 + (double)(step - 1) * {_c(h['lr_decay'])})"}
    raise DlcError(f"dlc build --train does not know the per-step scalars of {optimizer.name} yet")


def step_scalars(optimizer: Optimizer, names: list) -> str:
    """C of Optimizer.step_scalars: out[k] is the scalar names[k] at learning rate lr."""
    if len(optimizer.groups) == 1:
        exprs = _scalar_exprs(optimizer, optimizer.hyper, "lr")
    else:
        exprs = {f"{k}@{g}": e for g, (h, mult) in enumerate(zip(optimizer.groups, optimizer.lr_mults))
                 for k, e in _scalar_exprs(optimizer, h, f"(lr * {_c(mult)})").items()}
    lines = [f"    out[{k}] = {exprs[name]};" for k, name in enumerate(names)]
    return ("static void step_scalars(double lr, int64_t step, double *out) {\n    (void)lr, (void)step, (void)out;\n"
            + "\n".join(lines) + "\n}")


def schedule_lr(spec, base_lr: float) -> str:
    """C of Schedule.__call__(step): its steps per epoch and total steps given at run time."""
    one, two = make_schedule(spec, base_lr, 1, 1), make_schedule(spec, base_lr, 2, 1)
    # a warmup in epochs scales with the steps per epoch, one in steps does not
    per_epoch_warm = one.warm if one.warm != two.warm else 0
    fixed_warm = one.warm if one.warm == two.warm else 0
    o, name = one.opts, one.name
    unit = _c(one.decay_steps) if one.decay_steps else "per_epoch"
    body = {
        "step": f"return lr * pow({_c(o.get('gamma', 0))}, floor(after / "
                f"({unit if one.decay_steps else _c(o.get('every', 0)) + ' * per_epoch'})));",
        "exponential": f"return lr * pow({_c(o.get('gamma', 0))}, floor(after / {unit}));",
        "cosine": f"""double end = {_c(one.decay_steps) if one.decay_steps is not None else 'total'}, span = end - warm;
    if (1e-9 > span) span = 1e-9;
    double q = after / span, progress = after >= 0 ? (1.0 < q ? 1.0 : q) : 0.0;
    return {_c(o.get('min_lr', 0))} + 0.5 * (lr - {_c(o.get('min_lr', 0))}) * (1.0 + cos({_c(3.141592653589793)} * progress));""",
        "warm_restarts": f"""double period = {unit if one.decay_steps else _c(o.get('period', 0)) + ' * per_epoch'}, t = after;
    while (t >= period) {{ t -= period; period *= {_c(o.get('mult', 1))}; }}
    return {_c(o.get('min_lr', 0))} + 0.5 * (lr - {_c(o.get('min_lr', 0))}) * (1.0 + cos({_c(3.141592653589793)} * t / period));""",
    }.get(name, "return lr;")
    return f"""static double schedule_lr(int64_t step, double per_epoch, double total) {{
    (void)per_epoch, (void)total;
    double warm = {_c(fixed_warm)} + {_c(per_epoch_warm)} * per_epoch, lr = {_c(base_lr)};
    if ((double)step < warm) {{
        double r = (double)(step + 1) / warm;
        return lr * (r < 1.0 ? r : 1.0);
    }}
    double after = (double)step - warm;
    (void)after;
    {body}
}}"""


def train_parts(file: str, model: str | None, overrides: dict):
    """(the train step graph, the precision of its matmuls, what the library's train unit
    needs besides the program (Training), the parameters in flat order, their shapes, the
    train step's inputs but its random key)."""
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.native.update import lower_update
    from dlc.compiler.passes.autodiff import train_step
    from dlc.compiler.ir.dims import numel
    from dlc.runtime.training.config import batch_statistics, run_length, trained_names
    from dlc.runtime.deploy.description import input_limits
    from dlc.runtime.training.inputs import prepare_data
    from dlc.runtime.training.trainer import Trainer, epoch_bounds
    from dlc.runtime.interop.checkpoint import FORMAT
    import dlc
    trainer = Trainer(load(file), model, overrides, None, progress="none")
    cfg, tm = trainer.cfg, trainer.train_model
    trainable, groups = trained_names(tm, cfg)
    if not trainable:
        raise DlcError(f"model {tm.name} trains no parameter: there is no train step to build", cfg.span("freeze"))
    optimizer = make_optimizer(cfg.optimizer)
    optimizer.set_groups(groups)
    trainable = sorted(trainable, key=optimizer.group_number)       # group by group, as the native engine's
    if optimizer.full_batch:
        raise DlcError(f"{optimizer.name} is not a step of one batch (its line search calls the step again): "
                       "dlc build --train takes a first-order optimizer", cfg.span("optimizer"))
    not_f32 = [p.name for p in tm.params if p.type.dtype != "f32"]
    if not_f32:
        raise DlcError(f"dlc build --train keeps parameters in f32; {not_f32[0]} is not", cfg.span("precision"))
    train, _, _, trainer.meta = prepare_data(cfg, trainer.base, tm)
    n = len(next(iter(train.values())))
    bounds = epoch_bounds(n, cfg.batch, trainer.meta, bool(batch_statistics(tm)))
    epochs, max_steps = run_length(cfg, len(bounds))
    make_schedule(cfg.schedule, optimizer.lr, len(bounds), epochs, cfg.span("schedule"), max_steps)  # checked at its line
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
    total = max_steps if max_steps is not None else epochs * len(bounds)
    training = Training(update, len(trainable), slots, scalar_names, runs, cfg.seed, meta[:-1], functions,
                        (len(bounds), total), cfg.optimizer.name)
    graph = train_step(tm.graph)
    inputs = []
    for v in graph.nodes_with("input"):
        name, typ = graph.attrs(v)["name"], graph.types(v)[0]
        if name != "rng":       # an integer input's limits: dlc train's, which train_step checks too
            inputs.append(ModelIO(name, typ.dtype, tuple(typ.shape), input_limits(tm, name, typ.dtype)))
    shapes = {p.name: tuple(int(d) for d in p.type.shape) for p in tm.params}
    return graph, cfg.precision, training, order, shapes, inputs
