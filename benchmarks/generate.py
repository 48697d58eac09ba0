"""Text generation: an imported GPT-2 decoded by dlc (`model.generate`, what `dlc generate` runs:
the step model over its cache of keys and values, native engine) against `transformers`' eager
`generate` (its own cache) on the same folder.

The folder is a GPT-2 of the chosen shape with `transformers`' random initial weights, saved by
`save_pretrained` and imported by compiler/huggingface/gpt2.py. Both decode greedily, `--new`
tokens (default 128, every one: no end token) after prompts of `--prompt` random tokens (default
32), at batch 1 and 8, on 2 threads (torch.set_num_threads, DLC_NUM_THREADS), in one process, in
rounds (benchmarks/rounds.py): a generation of each, in turn, the order rotated each round
(`--rounds`, default 3), after an untimed one of each (dlc's compiles its code). Reported per batch:

  tokens/s    the generated tokens (batch × new) over the median generation's seconds
  dlc/hf      the median over rounds of each round's ratio of generation times, p25-p75
              (below 1: dlc is faster)
  first (ms)  the first token's latency: a generation of one token (the prompt, then one), timed
              in rounds the same way
  same        the share of the generated tokens equal to transformers' (greedy decoding of
              random weights has near ties, which float32's rounding may break either way)
  others      cores other processes used in each round (0 = quiet machine)

    python benchmarks/generate.py                     # GPT-2 small's shape: 12 layers, 12 heads, 768 wide
    python benchmarks/generate.py --tiny --rounds 1   # a smoke run of a 2-layer, 64-wide model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import print_results
from rounds import calls, ratio_cell, others_cell, wide_note, time_o3_code
from train_step import json_safe, markdown

HERE = Path(__file__).resolve().parent
THREADS = 2
PAUSE_S = 0.2  # before each generation: the other framework's spinning worker threads go to sleep
SHAPES = {
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "tiny": dict(vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4),
}


def gpt2_folder(path: Path, shape: dict):
    """A `save_pretrained` folder of a random-weight GPT-2; the transformers model, in eval mode."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**shape, bos_token_id=0, eos_token_id=None)).eval()
    model.save_pretrained(path)
    return model


def imported(folder: Path, out: Path):
    """The folder as a .dl program and checkpoint (compiler/huggingface/gpt2.py), loaded on the native engine."""
    import dlc
    from safetensors.numpy import load_file
    from dlc.compiler.huggingface import gpt2
    from dlc.runtime.interop import checkpoint

    config = json.loads((folder / "config.json").read_text())
    text = gpt2.program(config, "causal_lm")
    (out / "gpt2.dl").write_text(text)
    weights = gpt2.weights(config, load_file(folder / "model.safetensors"), "causal_lm")
    checkpoint.save(out / "gpt2.npz", weights, {}, {"model": "gpt2", "source_hash": checkpoint.source_hash(text)})
    return dlc.load(out / "gpt2.dl", weights=out / "gpt2.npz", backend="native")


def generations(model, torch_model, prompts: np.ndarray, new: int) -> dict:
    """dlc's and transformers' greedy generation of `new` tokens after `prompts`, as functions of no arguments."""
    import torch

    rows = [list(map(int, p)) for p in prompts]
    ids = torch.tensor(prompts)

    def hf():
        with torch.no_grad():
            out = torch_model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        return out[:, prompts.shape[1] :].tolist()

    return {"dlc": lambda: model.generate(rows, new), "hf": hf}


def same_share(a: list, b: list) -> float:
    """The share of the tokens of `a` equal to `b`'s at the same place (sequences of equal lengths)."""
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tiny", action="store_true", help="a 2-layer, 64-wide GPT-2 (a smoke run), not GPT-2 small's shape"
    )
    ap.add_argument("--batches", default="1,8", help="the batch sizes (default 1,8)")
    ap.add_argument("--prompt", type=int, default=32, help="the prompt's tokens (default 32)")
    ap.add_argument("--new", type=int, default=128, help="the tokens generated (default 128)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of one generation of each (default 3)")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)
    time_o3_code()
    os.environ.setdefault("DLC_NUM_THREADS", str(THREADS))
    import torch
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()  # transformers imports torchvision, whose build may not load
    torch.set_num_threads(THREADS)
    shape = SHAPES["tiny" if args.tiny else "gpt2"]
    rows, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hf"
        torch_model = gpt2_folder(folder, shape)
        model = imported(folder, Path(tmp))
        for batch in (int(b) for b in args.batches.split(",")):
            prompts = np.random.default_rng(batch).integers(0, shape["vocab_size"], (batch, args.prompt))
            whole = calls(generations(model, torch_model, prompts, args.new), args.rounds, 0.0, 1, PAUSE_S)
            first = calls(generations(model, torch_model, prompts, 1), args.rounds, 0.0, 1, PAUSE_S)
            ratio = whole.ratio("dlc", "hf")
            row = {
                "batch": batch,
                "tokens_per_s": {k: batch * args.new / whole.median_s(k) for k in ("dlc", "hf")},
                "dlc/hf": vars(ratio),
                "first_ms": {k: first.median_s(k) * 1e3 for k in ("dlc", "hf")},
                "same": same_share(whole.outputs["dlc"][-1], whole.outputs["hf"][-1]),
                "others": whole.others,
            }
            if note := wide_note(f"batch {batch}", {"dlc/hf": ratio}):
                print(note, flush=True)
            rows.append(row)
            cells.append(
                [
                    str(batch),
                    f"{row['tokens_per_s']['dlc']:.1f}",
                    f"{row['tokens_per_s']['hf']:.1f}",
                    ratio_cell(row["dlc/hf"]),
                    f"{row['first_ms']['dlc']:.1f}",
                    f"{row['first_ms']['hf']:.1f}",
                    f"{row['same']:.2f}",
                    others_cell(row["others"]),
                ]
            )
    cols = ["batch", "dlc tokens/s", "hf tokens/s", "dlc/hf", "dlc first (ms)", "hf first (ms)", "same", "others"]
    print(f"\nGPT-2 {'tiny' if args.tiny else 'small'} shape, {args.prompt}-token prompts, {args.new} new tokens")
    print_results(markdown(cols, cells), json_safe(rows), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
