"""GPT-2 from a Hugging Face folder (compiler/huggingface/gpt2.py) against `transformers` on the
same small random-weight folder: the logits, the gradients of the LM loss, the step model over a
cache of keys and values, and generation (runtime/kv_cache.py): greedy decoding gives the tokens
of `generate(do_sample=False)`, and the cached and uncached paths give the same tokens and
log-probabilities by every decoding."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402

from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.huggingface import gpt2  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.interop.huggingface import save_folder, save_import  # noqa: E402
from helpers.numeric import gradients  # noqa: E402

TINY = dict(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=None)


def hf_folder(path, head_class=GPT2LMHeadModel, seed=0, **config):
    """A `save_pretrained` folder of a tiny GPT-2 with random weights large enough that its
    next-token distributions are far from uniform (greedy decoding has no near ties)."""
    torch.manual_seed(seed)
    model = head_class(GPT2Config(**{**TINY, **config})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.15 + (1.0 if ".ln_" in name and name.endswith("weight") else 0.0))
    model.save_pretrained(path)
    return model


def imported(folder, out, backend="reference"):
    """The folder imported as `dlc import FOLDER -o OUT/gpt2.dl` imports it, then loaded."""
    out.mkdir(exist_ok=True)
    save_import(folder, out / "gpt2.dl")
    return DlcModel(out / "gpt2.dl", backend=backend).load_weights(out / "gpt2.npz")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(the transformers model, the dlc model on the reference engine, its folder of .dl and .npz)."""
    root = tmp_path_factory.mktemp("gpt2")
    torch_model = hf_folder(root / "hf")
    return torch_model, imported(root / "hf", root / "dlc"), root / "dlc"


def prompts(n, length, seed=1):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], (n, length))


def test_logits_match_transformers(lm):
    torch_model, model, _ = lm
    ids = prompts(3, 11)
    want = torch_model(torch.tensor(ids)).logits.detach().numpy()
    got = model.predict({"ids": ids.astype(np.int32)})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_step_model_gives_each_position_from_the_cache(lm):
    """The first 4 tokens at once (a prompt), then one a step, each after the cache of those before."""
    torch_model, model, _ = lm
    ids = prompts(2, 9)
    want = torch_model(torch.tensor(ids)).logits.detach().numpy()
    step, engine = model._step_engine("gpt2_step")
    keys = np.zeros((TINY["n_layer"], 2, TINY["n_head"], 12, 8), np.float32)
    values = keys.copy()
    for start, stop in [(0, 4)] + [(t, t + 1) for t in range(4, ids.shape[1])]:
        feeds = {"ids": ids[:, start:stop].astype(np.int32), "length": np.full(2, start, np.int32)}
        out = engine.predict(model.params, {**feeds, "past_k": keys, "past_v": values})
        keys[:, :, :, start:stop], values[:, :, :, start:stop] = out["keys"], out["values"]
        np.testing.assert_allclose(out["logits"], want[:, stop - 1], rtol=1e-5, atol=1e-5)


def test_greedy_generation_gives_the_tokens_of_transformers(lm):
    torch_model, model, out = lm
    ids = prompts(2, 7)
    want = torch_model.generate(torch.tensor(ids), max_new_tokens=24, do_sample=False, pad_token_id=0)
    want = want.numpy()[:, 7:].tolist()
    assert min(len(set(w)) for w in want) > 2  # not one token repeated
    assert model.generate([list(r) for r in ids], 24) == want  # both prompts at once, from the cache
    assert model.generate(list(ids[1]), 24) == want[1]
    assert model.generate(list(ids[1]), 24, cache=False) == want[1]  # the whole model over the whole prefix
    native = DlcModel(out / "gpt2.dl", backend="native").load_weights(out / "gpt2.npz")
    assert native.generate([list(r) for r in ids], 24) == want  # the step model compiled


def test_prompts_of_different_lengths_decode_together(lm):
    """A batch of prompts of different lengths: each row's tokens are the row's alone, and
    transformers' for the batch left-padded with its attention mask; by the cache (one call of the
    step model per prompt length, then a step for all) and by the whole prefix."""
    torch_model, model, out = lm
    rows = [list(r[:n]) for r, n in zip(prompts(4, 9, seed=6), (3, 9, 5, 7))]
    width = max(map(len, rows))
    padded = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    want = torch_model.generate(padded, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    want = want.numpy()[:, width:].tolist()
    assert min(len(set(w)) for w in want) > 2  # not one token repeated
    assert [model.generate(r, 16) for r in rows] == want
    assert model.generate(rows, 16) == want
    assert model.generate(rows, 16, cache=False) == want
    native = DlcModel(out / "gpt2.dl", backend="native").load_weights(out / "gpt2.npz")
    assert native.generate(rows, 16) == want


@pytest.mark.parametrize(
    "options", [dict(beam=3), dict(top_k=5, seed=3), dict(top_p=0.8, temperature=1.5, seed=4)], ids=str
)
def test_the_cache_gives_what_the_whole_prefix_gives(lm, options):
    _, model, _ = lm
    prompt = list(prompts(1, 5)[0])
    cached, whole = model.generate(prompt, 12, **options), model.generate(prompt, 12, cache=False, **options)
    if "beam" in options:
        assert [c.sequence for c in cached] == [c.sequence for c in whole]
        np.testing.assert_allclose([c.log_prob for c in cached], [c.log_prob for c in whole], rtol=1e-5)
    else:
        assert cached == whole


def test_gradients_match_torch(tmp_path):
    """The LM loss's gradients, dropout off (training mode), float64 in both."""
    folder = tmp_path / "hf"
    torch_model = hf_folder(folder, seed=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).double().train()
    config = json.loads((folder / "config.json").read_text())
    model = load_text(gpt2.program(config, "causal_lm"), "gpt2.dl").build(training=True)
    tensors = {k: v.astype(np.float64) for k, v in safetensors_numpy.load_file(folder / "model.safetensors").items()}
    params = gpt2.weights(config, tensors, "causal_lm")
    ids, nxt = prompts(2, 8, seed=2), prompts(2, 8, seed=3)
    logits = torch_model(torch.tensor(ids)).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, TINY["vocab_size"]), torch.tensor(nxt).reshape(-1)).backward()
    feeds = {"ids": ids.astype(np.int32), "next": nxt.astype(np.int32)}
    got = gradients(model, feeds, {k: v.astype(np.float64) for k, v in params.items()})
    named = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    want = gpt2.weights(config, named, "causal_lm")
    for name, g in want.items():
        np.testing.assert_allclose(got[f"grad:{name}"], g, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_base_model_and_an_untied_head(tmp_path):
    """GPT2Model's hidden states, and an LM head of its own (tie_word_embeddings false)."""
    base = hf_folder(tmp_path / "base", head_class=GPT2Model, seed=2)
    ids = prompts(2, 6)
    got = imported(tmp_path / "base", tmp_path / "b").predict({"ids": ids.astype(np.int32)})["hidden"]
    np.testing.assert_allclose(got, base(torch.tensor(ids)).last_hidden_state.detach().numpy(), rtol=1e-5, atol=1e-5)
    untied = hf_folder(tmp_path / "untied", seed=3, tie_word_embeddings=False)
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)
    model = imported(tmp_path / "untied", tmp_path / "u")
    want = untied(torch.tensor(ids)).logits.detach().numpy()
    np.testing.assert_allclose(model.predict({"ids": ids.astype(np.int32)})["logits"], want, rtol=1e-5, atol=1e-5)


def test_tensors_are_the_inverse_of_weights(tmp_path):
    for tied in (True, False):
        hf_folder(tmp_path / str(tied), tie_word_embeddings=tied)
        config = json.loads((tmp_path / str(tied) / "config.json").read_text())
        saved = safetensors_numpy.load_file(tmp_path / str(tied) / "model.safetensors")
        back = gpt2.tensors(config, gpt2.weights(config, saved, "causal_lm"), "causal_lm")
        assert sorted(back) == sorted(saved)
        assert all(np.array_equal(back[k], saved[k]) for k in saved)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n_embd=30), "'n_embd' is 30 (not a multiple of n_head, 4): dlc does not import it"),
        (dict(activation_function="mish"), "'activation_function' is \"mish\" (dlc imports the activations gelu, "),
        (dict(scale_attn_by_inverse_layer_idx=True), "'scale_attn_by_inverse_layer_idx' is true (attention scores"),
        (dict(n_layer=None), "config.json has no setting 'n_layer', which this model needs"),
        (dict(attn_pdrop=1.0), "'attn_pdrop' is 1.0; dlc needs a dropout rate, from 0 to below 1"),
    ],
    ids=str,
)
def test_configs_it_cannot_write_are_refused(change, message):
    config = {**TINY, "model_type": "gpt2", **change}
    with pytest.raises(DlcError, match=re.escape(message)):
        gpt2.program(config, "causal_lm")


def test_weights_missing_or_of_another_shape_are_named(tmp_path):
    hf_folder(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    saved = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    saved["transformer.h.0.mlp.c_fc.weight"] = np.zeros((32, 64), np.float32)
    with pytest.raises(
        DlcError, match=re.escape("'transformer.h.0.mlp.c_fc.weight' is [32, 64], but config.json makes it [32, 128]")
    ):
        gpt2.weights(config, saved, "causal_lm")
    del saved["transformer.h.0.mlp.c_fc.weight"]
    with pytest.raises(DlcError, match=re.escape("no tensor 'transformer.h.0.mlp.c_fc.weight' (expected [32, 128])")):
        gpt2.weights(config, saved, "causal_lm")


def test_prompts_the_model_cannot_continue_are_refused(lm):
    _, model, _ = lm
    with pytest.raises(DlcError, match="exceed the 64 positions"):
        model.generate(list(range(60)), 5)
    with pytest.raises(DlcError, match="prompts of at least one token; got 2, 0 tokens"):
        model.generate([[1, 2], []], 5)
    with pytest.raises(DlcError, match="the prompt's 60 tokens and 5 more exceed"):
        model.generate([[1, 2], list(range(60))], 5)  # the longest prompt's
    with pytest.raises(DlcError, match="gpt2.tokenizer.json does not exist"):
        model.generate("some text", 5)


def test_dlc_generate_reads_the_imported_tokenizer(tmp_path):
    """The folder's tokenizer.json, which `dlc import` copies beside the program, turns the prompt
    into ids and the continuation into text; generation stops at the config's eos_token_id."""
    tokenizers = pytest.importorskip("tokenizers")
    hf_folder(tmp_path / "hf")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "hf" / "tokenizer.json"))
    model = imported(tmp_path / "hf", tmp_path)
    prompt, ids = "w5 w17 w3 w99", [5, 17, 3, 99]
    endless = model.generate(ids, 20)  # the folder's config has no eos_token_id
    config = json.loads((tmp_path / "gpt2.config.json").read_text())
    (tmp_path / "gpt2.config.json").write_text(json.dumps({**config, "eos_token_id": endless[5]}))
    continued = model.generate(ids, 20)
    assert continued == endless[: endless.index(endless[5]) + 1]
    want = tokenizer.decode(ids + continued)
    assert prompt + model.generate(prompt, 20) == want  # the continuation as the tokenizer spells it after the prompt
    cli = [sys.executable, "-m", "dlc", "generate", str(tmp_path / "gpt2.dl"), "--weights", str(tmp_path / "gpt2.npz")]
    run = subprocess.run(
        cli + ["--prompt", prompt, "--length", "20", "--backend", "reference"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == want + "\n"
    several = ["--prompt", prompt, "--prompt", "w17 w3", "--length", "20", "--backend", "reference"]
    run = subprocess.run(cli + several, capture_output=True, text=True)  # decoded together, a quoted line each
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [json.dumps(p + model.generate(p, 20)) for p in (prompt, "w17 w3")]


def test_the_import_exports_back_to_a_folder_transformers_loads(lm, tmp_path):
    _, model, out = lm
    save_folder(out / "gpt2.dl", model.params, tmp_path / "back")
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    ids = prompts(2, 6)
    want = model.predict({"ids": ids.astype(np.int32)})["logits"]
    np.testing.assert_allclose(back(torch.tensor(ids)).logits.detach().numpy(), want, rtol=1e-5, atol=1e-5)
