"""A `dlc build --train` library's train_step against `dlc train --backend native`, bit for
bit, for every first-order optimizer and schedule the train block takes, with parameter
groups (their own weight decay and learning-rate multiplier) in every case, and freeze,
l1, l2, both clippings, warmups in epochs and in steps, decay_steps, max_steps and random
windows spread over the cases (docs/deploy.md "Training from C").

Each case is one tiny character model (an embedding, a layernorm, two dense layers: 1-D
and 2-D parameters for the groups) built once and trained for two epochs (the run by
max_steps: 12 steps) through ctypes with the batches the trainer feeds its engine: the
first half, saved, then the rest from that checkpoint in a new instance; the parameters,
the optimizer state and the checkpoint's step, epoch and batch are the trainer's. A case
spends most of its time in the build: 6.6 s of CPU cold, half of it the GEMM object, which
the compile cache gives the builds after the first (measured once, on a busy machine)."""

import shutil

import numpy as np
import pytest

from helpers.c_api import Api, train_steps, trainer_batches
from dlc.compiler.frontend.loader import load
from dlc.runtime.deploy.build import build
from dlc.runtime.optim.optimizers import OPTIMIZERS
from dlc.runtime.optim.schedules import SCHEDULES
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import initial_parameters

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")

TEXT = "the cat sat on the mat; a dog ran to the log. " * 8
MODEL = f"""
model tiny {{
    input  x: i32[B, T]
    target y: i32[B, T]
    e = embedding(x, {len(set(TEXT))}, 6)
    h = dense(layernorm(e), 8, tanh)
    logits = dense(h, {len(set(TEXT))})
    loss   sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}}
"""
GROUPS = 'param_groups = [group(ndim = 1, weight_decay = 0, lr_mult = 2), group("logits", lr_mult = 0.5)]'
# id -> the train block's settings besides data, batch and the groups: each optimizer and schedule at least once
CASES = {
    "sgd-step-warmup-l2": "optimizer = sgd(lr = 0.2, weight_decay = 0.01) schedule = step(every = 1, gamma = 0.5, "
    "warmup = 0.5) l2 = 0.001",
    "momentum-exponential-clip-value": "optimizer = momentum(lr = 0.05, weight_decay = 0.01) "
    "schedule = exponential(gamma = 0.7) clip = value(0.05)",
    "nesterov-warm-restarts-freeze": "optimizer = nesterov(lr = 0.05) schedule = warm_restarts(period = 1, mult = 2, "
    "min_lr = 0.001) freeze = [e]",
    "rmsprop-cosine-l1": "optimizer = rmsprop(lr = 0.01, weight_decay = 0.01) schedule = cosine(min_lr = 0.001, "
    "warmup = 1) l1 = 0.0001",
    "rmsprop-momentum-linear-warmup-clip": "optimizer = rmsprop(lr = 0.01, momentum = 0.9) "
    "schedule = linear_warmup(warmup_steps = 3) clip = global_norm(0.5)",
    # an epoch of random windows is the steps that read the text's length: 7 here, not one per window
    "adam-random-windows-max-steps": "optimizer = adam(lr = 0.01, weight_decay = 0.01) schedule = step(decay_steps = 3, "
    "gamma = 0.5, warmup = 1) max_steps = 12",
    "adamw-cosine-decay-steps-clip": "optimizer = adamw(lr = 0.01, betas = (0.8, 0.99), weight_decay = 0.1) "
    "schedule = cosine(warmup_steps = 2, decay_steps = 5, min_lr = 0.001) clip = 1.0",
    "adagrad-constant": "optimizer = adagrad(lr = 0.1, lr_decay = 0.1, weight_decay = 0.01)",
    "lion-warm-restarts-decay-steps": "optimizer = lion(lr = 0.003, betas = (0.8, 0.95), weight_decay = 0.1) "
    "schedule = warm_restarts(decay_steps = 2, mult = 1.5, warmup_steps = 1)",
}


def test_the_cases_take_every_optimizer_and_schedule():
    """Every first-order optimizer and every schedule is in a case (a new one must be added)."""
    text = " ".join(CASES.values())
    first_order = [name for name, cls in OPTIMIZERS.items() if not cls.full_batch]
    assert [n for n in first_order if f"optimizer = {n}(" not in text] == []
    assert [n for n in SCHEDULES if n != "constant" and f"schedule = {n}(" not in text] == []
    assert any("schedule" not in settings for settings in CASES.values())  # constant, the default


@pytest.mark.parametrize("case", CASES)
def test_a_library_trains_as_dlc_train(case, tmp_path):
    seed = 3
    settings = CASES[case]
    windows = ', windows = "random"' if "random-windows" in case else ""
    epochs = "" if "max_steps" in settings else "epochs = 2"
    (tmp_path / "tiny.txt").write_text(TEXT)
    dl = tmp_path / "tiny.dl"
    dl.write_text(
        MODEL + f'train tiny {{\n    data = text("tiny.txt", seq = 6{windows})\n    batch = 8\n    {epochs}\n'
        f"    {GROUPS}\n    {settings}\n}}\n"
    )
    build(str(dl), tmp_path / "lib", train=True, overrides={"seed": seed})
    fed = trainer_batches(dl, {"seed": seed}, tmp_path / "run")
    want, want_opt, want_meta = checkpoint.load(tmp_path / "run" / "last.npz")
    start = initial_parameters(load(dl).build(None, training=True), seed)
    checkpoint.save(tmp_path / "init.npz", start, {}, {})
    api = Api(tmp_path / "lib", "tiny")
    # the first half (an epoch), saved; the rest in a new instance from that checkpoint
    half = len(fed) // 2
    for begin, batches, end in (("init", fed[:half], "half"), ("half", fed[half:], "c")):
        status, instance = api.create(tmp_path / f"{begin}.npz")
        assert status == 0, api.error(instance)
        train_steps(api, instance, batches)
        assert api.f("save")(instance, str(tmp_path / f"{end}.npz").encode()) == 0, api.error(instance)
        api.f("destroy")(instance)
    got, got_opt, meta = checkpoint.load(tmp_path / "c.npz")
    assert set(got) == set(want) and set(got_opt) == set(want_opt)
    different = [name for name in want if got[name].tobytes() != want[name].tobytes()] + [
        f"{name}:{slot}"
        for name in want_opt
        for slot in want_opt[name]
        if got_opt[name][slot].tobytes() != want_opt[name][slot].tobytes()
    ]
    assert different == []
    assert {k: meta[k] for k in ("step", "epoch", "batch")} == {k: want_meta[k] for k in ("step", "epoch", "batch")}
    trained = [name for name in want if not np.array_equal(want[name], start[name])]
    assert trained == [n for n in want if not ("freeze" in settings and n.startswith("e."))]
