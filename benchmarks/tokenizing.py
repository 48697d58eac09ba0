"""Tokenizing: dlc's tokenizer (runtime/data/tokenizer.py) against Hugging Face's `tokenizers`
called directly, on the same generated corpus (default 10 MB of templated sentences) and the
same byte-level BPE of 8000 tokens (trained by dlc on its first megabyte). Two rows:

    corpus   a language model's ids (text(..., tokenizer = ...)): dlc's `corpus(text)` against the
             library's encode_batch of the lines and their ids gathered into one int32 array
    padded   labelled texts (texts(...)): dlc's `encode(lines, length = 128)` (ids, mask, lengths)
             against the library's encode_batch with its own padding and truncation, ids and masks
             as int32 arrays

Both sides give the same ids, checked before anything is timed. They run in rounds
(benchmarks/rounds.py), in turn; dlc/tokenizers is the median over rounds of each round's
ratio, with its p25-p75 (target: dlc adds at most 10 %, a ratio of 1.10). The library's
threads are its own (RAYON_NUM_THREADS, default the cores).

    python benchmarks/tokenizing.py
    python benchmarks/tokenizing.py --mb 1 --rounds 3
    python benchmarks/tokenizing.py --quick          # a smoke run: 50 kB, one round
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

from machine import print_results, wait_idle
from rounds import ROUNDS, others_cell, ratio_cell, timed_row

WORDS = (
    "the a film movie plot story actor music scene ending was is felt truly very quite rather not "
    "wonderful dull moving clumsy brilliant boring charming awful, and but; it I we loved hated it."
).split()
LENGTH = 128  # the padded row's length


def corpus(megabytes: float, seed: int = 0) -> str:
    """Lines of 6 to 24 random words, about `megabytes` MB of UTF-8 text."""
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < megabytes * 1e6:
        line = " ".join(rng.choice(WORDS, rng.integers(6, 25))) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)


def library_corpus(lib, text: str) -> np.ndarray:
    found = lib.encode_batch(text.splitlines(keepends=True), add_special_tokens=False)
    return np.fromiter(itertools.chain.from_iterable(e.ids for e in found), np.int32)


def library_padded(lib, lines: list, pad: int) -> tuple:
    lib.enable_truncation(max_length=LENGTH)
    lib.enable_padding(pad_id=pad, length=LENGTH)
    found = lib.encode_batch(lines)
    return np.array([e.ids for e in found], np.int32), np.array([e.attention_mask for e in found], np.int32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=10.0, help="megabytes of corpus (default 10)")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 50 kB, one round")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.rounds = 0.05, 1
    import tokenizers

    from dlc.runtime.data import tokenizer

    text = corpus(args.mb)
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.txt"
        sample.write_text(text[:1_000_000])
        tok = tokenizer.train([sample], "bpe", 8000)
    lib = tokenizers.Tokenizer.from_str(tok.tok.to_str())
    lines = text.splitlines()
    if not np.array_equal(tok.corpus(text), library_corpus(lib, text)):
        raise SystemExit("the corpus's ids differ between dlc and the library")
    ours = tok.encode(lines, length=LENGTH)
    if not all(map(np.array_equal, (ours.ids, ours.mask), library_padded(lib, lines, tok.pad))):
        raise SystemExit("the padded ids differ between dlc and the library")
    print(f"{len(text) / 1e6:.2f} MB, {len(lines)} lines, {tok.vocab_size} tokens", flush=True)
    if not args.quick:
        wait_idle(60)
    rows = []
    table = ["| Row | dlc ms | tokenizers ms | dlc/tokenizers | others |", "|---|---|---|---|---|"]
    for label, fns in (
        ("corpus", {"dlc": lambda: tok.corpus(text), "tokenizers": lambda: library_corpus(lib, text)}),
        (
            "padded",
            {
                "dlc": lambda: tok.encode(lines, length=LENGTH),
                "tokenizers": lambda: library_padded(lib, lines, tok.pad),
            },
        ),
    ):
        row = timed_row(fns, {"row": label, "mb": args.mb}, label, args.rounds, seconds_each=0.5)
        rows.append(row)
        table.append(
            f"| {label} | {row['dlc']:.1f} | {row['tokenizers']:.1f} | {ratio_cell(row['dlc/tokenizers'])} | "
            f"{others_cell(row['others'])} |"
        )
    print_results("\n".join(table), rows, args.json)


if __name__ == "__main__":
    main()
