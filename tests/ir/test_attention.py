"""The fused attention primitive (docs/native.md, "Attention"): torch's
scaled_dot_product_attention is the truth for the values and gradients of both engines,
under no mask, a causal mask and a padding mask, over several blocks of queries and keys;
the reference's gradient passes a float64 finite-difference check; and the native
engine's memory grows linearly with the sequence, the [T, T] scores never stored; stdlib's
cached_attention (over a cache and new keys, by each part's log-sum-exp) is attention over
their concatenation on both engines, its cache's rows masked or bounded by their lengths; an
attention bounded by key counts gives the bits of the masked one, on any number of threads."""

from __future__ import annotations

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines.native import Executable
from helpers.numeric import assert_close, build, check_graph_gradient, forward, gradients, graph_with_params
from helpers.native_cases import run_native, step_graph

torch = pytest.importorskip("torch", reason="PyTorch is not installed: attention parity skipped")
F = torch.nn.functional

RTOL = 1e-5
T = 100  # two blocks of queries and of keys, the second partial
MASKS = {
    "none": ("", ""),
    "causal": ("", ", causal_mask(T)"),
    "padding": ("input ids: i32[2, T]", ", ids != 0"),
    "padding_additive": ("input ids: i32[2, T]", ", padding_mask(ids)"),
}


def source(mask: str) -> str:
    decl, arg = MASKS[mask]
    return f"""
const T = {T}
model m {{
    param q: f32[2, 3, T, 8] = zeros
    param k: f32[2, 3, T, 8] = zeros
    param v: f32[2, 3, T, 8] = zeros
    input r: f32[2, 3, T, 8]
    {decl}
    y = scaled_dot_product_attention(q, k, v{arg})
    output y
    loss sum(y * r)
}}"""


def values(mask: str) -> tuple:
    rng = np.random.default_rng(7)
    params = {name: rng.standard_normal((2, 3, T, 8)) for name in "qkv"}
    feeds = {"r": rng.standard_normal((2, 3, T, 8))}
    if mask.startswith("padding"):
        ids = rng.integers(1, 9, (2, T))
        ids[0, 60:], ids[1, 7:30] = 0, 0  # padding in both blocks of keys
        feeds["ids"] = ids.astype(np.int32)
    return params, feeds


def torch_truth(mask: str, params: dict, feeds: dict) -> dict:
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    attend = None
    if mask.startswith("padding"):
        attend = torch.tensor(feeds["ids"] != 0)[:, None, None, :]
    y = F.scaled_dot_product_attention(
        leaves["q"], leaves["k"], leaves["v"], attn_mask=attend, is_causal=mask == "causal"
    )
    (y * torch.tensor(feeds["r"])).sum().backward()
    return {"output:y": y.detach().numpy()} | {f"grad:{k}": t.grad.numpy() for k, t in leaves.items()}


@pytest.mark.parametrize("mask", list(MASKS))
def test_both_engines_match_torch(mask):
    model = build(source(mask))
    params, feeds = values(mask)
    truth = torch_truth(mask, params, feeds)
    reference = gradients(model, feeds, params) | {"output:y": forward(model, feeds, params)["output:y"]}
    graph = step_graph(model)
    assert "attention" in {graph.op(n) for n in graph.nx.nodes}
    # step_graph adds sum(y * r_y) to the loss, to keep y: zero here
    native = run_native(
        Executable(graph), feeds | {"r_y": np.zeros((2, 3, T, 8))}, {k: v.astype(np.float32) for k, v in params.items()}
    )
    for name, want in truth.items():
        assert_close(reference[name], want, RTOL, f"reference {name}")
        assert_close(native[name.replace("output:", "metric:output:")], want, RTOL, f"native {name}")


@pytest.mark.parametrize("masked", ["none", "bool", "additive", "keys"])
def test_the_reference_gradient_passes_a_float64_check(masked):
    rng = np.random.default_rng(3)
    arrays = {name: rng.standard_normal((2, 5, 3)) for name in "qkv"}
    g, t = graph_with_params(arrays)
    operands = [t["q"], t["k"], t["v"]]
    if masked == "bool":
        operands.append(g.add1("constant", value=rng.random((2, 5, 5)) < 0.7, dtype="bool"))
    elif masked == "additive":
        operands.append(g.add1("constant", value=np.where(rng.random((2, 5, 5)) < 0.3, -1e9, 0.0), dtype="f32"))
    elif masked == "keys":  # the first matrix reads no keys, the second three of its five
        operands.append(g.add1("constant", value=np.array([0, 3]), dtype="i32"))
    out = g.add("attention", operands, scale=0.4, **({"bounded": True} if masked == "keys" else {}))[0]
    check_graph_gradient(g, out, arrays)


def arena(seq: int) -> int:
    """The native engine's activation bytes for one train step of causal self-attention."""
    model = load_text(
        """
model m {
    input x: f32[B, T, 16]
    y = self_attention(x, 2, causal_mask(T), rate = 0.0)
    loss mean(y * y)
}""",
        "m.dl",
    ).build(training=True)
    exe = Executable(step_graph(model))
    params = {p.name: np.full(p.type.shape, 0.1, np.float32) for p in model.params}
    feeds = {"x": np.random.default_rng(0).standard_normal((1, seq, 16)).astype(np.float32)}
    run_native(exe, feeds, params)
    return next(iter(exe.memory.values()))["activations"]


def test_memory_grows_linearly_with_the_sequence():
    small, large = arena(1024), arena(2048)
    assert 1.5 < large / small < 2.5, f"activations {small} bytes at T = 1024, {large} at 2048"
    assert large < 2048 * 2048 * 4, "a [T, T] float32 matrix would not fit in the activations"


def test_training_gives_the_same_bits_on_any_thread_count_and_target(tmp_path):
    """Three Adam steps of causal self-attention over three blocks of queries and keys,
    under 1, 2, 3 and 7 threads and AVX2 (the configurations of tests/helpers/same_bits.py)."""
    from helpers.same_bits import assert_bit_identical

    (tmp_path / "att.dl").write_text("""
model att {
    input  tokens: i32[B, 150]
    target y: i32[B]
    h = transformer_encoder(embedding(tokens, 50, 32), 1, 2, 64, rate = 0.0, mask = causal_mask(150))
    loss sparse_cross_entropy(dense(mean(h, 1), 5), y)
}
""")
    assert_bit_identical([str(tmp_path / "att")], tmp_path)


CACHED = f"""
const T = {T}
model m {{
    param q: f32[2, 3, 4, 8] = zeros
    param past_k: f32[2, 3, T, 8] = zeros
    param past_v: f32[2, 3, T, 8] = zeros
    param k: f32[2, 3, 4, 8] = zeros
    param v: f32[2, 3, 4, 8] = zeros
    input r: f32[2, 3, 4, 8]
    CACHE_INPUT
    y = cached_attention(q, past_k, past_v, k, v, CACHE)
    output y
    loss sum(y * r)
}}"""
CACHES = {  # the input that says which of a row's cached positions it reads, and the arguments that pass it
    "mask": ("input cached: f32[2, 1, 1, T]", "cached, causal_mask(4)"),
    "length": ("input length: i32[2, 1]", "none, causal_mask(4), length"),
}


@pytest.mark.parametrize("cache", list(CACHES))
def test_cached_attention_on_both_engines_is_attention_over_the_concatenation(cache):
    """stdlib's cached_attention (each part's fused attention, combined by its log-sum-exp) over a
    cache of two blocks of keys, of which one row reads none and the other 70 (masked, or bounded
    by its length), and 4 new keys: torch's attention over the concatenation, values and gradients
    (through the log-sum-exps)."""
    rng = np.random.default_rng(5)
    shapes = {"q": (2, 3, 4, 8), "past_k": (2, 3, T, 8), "past_v": (2, 3, T, 8), "k": (2, 3, 4, 8), "v": (2, 3, 4, 8)}
    params = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    cached = np.where(np.arange(T)[None] < np.array([[0], [70]]), 0.0, -1e9).reshape(2, 1, 1, T)
    feeds = {"r": rng.standard_normal((2, 3, 4, 8))}
    feeds |= {"cached": cached} if cache == "mask" else {"length": np.array([[0], [70]], np.int32)}
    leaves = {name: torch.tensor(a, dtype=torch.float64, requires_grad=True) for name, a in params.items()}
    causal = np.where(np.tril(np.ones((4, 4))) > 0, 0.0, -1e9)
    mask = np.concatenate([np.broadcast_to(cached, (2, 1, 4, T)), np.broadcast_to(causal, (2, 1, 4, 4))], -1)
    keys, values_ = (torch.cat([leaves["past_" + x], leaves[x]], 2) for x in "kv")
    y = F.scaled_dot_product_attention(leaves["q"], keys, values_, attn_mask=torch.tensor(mask))
    (y * torch.tensor(feeds["r"])).sum().backward()
    truth = {"output:y": y.detach().numpy()} | {f"grad:{name}": t.grad.numpy() for name, t in leaves.items()}
    model = build(CACHED.replace("CACHE_INPUT", CACHES[cache][0]).replace("CACHE", CACHES[cache][1]))
    reference = gradients(model, feeds, params) | {"output:y": forward(model, feeds, params)["output:y"]}
    native = run_native(
        Executable(step_graph(model)),
        feeds | {"r_y": np.zeros((2, 3, 4, 8))},
        {name: a.astype(np.float32) for name, a in params.items()},
    )
    for name, want in truth.items():
        assert_close(reference[name], want, RTOL, f"reference {name}")
        assert_close(native[name.replace("output:", "metric:output:")], want, RTOL, f"native {name}")


BOUNDED = """
model m {
    input q: f32[3, 2, Tq, 8]
    input k: f32[3, 2, S, 8]
    input v: f32[3, 2, S, 8]
    input length: i32[3]
    input most: i32[1]
    n = reshape(length, 3, 1)
    cached = reshape(select(reshape(arange(S), 1, S) < n, 0.0, -1e9), 3, 1, 1, S)
    o, o_lse = fused_attention(q, k, v, cached, lse = true)
    bounded, bounded_lse = fused_attention(q, k, v, none, lse = true, keys = n)
    within, within_lse = fused_attention(q, k, v, cached, lse = true, keys = most)
    output o
    output o_lse
    output bounded
    output bounded_lse
    output within
    output within_lse
}"""


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tq", [1, 5])
def test_attention_bounded_by_key_counts_gives_the_bits_of_the_masked_one(tq, threads, monkeypatch):
    """Keys past each matrix's count are not read (a cache's positions not yet written), over
    three blocks of keys: the bits of the attention that masks them, on one thread or two; where
    the count leaves masked keys (the batch's longest row bounds all), the rows reading any key
    get the masked attention's bits too. A matrix of no keys gives o = 0 and lse = -inf (the
    masked one, whose keys are all masked, averages them with lse near -1e9: stdlib's
    cached_attention weighs either by zero). The reference engine agrees."""
    monkeypatch.setenv("DLC_NUM_THREADS", str(threads))
    model = build(BOUNDED, training=False)
    rng = np.random.default_rng(tq)
    s = 600
    feeds = {x: rng.standard_normal((3, 2, tq if x == "q" else s, 8)).astype(np.float32) for x in "qkv"}
    feeds |= {"length": np.array([0, 300, 517], np.int32), "most": np.array([517], np.int32)}
    native = run_native(Executable(model.graph), feeds, {})
    reference = forward(model, feeds, {})
    for out in ("", "_lse"):
        masked, bounded, within = (native[f"output:{x}{out}"] for x in ("o", "bounded", "within"))
        assert bounded[1:].tobytes() == masked[1:].tobytes()
        assert within[1:].tobytes() == masked[1:].tobytes()
        assert_close(reference[f"output:bounded{out}"][1:], bounded[1:], RTOL, f"reference bounded{out}")
    for engine in (native, reference):
        assert not engine["output:bounded"][0].any() and np.all(engine["output:bounded_lse"][0] == -np.inf)


def test_key_counts_of_another_type_or_shape_are_refused():
    for keys in ("q[:, :, 0, 0]", 'cast(q[:, :, 0:2, 0], "i32")'):
        text = f"""
model m {{
    input q: f32[3, 2, 4, 8]
    output o = fused_attention(q, q, q, keys = {keys})
}}"""
        with pytest.raises(DlcError, match="the key counts .* must be integers that broadcast to the batch dims"):
            load_text(text, "m.dl").build(training=False)


def test_one_query_gets_the_bits_it_gets_among_others():
    """A step of decoding's single query takes its scores as k qᵀ (the keys' rows as they lie),
    a block of queries as q kᵀ: each score is the same chain of FMAs along d, so a query's output
    and lse have the same bits either way, over three blocks of keys, masked and bounded."""
    model = build(
        """
model m {
    input q: f32[3, 2, 5, 8]
    input k: f32[3, 2, 600, 8]
    input v: f32[3, 2, 600, 8]
    input length: i32[3, 1]
    mask = reshape(select(reshape(arange(600), 1, 600) % 7 == 3, -1e9, 0.0), 1, 1, 1, 600)
    all, all_lse = fused_attention(q, k, v, mask, lse = true, keys = length)
    one, one_lse = fused_attention(q[:, :, 2:3], k, v, mask, lse = true, keys = length)
    output all
    output all_lse
    output one
    output one_lse
}""",
        training=False,
    )
    rng = np.random.default_rng(11)
    feeds = {x: rng.standard_normal((3, 2, 5 if x == "q" else 600, 8)).astype(np.float32) for x in "qkv"}
    feeds["length"] = np.array([[600], [1], [333]], np.int32)
    out = run_native(Executable(model.graph), feeds, {})
    assert out["output:one"].tobytes() == out["output:all"][:, :, 2:3].tobytes()
    assert out["output:one_lse"].tobytes() == out["output:all_lse"][:, :, 2:3].tobytes()
