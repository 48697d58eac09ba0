"""Decoding: sequences from a model's next-token distributions.

Every algorithm is a pure function over a callback, `next_log_probs(prefixes)`: for a list
of prefixes (tuples of the token ids chosen so far, all of one length) it returns the
model's log-probabilities of the next token, an array [len(prefixes), V]. runtime/api.py
makes the callback from a character model (the prompt before each prefix) or an
encoder-decoder (the source, and BOS before each prefix); the tests give a fixed table.

- greedy: the most likely token at every step.
- sample: a token drawn from softmax(log-probabilities / temperature), restricted to the
  top_k most likely tokens and then to the nucleus, the smallest set of the most likely
  tokens holding at least top_p of the (renormalized) mass (Holtzman et al. 2020).
- beam_search: keeps the `width` most likely prefixes at every step; a prefix that ends
  with EOS is finished and takes its place in the beam from then on, so the beam narrows
  as candidates finish (Sutskever et al. 2014). The beam keeps prefixes by
  log-probability; the candidates (finished, or cut at `length`) are then ranked by
  log_prob / ((5 + length) / 6) ** alpha, GNMT's length penalty (Wu et al. 2016):
  alpha = 0 ranks by log-probability, larger alphas favour longer sequences.

A sequence ends after `length` tokens, or with `eos` (an encoder-decoder's end token;
None for a character model, whose continuations all have `length` tokens).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

from dlc.compiler.errors import DlcError

NextLogProbs = Callable[[list], np.ndarray]


class Candidate(NamedTuple):
    sequence: Sequence  # token ids (runtime/api.py gives a character model's as text)
    log_prob: float  # the sum of the model's log-probabilities of its tokens
    score: float  # what beam search ranks by: log_prob over the length penalty


def length_penalty(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def greedy(next_log_probs: NextLogProbs, length: int, eos: int | None = None) -> Candidate:
    return _token_by_token(next_log_probs, length, eos, _most_likely)[0]


def _most_likely(logp: np.ndarray) -> int:
    return int(np.argmax(logp))


def sample(
    next_log_probs: NextLogProbs,
    length: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos: int | None = None,
) -> Candidate:
    return _token_by_token(next_log_probs, length, eos, _sampler(rng, temperature, top_k, top_p))[0]


def _sampler(rng: np.random.Generator, temperature: float, top_k: int | None, top_p: float | None):
    def choose(logp):
        p = sampling_distribution(logp, temperature, top_k, top_p)
        return int(rng.choice(len(p), p=p))

    return choose


def sampling_distribution(
    logp: np.ndarray, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """The probabilities `sample` draws from: softmax(logp / temperature) over its top_k
    most likely tokens, then over the fewest of those, most likely first, whose
    probabilities (renormalized over the top_k) sum to at least top_p; zero elsewhere."""
    z = np.asarray(logp, np.float64) / temperature
    p = np.exp(z - z.max())
    order = np.argsort(-p, kind="stable")  # ties: the lower id first
    kept = order[:top_k]
    if top_p is not None:
        mass = np.cumsum(p[kept]) / p[kept].sum()
        kept = kept[: int(np.searchsorted(mass, top_p)) + 1]  # the first prefix reaching top_p
    out = np.zeros_like(p)
    out[kept] = p[kept] / p[kept].sum()
    return out


def beam_search(
    next_log_probs: NextLogProbs, length: int, width: int, eos: int | None = None, alpha: float = 0.0
) -> list[Candidate]:
    """The `width` best sequences found (fewer if there are fewer), best score first."""
    live, finished = [((), 0.0)], []
    for _ in range(length):
        totals = np.array([lp for _, lp in live])[:, None] + next_log_probs([seq for seq, _ in live])
        vocab = totals.shape[1]
        best = np.argsort(-totals, axis=None, kind="stable")[: width - len(finished)]
        extended = [(live[i][0] + (t,), float(totals[i, t])) for i, t in (divmod(int(k), vocab) for k in best)]
        finished += [c for c in extended if c[0][-1] == eos]
        live = [c for c in extended if c[0][-1] != eos]
        if not live:
            break
    ranked = [Candidate(seq, lp, lp / length_penalty(len(seq), alpha)) for seq, lp in finished + live]
    return sorted(ranked, key=lambda c: -c.score)


class OptionError(DlcError):
    """A decoding option's bad value, or options that contradict: `option` is the keyword at fault
    (`decode`'s, as "top_k"), which dlc generate reports as its flag (--top-k)."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


def check(length, eos=None, *, beam=None, temperature=None, top_k=None, top_p=None, length_penalty=None):
    """Refuses bad values and options that contradict, as `decode` takes them (OptionError)."""

    def whole(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def real(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

    for option, name, value, ok, want in [
        ("length", "length", length, whole(length) and length >= 0, "a whole number of at least 0"),
        ("beam", "beam", beam, whole(beam) and beam >= 1, "a whole number of at least 1"),
        ("top_k", "top-k", top_k, whole(top_k) and top_k >= 1, "a whole number of at least 1"),
        ("top_p", "top-p", top_p, real(top_p) and 0 < top_p <= 1, "a number above 0 and at most 1"),
        (
            "temperature",
            "temperature",
            temperature,
            real(temperature) and temperature >= 0,
            "a finite number of at least 0",
        ),
        (
            "length_penalty",
            "length penalty",
            length_penalty,
            real(length_penalty) and length_penalty >= 0,
            "a finite number of at least 0",
        ),
    ]:
        if value is not None and not ok:
            raise OptionError(f"generate: the {name} needs {want}, got {value!r}", option)
    filters = [name for name, value in (("top-k", top_k), ("top-p", top_p)) if value is not None]
    if beam is not None and (filters or temperature):
        sampling = " and ".join(["a temperature above 0"] * bool(temperature) + filters)
        raise OptionError(f"generate: beam search does not sample: give the beam or {sampling}, not both", "beam")
    if filters and temperature == 0:
        raise OptionError(
            f"generate: temperature 0 is greedy decoding, which {' and '.join(filters)} cannot restrict: "
            "give a temperature above 0, or none (1)",
            "temperature",
        )
    if length_penalty is not None and beam is None:
        raise OptionError(
            "generate: the length penalty ranks beam search's candidates: give a beam too", "length_penalty"
        )
    if length_penalty is not None and eos is None:
        raise OptionError(
            "generate: a character model's continuations all have the given length, so a length "
            "penalty would not change their order: leave it out",
            "length_penalty",
        )


def decode(
    next_log_probs: NextLogProbs,
    length: int,
    eos: int | None = None,
    *,
    beam: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    length_penalty: float | None = None,
    seed: int = 0,
    rows: int = 1,
) -> list[Candidate]:
    """The decoding the options (which `check` accepted) ask for: beam search's `beam` best
    candidates, else a sequence for each of `rows` prompts decoded together (the callback's
    i-th prefix continues the i-th prompt), sampled (top_k, top_p or a temperature above 0;
    the temperature is 1 unless given) or greedy. Beam search decodes one prompt."""
    if beam is not None:
        if rows != 1:
            raise DlcError(f"generate: beam search continues one prompt at a time, not {rows}")
        return beam_search(next_log_probs, length, beam, eos, length_penalty or 0.0)
    if temperature is None:
        temperature = 0.0 if top_k is None and top_p is None else 1.0
    if temperature == 0:
        return _token_by_token(next_log_probs, length, eos, _most_likely, rows)
    choose = _sampler(np.random.default_rng(seed), temperature, top_k, top_p)
    return _token_by_token(next_log_probs, length, eos, choose, rows)


def _token_by_token(next_log_probs: NextLogProbs, length: int, eos: int | None, choose, rows: int = 1) -> list:
    """A Candidate for each of `rows` sequences extended together, one token each per call of
    the callback (the prefixes stay of one length: a sequence that ended repeats EOS, which
    its candidate leaves out), until each ends or has `length` tokens."""
    seqs, totals, ends = [()] * rows, [0.0] * rows, [None] * rows
    while len(seqs[0]) < length and None in ends:
        logp = next_log_probs(seqs)
        for i in range(rows):
            token = choose(logp[i]) if ends[i] is None else eos
            if ends[i] is None:
                totals[i] += float(logp[i, token])
                ends[i] = len(seqs[i]) + 1 if token == eos else None
            seqs[i] = seqs[i] + (token,)
    return [Candidate(seq[:end], total, total) for seq, total, end in zip(seqs, totals, ends)]
