"""Fuzzing: every input ends in success or a DlcError, random models agree on both engines.

The mutator, the front-end harness and the model generator live in dlc/tools/fuzz.py
(`python -m dlc.tools.fuzz` runs the long campaign); this file runs a fixed, seeded
slice of it. Input I of a failure below is printed by `python -m dlc.tools.fuzz --show I`.
"""

import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dlc.tools import fuzz
from dlc.tools.fuzz import EXTREME_NUMBERS, Corpus, FuzzOutcome, Worker, check_input, minimize

# inputs first..first+count-1 of seed 0, about 20 ms each: the first 500 in every run, 2,500 more with -m slow
MUTANTS = [(0, 500), pytest.param(500, 2500, marks=pytest.mark.slow)]
BUDGET = 5.0  # seconds of CPU per input: a front end that takes longer hangs
HYPOTHESIS = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def corpus():
    return Corpus.default()


def report(failures: dict) -> str:
    return "\n".join(f"{key}: {n} inputs, the first {first}\n{detail}" for key, (first, n, detail) in failures.items())


@pytest.mark.parametrize("first, count", MUTANTS)
def test_mutants_end_in_success_or_a_dlc_error(corpus, tmp_path, first, count):
    failures, kinds = {}, {}
    for i in range(first, first + count):
        out = check_input(corpus.mutant(0, i), tmp_path / "input.dl", BUDGET)
        kinds[out.kind] = kinds.get(out.kind, 0) + 1
        if out.failed:
            first, n, detail = failures.get(out.key, (i, 0, out.detail[-1500:]))
            failures[out.key] = (first, n + 1, detail)
    assert not failures, report(failures)
    # the mutants reach past the parser: some build, some fail in the evaluator
    assert kinds["ok"] > count // 20 and kinds["error"] > count // 2


# ---- hypothesis: expressions, shapes and train settings written from scratch ----------------------
NAMES = ("x", "ids", "n", "s", "t", "B", "y")  # in scope in MODEL below
FUNCTIONS = tuple(fuzz.builtin_names())
KEYWORDS = ("axis", "units", "act", "rate", "padding", "name", "stride", "kernel", "heads", "init")
numbers = st.sampled_from(EXTREME_NUMBERS) | st.integers(0, 12).map(str) | st.sampled_from(("0.5", "2.0", "1e-3"))
atoms = numbers | st.sampled_from(NAMES + FUNCTIONS[:8] + ('"same"', "true", "none", "()"))


def _call(f, args, kwargs):
    return f"{f}({', '.join(args + [f'{k} = {v}' for k, v in kwargs])})"


def _compound(inner):
    subscript = inner | st.sampled_from((":", "::2", "1:", "-1", "...")) | st.tuples(inner, inner).map(":".join)
    return st.one_of(
        st.tuples(inner, st.sampled_from(("+", "-", "*", "/", "//", "%", "@", "^", "==", "<", "and", "or")), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(st.sampled_from(("-", "not ")), inner).map("".join),
        st.builds(
            _call,
            st.sampled_from(FUNCTIONS),
            st.lists(inner, max_size=3),
            st.lists(st.tuples(st.sampled_from(KEYWORDS), inner), max_size=2),
        ),
        st.tuples(inner, st.lists(subscript, min_size=1, max_size=3)).map(lambda t: f"{t[0]}[{', '.join(t[1])}]"),
        st.tuples(inner, st.sampled_from(("shape", "rank", "T"))).map(".".join),
        st.lists(inner, max_size=3).map(lambda xs: f"({', '.join(xs)}{',' if len(xs) == 1 else ''})"),
        st.tuples(inner, inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
        st.tuples(inner, st.sampled_from(FUNCTIONS), st.lists(inner, max_size=2)).map(
            lambda t: f"({t[0]} |> {_call(t[1], t[2], [])})"
        ),
    )


expressions = st.recursive(atoms, _compound, max_leaves=10)
dims = st.lists(numbers | st.sampled_from(("B", "T", "n", "...", "n * 2", "T - 1", "n // 0", "s")), max_size=4)
dtypes = st.sampled_from(("f32", "f64", "i32", "i64", "bool"))

MODEL = """const n = 4
const s = "same"
const t = (1, 2)
model m {{
    input x: f32[B, 4]
    input ids: i32[B, 3]
    target y: i32[B]
    {body}
    loss sparse_cross_entropy(dense(x, 3), y)
}}
{train}"""


def assert_checked(tmp_path, source: str):
    out = check_input(source.encode(), tmp_path / "input.dl", BUDGET)
    assert not out.failed, f"{out.key}\n{source}\n{out.detail}"


@HYPOTHESIS
@given(expr=expressions)
def test_expressions(tmp_path, expr):
    assert_checked(tmp_path, MODEL.format(body=f"v = {expr}\n    output o = v", train=""))


@HYPOTHESIS
@given(
    dtype=dtypes,
    shape=dims,
    where=st.sampled_from(
        (
            "input a: {t}",
            "param w: {t} = zeros",
            "state u: {t} = ones",
            "z = zeros[{s}] + x",
            "r = reshape(x, {s})",
            "def f(q: {t}) = q\n    g = f(x)",
        )
    ),
)
def test_shapes(tmp_path, dtype, shape, where):
    s = ", ".join(shape)
    body = where.format(t=f"{dtype}[{s}]", s=s)
    assert_checked(tmp_path, MODEL.format(body=body, train=""))


SETTINGS = (
    "data",
    "validation",
    "test",
    "batch",
    "epochs",
    "optimizer",
    "schedule",
    "clip",
    "l1",
    "l2",
    "early_stop",
    "freeze",
    "init_from",
    "seed",
    "shuffle",
    "augment",
    "lr",
    "momentum",
)
SPECS = (
    "adam",
    "sgd",
    "adamw",
    "nesterov",
    "rmsprop",
    "momentum",
    "split",
    "cosine",
    "step",
    "exponential",
    "patience",
    "global_norm",
    "value",
    "npz",
    "csv",
    "digits",
    "xor",
    "images",
    "warmup",
    "dense",
)
setting_values = st.recursive(
    numbers | st.sampled_from(('"data.npz"', '"x"', "true", "false", "none", "val_loss", "accuracy", "m")),
    lambda inner: (
        st.builds(
            _call,
            st.sampled_from(SPECS),
            st.lists(inner, max_size=2),
            st.lists(
                st.tuples(
                    st.sampled_from(("lr", "monitor", "shift", "every", "gamma", "weight_decay", "warmup")), inner
                ),
                max_size=2,
            ),
        )
        | st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]")
    ),
    max_leaves=6,
)


@HYPOTHESIS
@given(train=st.lists(st.tuples(st.sampled_from(SETTINGS), setting_values), max_size=5, unique_by=lambda kv: kv[0]))
def test_train_settings(tmp_path, train):
    block = "train m {\n" + "".join(f"    {k} = {v}\n" for k, v in train) + "}\n"
    assert_checked(tmp_path, MODEL.format(body="", train=block))


# ---- the native engine on random models ----------------------------------------------------------
LAYERS = (
    "conv2d(",
    "maxpool2d(",
    "avgpool2d(",
    "batchnorm(",
    "lstm(",
    "gru(",
    "rnn(",
    "bidirectional(",
    "self_attention(",
    "layernorm(",
    "dropout(",
    "sparse_cross_entropy(",
    "mse(",
    "huber(",
    "binary_cross_entropy(",
)


def model(index: int) -> str:
    return fuzz.random_model(random.Random(f"0:{index}"))


def covering(layers=LAYERS, among=200) -> list:
    """The first model of seed 0 using each layer, skipping layers already used by one chosen."""
    models, chosen = [model(i) for i in range(among)], []
    for layer in layers:
        if not any(layer in models[i] for i in chosen):
            chosen += [i for i, text in enumerate(models) if layer in text][:1]
    return chosen


def test_the_generated_models_use_every_layer():
    assert all(any(layer in model(i) for i in covering()) for layer in LAYERS)


@pytest.mark.parametrize("index", covering())
def test_random_models_train_and_evaluate_like_the_reference(index):
    out = fuzz.check_model(model(index))
    assert out.kind == "ok", f"{out.key}\n{model(index)}\n{out.detail}"


# ---- the fuzzer itself ----------------------------------------------------------------------------
def test_mutants_are_reproducible_and_use_every_mutation(corpus):
    assert corpus.mutant(0, 7) == Corpus.default().mutant(0, 7) != corpus.mutant(1, 7)
    inputs = [corpus.mutant(0, i) for i in range(400)]
    assert any(b"1" + b"0" * 5000 in d for d in inputs) and any(b"1e309" in d for d in inputs)
    not_utf8 = 0
    for d in inputs:
        try:
            d.decode()
        except UnicodeDecodeError:
            not_utf8 += 1
    assert 0 < not_utf8 < 60


def test_minimize_keeps_the_failure_and_drops_the_rest():
    from dlc.compiler.frontend.syntax import Number, parse

    def has_inf(data: bytes) -> bool:  # parses, and holds a number that overflows to inf
        try:
            module = parse(data.decode())
        except Exception:
            return False
        return "inf" in repr(module) and isinstance(module.items[0].value, Number)

    source = (fuzz.EXAMPLES / "xor_mlp.dl").read_text().replace("# The XOR", "const big = 1e309\n# The XOR")
    assert minimize(source.encode(), has_inf) == b"const big = 1e309\n"


FAKE_WORKER = """
import os, signal, sys, time
while header := sys.stdin.buffer.readline():
    data = sys.stdin.buffer.read(int(header.split()[1]))
    if data == b"hang":
        time.sleep(60)
    if data == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    print('{"kind": "ok"}', flush=True)
"""


def test_a_worker_reports_a_crash_and_a_hang_in_native_code():
    worker = Worker(0.2, [sys.executable, "-c", FAKE_WORKER], grace=0.5)
    assert worker.run("check", b"fine") == FuzzOutcome("ok")
    assert worker.run("check", b"hang").kind == "hang" and worker.proc.returncode is not None
    worker = Worker(0.2, [sys.executable, "-c", FAKE_WORKER], grace=0.5)
    crash = worker.run("check", b"crash")
    assert crash.kind == "crash" and crash.key.startswith("SIGSEGV")


def test_the_campaign_counts_every_input_and_writes_a_reproducer_per_failure(tmp_path, capsys):
    code = fuzz.main(["--n", "40", "--out", str(tmp_path), "--minimize-seconds", "5"])
    out = capsys.readouterr().out.splitlines()
    label, inputs, counts = out[0].split(": ")
    assert (label, inputs) == ("front end", "40 inputs")
    assert sum(int(part.split()[0]) for part in counts.split(", ")) == 40
    failures = out[1:]
    assert code == (1 if failures else 0)
    for line in failures:
        assert open(line.split()[-1], "rb").read()
