"""Language semantics: naming, static evaluation, dims, broadcasting, scan, imports."""

import numpy as np
import pytest

from dlc.compiler.ir.dims import Dim
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load, load_text
from dlc.runtime.engines import interpreter
from dlc.runtime.training.gradcheck import init_params


def build(src, training=True):
    return load_text(src, "t.dl").build(training=training)


def names(model):
    return [p.name for p in model.params]


def run(model, **feeds):
    feeds.setdefault("rng", np.array([0, 0], np.int32))
    return interpreter.run(model.graph, feeds, init_params(model), float_dtype="f64")


def test_parameters_are_named_after_bindings():
    m = build("""
model m {
    input x: f32[B, 3]
    h1 = dense(x, 4, relu)
    h2 = x |> dense(4) |> dense(2)
    loss mean(h1) + mean(h2)
}""")
    assert names(m) == ["h1.W", "h1.b", "h2.0.W", "h2.0.b", "h2.1.W", "h2.1.b"]


def test_repeat_indexes_names_and_explicit_names_share_weights():
    m = build("""
def block(x, n: int) = dense(x, n, relu)
model m {
    input x: f32[B, 4]
    repeat i in 0..3 { x = block(x, 4) }
    a = dense(x, 4, name = "shared")
    b = dense(a, 4, name = "shared")
    loss mean(b)
}""")
    assert names(m) == ["x.0.W", "x.0.b", "x.1.W", "x.1.b", "x.2.W", "x.2.b", "shared.W", "shared.b"]


def test_library_layers_nest_names():
    m = build("""
model m {
    input tokens: i32[B, T]
    e = embedding(tokens, 10, 8)
    enc = transformer_encoder(e, 2, 2, 16)
    loss mean(enc)
}""")
    assert "enc.0.attn.Wq" in names(m) and "enc.1.ffn.inner.W" in names(m) and "e.W" in names(m)


def test_static_evaluation_and_conditionals():
    m = build("""
const N = 2 * 3
def pick(x, big: bool) = if big then dense(x, N) else dense(x, 1)
model m {
    input x: f32[B, 2]
    y = pick(x, 4 > 3 and not false)
    loss mean(y)
    output y = y
}""")
    assert m.graph.outputs["output:y"].shape == (Dim.sym("B"), 6)


def test_symbolic_dims_are_polynomials():
    m = build("""
model m {
    input x: f32[B, T, 4]
    flat = reshape(x, -1, 4)
    shifted = x[:, 1:]
    joined = concat(x[:, :1], shifted, axis = 1)
    loss mean(flat) + mean(joined)
    output flat = flat
    output shifted = shifted
    output joined = joined
}""")
    B, T = Dim.sym("B"), Dim.sym("T")
    assert m.graph.outputs["output:flat"].shape == (B * T, 4)
    assert m.graph.outputs["output:shifted"].shape == (B, T - 1, 4)
    assert m.graph.outputs["output:joined"].shape == (B, T, 4)
    out = run(m, x=np.ones((2, 5, 4)))
    assert out["output:flat"].shape == (10, 4) and out["output:shifted"].shape == (2, 4, 4)


def test_symbolic_dims_are_rigid():
    """A model must work for any N and M, so they never silently become equal (or 32)."""
    with pytest.raises(DlcError) as e:
        build("""
model m {
    input a: f32[N, 3]
    input b: f32[M, 3]
    loss mean(a + b)
}""")
    assert "N vs M" in e.value.message
    with pytest.raises(DlcError) as e:
        build("model m { input a: f32[N, 3]  loss mean(a + zeros[32, 3]) }")
    assert "N vs 32" in e.value.message


def test_conflicting_sizes_name_both_places():
    with pytest.raises(DlcError) as e:
        build("""
def f(x: f32[B, n], y: f32[B, n]) = x + y
model m {
    input a: f32[32, 4]
    input b: f32[64, 4]
    loss mean(f(a, b))
}""")
    text = e.value.render()
    assert "B is 64 here but 32" in text and "t.dl:6:" in text and "B became 32 here" in text


def test_broadcasting_and_dtype_promotion():
    m = build("""
model m {
    input x: f32[B, 3]
    input k: i32[B]
    y = x * reshape(k, B, 1) + 1
    mask = x > 0
    z = y * mask
    loss mean(z)
    output z = z
}""")
    out = run(m, x=np.array([[1.0, -1.0, 2.0]]), k=np.array([3]))
    np.testing.assert_allclose(out["output:z"], [[4.0, 0.0, 7.0]])


def test_scan_reverse_keeps_positions_and_returns_carries_without_yield():
    m = build("""
model m {
    input xs: f32[B, T]
    fwd = scan t in T carry s = zeros[B] { s = s + xs[:, t]  yield s }
    bwd = scan t in T (reverse = true) carry s = zeros[B] { s = s + xs[:, t]  yield s }
    total = scan t in T carry s = zeros[B] { s = s + xs[:, t] }
    loss mean(fwd) + mean(bwd) + mean(total)
    output fwd = fwd
    output bwd = bwd
    output total = total
}""")
    xs = np.array([[1.0, 2.0, 3.0]])
    out = run(m, xs=xs)
    np.testing.assert_allclose(out["output:fwd"], [[1, 3, 6]])
    np.testing.assert_allclose(out["output:bwd"], [[6, 5, 3]])
    np.testing.assert_allclose(out["output:total"], [6])


def test_dropout_is_reproducible_and_off_in_eval_mode():
    src = """
model m {
    input x: f32[B, 100]
    y = dropout(x, 0.5)
    loss mean(y)
    output y = y
}"""
    x = np.ones((4, 100))
    a = run(build(src), x=x, rng=np.array([7, 1], np.int32))["output:y"]
    b = run(build(src), x=x, rng=np.array([7, 1], np.int32))["output:y"]
    c = run(build(src), x=x, rng=np.array([7, 2], np.int32))["output:y"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0.0, 2.0} and 0.3 < (a == 0).mean() < 0.7
    assert np.array_equal(run(build(src, training=False), x=x)["output:y"], x)


def test_batchnorm_uses_running_statistics_in_eval_mode():
    src = """
model m {
    input x: f32[B, 3]
    y = batchnorm(x)
    loss mean(y)
    output y = y
}"""
    x = np.random.default_rng(0).normal(5.0, 2.0, (16, 3))
    train = run(build(src), x=x)
    np.testing.assert_allclose(train["output:y"].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(train["update:y.running_mean"], 0.1 * x.mean(0))
    np.testing.assert_allclose(run(build(src, training=False), x=x)["output:y"], x / np.sqrt(1 + 1e-5))


def test_initializers_are_seeded_and_scaled():
    m = build("""
model m {
    input x: f32[B, 400]
    h = dense(x, 300, init = he_normal)
    loss mean(h)
}""")
    a = init_params(m, 1)["h.W"]
    assert np.array_equal(a, init_params(m, 1)["h.W"]) and not np.array_equal(a, init_params(m, 2)["h.W"])
    assert abs(a.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
    assert np.all(init_params(m, 1)["h.b"] == 0)


def test_orthogonal_initializer_is_orthogonal():
    m = build("""
model m {
    input x: f32[B, 5]
    hs = rnn(reshape(x, B, 1, 5), 8)
    loss mean(hs)
}""")
    w = init_params(m)["hs.Wh"]
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-10)


def test_a_shared_name_replays_its_calls_whatever_its_initializers_call():
    """An initializer's calls make no layer: the second call of `enc` finds `scale`'s
    parameter although `W`'s initializer was called, under the same label, only in the first."""
    m = build("""
def scale(x: f32[B, D]) {
    param s: f32[D] = ones
    return x * s
}
def block(x: f32[B, D]) {
    y = x
    param W: f32[D, D] = glorot_uniform
    y = scale(y @ W)
    return y
}
model m {
    input x: f32[B, 4]
    h = block(x, name = "enc")
    h2 = block(h, name = "enc")
    loss mean(h2)
}""")
    assert names(m) == ["enc.W", "enc.y.s"]


def test_an_initializer_cannot_declare_a_parameter():
    with pytest.raises(DlcError, match="an initializer cannot declare a parameter \\('q'\\)") as e:
        build("""
def weird(shape, fan_in = 0, fan_out = 0) {
    param q: f32[2] = zeros
    return full(shape, 1.0)
}
model m {
    input x: f32[B, 4]
    param W: f32[4, 4] = weird
    loss mean(x @ W)
}""")
    assert e.value.span.line == 3


CHECKED = """
def rows(shape, fan_in = 0, fan_out = 0) = full((3, 4), 1.0)
model m {
    input x: f32[B, 3]
    param W: f32[3, 4] = rows
    param U: f32[3, 4] = rows
    h = dropout(dense(x @ W + x @ U, 4), 0.5)
    loss mean(h)
}"""


def test_a_check_draws_no_initial_values_and_changes_none_drawn_after_it():
    program = load_text(CHECKED, "t.dl")
    before = init_params(program.build(training=True))
    checked = program.check()
    assert checked.init is None and names(checked) == ["W", "U", "h.W", "h.b"]
    after = init_params(program.build(training=True))
    assert list(after) == list(before) and all(np.array_equal(before[k], after[k]) for k in before)
    random = [m.init.attrs(n)["stream"] for m in [program.build(training=True)] for n in m.init.nodes_with("random")]
    assert random == [1]  # h.W's glorot_uniform: one stream, the first


def test_a_check_calls_each_initializer_for_each_parameter_type():
    """The same initializer fails for one parameter type only: the check still finds it."""
    with pytest.raises(DlcError, match=r"the initializer made f32\[3, 4\], the parameter is f32\[4, 4\]") as e:
        load_text(
            CHECKED.replace("param U: f32[3, 4] = rows", "param U: f32[4, 4] = rows").replace("x @ U", "x @ W"), "t.dl"
        ).check()
    assert e.value.span.line == 6


def test_a_check_counts_the_nodes_of_the_initializer_calls_it_leaves_out(monkeypatch):
    from dlc.compiler.ir import graph

    src = "model m {\n    input x: f32[B, 3]\n    loss mean(dense(dense(dense(x, 3), 3), 3))\n}"
    m = load_text(src, "t.dl").build(training=True)
    made = m.graph._next + m.init._next
    monkeypatch.setattr(graph, "MAX_NODES", made)
    load_text(src, "t.dl").check()
    monkeypatch.setattr(graph, "MAX_NODES", made - 1)
    for build_it in (lambda p: p.build(training=True), lambda p: p.check()):
        with pytest.raises(DlcError, match="needs more than"):
            build_it(load_text(src, "t.dl"))


def test_a_check_builds_for_evaluation_only_a_model_that_reads_training(monkeypatch):
    from dlc.compiler.frontend.evaluator import Evaluator

    modes = []
    real = Evaluator.build

    def counted(ev, *args):
        modes.append(ev.training)
        return real(ev, *args)

    monkeypatch.setattr(Evaluator, "build", counted)
    load_text("model m {\n    input x: f32[B, 3]\n    loss mean(dense(x, 2))\n}", "t.dl").check()
    assert modes == [True]
    modes.clear()
    load_text(CHECKED, "t.dl").check()  # dropout reads `training`
    assert modes == [True, False]
    with pytest.raises(DlcError, match="unknown name 'nosuch'"):
        load_text(
            "model m {\n    input x: f32[B, 3]\n    if training { y = x } else { y = nosuch(x) }\n    loss mean(y)\n}",
            "t.dl",
        ).check()


def test_import_of_another_file(tmp_path):
    (tmp_path / "blocks.dl").write_text("def twice(x) = dense(dense(x, 4, relu), 4)\n")
    (tmp_path / "main.dl").write_text(
        'import "blocks.dl"\nmodel m { input x: f32[B, 3]  y = twice(x)  loss mean(y) }\n'
    )
    m = load(str(tmp_path / "main.dl")).build()
    assert names(m) == ["y.0.W", "y.0.b", "y.1.W", "y.1.b"]


def test_train_block_is_kept_with_its_model():
    prog = load_text("model m { input x: f32[B, 1]  loss mean(x) }\ntrain m { batch = 32 epochs = 2 }", "t.dl")
    m = prog.build()
    assert [k.name for k in m.train.settings] == ["batch", "epochs"]


def test_diamond_imports_load_each_file_once(tmp_path):
    (tmp_path / "base.dl").write_text("def f(x) = x * 2\n")
    (tmp_path / "left.dl").write_text('import "base.dl"\ndef g(x) = f(x)\n')
    (tmp_path / "right.dl").write_text('import "base.dl"\ndef h(x) = f(x)\n')
    (tmp_path / "main.dl").write_text(
        'import "left.dl"\nimport "right.dl"\nmodel m { input x: f32[B, 2]  loss mean(g(x) + h(x)) }\n'
    )
    assert load(str(tmp_path / "main.dl")).build().name == "m"
    (tmp_path / "base.dl").write_text('import "main.dl"\ndef f(x) = x\n')
    with pytest.raises(DlcError) as e:
        load(str(tmp_path / "main.dl"))
    assert "cycle" in e.value.message


@pytest.mark.parametrize(
    "src, phrase",
    [
        ("model m { input x: f32[B, 8]  loss mean(x[:, 8]) }", "index 8 is out of range"),
        ("model m { input x: f32[B, 8]  true = x  loss mean(x) }", "'true' is a reserved word"),
        (
            "const K = full((3,), 1.0)\nmodel m { input x: f32[B, 3]  loss mean(x + K) }",
            "a const must be a static value",
        ),
        ("const T = training\nmodel m { input x: f32[B, 3]  loss mean(x) }", "only known inside a model"),
    ],
)
def test_located_errors_for_fixed_bugs(src, phrase):
    with pytest.raises(DlcError) as e:
        build(src)
    assert phrase in e.value.message


def test_sum_of_a_tuple_with_numbers_first_and_fans_in_index_form():
    m = build("""
model m {
    input x: f32[B, 4]
    w = he_normal[4, 4]
    y = sum((1.0, 2.0, x @ w))
    loss mean(y)
    output y = y
}""")
    out = run(m, x=np.zeros((2, 4)))
    np.testing.assert_allclose(out["output:y"], 3.0)


def test_random_numbers_differ_at_every_scan_step():
    m = build("""
model m {
    input xs: f32[B, T]
    noise = scan t in T carry s = zeros[B] { yield s + random_uniform(B) }
    loss mean(noise)
    output noise = noise
}""")
    out = run(m, xs=np.zeros((2, 4)))["output:noise"]
    assert len({round(float(v), 6) for v in out[0]}) == 4


def test_vector_at_vector_is_a_scalar():
    """numpy's rule: a 1-D left operand gains a row that the result loses again."""
    m = build("""
model m {
    input a: f32[3]
    input b: f32[3]
    input w: f32[3, 2]
    output dot = a @ b
    output row = a @ w
}""")
    a, b, w = np.arange(3.0), np.array([1.0, 2.0, 4.0]), np.arange(6.0).reshape(3, 2)
    out = run(m, a=a, b=b, w=w)
    assert out["output:dot"].shape == () and float(out["output:dot"]) == 10.0
    np.testing.assert_allclose(out["output:row"], a @ w)


def test_pad_puts_a_value_around_each_axis():
    m = build("""
model m {
    input x: f32[2, 3]
    input k: i64[2]
    output zeros = pad(x, (1, 0), (0, 2))
    output ones = pad(x, (0, 1), (1, 0), 1.5)
    output ints = pad(k, (1,), (1,), 7)
    output spread = pad(x, (0, 0), (0, 1), 0, (1, 0))
}""")
    x = np.arange(6.0).reshape(2, 3)
    out = run(m, x=x, k=np.array([3, 4]))
    np.testing.assert_array_equal(out["output:zeros"], np.pad(x, ((1, 0), (0, 2))))
    np.testing.assert_array_equal(out["output:ones"], np.pad(x, ((0, 1), (1, 0)), constant_values=1.5))
    np.testing.assert_array_equal(out["output:ints"], [7, 3, 4, 7])
    assert out["output:ints"].dtype == np.int64
    spread = np.zeros((3, 4))
    spread[::2, :3] = x
    np.testing.assert_array_equal(out["output:spread"], spread)
    with pytest.raises(DlcError, match="'after' must be a tuple of 2 whole numbers"):
        build("model m {\n    input x: f32[2, 3]\n    output y = pad(x, (1, 0), (0, -1))\n}")
