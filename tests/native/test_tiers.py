"""A program's code in two tiers (runtime/engines/tiers.py): quick code first, O3 once it
is hot, the same bits from both, the O3 code stored for the next run, a run that ends
during the O3 compile ending at once, and quick or unoptimized code only (DLC_QUICK_CODE=only,
unoptimized)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load
from dlc.compiler.frontend.settings import Call
from dlc.compiler.native.codegen import jit
from dlc.runtime.engines import cache, tiers
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.training.gradcheck import init_params, sample_inputs

from helpers.engine_parity import five_steps

EXAMPLES = Path(__file__).parents[2] / "examples"
SIZES = {"B": 3, "T": 5, "S": 4, "K": 3}


@pytest.fixture(autouse=True)
def dlc_default_tiers(monkeypatch):
    """dlc's default (the test session runs quick code only: tests/conftest.py)."""
    monkeypatch.setenv("DLC_QUICK_CODE", "1")


def trained(name: str, finish_after: int | None):
    """Five Adam steps of an example on the native engine, its evaluation and prediction; with
    `finish_after`, its O3 code is waited for after that many steps. Also says which steps ran
    quick code."""
    quick = []

    def before_step(engine, step):
        if step - 1 == finish_after:
            engine.finish_compiling()
        quick.append(not engine.train_exe.driver.optimized)

    params, losses, engine, feeds = five_steps(
        load(str(EXAMPLES / name)), NativeEngine, Call("adam", [], {"lr": 1e-3}), SIZES, before_step=before_step
    )
    inputs = {k: v for k, v in feeds.items() if k in {i.name for i in engine.eval_model.inputs}}
    outputs = engine.evaluate(params, feeds), engine.predict(params, inputs) if engine.eval_model.graph.outputs else {}
    return params, losses, outputs, quick


@pytest.mark.parametrize("name", ["digits_cnn.dl", "char_lstm.dl", "transformer_classifier.dl"])
def test_quick_code_and_o3_code_train_to_the_same_bits(tmp_path, monkeypatch, name):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "o3"))
    monkeypatch.setenv("DLC_QUICK_CODE", "0")
    o3, o3_losses, o3_outputs, quick = trained(name, None)
    assert not any(quick)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "tiers"))
    monkeypatch.setenv("DLC_QUICK_CODE", "1")
    tiered, losses, outputs, quick = trained(name, finish_after=2)
    assert quick == [True, True, False, False, False]
    assert losses == o3_losses and repr(outputs) == repr(o3_outputs)
    for k in o3:
        np.testing.assert_array_equal(tiered[k], o3[k], err_msg=k)
    # LLVM's O0 code generator (the test session's level) computes them too
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "unoptimized"))
    monkeypatch.setenv("DLC_QUICK_CODE", "unoptimized")
    unoptimized, losses, outputs, quick = trained(name, None)
    assert all(quick)
    assert losses == o3_losses and repr(outputs) == repr(o3_outputs)
    for k in o3:
        np.testing.assert_array_equal(unoptimized[k], o3[k], err_msg=k)


def _xor_engine():
    """The XOR MLP's native engine, SGD, its parameters, optimizer state and a batch."""
    program = load(str(EXAMPLES / "xor_mlp.dl"))
    train, evaluation = program.build(training=True), program.build(training=False)
    opt = make_optimizer(Call("sgd", [], {"lr": 0.1}))
    engine = NativeEngine(train, evaluation, opt, [p.name for p in train.params])
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    return engine, train, evaluation, opt, params, opt.init(params), sample_inputs(train, SIZES, seed=1)


def test_hot_quick_code_is_replaced_by_o3_code_which_the_next_run_starts_with(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiers, "O3_SECONDS_PER_BYTE", 0.0)  # hot after its first call
    monkeypatch.setattr(tiers, "HOT", 0.0)
    engine, train, evaluation, opt, params, state, feeds = _xor_engine()
    driver, quick, steps = engine.train_exe.driver, engine.train_exe.compiled, 0
    # the O3 compile runs beside the calls; the first call after it is done runs its code
    deadline = time.monotonic() + 120
    while not driver.optimized and time.monotonic() < deadline:
        steps += 1
        engine.train_step(params, state, feeds, 0.1, steps, np.array([0, steps], np.int32))
    assert driver.optimized and engine.train_exe.compiled is not quick and steps > 1
    # a new engine of the same program in the same cache: O3 at its first call, nothing compiled
    compiles = cache.stats["compiles"]
    again = NativeEngine(train, evaluation, opt, [p.name for p in train.params])
    assert again.train_exe.driver.optimized and again.train_exe.compiled.cached
    assert cache.stats["compiles"] == compiles


def test_quick_code_from_the_cache_is_built_again_when_hot(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    trained("digits_mlp.dl", None)  # quick code, not hot: stored as quick code only
    built = []
    from dlc.runtime.engines import native

    build_module = native.build_module
    monkeypatch.setattr(native, "build_module", lambda *a, **k: built.append(1) or build_module(*a, **k))
    reference, reference_losses, _, _ = trained("digits_mlp.dl", None)
    assert built == [], "the quick code was not read from the cache"
    params, losses, _, quick = trained("digits_mlp.dl", finish_after=1)
    assert quick == [True, False, False, False, False] and built, "the module was not built for the O3 compile"
    assert losses == reference_losses
    for k in reference:
        np.testing.assert_array_equal(params[k], reference[k], err_msg=k)


@pytest.mark.parametrize("mode", ["only", "unoptimized"])
def test_quick_code_only_never_compiles_at_o3_but_runs_o3_code_from_the_cache(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_QUICK_CODE", mode)
    monkeypatch.setattr(tiers, "O3_SECONDS_PER_BYTE", 0.0)  # hot after its first call, if it could be
    monkeypatch.setattr(tiers, "HOT", 0.0)
    engine, train, evaluation, opt, params, state, feeds = _xor_engine()
    for step in range(1, 6):
        engine.train_step(params, state, feeds, 0.1, step, np.array([0, step], np.int32))
    driver = engine.train_exe.driver
    assert not driver.optimized and driver.children is None, "an O3 compile was started"
    engine.finish_compiling()  # asked for: compiled, and stored
    assert driver.optimized
    again = NativeEngine(train, evaluation, opt, [p.name for p in train.params])
    assert again.train_exe.driver.optimized and again.train_exe.compiled.cached


@pytest.mark.parametrize("value", ["2", "yes", " ", "Only", "O0"])
def test_a_bad_quick_code_setting_is_refused(monkeypatch, value):
    monkeypatch.setenv("DLC_QUICK_CODE", value)
    with pytest.raises(DlcError, match=r"DLC_QUICK_CODE must be 1 .*, 0 .*, only .* or unoptimized .*, not"):
        jit.quick_code()


# a model of its own (sizes no other test uses): its O3 code is in no cache, and the session's
# cache holds the GEMM routines it calls
OWN_MODEL = """
model tiers_exit {
    input  x: f32[B, 7]
    target y: f32[B, 1]
    h = dense(x, 29, tanh)
    loss binary_cross_entropy(dense(h, 1, sigmoid), y)
}
"""


def test_a_run_that_ends_during_the_o3_compile_ends_at_once_and_leaves_no_compiler():
    script = textwrap.dedent(f"""
        import numpy as np
        from dlc.compiler.frontend.loader import load_text
        from dlc.compiler.frontend.settings import Call
        from dlc.runtime.engines import tiers
        from dlc.runtime.engines.native import NativeEngine
        from dlc.runtime.optim.optimizers import make_optimizer
        from dlc.runtime.training.gradcheck import init_params, sample_inputs
        tiers.O3_SECONDS_PER_BYTE = tiers.HOT = 0.0
        program = load_text({OWN_MODEL!r})
        train, evaluation = program.build(training=True), program.build(training=False)
        trainable = [p.name for p in train.params if p.trainable]
        opt = make_optimizer(Call("sgd", [], {{"lr": 0.1}}))
        engine = NativeEngine(train, evaluation, opt, trainable)
        params = {{k: v.astype(np.float32) for k, v in init_params(train).items()}}
        feeds = sample_inputs(train, {SIZES!r}, seed=1)
        engine.train_step(params, opt.init(params), feeds, 0.1, 1, np.array([0, 1], np.int32))
        print(*[child.proc.pid for child in engine.train_exe.driver.children], flush=True)
    """)
    env = dict(os.environ, DLC_COMPILE_JOBS="1")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert pids, "no O3 compile was started"
    for pid in pids:
        # killed at exit, then reaped by init: gone, or a zombie for a moment
        for _ in range(100):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
            except OSError:
                break
            if state == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the O3 compiler {pid} outlived its run")
    assert time.monotonic() - t0 < 60


def test_unoptimized_code_is_llvms_o0_code_generators(monkeypatch):
    """DLC_QUICK_CODE=unoptimized compiles modules and dlc's own routines at
    jit.UNOPTIMIZED_LEVEL: the quick pass list, then LLVM's O0 code generator."""
    monkeypatch.setenv("DLC_QUICK_CODE", "unoptimized")
    assert jit.first_level() == jit.settled_level() == jit.UNOPTIMIZED_LEVEL
    monkeypatch.setenv("DLC_QUICK_CODE", "only")
    assert jit.first_level() == jit.settled_level() == jit.QUICK_LEVEL
    text = textwrap.dedent("""
        define float @total(float* %x, i64 %n) {
        entry:
          br label %loop
        loop:
          %i = phi i64 [0, %entry], [%next, %loop]
          %s = phi float [0.0, %entry], [%t, %loop]
          %p = getelementptr float, float* %x, i64 %i
          %v = load float, float* %p
          %t = fadd float %s, %v
          %next = add i64 %i, 1
          %more = icmp slt i64 %next, %n
          br i1 %more, label %loop, label %done
        done:
          ret float %t
        }
    """)
    objects = {
        level: jit.target_machine(level).emit_object(jit.optimize(jit.parse(text), level))
        for level in (jit.UNOPTIMIZED_LEVEL, jit.QUICK_LEVEL)
    }
    assert objects[jit.UNOPTIMIZED_LEVEL] != objects[jit.QUICK_LEVEL]
