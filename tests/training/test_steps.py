"""Training counted in steps (max_steps, eval_every, warmup_steps and decay_steps) and text
drawn as random windows with a held-out tail (text(windows = "random"), split(tail = true)):
where a run stops, its history, its checkpoints and resuming them bit for bit, the
schedules' rates, and the draws' reproducibility."""

from pathlib import Path

import numpy as np
import pytest

from helpers.programs import write
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load
from dlc.runtime.data.registry import load as load_data
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.callbacks import Callback, StopTraining
from dlc.runtime.optim.schedules import make_schedule
from dlc.runtime.training.inputs import prepare_data
from dlc.runtime.training.trainer import Trainer
from dlc.runtime.training.run_plan import windows_drawn

GENESIS = Path(__file__).parents[2] / "examples" / "data" / "genesis.txt"
CHARS = """
model chars {
    input  x: i32[B, T]
    target y: i32[B, T]
    h = embedding(x, 60, 8)
    logits = dense(layernorm(h, bias = false), 60)
    loss sparse_cross_entropy(logits, y)
}
"""


def chars_train(steps: int, every: int = 4, extra: str = "", seq: int = 8, batch: int = 4) -> str:
    return (
        f'train chars {{ data = text("{GENESIS}", seq = {seq}, windows = "random") '
        f"validation = split(0.02, tail = true) batch = {batch} max_steps = {steps} eval_every = {every} "
        "optimizer = adamw(lr = 1e-2, betas = (0.9, 0.95), weight_decay = 0.1) "
        f"param_groups = [group(ndim = 1, weight_decay = 0)] schedule = cosine(warmup_steps = 3) {extra} }}"
    )


def run(path, out, backend="reference", **kw):
    return Trainer(load(path), None, {}, out, log=lambda m: None, backend=backend, **kw).run(
        **{k: v for k, v in kw.items() if k == "resume"}
    )


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, step, logs):
        if step == self.step:
            raise StopTraining("test")


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_max_steps_stops_inside_an_epoch_and_resumes_bit_for_bit(tmp_path, backend):
    path = write(tmp_path, CHARS, chars_train(10))
    whole = Trainer(load(path), None, {}, tmp_path / "whole", log=lambda m: None, backend=backend).run()
    assert [row["step"] for row in whole.history] == [4, 8, 10]  # a row every 4 steps, and the last step
    _, _, meta = checkpoint.load(tmp_path / "whole" / "last.npz")
    assert (meta["step"], meta["epoch"], meta["batch"]) == (10, 0, 10)  # inside the first epoch
    # stopped at step 6, between two rows, then resumed: the same parameters and history, to the bit
    first = Trainer(
        load(path), None, {}, tmp_path / "cut", log=lambda m: None, backend=backend, callbacks=[StopAt(6)]
    ).run()
    assert first.stopped == "stopped" and len(first.history) == 1
    resumed = Trainer(load(path), None, {}, tmp_path / "cut", log=lambda m: None, backend=backend).run(resume=True)
    for name, value in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
    assert [(r["step"], r["loss"], r["val_loss"]) for r in resumed.history] == [
        (r["step"], r["loss"], r["val_loss"]) for r in whole.history
    ]


def test_a_finished_run_by_steps_resumed_does_nothing_more(tmp_path):
    path = write(tmp_path, CHARS, chars_train(5))
    done = run(path, tmp_path / "run")
    again = Trainer(load(path), None, {}, tmp_path / "run", log=lambda m: None, backend="reference").run(resume=True)
    for name, value in done.params.items():
        np.testing.assert_array_equal(again.params[name], value)
    assert len(again.history) == len(done.history) == 2


def test_eval_every_in_a_run_by_epochs(tmp_path):
    path = write(tmp_path, CHARS, chars_train(1, 40, seq=32, batch=64).replace("max_steps = 1", "epochs = 1"))
    result = run(path, tmp_path / "run")
    windows = GENESIS.stat().st_size - 32
    trained = windows - round(windows * 0.02) - 32  # the windows before the held-out tail
    per_epoch = trained // 32 // 64  # the steps that read as many characters as the training text holds
    assert [r["step"] for r in result.history] == [40, 80, per_epoch] and per_epoch == 94


@pytest.mark.parametrize(
    "settings, message",
    [
        ("epochs = 2 max_steps = 10", "give epochs or max_steps, not both"),
        ("max_steps = 0", "max_steps must be an integer >= 1"),
        ("eval_every = 1.5", "eval_every must be an integer >= 1"),
        ("schedule = cosine(warmup = 1, warmup_steps = 10)", r"give warmup \(epochs\) or warmup_steps, not both"),
        ("schedule = constant(decay_steps = 10)", "constant does not decay"),
        (f'data = text("{GENESIS}", windows = "sliding")', "'windows' must be one of fixed, random"),
    ],
)
def test_bad_step_settings_are_located(tmp_path, settings, message):
    from dlc.runtime.training.config import make_config

    path = write(tmp_path, CHARS, f"train chars {{\n  {settings}\n}}")
    with pytest.raises(DlcError, match=message) as e:
        make_config(load(path), "chars", {}, require_data=False)
        load_data(make_config(load(path), "chars", {}, require_data=False).data, tmp_path, "data")
    assert e.value.span is not None and e.value.span.line == 10


def test_a_flag_for_epochs_replaces_max_steps():
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.training.config import make_config

    program = load_text(CHARS + chars_train(10))
    assert make_config(program, "chars", {"epochs": 1}, require_data=False).max_steps is None


# ---- schedules ----------------------------------------------------------------------------------
def schedule(spec: str, per_epoch=10, epochs=5, total=None):
    from dlc.runtime.training.config import parse_setting

    return make_schedule(parse_setting(spec, "schedule"), 1e-3, per_epoch, epochs, None, total)


def test_a_warmup_shorter_than_one_step_never_exceeds_the_base_rate():
    # 0.05 of an epoch of 11 steps: 0.55 steps, which ran step 1 at 1.82e-3 against a base of 1e-3
    s = schedule("cosine(warmup = 0.05)", per_epoch=11, epochs=1)
    assert s(0) == pytest.approx(1e-3)
    assert max(s(t) for t in range(11)) <= 1e-3
    ramp = schedule("linear_warmup(warmup_steps = 4)")
    assert [ramp(t) for t in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_cosine_in_steps_is_nanogpts():
    """warmup_steps then a cosine to min_lr at step decay_steps, as nanoGPT's get_lr(it)."""
    import math

    s = schedule("cosine(warmup_steps = 100, decay_steps = 2000, min_lr = 1e-4)", total=5000)
    for it in (0, 50, 99, 100, 101, 1000, 1999, 2000, 3000):
        if it < 100:
            want = 1e-3 * (it + 1) / 100
        elif it > 2000:
            want = 1e-4
        else:
            want = 1e-4 + 0.5 * (1 + math.cos(math.pi * (it - 100) / 1900)) * (1e-3 - 1e-4)
        assert s(it) == pytest.approx(want, rel=1e-12), it
    # without decay_steps, a run by steps decays over max_steps
    assert schedule("cosine(warmup_steps = 10)", total=110)(110) == pytest.approx(0.0, abs=1e-18)


def test_decay_steps_of_step_exponential_and_restarts():
    assert schedule("step(gamma = 0.5, decay_steps = 3)")(7) == pytest.approx(1e-3 * 0.25)
    assert schedule("exponential(gamma = 0.5, decay_steps = 4, warmup_steps = 2)")(10) == pytest.approx(1e-3 * 0.25)
    restarts = schedule("warm_restarts(decay_steps = 5)")
    assert restarts(5) == pytest.approx(1e-3) and restarts(0) == pytest.approx(1e-3)


def test_epoch_schedules_are_unchanged_by_steps():
    s = schedule("step(every = 2, gamma = 0.1)")
    assert [s(t) for t in (0, 19, 20, 40)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


# ---- random windows -------------------------------------------------------------------------------
def text_data(tmp_path, **kw):
    args = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in kw.items())
    from dlc.runtime.training.config import parse_setting

    return load_data(parse_setting(f'text("{GENESIS}", {args})', "data"), tmp_path, "data")


def test_random_windows_are_every_offset_with_the_next_characters(tmp_path):
    ds = text_data(tmp_path, seq=8, windows="random")
    ids = ds.columns["x"][:, 0]
    assert len(ds) == GENESIS.stat().st_size - 8 == len(ids)
    np.testing.assert_array_equal(ds.columns["x"][5][1:], ds.columns["y"][5][:-1])  # offset by one
    np.testing.assert_array_equal(ds.columns["x"][6], ds.columns["y"][5])
    assert not ds.columns["x"].flags.owndata  # a view of the text, not 8 copies of it


def test_a_tail_split_holds_out_the_end_of_the_text_without_overlap(tmp_path):
    ds = text_data(tmp_path, seq=8, windows="random")
    rest, held = ds.split(0.1, tail=True)
    n, k = len(ds), int(round(len(ds) * 0.1))
    first_held = n - k
    assert len(rest) == first_held - 8  # the last training window's target ends before the tail
    assert len(held) == len(range(first_held, n, 8)) and "windows" not in held.meta
    np.testing.assert_array_equal(held.columns["x"][1], ds.columns["x"][first_held + 8])
    # both parts stay views of the text: a copy of GPT-2's windows (256 characters each) was 400 MB
    assert all(np.shares_memory(part.columns[c], ds.columns[c]) for part in (rest, held) for c in ("x", "y"))
    with pytest.raises(DlcError, match="random windows overlap"):
        ds.split(0.1)
    plain = text_data(tmp_path, seq=8)
    rest, held = plain.split(0.25, tail=True)
    np.testing.assert_array_equal(held.columns["x"], plain.columns["x"][len(rest) :])


def test_the_windows_a_run_trains_and_validates_on_stay_views_of_the_text(tmp_path):
    trainer = Trainer(load(write(tmp_path, CHARS, chars_train(2))), None, {}, tmp_path / "out", log=lambda m: None)
    train, val, _, _ = prepare_data(trainer.cfg, trainer.base, trainer.train_model)
    assert all(a.dtype == np.int32 and not a.flags.owndata for a in (*train.values(), *val.values()))


def test_the_draws_are_a_function_of_seed_and_step():
    a = [windows_drawn(1000, 4, 3, step) for step in range(1, 6)]
    assert all(np.array_equal(x, windows_drawn(1000, 4, 3, s)) for s, x in enumerate(a, 1))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], windows_drawn(1000, 4, 4, 1))
