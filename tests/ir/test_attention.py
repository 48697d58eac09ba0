"""The fused attention primitive (docs/native.md, "Attention"): torch's
scaled_dot_product_attention is the truth for the values and gradients of both engines,
under no mask, a causal mask and a padding mask, over several blocks of queries and keys;
the reference's gradient passes a float64 finite-difference check; and the native
engine's memory grows linearly with the sequence, the [T, T] scores never stored; stdlib's
cached_attention (over a cache and new keys, by each part's log-sum-exp) is attention over
their concatenation on both engines."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("masked", ["none", "bool", "additive"])
def test_the_reference_gradient_passes_a_float64_check(masked):
    rng = np.random.default_rng(3)
    arrays = {name: rng.standard_normal((2, 5, 3)) for name in "qkv"}
    g, t = graph_with_params(arrays)
    operands = [t["q"], t["k"], t["v"]]
    if masked == "bool":
        operands.append(g.add1("constant", value=rng.random((2, 5, 5)) < 0.7, dtype="bool"))
    elif masked == "additive":
        operands.append(g.add1("constant", value=np.where(rng.random((2, 5, 5)) < 0.3, -1e9, 0.0), dtype="f32"))
    out = g.add("attention", operands, scale=0.4)[0]
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
    input cached: f32[2, 1, 1, T]
    y = cached_attention(q, past_k, past_v, k, v, cached, causal_mask(4))
    output y
    loss sum(y * r)
}}"""


def test_cached_attention_on_both_engines_is_attention_over_the_concatenation():
    """stdlib's cached_attention (each part's fused attention, combined by its log-sum-exp) over a
    cache of two blocks of keys, of which one row reads none and the other 70, and 4 new keys:
    torch's attention over the concatenation, values and gradients (through the log-sum-exps)."""
    rng = np.random.default_rng(5)
    shapes = {"q": (2, 3, 4, 8), "past_k": (2, 3, T, 8), "past_v": (2, 3, T, 8), "k": (2, 3, 4, 8), "v": (2, 3, 4, 8)}
    params = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    cached = np.where(np.arange(T)[None] < np.array([[0], [70]]), 0.0, -1e9).reshape(2, 1, 1, T)
    feeds = {"r": rng.standard_normal((2, 3, 4, 8)), "cached": cached}
    leaves = {name: torch.tensor(a, dtype=torch.float64, requires_grad=True) for name, a in params.items()}
    causal = np.where(np.tril(np.ones((4, 4))) > 0, 0.0, -1e9)
    mask = np.concatenate([np.broadcast_to(cached, (2, 1, 4, T)), np.broadcast_to(causal, (2, 1, 4, 4))], -1)
    keys, values_ = (torch.cat([leaves["past_" + x], leaves[x]], 2) for x in "kv")
    y = F.scaled_dot_product_attention(leaves["q"], keys, values_, attn_mask=torch.tensor(mask))
    (y * torch.tensor(feeds["r"])).sum().backward()
    truth = {"output:y": y.detach().numpy()} | {f"grad:{name}": t.grad.numpy() for name, t in leaves.items()}
    model = build(CACHED)
    reference = gradients(model, feeds, params) | {"output:y": forward(model, feeds, params)["output:y"]}
    native = run_native(
        Executable(step_graph(model)),
        feeds | {"r_y": np.zeros((2, 3, 4, 8))},
        {name: a.astype(np.float32) for name, a in params.items()},
    )
    for name, want in truth.items():
        assert_close(reference[name], want, RTOL, f"reference {name}")
        assert_close(native[name.replace("output:", "metric:output:")], want, RTOL, f"native {name}")
