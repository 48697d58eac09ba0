"""docs/architecture.md's recipes for a new optimizer and a new schedule ("How to add ..."),
walked: an optimizer, one class defined in this file only and registered for the test, with
per-step scalars no built-in optimizer has (a warmup chosen by `select`, a rate over the
step's square root, a bias correction), a decoupled weight decay and parameter groups, and
a schedule, one function defined here too (an inverse square root), train bit for bit alike
on the reference engine, the native engine and a `dlc build --train` library; and each
recipe names the file of code it changes, and not the build.

The model's loss is sum(w * g) + sum(u * k) over batches of one row, so its gradients are
exactly the batch's g and k on every engine (a model's gradients otherwise differ between the
engines in their last bits, by the order of their sums): what differs is the update alone."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.c_api import Api, train_steps, trainer_batches
from dlc.compiler.frontend.loader import load
from dlc.compiler.frontend.settings import REQUIRED
from dlc.compiler.ir import ops
from dlc.runtime.deploy.build import build
from dlc.runtime.optim import schedules
from dlc.runtime.optim.formula import maximum, select
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.optim.optimizers import OPTIMIZERS
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import Trainer, initial_parameters

ROOT = Path(__file__).resolve().parents[2]


class WarmSignum(Optimizer):
    """signSGD with momentum (Bernstein et al. 2018), its rate warmed up over 3 steps and then
    lr / sqrt(step), its momentum bias-corrected before the sign."""

    name = "warm_signum"
    options = {"lr": REQUIRED, "momentum": 0.9, "weight_decay": 0.0}
    decoupled = True

    def slots(self):
        return ("momentum",)

    def scalars(self, lr, step, h):
        return {"rate": select(step < 3, lr * step / 3, lr / step**0.5), "correction": 1 - h["momentum"] ** step}

    def rule(self, u):
        h = self.hyper
        m = ops.fma(u.grad, 1 - h["momentum"], u.state["momentum"] * h["momentum"])
        return ops.fma(ops.unary("sign", m / u.scalar("correction")), -u.scalar("rate"), u.param), {"momentum": m}


def inverse_sqrt(o, t):
    """lr over the square root of 1 + the epochs since the warmup, never below min_lr."""
    return maximum(t.lr / (1 + t.after / t.span(1)) ** 0.5, o["min_lr"])


MODEL = """
model sums {
    input g: f32[B, 40]
    input k: f32[B, 4, 5]
    param w: f32[40]
    param u: f32[4, 5]
    loss sum(w * g) + sum(u * k)
    output y = g * w
}
train sums {
    data = npz("sums.npz")
    batch = 1
    epochs = 2
    optimizer = warm_signum(lr = 0.05, momentum = 0.8, weight_decay = 0.1)
    param_groups = [group("u", weight_decay = 0.3, lr_mult = 0.5)]
    schedule = inverse_sqrt(warmup_steps = 2, min_lr = 0.01)
}
"""


def recipe(what: str) -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return text.split(f"**{what}.**", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize(
    "what, code, tests",
    [
        (
            "An optimizer",
            "runtime/optim/optimizers.py",
            {"docs/training.md", "tests/native/test_update_rule.py", "tests/deploy/test_train_settings.py"},
        ),
        (
            "A schedule",
            "runtime/optim/schedules.py",
            {"docs/training.md", "tests/deploy/test_step_formulas.py", "tests/deploy/test_train_settings.py"},
        ),
    ],
)
def test_a_recipe_changes_one_file_of_code(what, code, tests):
    """What a new optimizer or schedule touches: one module of runtime/optim/, the docs, its test
    cases; not the build."""
    named = re.findall(r"`((?:runtime|compiler|tests|docs)/[\w/.]+)`", recipe(what))
    assert all((ROOT / path).exists() for path in named), named
    assert named[0] == code  # "One class (function) in ..."; the others are read
    assert tests | {"tests/deploy/test_recipes.py"} <= set(named)
    assert "runtime/deploy" not in recipe(what)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_an_optimizer_and_schedule_defined_here_train_alike_on_both_engines_and_a_built_library(tmp_path, monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, WarmSignum.name, WarmSignum)
    for registry in ("SCHEDULES", "_RATES"):  # the schedule registered until the test ends
        monkeypatch.setattr(schedules, registry, dict(getattr(schedules, registry)))
    schedules.schedule("inverse_sqrt", min_lr=0.0)(inverse_sqrt)
    rng = np.random.default_rng(5)
    np.savez(
        tmp_path / "sums.npz",
        g=rng.standard_normal((5, 40)).astype(np.float32),
        k=rng.standard_normal((5, 4, 5)).astype(np.float32),
    )
    dl = tmp_path / "sums.dl"
    dl.write_text(MODEL)
    seed = 2
    fed = trainer_batches(dl, {"seed": seed}, tmp_path / "native")
    Trainer(load(dl), None, {"seed": seed}, tmp_path / "reference", backend="reference", progress="none").run(
        overwrite=True
    )
    build(str(dl), tmp_path / "lib", train=True, overrides={"seed": seed})
    start = initial_parameters(load(dl).build(None, training=True), seed)
    checkpoint.save(tmp_path / "init.npz", start, {}, {})
    api = Api(tmp_path / "lib", "sums")
    status, instance = api.create(tmp_path / "init.npz")
    assert status == 0, api.error(instance)
    train_steps(api, instance, fed)
    assert api.f("save")(instance, str(tmp_path / "c.npz").encode()) == 0, api.error(instance)
    api.f("destroy")(instance)

    runs = {
        run: checkpoint.load(path)
        for run, path in [
            ("native", tmp_path / "native" / "last.npz"),
            ("reference", tmp_path / "reference" / "last.npz"),
            ("library", tmp_path / "c.npz"),
        ]
    }
    assert len(fed) == 10 and runs["native"][2]["step"] == 10
    arrays = {
        run: {**params, **{f"{n}:{s}": a for n, slots in state.items() for s, a in slots.items()}}
        for run, (params, state, _) in runs.items()
    }
    assert set(arrays["native"]) == {"w", "u", "w:momentum", "u:momentum"}
    for run in ("reference", "library"):
        assert arrays[run].keys() == arrays["native"].keys()
        different = [k for k in arrays[run] if arrays[run][k].tobytes() != arrays["native"][k].tobytes()]
        assert different == [], f"{run} vs native"
    assert not np.array_equal(arrays["native"]["w"], start["w"])
