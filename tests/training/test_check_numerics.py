"""check_numerics (runtime/engines/numerics.py, `dlc train --check-numerics`): a planted NaN or
Inf is named at the line and operation that made it from finite inputs — in the user's code,
in a standard-library layer (at the user's call), inside a scan, in the backward pass only —
on both engines; the step that found it leaves the parameters as they were; the command exits
with one message; and with the check off the compiled step is the same as ever."""

import re

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.codegen.driver import CHECK, NONFINITE, build_module
from dlc.compiler.native.program import KernelProgram
from dlc.compiler.native.program.render import program as render
from dlc.runtime.engines import cache
from dlc.runtime.engines.native import NONFINITE_COUNT, NativeEngine
from dlc.runtime.engines.numerics import NonFinite
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.gradcheck import init_params
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call

from helpers.cli import failure
from helpers.programs import write

ENGINES = [NativeEngine, ReferenceEngine]

# each model's line 5 (the line of the model's `h = ...` below) makes the first non-finite value
HEAD = """model m {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    a = dense(x, 4)
"""
USER_LOG = (
    HEAD
    + """    h = log(a)
    loss mse(dense(h, 1), y)
}
"""
)
STDLIB_LOG = (
    HEAD
    + """    h = dense(a, 3, log)
    loss mse(dense(h, 1), y)
}
"""
)
# c starts at 1.5 or 2.5 and drops by 1 a step: its log is first nan at step 1 (x = 0)
SCAN_LOG = (
    HEAD
    + """    h = scan t in 3 carry c = x + 1.5 { c = c - 1.0  yield log(c) }
    loss mse(dense(flatten(h), 1), y) + 0 * mean(a)
}
"""
)
# sqrt(x * s) is finite, but its gradient where x is 0 is not (and s's gradient is nan)
BACKWARD_SQRT = """model m {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    param s: f32[2] = ones
    h = sqrt(x * s)
    loss mse(dense(h, 1), y)
}
"""
FINITE = (
    HEAD
    + """    h = tanh(a)
    loss mse(dense(h, 1), y)
}
"""
)
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)


def engine_and_params(engine_class, text: str, check: bool = True):
    program = load_text(text, "m.dl")
    train, evaluate = program.build("m", training=True), program.build("m", training=False)
    params = {k: v.astype(np.float32) for k, v in init_params(train, seed=1).items()}
    optimizer = make_optimizer(Call("sgd", [], {"lr": 0.1}))
    engine = engine_class(train, evaluate, optimizer, [p.name for p in train.params], check_numerics=check)
    return engine, params, optimizer


def step(engine, params, optimizer):
    state = {name: {s: np.zeros_like(v) for s in optimizer.slots()} for name, v in params.items()}
    return engine.train_step(params, state, {"x": X, "y": Y}, 0.1, 1, np.array([0, 1], np.int32))


def came_from(e: NonFinite) -> str:
    """What the message says made the value, after the kinds of value ("nan and -inf")."""
    kinds, said = e.message.split(" first came from ")
    assert set(re.split(", | and ", kinds)) <= {"nan", "inf", "-inf"}, e.message
    return said


def first_nonfinite(engine_class, text: str) -> NonFinite:
    engine, params, optimizer = engine_and_params(engine_class, text)
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(NonFinite) as e:
        step(engine, params, optimizer)
    for name, v in before.items():  # the step that stopped updated nothing: the last checkpoint holds
        np.testing.assert_array_equal(params[name], v, err_msg=name)
    return e.value


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_log_in_the_users_code_is_named_at_its_line(engine_class):
    e = first_nonfinite(engine_class, USER_LOG)
    assert e.span.line == 5 and not e.notes
    assert came_from(e).startswith("line 5's `log`, in the forward pass, from finite inputs in ["), e.message


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_log_in_a_standard_library_layer_is_named_at_the_users_call(engine_class):
    e = first_nonfinite(engine_class, STDLIB_LOG)
    assert e.span.file == "m.dl" and e.span.line == 5
    assert came_from(e).startswith("line 5's `log` (layers.dl:"), e.message
    assert "in the standard library), in the forward pass" in e.message
    [(note, inside)] = e.notes
    assert inside.in_stdlib() and "act(" in inside.source_line()


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_log_inside_a_scan_is_named_with_its_step(engine_class):
    e = first_nonfinite(engine_class, SCAN_LOG)
    assert e.span.line == 5
    assert came_from(e).startswith(
        "line 5's `log` at step 1 of its scan, in the forward pass, from finite inputs in [-0.5, "
    ), e.message


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_gradient_that_alone_is_not_finite_is_named_as_the_gradient_of_its_op(engine_class):
    engine, params, optimizer = engine_and_params(engine_class, BACKWARD_SQRT, check=False)
    assert np.isfinite(step(engine, params, optimizer)["loss"])  # the forward pass is finite
    e = first_nonfinite(engine_class, BACKWARD_SQRT)
    assert e.span.line == 5
    assert came_from(e).startswith(
        "the gradient of line 5's `sqrt` (its `div`), in the backward pass, from finite inputs in ["
    ), e.message
    assert "and [0, 1]" in e.message  # the sqrt it divides by


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_parameter_that_holds_inf_is_named(engine_class):
    """As after an update that overflowed: the parameter, not the first operation that reads it."""
    engine, params, optimizer = engine_and_params(engine_class, FINITE)
    params["a.b"][2] = np.inf
    with pytest.raises(NonFinite) as e:
        step(engine, params, optimizer)
    assert e.value.message == "the parameter 'a.b' holds inf"


def test_a_value_masked_before_memory_is_left_to_the_reference_engine():
    """log(x) is -inf where x is 0, and select drops it: the native kernels never store it, so
    the native engine names line 6's log, the first non-finite value that reaches memory; the
    reference engine, which tests every node, stops at the masked one."""
    masked = """model m {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    a = dense(x, 4)
    safe = select(x > 0.5, log(x), 0.0)
    h = log(a)
    loss mse(dense(h, 1), y) + mean(safe)
}
"""
    assert came_from(first_nonfinite(NativeEngine, masked)).startswith("line 6's `log`")
    assert came_from(first_nonfinite(ReferenceEngine, masked)).startswith("line 5's `log`")


@pytest.mark.parametrize("engine_class", ENGINES)
def test_a_finite_step_runs_as_without_the_check(engine_class):
    checked, params, optimizer = engine_and_params(engine_class, FINITE)
    plain, plain_params, _ = engine_and_params(engine_class, FINITE, check=False)
    assert step(checked, params, optimizer) == step(plain, plain_params, optimizer)
    for name, v in plain_params.items():
        np.testing.assert_array_equal(params[name], v)


def test_without_the_check_the_compiled_step_is_unchanged():
    """The kernel program is the same either way, and so is every kernel's function; only the
    checking driver calls the check, and the step built without it never names it."""
    off, _, _ = engine_and_params(NativeEngine, USER_LOG, check=False)
    on, _, _ = engine_and_params(NativeEngine, USER_LOG)
    program = off.train_exe.program
    assert render(program) == render(on.train_exe.program)
    plain = str(build_module(program).module)
    checked = str(build_module(program, check=True).module)
    assert CHECK not in plain and CHECK in checked
    kernels = lambda text: re.findall(r"^define internal .*?^}$", text, re.S | re.M)
    assert kernels(plain) == kernels(checked) and kernels(plain)
    assert plain == str(build_module(program).module)


def test_the_command_stops_with_one_message_naming_the_line(tmp_path, capsys):
    path = write(tmp_path, USER_LOG, train="train m { data = xor() batch = 4 epochs = 2 }")
    err = failure(["train", path, "--check-numerics", "--out", str(tmp_path / "run"), "-q"], capsys)
    assert "m.dl:5:" in err and "first came from line 5's `log`" in err
    assert "at step 1 (epoch 1, batch 1); training stopped" in err


def test_the_train_setting_turns_the_check_on(tmp_path, capsys):
    path = write(tmp_path, BACKWARD_SQRT, train="train m { data = xor() batch = 4 epochs = 2 check_numerics = true }")
    err = failure(["train", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert "the gradient of line 5's `sqrt`" in err


def test_check_numerics_takes_true_or_false(tmp_path, capsys):
    path = write(tmp_path, FINITE, train="train m { data = xor() batch = 4 check_numerics = 1 }")
    assert "check_numerics must be true or false" in failure(["train", path, "-q"], capsys)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_the_native_counter_counts_nan_and_both_infinities_only(dtype):
    compiled = cache.compile_cached(build_module(KernelProgram(), check=True).module)
    count = NONFINITE_COUNT(compiled.address(NONFINITE[dtype]))
    info = np.finfo(dtype.replace("f", "float"))
    values = np.array(
        [0.0, -0.0, 1.0, info.max, -info.max, info.tiny, info.smallest_subnormal] * 5, dtype.replace("f", "float")
    )
    assert count(values.ctypes.data, values.size) == 0
    for at, bad in ((0, np.nan), (17, np.inf), (34, -np.inf)):
        values[at] = bad
    assert count(values.ctypes.data, values.size) == 3
    assert count(values.ctypes.data, 17) == 1 and count(values.ctypes.data, 0) == 0
