"""nanoGPT against dlc: Karpathy's nanoGPT model (model.py, written out below in torch)
against the same model in .dl (benchmarks/workloads/gpt.dl), each trained by its own
framework with nanoGPT's recipe on the characters of examples/data/genesis.txt.

    cpu   nanoGPT's CPU recipe ("baby GPT"): 4 layers, 4 heads, 128 wide, block 64, batch 12
    gpt2  the GPT-2-small shape: 12 layers, 12 heads, 768 wide, block 256, batch 4

Both: no biases (nanoGPT's bias = False), no dropout, exact GELU, the output projection
tied to the token table, weights normal(0.02) and c_proj normal(0.02 / sqrt(2 layers));
AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on the 2-D tensors only, a linear
warmup of iters / 20 steps (nanoGPT's get_lr) into a cosine decay to 1e-4 at the last step, gradient clipping
at norm 1.0, batches of random windows; the validation loss is the mean over the last
10 % of the text read once in windows side by side (dlc's split(0.1, tail = true)).

Each framework runs in a child process of its own, on 2 threads (torch.set_num_threads,
DLC_NUM_THREADS), with dlc's native engine, in rounds (benchmarks/rounds.py): a run of each,
in turn, the order rotated each round (`--rounds`, default 3). Reported per configuration
and framework:

  ms/iter     the median over rounds of a run's median iteration after its warm-up (a
              tenth of the run, at least 2 iterations), data and update included
  dlc/torch   the median over rounds of each round's ratio, with its p25-p75
  first (s)   of the first round's run, from the child's start to the end of its first
              iteration: dlc with an empty compile cache (its GEMM kernels compiled too;
              the later rounds' runs find the code cached), PyTorch from the interpreter's start
  RSS (MB)    the first round's child's peak resident memory (its VmHWM: getrusage of a
              child would start from the parent's size at the fork)
  (printed)   the start-up's phases, each with the peak RSS at its end
  params      the parameter count (asserted equal: the models are the same)
  loss0       the first iteration's training loss (both near ln(vocab) = 4.09)
  val loss    after --iters iterations
  others      cores other processes used in each round (0 = quiet machine)

Before any run the two models are checked to be the same function: dlc's initial parameters
copied into the torch model give the same loss on one window (1e-4 relative).

    python benchmarks/gpt.py                          # both configurations, a short smoke run
    python benchmarks/gpt.py --only cpu --iters 2000  # nanoGPT's CPU recipe in full
    python benchmarks/gpt.py --only gpt2 --iters 5 --json /tmp/gpt.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import print_results, status_kb
from rounds import interleave, others_cell, ratio_cell, wide_note, time_o3_code
from train_step import json_safe, markdown, workload_source

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "examples" / "data" / "genesis.txt"
THREADS = 2
FRAMEWORKS = ("dlc", "torch")
CONFIGS = {
    "cpu": {"LAYERS": 4, "HEADS": 4, "WIDTH": 128, "BLOCK": 64, "batch": 12},
    "gpt2": {"LAYERS": 12, "HEADS": 12, "WIDTH": 768, "BLOCK": 256, "batch": 4},
    "tiny": {"LAYERS": 1, "HEADS": 2, "WIDTH": 16, "BLOCK": 16, "batch": 4},  # the smoke test's
}
DEFAULT_ITERS = {"cpu": 50, "gpt2": 5, "tiny": 5}
LR, MIN_LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, (0.9, 0.99), 0.1, 1.0
CHECK_RTOL = 1e-4
FIRST_LOSS_ATOL = 1.0


def warmup_iters(iters: int) -> int:
    """nanoGPT's CPU recipe warms up 100 of its 2,000 iterations: a twentieth."""
    return max(1, iters // 20)


def sizes(config: dict) -> dict:
    return {k: v for k, v in config.items() if k.isupper()}


# ---- the data: dlc's random windows and its tail split -------------------------------------------------
def corpus(block: int):
    """(vocab size, the training windows' starts bound, the text's ids, validation x, y): the
    windows text(seq = block, windows = "random") makes and split(0.1, tail = true) keeps."""
    from dlc.runtime.data.dataset import Dataset
    from dlc.runtime.data.text import encode

    text = CORPUS.read_text(encoding="utf-8")
    vocab = "".join(sorted(set(text)))
    ids = encode(text, vocab).astype(np.int64)
    view = np.lib.stride_tricks.sliding_window_view
    windows = Dataset({"x": view(ids[:-1], block), "y": view(ids[1:], block)}, {"windows": block})
    train, val = windows.split(0.1, tail=True)
    return len(vocab), len(train), ids, np.array(val.columns["x"]), np.array(val.columns["y"])


# ---- nanoGPT's model.py in torch (bias = False, dropout 0) ------------------------------------------------
def nanogpt(torch, vocab: int, block: int, layers: int, heads: int, width: int):
    nn, F = torch.nn, torch.nn.functional

    class LayerNorm(nn.Module):
        def __init__(self, ndim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(width, 3 * width, bias=False)
            self.c_proj = nn.Linear(width, width, bias=False)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(width, dim=2)
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(width, 4 * width, bias=False)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = LayerNorm(width), CausalSelfAttention(), LayerNorm(width), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(
                dict(
                    wte=nn.Embedding(vocab, width),
                    wpe=nn.Embedding(block, width),
                    h=nn.ModuleList([Block() for _ in range(layers)]),
                    ln_f=LayerNorm(width),
                )
            )
            self.lm_head = nn.Linear(width, vocab, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets):
            t = idx.size(1)
            pos = torch.arange(0, t, dtype=torch.long)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block_ in self.transformer.h:
                x = block_(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            return torch.optim.AdamW(groups, lr=LR, betas=BETAS)

    return GPT()


def nanogpt_lr(it: int, iters: int) -> float:
    """nanoGPT's get_lr, lr_decay_iters = iters."""
    warmup = warmup_iters(iters)
    if it < warmup:
        return LR * (it + 1) / (warmup + 1)
    if it > iters:
        return MIN_LR
    ratio = (it - warmup) / max(iters - warmup, 1)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def torch_state(dlc_params: dict) -> dict:
    """dlc's parameters (gpt.dl's names) as the torch model's state dict: the products'
    tables transposed (dlc keeps W as [in, out], torch's Linear as [out, in])."""
    state = {}
    for name, value in dlc_params.items():
        key = "transformer." + name.replace(".W", ".weight").replace(".gamma", ".weight").replace("wpe", "wpe.weight")
        state[key] = value.T if value.ndim == 2 and name not in ("wte.W", "wpe") else value
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


# ---- the children: one framework's run ----------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    return status_kb("VmHWM") / 1024


class Timing:
    """Iteration end times and losses."""

    def __init__(self, iters: int):
        self.iters, self.warm = iters, max(2, iters // 10)
        self.ends, self.losses = [], []
        self.marks, self.peaks = {}, {}  # the start-up's phases: when each ended, the peak RSS then (MB)
        self.mark("imports")

    def mark(self, phase: str):
        self.marks[phase] = time.time()
        self.peaks[phase] = peak_rss_mb()

    def iteration_done(self, loss: float):
        self.ends.append(time.perf_counter())
        self.losses.append(loss)
        if len(self.ends) == 1:
            self.mark("first step")

    def result(self, **more) -> dict:
        times = [b - a for a, b in zip(self.ends[self.warm - 1 :], self.ends[self.warm :])]
        return {
            "marks": self.marks,
            "rss_mb_after": self.peaks,
            "rss_mb": peak_rss_mb(),
            "ms": [1e3 * t for t in times],
            "losses": self.losses,
            **more,
        }


def run_dlc(config: str, iters: int, seed: int, workdir: str) -> dict:
    timing = Timing(iters)
    import dlc

    cfg = CONFIGS[config]
    path = Path(workdir) / "gpt.dl"
    path.write_text(workload_source("gpt", sizes(cfg)))
    model = dlc.load(path, backend="native")
    timing.mark("load")

    class Iterations(dlc.Callback):
        def on_train_begin(self, logs):
            timing.mark("compile")  # the data read, the parameters made, the step compiled

        def on_batch_end(self, step, logs):
            # the epoch's running sums: this step's loss is what its batch added
            total = logs.totals["loss"]
            timing.iteration_done((total - (self.before if logs.seen > cfg["batch"] else 0.0)) / cfg["batch"])
            self.before = total

    result = model.train(
        out=Path(workdir) / "run",
        progress="none",
        overwrite=True,
        callbacks=[Iterations()],
        data=f'text("{CORPUS}", seq = {cfg["BLOCK"]}, windows = "random")',
        batch=cfg["batch"],
        max_steps=iters,
        eval_every=iters,
        seed=seed,
        # dlc's warmup rises as lr (t + 1) / warmup_steps, nanoGPT's as lr (t + 1) / (warmup + 1):
        # one step more makes them the same; the cosine then starts one step later
        schedule=f"cosine(warmup_steps = {warmup_iters(iters) + 1}, decay_steps = {iters}, min_lr = {MIN_LR})",
    )
    params = sum(int(np.prod(p.type.shape)) for p in model.train_model.params if p.trainable)
    return timing.result(val_loss=result.history["val_loss"][-1], params=params)


def run_torch(config: str, iters: int, seed: int, workdir: str) -> dict:
    timing = Timing(iters)
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    cfg = CONFIGS[config]
    d = np.load(Path(workdir) / f"{config}.npz")
    ids, n_train, block, batch = torch.from_numpy(d["ids"]), int(d["n_train"]), cfg["BLOCK"], cfg["batch"]
    model = nanogpt(torch, int(d["vocab"]), block, cfg["LAYERS"], cfg["HEADS"], cfg["WIDTH"])
    optimizer = model.configure_optimizers()
    timing.mark("model")
    for it in range(iters):
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(it, iters)
        ix = torch.randint(n_train, (batch,))  # nanoGPT's get_batch, over dlc's training windows
        x = torch.stack([ids[i : i + block] for i in ix])
        y = torch.stack([ids[i + 1 : i + 1 + block] for i in ix])
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timing.iteration_done(loss.item())
    model.eval()
    vx, vy = torch.from_numpy(d["val_x"]), torch.from_numpy(d["val_y"])
    with torch.no_grad():
        val = sum(
            model(vx[i : i + batch], vy[i : i + batch]).item() * len(vx[i : i + batch])
            for i in range(0, len(vx), batch)
        ) / len(vx)
    params = sum(p.numel() for p in model.parameters())  # the tied table counted once
    return timing.result(val_loss=val, params=params, version=torch.__version__)


# ---- the parent -----------------------------------------------------------------------------------------
def same_function(config: str, iters: int, seed: int, workdir: str) -> dict:
    """The relative difference of the two models' losses on one validation window, the torch
    model given dlc's initial parameters (reference engine: no compile)."""
    import torch

    torch.set_num_threads(THREADS)
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.backends import make_engine
    from dlc.runtime.training.gradcheck import init_params

    cfg = CONFIGS[config]
    d = np.load(Path(workdir) / f"{config}.npz")
    vocab, vx, vy = int(d["vocab"]), d["val_x"], d["val_y"]
    train = load_text(workload_source("gpt", sizes(cfg)), str(HERE / "workloads" / "gpt.dl"))
    ev = train.build(training=False)
    params = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(ev, seed).items()}
    engine = make_engine("reference", ev, ev, None, [], log=lambda _: None)
    ours = float(engine.evaluate(params, {"x": vx[:1].astype(np.int32), "y": vy[:1].astype(np.int32)})["loss"])
    model = nanogpt(torch, vocab, cfg["BLOCK"], cfg["LAYERS"], cfg["HEADS"], cfg["WIDTH"])
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in torch_state(params).items()})
    with torch.no_grad():
        theirs = model(torch.from_numpy(vx[:1]), torch.from_numpy(vy[:1])).item()
    return {"dlc": ours, "torch": theirs, "rel": abs(ours - theirs) / abs(theirs)}


CHILDREN = {"dlc": run_dlc, "torch": run_torch, "check": same_function}


def child(kind: str, config: str, iters: int, seed: int, workdir: str, cache: str | None = None) -> dict:
    """CHILDREN[kind] in a fresh process, with an empty dlc cache of its own (compiled code,
    parsed grammar and standard library) unless `cache` names one:
    its result, and for a run the time from the start to its first
    iteration's end and the median of its iteration times."""
    env = dict(
        os.environ, DLC_NUM_THREADS=str(THREADS), DLC_CACHE_DIR=cache or str(Path(workdir) / f"cache-{config}-{kind}")
    )
    start = time.time()
    p = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, config, str(iters), str(seed), workdir],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = p.stdout.read()
    if p.wait() != 0:
        raise SystemExit(f"{kind} on {config} failed (exit {p.returncode})")
    r = json.loads(out.splitlines()[-1])
    if "marks" in r:  # the phases of the start-up, in seconds
        marks = r.pop("marks")
        ends = [start, *marks.values()]
        r["phases_s"] = {phase: b - a for phase, a, b in zip(marks, ends, ends[1:])}
        r["first_s"] = ends[-1] - start
    return r


def child_slot(kind: str, config: str, iters: int, seed: int, workdir: str, cache: str | None):
    """A rounds slot: one run of the child `kind`, its timed iterations the round's steps."""

    def slot(n: int):
        r = child(kind, config, iters, seed, workdir, cache)
        return [t / 1e3 for t in r["ms"]], [r]

    return slot


def run_config(config: str, iters: int, seed: int, workdir: str, cache: str | None, rounds: int) -> dict:
    cfg = CONFIGS[config]
    data = corpus(cfg["BLOCK"])
    np.savez(Path(workdir) / f"{config}.npz", vocab=data[0], n_train=data[1], ids=data[2], val_x=data[3], val_y=data[4])
    check = child("check", config, iters, seed, workdir, cache)
    rel = check["rel"]
    print(
        f"\n== {config}: {cfg['LAYERS']} layers, {cfg['HEADS']} heads, {cfg['WIDTH']} wide, block {cfg['BLOCK']}, "
        f"batch {cfg['batch']}, {iters} iterations ==\n  the same function: dlc's initial parameters give the loss "
        f"{check['dlc']:.7f} in dlc, {check['torch']:.7f} in the torch model ({rel:.1e} apart)",
        flush=True,
    )
    if not rel < CHECK_RTOL:
        raise SystemExit(f"the dlc and torch models differ: initial losses {rel:.1e} apart (> {CHECK_RTOL})")
    measured = interleave({f: child_slot(f, config, iters, seed, workdir, cache) for f in FRAMEWORKS}, rounds, 1)
    runs = {}
    for framework in FRAMEWORKS:
        runs[framework] = r = measured.outputs[framework][0]  # the first round's run: a cold start
        r["ms_per_iter"] = measured.median_s(framework) * 1e3
        r["ms_per_iter_of_each_round"] = [t * 1e3 for t in measured.per_round(framework)]
        phases = ", ".join(
            f"{phase} {t:.1f} s (RSS {r['rss_mb_after'][phase]:.0f} MB)" for phase, t in r["phases_s"].items()
        )
        print(
            f"  {framework}: {r['ms_per_iter']:.1f} ms/iter, first iteration at {r['first_s']:.1f} s ({phases}), "
            f"peak RSS {r['rss_mb']:.0f} MB, loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}, "
            f"val loss {r['val_loss']:.4f}",
            flush=True,
        )
    ratio = measured.ratio("dlc", "torch")
    print(f"  dlc/torch {ratio} over {rounds} rounds; others of each round {measured.others_text()}", flush=True)
    if note := wide_note(config, {"dlc/torch": ratio}):
        print(note, flush=True)
    counts = {f: r["params"] for f, r in runs.items()}
    assert len(set(counts.values())) == 1, f"parameter counts differ: {counts}"
    for f, r in runs.items():
        # the tied output's logits start at std 0.02 sqrt(width) (0.55 at 768 wide): a loss some tenths above
        # ln(vocab) on one batch (the models are checked to be the same function before the runs)
        assert abs(r["losses"][0] - math.log(data[0])) < FIRST_LOSS_ATOL, (
            f"{f}'s first loss {r['losses'][0]} is not near ln(vocab)"
        )
    return {
        "config": config,
        "sizes": cfg,
        "iters": iters,
        "check": rel,
        "runs": runs,
        "dlc/torch": vars(ratio),
        "others": measured.others,
    }


def table(results: list) -> str:
    cols = [
        "config",
        "iters",
        "framework",
        "ms/iter",
        "dlc/torch",
        "first (s)",
        "RSS (MB)",
        "params",
        "loss0",
        "val loss",
        "others",
    ]
    rows = []
    for res in results:
        ratio = ratio_cell(res["dlc/torch"])
        for f, r in res["runs"].items():
            rows.append(
                [
                    res["config"],
                    str(res["iters"]),
                    f,
                    f"{r['ms_per_iter']:.1f}",
                    ratio if f == "dlc" else "",
                    f"{r['first_s']:.1f}",
                    f"{r['rss_mb']:.0f}",
                    f"{r['params']:,}",
                    f"{r['losses'][0]:.3f}",
                    f"{r['val_loss']:.4f}",
                    others_cell(res["others"]) if f == "dlc" else "",
                ]
            )
    return markdown(cols, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--only",
        choices=tuple(CONFIGS),
        action="append",
        help="run only this configuration (repeatable; default cpu and gpt2; tiny: a 1-layer smoke test)",
    )
    ap.add_argument("--iters", type=int, help=f"iterations (default {DEFAULT_ITERS}; nanoGPT's CPU recipe: 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each framework, in turn (default 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    ap.add_argument(
        "--cache",
        metavar="DIR",
        help="the dlc cache every child uses (default: an empty one each, a cold "
        "start; with DIR the first iteration is as cold as DIR is empty)",
    )
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    time_o3_code()
    if args.child:
        kind, config, iters, seed, workdir = args.child
        print(json.dumps(json_safe(CHILDREN[kind](config, int(iters), int(seed), workdir))))
        return 0
    if args.iters is not None and args.iters < 3:
        ap.error("--iters must be at least 3 (a warm-up and timed iterations)")
    print(
        f"nanoGPT in PyTorch against dlc's native engine, {THREADS} threads each, seed {args.seed}; "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="dlc-gpt-") as workdir:
        for config in args.only or ("cpu", "gpt2"):
            results.append(
                run_config(config, args.iters or DEFAULT_ITERS[config], args.seed, workdir, args.cache, args.rounds)
            )
    print_results(
        table(results),
        json_safe({"threads": THREADS, "torch": results[0]["runs"]["torch"]["version"], "results": results}),
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
