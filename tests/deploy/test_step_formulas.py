"""The per-step numbers of a `dlc build --train` library: every schedule's learning rate and
every first-order optimizer's scalars (with parameter groups of their own weight decay and
learning-rate multiplier), printed as C from the formulas the engines evaluate in Python
(runtime/optim/formula.py), compiled by the library's toolchain with its flags, equal
Python's bit for bit at every step; and what the formulas refuse."""

import ctypes
import math
import shutil

import pytest

from dlc.compiler.frontend.settings import Call
from dlc.runtime.deploy import toolchain
from dlc.runtime.deploy.training import schedule_lr, step_scalars
from dlc.runtime.optim import formula
from dlc.runtime.optim.formula import DOUBLE, INT, c_statements, loop, maximum, python_function, select, variable
from dlc.runtime.optim.optimizers import OPTIMIZERS, make_optimizer
from dlc.runtime.optim.schedules import SCHEDULES, make_schedule
from dlc.runtime.training.groups import Group

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
EXPORT = '__attribute__((visibility("default")))'
# name, options: every schedule, warmups in epochs (a fractional one) and in steps, decay_steps
SCHEDULE_CASES = [
    ("constant", {}),
    ("linear_warmup", {"warmup": 2}),
    ("linear_warmup", {"warmup_steps": 3}),
    ("step", {"every": 2, "gamma": 0.5, "warmup": 0.5}),
    ("step", {"decay_steps": 3, "gamma": 0.7, "warmup": 1}),
    ("exponential", {"gamma": 0.7}),
    ("exponential", {"gamma": 0.9, "decay_steps": 4, "warmup_steps": 2}),
    ("cosine", {"min_lr": 0.001, "warmup": 1}),
    ("cosine", {"warmup_steps": 2, "decay_steps": 5, "min_lr": 0.001}),
    ("cosine", {}),
    ("warm_restarts", {"period": 1, "mult": 2, "min_lr": 0.001}),
    ("warm_restarts", {"decay_steps": 5}),
    ("warm_restarts", {"period": 2.5, "mult": 1.5, "warmup": 0.3}),
]
SHAPES = [(7, 21), (1, 10), (13, 30)]  # (steps per epoch, total steps)
OPTIONS = {"lr": 0.01, "weight_decay": 0.1, "lr_decay": 0.3, "beta1": 0.8}


def shared_library(tmp_path, functions: str):
    """The C functions compiled and linked as a library's are."""
    tc = toolchain.find()
    source = tmp_path / "formulas.c"
    source.write_text("#include <math.h>\n#include <stdint.h>\n" + functions + "\n")
    tc.compile(source, tmp_path / "formulas.o", tmp_path)
    tc.shared([tmp_path / "formulas.o"], tmp_path / "libformulas.so")
    return ctypes.CDLL(str(tmp_path / "libformulas.so"))


def optimizer_with_groups(name):
    opt = make_optimizer(Call(name, [], {k: v for k, v in OPTIONS.items() if k in OPTIMIZERS[name].options}))
    opt.set_groups([Group("group(a)", 0.0, 2, ["a"], 1), Group("group(b)", None, 0.5, ["b"], 1)])
    return opt


def test_the_cases_take_every_schedule():
    assert {name for name, _ in SCHEDULE_CASES} == set(SCHEDULES)


@needs_cc
def test_schedules_in_c_are_python_bit_for_bit(tmp_path):
    lib = shared_library(
        tmp_path,
        "\n".join(
            schedule_lr(Call(name, [], opts), 0.1).replace(
                "static double schedule_lr(", f"{EXPORT} double schedule_{i}("
            )
            for i, (name, opts) in enumerate(SCHEDULE_CASES)
        ),
    )
    different = []
    for i, (name, opts) in enumerate(SCHEDULE_CASES):
        f = getattr(lib, f"schedule_{i}")
        f.restype, f.argtypes = ctypes.c_double, [ctypes.c_int64, ctypes.c_double, ctypes.c_double]
        for per_epoch, total in SHAPES:
            schedule = make_schedule(Call(name, [], opts), 0.1, per_epoch, 1, None, total)
            different += [
                (name, opts, per_epoch, step, schedule(step), f(step, per_epoch, total))
                for step in range(total + 10)
                if schedule(step).hex() != f(step, per_epoch, total).hex()
            ]
    assert different == []


@needs_cc
def test_optimizer_scalars_in_c_are_python_bit_for_bit(tmp_path):
    first_order = [name for name, cls in OPTIMIZERS.items() if not cls.full_batch]
    optimizers = {name: optimizer_with_groups(name) for name in first_order}
    lib = shared_library(
        tmp_path,
        "\n".join(
            step_scalars(opt, list(opt.step_formulas())).replace(
                "static void step_scalars(", f"{EXPORT} void scalars_{name}("
            )
            for name, opt in optimizers.items()
        ),
    )
    for name, opt in optimizers.items():
        f = getattr(lib, f"scalars_{name}")
        names = list(opt.step_formulas())
        out = (ctypes.c_double * len(names))()
        f.argtypes = [ctypes.c_double, ctypes.c_int64, ctypes.c_void_p]
        for step in range(1, 200, 7):
            for lr in (0.01, 0.37 / step):
                f(lr, step, out)
                want = opt.step_scalars(lr, step)
                assert {k: float(want[k]).hex() for k in names} == {k: out[j].hex() for j, k in enumerate(names)}, (
                    name,
                    step,
                    lr,
                )
    # the groups' rates and weight decays are in the scalars they change
    assert {"lr@1", "lr@2", "decay@1", "decay@2"} <= set(optimizers["adamw"].step_formulas())


X, N = variable("x"), variable("n", INT)
# formulas at the edges of IEEE arithmetic and of the C library
EDGES = {
    "quotient": 1 / X,
    "zero_over_zero": 0 / X,
    "floor": formula.floor(-X),
    "cos": formula.cos(1 / X),
    "pole": X**-1.0,
    "odd_pole": (-X) ** -3.0,
    "fraction_of_negative": (X - 1) ** 0.5,
    "overflow": 10.0 ** (N * 1000),
    "negative_overflow": (-10.0) ** (N * 1001),
    "underflow": 10.0 ** (N * -400),
    "ints": N * 3 - 1,
    "mixed": N / 2,
    "compare_mixed": select(N < X, 1.5, N),
    # a branch not taken is not computed: its loop would never end
    "lazy": select(N > 5, loop(lambda a: a > -1, lambda a: (a + 1,), N)[0], 5),
}  # n is at most 3 here


def test_python_computes_as_c():
    """Division by zero, pow's poles, overflows and domain errors, floor(-0.0), cos(inf),
    integers, and lazy branches: C's results in Python."""
    got = python_function(EDGES, [X, N])(0.0, 1)
    assert math.copysign(1, got["floor"]) == -1 and math.isnan(got["cos"])  # floor(-0.0), cos(inf)
    assert got["quotient"] == math.inf and math.isnan(got["zero_over_zero"]) and got["pole"] == math.inf
    assert got["odd_pole"] == -math.inf and math.isnan(got["fraction_of_negative"])
    assert got["overflow"] == math.inf and got["negative_overflow"] == -math.inf and got["underflow"] == 0
    assert got["ints"] == 2 and isinstance(got["ints"], int) and got["mixed"] == 0.5 and got["lazy"] == 5.0
    # the restarts' loop: the position in the current period and the period
    t, period = loop(lambda t, p: t >= p, lambda t, p: (t - p, p * 2), X, 3)
    assert python_function({"t": t, "p": period}, [X])(10.0) == {"t": 1.0, "p": 12.0}  # 10 - 3 - 6 = 1


@needs_cc
@pytest.mark.parametrize("x, n", [(0.0, 1), (-0.0, 1), (0.5, 0), (-2.5, 3), (math.inf, -1), (math.nan, 2)])
def test_the_edges_in_c_are_python_bit_for_bit(tmp_path, x, n):
    names = list(EDGES)
    body = "\n".join(c_statements([(f"out[{k}]", EDGES[name]) for k, name in enumerate(names)]))
    lib = shared_library(tmp_path, f"{EXPORT} void edges(double x, int64_t n, double *out) {{\n{body}\n}}")
    out = (ctypes.c_double * len(names))()
    lib.edges.argtypes = [ctypes.c_double, ctypes.c_int64, ctypes.c_void_p]
    lib.edges(x, n, out)
    want = python_function(EDGES, [X, N])(x, n)
    same = lambda a, b: (math.isnan(a) and math.isnan(b)) or float(a).hex() == b.hex()
    assert [k for j, k in enumerate(names) if not same(want[k], out[j])] == []


def test_a_formula_is_not_a_python_number():
    x = variable("x")
    with pytest.raises(TypeError, match="select"):
        if x > 1:
            pass
    with pytest.raises(TypeError):
        math.cos(x)
    assert maximum(2, 3) == 3 and select(True, 1, 2) == 1  # plain numbers: Python's choice


def test_c_statements_declare_a_temporary_per_node():
    x = variable("x", DOUBLE)
    lines = c_statements([("out[0]", (x + 1) * (x + 1)), ("out[1]", 2.5)])
    assert lines == [
        "    double v1 = x + (double)1;",
        "    double v2 = x + (double)1;",
        "    double v3 = v1 * v2;",
        "    out[0] = v3;",
        f"    out[1] = {(2.5).hex()};",
    ]
    assert formula._C.literal(-0.0) == "(-0x0.0p+0)" and formula._C.literal(math.inf) == "INFINITY"
