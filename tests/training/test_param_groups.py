"""Parameter groups (runtime/training/groups.py, the `param_groups` train setting): which
parameters each group takes, and the optimizer's update with per-group weight decay and
learning-rate multipliers on both engines, against torch.optim's param_groups.

The model's loss is sum of each parameter times an input of its shape, so each
parameter's gradient is exactly that input: dlc and torch see the same gradients."""

import numpy as np
import pytest

from helpers.programs import write
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.training.groups import make_groups
from dlc.runtime.engines.reference import update
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call

STEPS = 20
SHAPES = {"W": (8, 16), "b": (16,), "g": (16,), "E": (5, 16)}
MODEL = """
model grouped {
    input dW: f32[8, 16]
    input db: f32[16]
    input dg: f32[16]
    input dE: f32[5, 16]
    param W: f32[8, 16]
    param b: f32[16]
    param g: f32[16]
    param E: f32[5, 16]
    loss sum(W * dW) + sum(b * db) + sum(g * dg) + sum(E * dE)
}
"""
NO_DECAY = Call("group", [], {"ndim": 1, "weight_decay": 0.0})
SLOW_E = Call("group", ["E"], {"lr_mult": 0.1})


def start():
    rng = np.random.default_rng(5)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def gradients():
    rng = np.random.default_rng(9)
    for _ in range(STEPS):
        yield {
            k: (rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 0, s)).astype(np.float32) for k, s in SHAPES.items()
        }


def grouped_optimizer(program, groups, opts):
    opt = make_optimizer(Call("adamw", [], opts))
    model = program.build(training=True)
    opt.set_groups(make_groups(groups, model.params, list(SHAPES)))
    return opt, model


def dlc_steps(engine_name, groups, opts, lrs, **native):
    program = load_text(MODEL)
    opt, model = grouped_optimizer(program, groups, opts)
    params = start()
    state = opt.init(params)
    engine = (
        NativeEngine(model, program.build(training=False), opt, list(SHAPES), **native)
        if engine_name == "native"
        else None
    )
    for t, (g, lr) in enumerate(zip(gradients(), lrs), 1):
        if engine is None:
            update(opt, params, {k: g[k].copy() for k in SHAPES}, state, lr, t)
        else:
            engine.train_step(params, state, {f"d{k}": g[k] for k in SHAPES}, lr, t, np.array([0, t], np.int32))
    return params


def torch_steps(torch, opts, lrs):
    p = {k: torch.tensor(v) for k, v in start().items()}
    opt = torch.optim.AdamW(
        [
            {"params": [p["W"]]},
            {"params": [p["b"], p["g"]], "weight_decay": 0.0},
            {"params": [p["E"]], "lr": opts["lr"] * 0.1, "lr_mult": 0.1},
        ],
        lr=opts["lr"],
        betas=(0.9, 0.95),
        weight_decay=opts["weight_decay"],
    )
    for g, lr in zip(gradients(), lrs):
        for group in opt.param_groups:  # the schedule's rate, times each group's multiplier
            group["lr"] = lr * group.get("lr_mult", 1.0)
        for k in SHAPES:
            p[k].grad = torch.from_numpy(g[k])
        opt.step()
    return {k: v.numpy() for k, v in p.items()}


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_adamw_with_a_no_decay_group_matches_torch(engine):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    opts = {"lr": 3e-2, "betas": [0.9, 0.95], "weight_decay": 0.5}
    lrs = [3e-2 * (t + 1) / STEPS for t in range(STEPS)]  # a rate that changes every step
    ours = dlc_steps(engine, [NO_DECAY, SLOW_E], opts, lrs)
    theirs = torch_steps(torch, opts, lrs)
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-6, err_msg=k)
    # the groups made a difference: without them every parameter decays at the full rate
    plain = dlc_steps(engine, [], opts, lrs)
    assert np.abs(plain["b"] - ours["b"]).max() > 1e-3 and np.abs(plain["E"] - ours["E"]).max() > 1e-3


def test_native_grouped_update_is_the_reference():
    opts = {"lr": 1e-2, "weight_decay": 0.1}
    lrs = [1e-2] * STEPS
    ours, ref = (
        dlc_steps("native", [NO_DECAY, SLOW_E], opts, lrs),
        dlc_steps("reference", [NO_DECAY, SLOW_E], opts, lrs),
    )
    for k in SHAPES:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


@pytest.mark.parametrize("native", [{}, {"split": True, "buckets": 256}], ids=["one call", "bucketed"])
def test_groups_out_of_the_parameters_order_update_as_the_reference(native):
    # W's group comes last: the engine orders the flat arrays group by group and tells an element's group
    # from its index (no group array); a bucketed step keeps the buckets' order and an array of the groups
    groups = [NO_DECAY, Call("group", ["W"], {"lr_mult": 0.1})]
    opts, lrs = {"lr": 1e-2, "weight_decay": 0.1}, [1e-2] * STEPS
    program = load_text(MODEL)
    opt, model = grouped_optimizer(program, groups, opts)
    engine = NativeEngine(model, program.build(training=False), opt, list(SHAPES), **native)
    assert (engine.group is None) == (not native)
    assert engine.offsets["W"] > engine.offsets["E"] or native
    ours, ref = dlc_steps("native", groups, opts, lrs, **native), dlc_steps("reference", groups, opts, lrs)
    for k in SHAPES:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_groups_take_parameters_by_rule():
    model = load_text(MODEL).build(training=True)
    names = list(SHAPES)
    by_ndim, by_name, by_list = make_groups(
        [NO_DECAY, Call("group", ["W"], {"lr_mult": 2.0}), Call("group", [["E", "b"]], {"weight_decay": 0.0})],
        model.params,
        names,
    )
    assert by_ndim.members == ["b", "g"] and by_name.members == ["W"] and by_list.members == ["E"]  # first wins
    assert by_ndim.size == 32 and by_list.weight_decay == 0.0 and by_name.lr_mult == 2.0
    (pattern,) = make_groups(Call("group", ["*"], {"ndim": 2, "weight_decay": 0.0}), model.params, ["W"])
    assert pattern.members == ["W"]  # E matches but is not trained


@pytest.mark.parametrize(
    "setting, message",
    [
        ('group("nothing*", weight_decay = 0)', "no parameter of the model is in this group"),
        ("group(weight_decay = 0)", "group needs the parameters it takes"),
        ("group(ndim = 1)", "group changes nothing"),
        ("group(ndim = 1, lr_mult = -1)", "'lr_mult' must be at least 0"),
        ("adam(lr = 1)", r"param_groups takes group\(...\) calls"),
    ],
)
def test_bad_groups_are_located(tmp_path, setting, message):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.config import make_config

    path = write(tmp_path, MODEL, f"train grouped {{\n    param_groups = [{setting}]\n}}")
    program = load(path)
    with pytest.raises(DlcError, match=message) as e:
        make_config(program, "grouped", {}, require_data=False, model=program.build(training=True))
    assert e.value.span is not None and e.value.span.line == 14


def test_betas_tuple_is_beta1_beta2():
    a = make_optimizer(Call("adamw", [], {"lr": 1e-3, "betas": [0.8, 0.95]}))
    assert (a.hyper["beta1"], a.hyper["beta2"]) == (0.8, 0.95)
    for bad, message in (([0.9], "must be 2 numbers"), (0.9, "must be 2 numbers")):
        with pytest.raises(DlcError, match=message):
            make_optimizer(Call("adam", [], {"lr": 1e-3, "betas": bad}))
    with pytest.raises(DlcError, match="'beta1' is given twice"):
        make_optimizer(Call("adam", [], {"lr": 1e-3, "betas": [0.9, 0.9], "beta1": 0.8}))
    with pytest.raises(DlcError, match="has no option 'betas'"):  # sgd has no betas
        make_optimizer(Call("sgd", [], {"lr": 1e-3, "betas": [0.9, 0.9]}))


def test_summary_lists_the_groups(tmp_path, capsys):
    from dlc.runtime.cli import main

    path = write(
        tmp_path,
        MODEL,
        'train grouped {\n    optimizer = adamw(lr = 1e-3, weight_decay = 0.1)\n'
        '    param_groups = [group(ndim = 1, weight_decay = 0), group("E", lr_mult = 0.1)]\n'
        '    freeze = ["g"]\n}',
    )
    assert main(["summary", path]) == 0
    out = capsys.readouterr().out
    assert "Parameter groups (adamw(lr = 0.001, weight_decay = 0.1)):" in out
    assert "group(ndim = 1, weight_decay = 0): weight_decay 0; 1 tensor, 16 parameters: b\n" in out  # g is frozen
    assert 'group("E", lr_mult = 0.1): lr x0.1; 1 tensor, 80 parameters: E\n' in out
    assert "the rest: the optimizer's settings (weight_decay 0.1); 1 tensor, 128 parameters: W" in out
