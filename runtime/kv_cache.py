"""Decoding a language model one position per token, from a cache of keys and values.

dlc compiles a model for static shapes, so the cache is an input and output of a second model
of the program, the step model `NAME_step` beside the model `NAME` (the importer of a Hugging
Face GPT-2 writes one, compiler/huggingface/gpt2.py), over the same parameters:

    input  ids: i32[B, T]                           the T new tokens of each row
    input  length: i32[B]                           how many positions are cached: the first new token's
    input  past_k, past_v: f32[L, B, H, S, d]       the keys and values of the S positions of the cache
    output logits: f32[B, V]                        the distribution after the last new token
    output keys, values: f32[L, B, H, T, d]         the new tokens', which the cache takes from `length` on

`CachedSteps` is the callback of runtime/decoding.py over it: it runs the prompts through the
step model (the prefill, T their length: one call for the prompts of each length), then extends
each prefix it is asked about from the cache of the prefix it grew from by one position (T = 1),
so beam search's reordered prefixes and sampling's and greedy decoding's single ones all cost one
step per token. Each row of the cache has its own `length`, so prompts of different lengths are
decoded together: a row's keys and values, the cached positions it reads (its first `length`,
the rest never read: a step costs the positions written, not S) and its positions are those of
the row decoded alone. The compiled step loops over T and S as it does over any symbolic dim:
one code serves both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dlc.compiler.errors import DlcError

STEP_SUFFIX = "_step"  # the step model of model NAME is NAME_step
STEP_INPUTS = ("ids", "length", "past_k", "past_v")


def step_model_name(models, name: str) -> str | None:
    """The name of model `name`'s step model among a program's `models`, or None."""
    return name + STEP_SUFFIX if name + STEP_SUFFIX in models else None


def check_step_model(model):
    """Refuses a step model that does not take the inputs and give the outputs above."""
    inputs = {i.name: i for i in model.inputs if not i.is_target}
    outputs = {k.removeprefix("output:") for k in model.graph.outputs if k.startswith("output:")}
    if set(inputs) != set(STEP_INPUTS) or not {"logits", "keys", "values"} <= outputs:
        raise DlcError(
            f"model {model.name} is not a step model: it needs the inputs {', '.join(STEP_INPUTS)} and the outputs "
            f"logits, keys and values (runtime/kv_cache.py), and has the inputs {', '.join(inputs) or 'none'} "
            f"and the outputs {', '.join(sorted(outputs)) or 'none'}"
        )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) along the last axis, in float32 (the logits' precision), the exponentials
    summed in float64. Worked in place of one copy: over GPT-2's 50257 logits a row, each array
    made anew costs more than the arithmetic (its memory is fresh pages to fault in), and a
    float64 copy and its temporaries took several times as long at batch 8."""
    z = np.array(logits, np.float32)
    z -= z.max(-1, keepdims=True)
    z -= np.log(np.exp(z).sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return z


def by_length(sequences: list) -> dict:
    """The indices of `sequences`, grouped by their length (the rows one call of a model can take together)."""
    groups: dict = {}
    for i, sequence in enumerate(sequences):
        groups.setdefault(len(sequence), []).append(i)
    return groups


class CachedSteps:
    """The next-token log-probabilities after each of `prompts` (token ids, of any lengths of at
    least one) and a prefix (the callback of runtime/decoding.py: with one prompt every prefix
    continues it; with several, the i-th prefix continues the i-th), computed by `predict` (the
    step model's feeds -> its outputs) over a cache of `capacity` positions, which the step model
    reads where it lies (the native engine binds an array it is given, not a copy)."""

    def __init__(self, predict: Callable[[dict], dict], model, prompts: list, capacity: int):
        check_step_model(model)
        layers, _, heads, _, width = next(i for i in model.inputs if i.name == "past_k").type.shape
        self.predict, self.prompts, self.capacity = predict, [list(p) for p in prompts], capacity
        if not all(self.prompts):
            raise DlcError("generate: a prompt needs at least one token")
        self.shape = (layers, len(self.prompts), heads, capacity, width)
        self.rows: dict = {}  # (prompt, prefix) -> its row of the cache and of logp
        self.keys = self.values = self.logp = None

    def __call__(self, prefixes: list) -> np.ndarray:
        wanted = [(0 if len(self.prompts) == 1 else i, tuple(p)) for i, p in enumerate(prefixes)]
        if self.logp is None:
            self._prefill()
        if not all(w in self.rows for w in wanted):
            parents = [self.rows[(r, p[:-1])] for r, p in wanted]
            if parents != list(range(len(self.rows))):  # beam search reordered or repeated prefixes
                self.keys, self.values = self.keys[:, parents], self.values[:, parents]
            positions = [len(self.prompts[r]) + len(p) - 1 for r, p in wanted]
            self.logp = self._step(range(len(wanted)), [[p[-1]] for _, p in wanted], positions, self.keys, self.values)
            self.rows = {w: i for i, w in enumerate(wanted)}
        order = [self.rows[w] for w in wanted]
        return self.logp if order == list(range(len(self.logp))) else self.logp[order]  # a copy only if reordered

    def _prefill(self):
        """The prompts' keys and values, a call for the prompts of each length (their rows of an
        empty cache); the distribution after each."""
        self.keys, self.values = np.zeros(self.shape, np.float32), np.zeros(self.shape, np.float32)
        self.logp = None
        for rows in by_length(self.prompts).values():
            # every row at once reads the cache itself; a group, an empty cache of its rows (length 0 reads none)
            past = (self.keys, self.values) if len(rows) == len(self.prompts) else (self._empty(len(rows)),) * 2
            logp = self._step(rows, [self.prompts[r] for r in rows], [0] * len(rows), *past)
            if self.logp is None:
                self.logp = np.empty((len(self.prompts), logp.shape[1]), logp.dtype)
            self.logp[rows] = logp
        self.rows = {(r, ()): r for r in range(len(self.prompts))}

    def _empty(self, rows: int) -> np.ndarray:
        return np.zeros((self.shape[0], rows, *self.shape[2:]), np.float32)

    def _step(self, rows, tokens: list, positions: list, past_k: np.ndarray, past_v: np.ndarray) -> np.ndarray:
        """The step model on the tokens (a list each, all of one length) of the cache's `rows`, each
        from its position on, given their cache (`past_k`, `past_v`); their keys and values into
        the cache there. Returns the log-probabilities after each row's last token."""
        t = len(tokens[0])
        if max(positions) + t > self.capacity:
            raise DlcError(f"generate: position {max(positions) + t - 1} is past the cache's {self.capacity}")
        out = self.predict(
            {
                "ids": np.array(tokens, np.int32).reshape(len(tokens), t),
                "length": np.array(positions, np.int32),
                "past_k": past_k,
                "past_v": past_v,
            }
        )
        for i, (row, position) in enumerate(zip(rows, positions)):
            self.keys[:, row, :, position : position + t] = out["keys"][:, i]
            self.values[:, row, :, position : position + t] = out["values"][:, i]
        return log_softmax(out["logits"])
