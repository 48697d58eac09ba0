"""Decoding (runtime/decoding.py, `dlc generate`, `model.generate`): beam search against
brute-force enumeration of every sequence, on a fixed table of next-token distributions and
on tiny .dl models; K = 1 and top-k 1 against greedy; the scores against log-probabilities
recomputed without the decoders; top-p's nucleus on a fixed distribution; sampling by seed;
the options' checks; the command line end to end on a briefly trained character model."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime import decoding as D
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.kv_cache import log_softmax
from dlc.runtime.training.gradcheck import init_params

from helpers.programs import ENC_DEC  # a small encoder-decoder, shared

EOS = 2


class Table:
    """A fixed model: every prefix has its own random next-token distribution."""

    def __init__(self, vocab: int, seed: int = 0, sharpness: float = 1.0):
        self.vocab, self.seed, self.sharpness = vocab, seed, sharpness

    def log_probs(self, prefix: tuple) -> np.ndarray:
        rng = np.random.default_rng([self.seed, len(prefix), *prefix])
        logits = self.sharpness * rng.normal(size=self.vocab)
        return logits - np.log(np.exp(logits).sum())

    def __call__(self, prefixes: list) -> np.ndarray:
        return np.array([self.log_probs(p) for p in prefixes])


def every_sequence(vocab: int, length: int, eos: int | None) -> list[tuple]:
    """Every complete sequence: one that ends with EOS, or has `length` tokens."""
    out = []
    for n in range(1, length + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if eos not in seq[:-1] and (n == length or seq[-1] == eos):
                out.append(seq)
    return out


def brute_force(log_prob_of, vocab, length, eos=None, alpha=0.0) -> list[tuple]:
    """Every complete sequence with its log-probability and score, best score first."""
    scored = []
    for seq in every_sequence(vocab, length, eos):
        lp = log_prob_of(seq)
        scored.append((seq, lp, lp / ((5 + len(seq)) / 6) ** alpha))
    return sorted(scored, key=lambda c: -c[2])


def table_log_prob(table: Table, seq: tuple) -> float:
    return sum(table.log_probs(seq[:i])[t] for i, t in enumerate(seq))


def assert_same_ranking(found, expected):
    assert [c.sequence for c in found] == [seq for seq, _, _ in expected]
    np.testing.assert_allclose([c.log_prob for c in found], [lp for _, lp, _ in expected], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([c.score for c in found], [s for _, _, s in expected], rtol=1e-9, atol=1e-9)


# ---- beam search on a fixed table ------------------------------------------------------------------
@pytest.mark.parametrize(
    "vocab, length, eos, alpha",
    [(3, 4, None, 0.0), (4, 4, EOS, 0.0), (4, 4, EOS, 0.6), (5, 3, EOS, 1.5), (2, 6, None, 0.0)],
)
def test_a_beam_as_wide_as_every_sequence_ranks_them_as_brute_force(vocab, length, eos, alpha):
    table = Table(vocab, seed=vocab * 10 + length)
    expected = brute_force(lambda s: table_log_prob(table, s), vocab, length, eos, alpha)
    found = D.beam_search(table, length, len(expected), eos, alpha)
    assert_same_ranking(found, expected)


def test_a_narrow_beam_finds_the_most_likely_sequence_greedy_decoding_misses():
    """The first token's favourite (0: 0.6) leads to flat continuations; 1 (0.4) to a sure one."""
    rows = {(): [0.6, 0.4], (0,): [0.5, 0.5], (1,): [0.05, 0.95]}
    table = lambda prefixes: np.log([rows[p] for p in prefixes])
    expected = brute_force(lambda s: np.log(rows[()][s[0]] * rows[s[:1]][s[1]]), 2, 2)
    assert D.greedy(table, 2).sequence == (0, 0)
    best = D.beam_search(table, 2, 2)[0]
    assert best.sequence == expected[0][0] == (1, 1)
    assert best.log_prob == pytest.approx(np.log(0.4 * 0.95))


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("eos", [None, EOS])
def test_a_beam_of_one_is_greedy(seed, eos):
    table = Table(6, seed)
    beam = D.beam_search(table, 8, 1, eos)
    greedy = D.greedy(table, 8, eos)
    assert len(beam) == 1 and beam[0].sequence == greedy.sequence
    assert beam[0].log_prob == pytest.approx(greedy.log_prob)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_scores_are_the_log_probabilities_of_their_sequences(alpha):
    table = Table(7, seed=3)
    found = D.beam_search(table, 6, 5, EOS, alpha)
    assert len(found) == 5 and len({c.sequence for c in found}) == 5
    for c in found:
        assert c.log_prob == pytest.approx(table_log_prob(table, c.sequence), abs=1e-12)
        assert c.score == pytest.approx(c.log_prob / ((5 + len(c.sequence)) / 6) ** alpha, abs=1e-12)
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)


def test_beam_candidates_end_at_eos_or_at_the_length():
    found = D.beam_search(Table(4, seed=1, sharpness=3.0), 5, 10, EOS)
    assert any(c.sequence[-1] == EOS for c in found)
    for c in found:
        assert EOS not in c.sequence[:-1] and (c.sequence[-1] == EOS or len(c.sequence) == 5)


# ---- sampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_k_of_one_is_greedy(seed, temperature):
    table = Table(6, seed)
    sampled = D.sample(table, 8, np.random.default_rng(seed), temperature, top_k=1, eos=EOS)
    assert sampled.sequence == D.greedy(table, 8, EOS).sequence


NUCLEUS = np.array([0.10, 0.50, 0.05, 0.20, 0.15])  # most likely first: ids 1, 3, 4, 0, 2


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.3, [1]),
        (0.6, [1, 3]),
        (0.71, [1, 3, 4]),
        (0.8, [1, 3, 4]),
        (0.9, [1, 3, 4, 0]),
        (0.96, [0, 1, 2, 3, 4]),
        (1.0, [0, 1, 2, 3, 4]),
    ],
)
def test_top_p_keeps_the_fewest_most_likely_tokens_holding_at_least_p(top_p, kept):
    p = D.sampling_distribution(np.log(NUCLEUS), 1.0, top_p=top_p)
    assert list(np.flatnonzero(p)) == sorted(kept)
    np.testing.assert_allclose(p[kept], NUCLEUS[kept] / NUCLEUS[kept].sum())


def test_top_p_after_top_k_and_temperature_measures_the_mass_they_leave():
    p = D.sampling_distribution(np.log(NUCLEUS), 1.0, top_k=3, top_p=0.8)  # 0.5, 0.2, 0.15 -> 0.59, 0.82
    assert list(np.flatnonzero(p)) == [1, 3]
    hot = D.sampling_distribution(np.log(NUCLEUS), 2.0)
    np.testing.assert_allclose(hot, np.sqrt(NUCLEUS) / np.sqrt(NUCLEUS).sum())
    p = D.sampling_distribution(np.log(NUCLEUS), 2.0, top_p=0.6)  # flattened: 0.34, 0.21, 0.19, 0.15, 0.11
    assert list(np.flatnonzero(p)) == [1, 3, 4]  # at temperature 1: [1, 3]


def test_sampling_draws_from_the_sampling_distribution():
    logp = np.log(NUCLEUS)
    rng = np.random.default_rng(0)
    draws = [D.sample(lambda ps: logp[None, :], 1, rng, 1.5, top_p=0.9).sequence[0] for _ in range(20000)]
    want = D.sampling_distribution(logp, 1.5, top_p=0.9)
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / len(draws), want, atol=0.015)
    assert want[2] == 0 and 2 not in draws


def test_sampling_is_reproducible_by_seed_and_scores_the_model_log_probability():
    table = Table(8, seed=4, sharpness=0.3)
    runs = [D.decode(table, 30, temperature=1.2, top_p=0.95, seed=s)[0] for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0].sequence != runs[2].sequence
    assert runs[0].log_prob == pytest.approx(table_log_prob(table, runs[0].sequence), abs=1e-12)


def test_decode_chooses_greedy_sampling_or_beam_by_the_options():
    table = Table(5, seed=2)
    assert D.decode(table, 6, EOS) == [D.greedy(table, 6, EOS)]
    assert D.decode(table, 6, EOS, top_k=3, seed=1) == [D.sample(table, 6, np.random.default_rng(1), 1.0, 3, eos=EOS)]
    assert D.decode(table, 6, EOS, beam=3, length_penalty=0.6) == D.beam_search(table, 6, 3, EOS, 0.6)


# ---- the options' checks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(beam=3, top_k=5), "beam search does not sample: give the beam or top-k, not both"),
        (
            dict(beam=3, temperature=0.7, top_p=0.9),
            "beam search does not sample: give the beam or a temperature above 0 and top-p, not both",
        ),
        (dict(temperature=0, top_k=5), "temperature 0 is greedy decoding, which top-k cannot restrict"),
        (dict(length_penalty=0.6), "the length penalty ranks beam search's candidates: give a beam too"),
        (dict(beam=0), "the beam needs a whole number of at least 1, got 0"),
        (dict(beam=2.0), "the beam needs a whole number of at least 1, got 2.0"),
        (dict(top_k=True), "the top-k needs a whole number of at least 1, got True"),
        (dict(top_p=0), "the top-p needs a number above 0 and at most 1, got 0"),
        (dict(top_p=1.5), "the top-p needs a number above 0 and at most 1, got 1.5"),
        (dict(temperature=float("inf")), "the temperature needs a finite number of at least 0, got inf"),
        (dict(beam=2, length_penalty=-1), "the length penalty needs a finite number of at least 0, got -1"),
    ],
)
def test_bad_values_and_contradicting_options_are_refused(options, message):
    with pytest.raises(DlcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        D.check(5, EOS, **options)


def test_a_length_penalty_is_refused_for_continuations_of_one_length():
    D.check(5, EOS, beam=2, length_penalty=0.6, temperature=0)
    with pytest.raises(DlcError, match="continuations all have the given length"):
        D.check(5, None, beam=2, length_penalty=0.6)


# ---- tiny .dl models with random weights ----------------------------------------------------------
CHAR_MODEL = """
const VOCAB = 3
model chars {
    input  x: i32[B, T]
    target y: i32[B, T]
    hs = gru(embedding(x, VOCAB, 4), 6)
    logits = dense(hs, VOCAB)
    loss   sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}
"""


def random_model(tmp_path, text: str, seed: int) -> DlcModel:
    path = tmp_path / "m.dl"
    path.write_text(text)
    model = DlcModel(str(path), backend="reference")
    model.params = init_params(model.train_model, seed)
    return model


def test_beam_search_on_a_character_model_ranks_every_continuation_as_brute_force(tmp_path):
    model = random_model(tmp_path, CHAR_MODEL, seed=1)
    model.meta = {"meta": {"vocab": "abc"}}
    prompt = [2, 0]  # "ca"

    def log_prob(seq):  # the model's next-character distribution after each prefix, one by one
        return sum(
            np.log(
                model.engine.predict(model.params, {"x": np.array([prompt + list(seq[:i])], np.int32)})["next"][0, t]
            )
            for i, t in enumerate(seq)
        )

    expected = brute_force(log_prob, 3, 3)
    found = model.generate("ca", 3, beam=len(expected))
    assert [c.sequence for c in found] == ["".join("abc"[t] for t in seq) for seq, _, _ in expected]
    np.testing.assert_allclose([c.log_prob for c in found], [lp for _, lp, _ in expected], rtol=1e-6)
    assert model.generate("ca", 3, beam=1)[0].sequence == model.generate("ca", 3)


@pytest.mark.parametrize("alpha", [None, 0.6])
def test_beam_search_on_an_encoder_decoder_ranks_every_target_as_brute_force(tmp_path, alpha):
    model = random_model(tmp_path, ENC_DEC, seed=2)
    src = [3, 0, 3, 1]

    def log_prob(seq):  # teacher forcing: one run over BOS + the sequence, the decoders' steps not used
        probs = model.engine.predict(
            model.params, {"src": np.array([src], np.int32), "dec_in": np.array([(1,) + seq[:-1]], np.int32)}
        )["probs"]
        return float(np.log(probs[0, np.arange(len(seq)), list(seq)]).sum())

    expected = brute_force(log_prob, 4, 3, EOS, alpha or 0.0)
    found = model.generate(src, 3, beam=len(expected), length_penalty=alpha)
    assert [tuple(c.sequence) for c in found] == [seq for seq, _, _ in expected]
    np.testing.assert_allclose([c.log_prob for c in found], [lp for _, lp, _ in expected], rtol=1e-6)
    np.testing.assert_allclose([c.score for c in found], [s for _, _, s in expected], rtol=1e-6)


def test_greedy_generate_of_an_encoder_decoder_is_decode(tmp_path):
    model = random_model(tmp_path, ENC_DEC, seed=3)
    src = np.array([[3, 3, 1, 0], [0, 3, 3, 3], [1, 1, 3, 0]])
    batch = model.decode(src, 6)
    for row, want in zip(src, batch):
        got = model.generate(list(row), 6)
        assert got == list(want[: len(got)]) and not want[len(got) :].any()
        assert model.generate(list(row), 6, beam=1)[0].sequence == got


def test_generate_refuses_bad_prompts_and_options_before_running(tmp_path):
    model = random_model(tmp_path, ENC_DEC, seed=0)
    with pytest.raises(DlcError, match="the source sequence is empty"):
        model.generate([], 3)
    with pytest.raises(DlcError, match=r"its prompt is the source as token ids, as in \[3, 4, 5\]"):
        model.generate("3 4 5", 3)
    with pytest.raises(DlcError, match="beam search does not sample"):
        model.generate([3], 3, beam=2, temperature=1.0)


def test_log_softmax_is_float64s_rounded_to_float32():
    """kv_cache.log_softmax (what a token model's decoding reads) works in float32 in place of a
    copy: the logits given stay as they were, and it is the float64 computation to float32's rounding."""
    logits = np.random.default_rng(0).normal(0, 30, (3, 50257)).astype(np.float32)
    given = logits.copy()
    got = log_softmax(logits)
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    want = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert got.dtype == np.float32 and np.array_equal(logits, given)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (np.argmax(got, -1) == np.argmax(logits, -1)).all()


# ---- the command line ------------------------------------------------------------------------------------
TEXT = "abba cab bab. " * 60


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("chars")
    (d / "t.txt").write_text(TEXT)
    (d / "c.dl").write_text(
        CHAR_MODEL.replace("VOCAB = 3", "VOCAB = 8")
        + """
train chars { data = text("t.txt", seq = 16) batch = 8 epochs = 1 optimizer = adam(lr = 1e-2) }
"""
    )
    assert main(["train", str(d / "c.dl"), "--out", str(d / "run"), "-q", "--backend", "reference"]) == 0
    return d


def generate(run, capsys, *flags):
    code = main(
        [
            "generate",
            str(run / "c.dl"),
            "--weights",
            str(run / "run" / "last.npz"),
            "--backend",
            "reference",
            "--prompt",
            "ab",
            *flags,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_several_prompts_need_a_token_model(char_run, capsys):
    code, out, err = generate(char_run, capsys, "--prompt", "ba")
    assert code != 0 and out == ""
    assert "--prompt: error: chars continues one prompt at a time: several decode together only for a token" in err


def test_cli_beam_prints_the_best_continuations_with_their_log_probabilities(char_run, capsys):
    code, out, err = generate(char_run, capsys, "--length", "4", "--beam", "3")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["log_prob", "sequence"] and len(rows) == 3
    printed = [(float(row.split(None, 1)[0]), json.loads(row.split(None, 1)[1])) for row in rows]
    model = DlcModel(str(char_run / "c.dl"), backend="reference").load_weights(char_run / "run" / "last.npz")
    vocab = model.vocab()
    for log_prob, text in printed:
        assert text.startswith("ab") and len(text) == 6
        ids = [vocab.index(ch) for ch in text]
        recomputed = sum(
            np.log(model.engine.predict(model.params, {"x": np.array([ids[:i]], np.int32)})["next"][0, ids[i]])
            for i in range(2, 6)
        )
        assert log_prob == pytest.approx(recomputed, abs=1e-4)
    assert [lp for lp, _ in printed] == sorted((lp for lp, _ in printed), reverse=True)


def test_cli_top_k_one_is_greedy_and_sampling_is_seeded(char_run, capsys):
    _, greedy, _ = generate(char_run, capsys, "--length", "12")
    _, top1, _ = generate(char_run, capsys, "--length", "12", "--top-k", "1", "--temperature", "2")
    assert top1 == greedy and len(greedy) == len("ab") + 12 + 1
    sampled = [generate(char_run, capsys, "--length", "40", "--top-p", "0.95", "--seed", s)[1] for s in "112"]
    assert sampled[0] == sampled[1] != sampled[2] and set(sampled[0].rstrip("\n")) <= set(TEXT)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--beam", "2", "--top-k", "3"],
            "--beam: error: generate: beam search does not sample: give the beam or top-k, not both",
        ),
        (
            ["--temperature", "0", "--top-p", "0.5"],
            "--temperature: error: generate: temperature 0 is greedy decoding, which top-p cannot restrict",
        ),
        (
            ["--length-penalty", "0.6"],
            "--length-penalty: error: generate: the length penalty ranks beam search's candidates",
        ),
        (
            ["--beam", "2", "--length-penalty", "0.6"],
            "--length-penalty: error: generate: a character model's continuations all have",
        ),
    ],
)
def test_cli_refuses_contradicting_options_at_a_flag_with_status_2(char_run, capsys, flags, message):
    code, out, err = generate(char_run, capsys, *flags)
    assert code == 2 and out == "" and err.startswith(message)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--top-p", "1.5", "needs a finite number above 0 and at most 1; got '1.5'"),
        ("--top-p", "0", "needs a finite number above 0 and at most 1; got '0'"),
        ("--top-k", "0", "needs a whole number, at least 1; got '0'"),
        ("--beam", "-2", "needs a whole number, at least 1; got '-2'"),
        ("--length-penalty", "nan", "needs a finite number at least 0; got 'nan'"),
    ],
)
def test_cli_values_out_of_range_are_usage_errors(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["generate", str(tmp_path / "m.dl"), "--weights", "w.npz", flag, value])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(f"{flag}: error: {message}\n")


def test_cli_beam_of_an_encoder_decoder_prints_scores_and_says_what_they_are(tmp_path, capsys):
    model = random_model(tmp_path, ENC_DEC, seed=4)
    np.savez(tmp_path / "w.npz", **model.params)
    argv = [
        "generate",
        str(tmp_path / "m.dl"),
        "--weights",
        str(tmp_path / "w.npz"),
        "--backend",
        "reference",
        "--prompt",
        "3 1 3",
        "--length",
        "5",
        "--beam",
        "4",
    ]
    assert main(argv + ["--length-penalty", "0.6"]) == 0
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split() == ["log_prob", "score", "sequence"] and len(rows) == 4
    assert "score: log_prob / ((5 + length) / 6) ** 0.6" in err
    found = model.generate([3, 1, 3], 5, beam=4, length_penalty=0.6)
    for row, c in zip(rows, found):
        log_prob, score, *ids = row.split()
        assert [int(t) for t in ids] == c.sequence
        assert float(log_prob) == pytest.approx(c.log_prob, abs=1e-4) and float(score) == pytest.approx(
            c.score, abs=1e-4
        )
        assert float(score) == pytest.approx(float(log_prob) / ((5 + len(ids)) / 6) ** 0.6, abs=2e-4)
