"""Train-step benchmark: dlc against its best peer: PyTorch eager (default and fused Adam),
torch.compile, and JAX jit when installed.

Four workloads (shared/PERFORMANCE.md), each a full Adam train step (forward + backward +
update) on one fixed batch, float32, 2 threads:

    mlp          MLP 784-512-256-10 (ReLU), batch 128
    lenet        LeNet-5 on 1x28x28, batch 64
    lstm         LSTM 64->256, seq 32, batch 32, dense to 10 from the last state
    transformer  2 pre-LN encoder layers (d 128, 4 heads, FFN 512, GELU tanh), vocab 1000,
                 learned positions, mean pool, dense 10; seq 64, batch 16

The dlc models are benchmarks/workloads/<name>.dl. Every framework starts from the same
parameters (dlc's initializers, copied into torch / JAX in their layouts) and trains on
the same batch; the first-step losses must agree within 1e-4 relative before anything is
timed. The frameworks are then timed in rounds, a few steps of each in turn, the order
rotated every round (benchmarks/rounds.py). Reported: each framework's median step (the
median over rounds of each round's), dlc / PyTorch eager and dlc / the best peer (the
median over rounds of each round's ratio, with its p25-p75), the others of each round, the
first-step (compile) time of each, and FLOP utilization: the train step's
forward + backward FLOPs / median step time / the machine's FMA peak (benchmarks/peak.py).

    python benchmarks/train_step.py                      # native engine
    python benchmarks/train_step.py --engine reference --quick
    python benchmarks/train_step.py --only lstm --rounds 10 --steps 3
    python benchmarks/train_step.py --frameworks dlc,torch_fused --json /tmp/bench.json
    python benchmarks/train_step.py --load 1              # beside a process that keeps one core busy
    python benchmarks/train_step.py --precision bf16 --only mlp --batch 512

With `--precision bf16` dlc trains with bfloat16 products (docs/native.md, bfloat16 mixed
precision) and PyTorch's forward runs under torch.autocast("cpu", dtype=torch.bfloat16);
the first-step losses then agree to BF16_LOSS_RTOL, and JAX is not run. dlc's float32 step
is timed in the same run (`dlc_f32`, not a peer), and `f32/bf16` is its median over dlc's
bf16 median: what bf16 buys.

dlc's first step runs the code a run starts with: quick code (docs/native.md, "Quick code
first") unless DLC_QUICK_CODE or `--first-at-o3` says O3; its timed steps run the O3 code,
waited for after the first step.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from machine import cpu_hogs, wait_idle
from rounds import Ratio, interleave, timed, wide_note

HERE = Path(__file__).resolve().parent
WORKLOAD_DIR = HERE / "workloads"
THREADS = 2  # torch.set_num_threads (PERFORMANCE.md: the machine has 2 cores)
TORCH_VARIANTS = ("torch", "torch_fused", "torch_compile")  # eager; eager + Adam(fused=True); torch.compile
FRAMEWORKS = ("dlc", "dlc_f32") + TORCH_VARIANTS + ("jax",)  # dlc_f32: with --precision bf16 only
OWN = ("dlc", "dlc_f32")  # not peers
LOSS_RTOL = 1e-4  # first-step loss agreement required before timing
BF16_LOSS_RTOL = 1e-2  # ... with bfloat16 products (autocast also keeps activations in bf16)
TRAJ_RTOL = 1e-3  # later losses (after Adam updates): a warning only
TRAJ_STEPS = 14  # ... of the first steps: over hundreds of Adam steps on one batch the loss falls
# toward 0, and rounding differences grow past any fixed tolerance
PAUSE_S = 0.3  # idle time before each framework's timed steps

# timed steps per round by default: (fast engine, numpy reference engine); a fast engine's
# fill about SLOT_SECONDS of each framework's steps instead, but without warm-up steps
# (--warmup 0) to tell a step's time
DEFAULT_STEPS = {"mlp": (4, 1), "lenet": (4, 1), "lstm": (2, 1), "transformer": (2, 1)}
# a framework's share of a round: with 4 steps after the pause (the first ones in caches the
# others left cold), LeNet's bf16 step read 2.6 ms against its float32 step's 2.1; run in a
# loop, 1.6 and 1.7
SLOT_SECONDS = 0.25
DEFAULT_WARMUP = (3, 1)
DEFAULT_ROUNDS = (5, 3)
QUICK = {"steps": 1, "warmup": 1, "rounds": 3, "reference_steps": 1, "reference_warmup": 0, "reference_rounds": 1}


# ---- workloads: sources, batches and the torch models ----------------------------------------------------
DEFAULT_BATCH = {"mlp": 128, "lenet": 64, "lstm": 32, "transformer": 16, "bert_encoder": 8}
CONST = re.compile(r"^const (\w+) = (\d+)\b", re.MULTILINE)


def workload_sizes(name: str) -> dict:
    """The sizes a workload's .dl file declares as integer constants (`const WIDTH = 512`):
    the ones benchmarks/scaling.py varies."""
    return {k: int(v) for k, v in CONST.findall((WORKLOAD_DIR / f"{name}.dl").read_text())}


def workload_source(name: str, sizes: dict | None = None) -> str:
    """The workload's .dl text with its constants set to `sizes` (the others as written)."""
    text, sizes = (WORKLOAD_DIR / f"{name}.dl").read_text(), sizes or {}
    unknown = set(sizes) - {name for name, _ in CONST.findall(text)}
    if unknown:
        raise KeyError(f"{name}.dl declares no constant {', '.join(sorted(unknown))}")
    return CONST.sub(lambda m: f"const {m[1]} = {sizes.get(m[1], m[2])}", text)


def load_workload(name: str, sizes: dict | None = None):
    """The workload's dlc program (compiler/frontend/loader.py Program) at these sizes."""
    from dlc.compiler.frontend.loader import load_text

    return load_text(workload_source(name, sizes), str(WORKLOAD_DIR / f"{name}.dl"))


def make_batch(name: str, seed: int, batch: int | None = None, sizes: dict | None = None) -> dict:
    """One random batch of `batch` examples (default DEFAULT_BATCH) at the workload's sizes."""
    rng = np.random.default_rng([seed, 1])
    B = batch or DEFAULT_BATCH[name]
    S = workload_sizes(name) | (sizes or {})
    if name == "mlp":
        return {"x": rng.standard_normal((B, 784), dtype=np.float32), "y": rng.integers(0, 10, B).astype(np.int32)}
    if name == "lenet":
        return {"x": rng.random((B, 1, 28, 28), dtype=np.float32), "y": rng.integers(0, 10, B).astype(np.int32)}
    if name == "lstm":
        return {
            "x": rng.standard_normal((B, S["SEQ"], 64), dtype=np.float32),
            "y": rng.integers(0, 10, B).astype(np.int32),
        }
    if name in ("transformer", "bert_encoder"):
        return {
            "tokens": rng.integers(0, 1000, (B, S["SEQ"])).astype(np.int32),
            "y": rng.integers(0, 10, B).astype(np.int32),
        }
    raise KeyError(name)


def torch_model(name: str, torch, sizes: dict | None = None):
    """The torch.nn model of a workload at its sizes (workload_sizes, with `sizes` over them);
    its forward takes the batch dict, returns logits."""
    nn = torch.nn
    S = workload_sizes(name) | (sizes or {})

    if name == "mlp":

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                w = S["WIDTH"]
                self.h1, self.h2, self.logits = nn.Linear(784, w), nn.Linear(w, w // 2), nn.Linear(w // 2, 10)

            def forward(self, b):
                h = torch.relu(self.h1(b["x"]))
                return self.logits(torch.relu(self.h2(h)))

        return MLP()

    if name == "lenet":

        class LeNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = nn.Conv2d(1, 6, 5, padding=2)
                self.c3 = nn.Conv2d(6, 16, 5)
                self.f5, self.f6, self.logits = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
                self.pool = nn.MaxPool2d(2)

            def forward(self, b):
                h = self.pool(torch.relu(self.c1(b["x"])))
                h = self.pool(torch.relu(self.c3(h)))
                h = torch.relu(self.f5(h.flatten(1)))
                return self.logits(torch.relu(self.f6(h)))

        return LeNet()

    if name == "lstm":

        class LSTM(nn.Module):
            def __init__(self):
                super().__init__()
                self.hs = nn.LSTM(64, S["WIDTH"], batch_first=True)
                self.logits = nn.Linear(S["WIDTH"], 10)

            def forward(self, b):
                hs, _ = self.hs(b["x"])
                return self.logits(hs[:, -1])

        return LSTM()

    if name == "transformer":

        class Transformer(nn.Module):
            def __init__(self):
                super().__init__()
                d = S["WIDTH"]
                self.emb = nn.Embedding(1000, d)
                self.pos = nn.Embedding(S["SEQ"], d)  # learned positions
                self.enc1, self.enc2 = (
                    nn.TransformerEncoderLayer(
                        d,
                        4,
                        4 * d,
                        dropout=0.0,
                        activation=nn.GELU(approximate="tanh"),
                        batch_first=True,
                        norm_first=True,
                    )
                    for _ in range(2)
                )
                self.logits = nn.Linear(d, 10)

            def forward(self, b):
                tokens = b["tokens"]
                h = self.emb(tokens) + self.pos.weight[: tokens.shape[1]]
                for layer in (self.enc1, self.enc2):
                    h = layer(h)
                return self.logits(h.mean(1))

        return Transformer()

    if name == "bert_encoder":

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                d = S["WIDTH"]
                self.emb = nn.Embedding(1000, d)
                self.pos = nn.Embedding(S["SEQ"], d)  # learned positions
                block = nn.TransformerEncoderLayer(
                    d,
                    S["HEADS"],
                    4 * d,
                    dropout=0.0,
                    batch_first=True,
                    activation=nn.GELU(approximate="tanh"),
                    norm_first=True,
                )
                self.enc = nn.TransformerEncoder(block, S["LAYERS"], norm=nn.LayerNorm(d), enable_nested_tensor=False)
                self.logits = nn.Linear(d, 10)

            def forward(self, b):
                tokens = b["tokens"]
                return self.logits(self.enc(self.emb(tokens) + self.pos.weight[: tokens.shape[1]]).mean(1))

        return Encoder()
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def _torch_layout(name: str, sizes: tuple):
    from dlc.runtime.interop.torch_layout import TorchLayout

    return TorchLayout(load_workload(name, dict(sizes)).build(training=False).params)


def torch_state(name: str, P: dict, sizes: dict | None = None) -> dict:
    """dlc parameters (numpy, dlc layout) -> the torch model's state dict (numpy), by dlc's
    own mapping (runtime/interop/torch_layout.py): the torch models above name their modules as the
    workloads name their layers."""
    return _torch_layout(name, tuple(sorted((sizes or {}).items()))).to_torch(P)


# ---- the JAX models (dlc's parameter layout, written functionally) -----------------------------------------
def jax_loss_fn(name: str, jax):
    jnp, lax = jax.numpy, jax.lax

    def dense(P, n, x):
        return x @ P[f"{n}.W"] + P[f"{n}.b"]

    def xent(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def conv(P, n, x, pad):
        y = lax.conv_general_dilated(
            x, P[f"{n}.W"], (1, 1), [(pad, pad), (pad, pad)], dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return y + P[f"{n}.b"][None, :, None, None]

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def layernorm(P, n, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * P[f"{n}.gamma"] + P[f"{n}.beta"]

    def mha(P, n, x, heads):
        B, T, D = x.shape
        dh = D // heads

        def proj(w, b):
            return (x @ P[f"{n}.{w}"] + P[f"{n}.{b}"]).reshape(B, T, heads, dh).transpose(0, 2, 1, 3)

        q, k, v = proj("Wq", "bq"), proj("Wk", "bk"), proj("Wv", "bv")
        w = jax.nn.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(dh), axis=-1)
        o = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
        return o @ P[f"{n}.Wo"] + P[f"{n}.bo"]

    relu = jax.nn.relu

    def mlp(P, b):
        h = relu(dense(P, "h1", b["x"]))
        return xent(dense(P, "logits", relu(dense(P, "h2", h))), b["y"])

    def lenet(P, b):
        h = pool(relu(conv(P, "c1", b["x"], 2)))
        h = pool(relu(conv(P, "c3", h, 0)))
        h = relu(dense(P, "f5", h.reshape(h.shape[0], -1)))
        return xent(dense(P, "logits", relu(dense(P, "f6", h))), b["y"])

    def lstm(P, b):
        x = b["x"]
        H = P["hs.Wh"].shape[0]
        xw = x @ P["hs.Wx"] + P["hs.bx"]

        def cell(carry, xt):
            h, c = carry
            i, f, g, o = jnp.split(xt + h @ P["hs.Wh"] + P["hs.bh"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zero = jnp.zeros((x.shape[0], H), x.dtype)
        (h, _), _ = lax.scan(cell, (zero, zero), jnp.swapaxes(xw, 0, 1))
        return xent(dense(P, "logits", h), b["y"])

    def transformer(P, b):
        tokens = b["tokens"]
        h = P["emb.W"][tokens] + P["pos.P"][: tokens.shape[1]]
        for d in ("enc1", "enc2"):
            h = h + mha(P, f"{d}.attn", layernorm(P, f"{d}.ln1", h), 4)
            inner = jax.nn.gelu(dense(P, f"{d}.ffn.inner", layernorm(P, f"{d}.ln2", h)), approximate=True)
            h = h + dense(P, f"{d}.ffn", inner)
        return xent(dense(P, "logits", h.mean(1)), b["y"])

    return {"mlp": mlp, "lenet": lenet, "lstm": lstm, "transformer": transformer}[name]


# ---- runners: each does a first step (timed: compile), then warm-up and timed steps --------------------
@dataclass
class Run:
    framework: str
    first_s: float = float("nan")
    times: list = field(default_factory=list)  # seconds per timed step, round after round
    round_s: list = field(default_factory=list)  # the median step of each round
    losses: list = field(default_factory=list)  # every step's loss, from step 1
    teams: list = field(default_factory=list)  # dlc's native thread team at each timed step
    others: float = float("nan")  # the most cores other processes used in a round of the timed steps

    @property
    def median_ms(self) -> float:
        """The median over rounds of each round's median step."""
        return statistics.median(self.round_s) * 1e3 if self.round_s else float("nan")

    def spread(self) -> str:
        if len(self.round_s) < 2:
            return f"n={len(self.times)}"
        q = statistics.quantiles(self.round_s, n=4, method="inclusive")
        return f"rounds' p25-p75 {q[0] * 1e3:.2f}-{q[2] * 1e3:.2f} ms, {len(self.round_s)} rounds, n={len(self.times)}"

    def take(self, measured, key: str):
        """This framework's share of a run in rounds (rounds.Rounds)."""
        self.times, self.round_s = measured.steps(key), measured.per_round(key)
        self.losses += measured.outputs[key]
        self.others = measured.most_others


def timed_loop(run: Run, step_fn, warmup: int, steps: int):
    """One framework alone: its steps as one round."""
    run.take(interleave({"one": timed(step_fn)}, rounds=1, steps=steps, warmup=warmup), "one")


class DlcRunner:
    def __init__(
        self,
        name: str,
        init: dict,
        batch: dict,
        engine_kind: str,
        lr: float,
        seed: int,
        sizes: dict | None = None,
        precision: str = "f32",
        label: str = "dlc",
        program=None,
    ):
        """`program`: the dlc program to train (a loader Program) instead of the workload's."""
        from dlc.compiler.frontend.settings import Call
        from dlc.runtime.optim.optimizers import make_optimizer

        t0 = time.perf_counter()
        prog = program or load_workload(name, sizes)
        self.train, self.ev = prog.build(training=True), prog.build(training=False)
        self.build_s = time.perf_counter() - t0
        self.trainable = [p.name for p in self.train.params if p.trainable]
        self.opt = make_optimizer(Call("adam", [], {"lr": lr}))
        self.init, self.batch, self.lr, self.seed = init, batch, lr, seed
        self.requested, self.precision = engine_kind, precision
        self.run, self.label = Run(label), label
        self.t = 0  # the optimizer's step count

    def _fresh(self):
        self.params = {k: v.copy() for k, v in self.init.items()}
        self.opt_state = self.opt.init({n: self.params[n] for n in self.trainable})
        self.t = 0

    def step(self) -> float:
        from dlc.runtime.engines.cores import threads

        self.t += 1
        self.run.teams.append(threads())  # the team the call below runs on
        out = self.engine.train_step(
            self.params, self.opt_state, self.batch, self.lr, self.t, np.array([self.seed, self.t], np.int32)
        )
        return float(out["loss"])

    def first(self):
        """Engine construction + first step (the native engine never falls back: a model it
        cannot compile stops with dlc's located error), then, untimed, the wait for its O3 code."""
        from dlc.runtime.engines.backends import make_engine

        self._fresh()
        t0 = time.perf_counter()
        self.engine = make_engine(
            self.requested, self.train, self.ev, self.opt, self.trainable, precision=self.precision
        )
        loss = self.step()
        self.run.first_s = time.perf_counter() - t0
        if hasattr(self.engine, "finish_compiling"):
            self.engine.finish_compiling()
        self.run.losses.append(loss)
        self.kind = self.engine.name
        self.run.framework = f"{self.label} ({self.kind})"

    def timed(self, warmup: int, steps: int):
        timed_loop(self.run, self.step, warmup, steps)


class TorchRunner:
    """PyTorch in one of its TORCH_VARIANTS: eager with the default Adam (foreach), eager
    with Adam(fused=True), or the loss compiled by torch.compile (default mode; Inductor's
    C++ code needs a C compiler) with the default Adam. The compile happens in the first step.
    `precision` "bf16": the forward pass under torch.autocast with bfloat16."""

    def __init__(
        self,
        name: str,
        state: dict,
        batch: dict,
        lr: float,
        variant: str = "torch",
        sizes: dict | None = None,
        precision: str = "f32",
        model=None,
    ):
        """`state`: the model's starting state dict (numpy; torch_state of dlc's parameters);
        `model`: a torch.nn model taking the batch dict, instead of the workload's."""
        import torch

        self.torch, self.variant = torch, variant
        self.model = model or torch_model(name, torch, sizes)
        sd = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()}
        self.model.load_state_dict(sd, strict=True)
        self.model.train()
        self.batch = {k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in batch.items()}
        self.lr, self.bf16 = lr, precision == "bf16"
        self.loss_fn = torch.compile(self._loss) if variant == "torch_compile" else self._loss
        self.run = Run(variant)

    def _loss(self, batch):
        with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16):
            return self.torch.nn.functional.cross_entropy(self.model(batch), batch["y"])

    def step(self) -> float:
        self.optim.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.batch)
        loss.backward()
        self.optim.step()
        return loss.item()

    def first(self):
        t0 = time.perf_counter()
        self.optim = self.torch.optim.Adam(
            self.model.parameters(), lr=self.lr, fused=True if self.variant == "torch_fused" else None
        )
        loss = self.step()
        self.run.first_s = time.perf_counter() - t0
        self.run.losses.append(loss)

    def timed(self, warmup: int, steps: int):
        timed_loop(self.run, self.step, warmup, steps)


class JaxRunner:
    def __init__(self, name: str, init: dict, batch: dict, lr: float):
        import jax

        self.jax, jnp = jax, jax.numpy
        loss_fn = jax_loss_fn(name, jax)
        b1, b2, eps = 0.9, 0.999, 1e-8
        tmap = jax.tree_util.tree_map

        def step(P, m, v, t, b):
            loss, g = jax.value_and_grad(loss_fn)(P, b)
            m = tmap(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = tmap(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            bc1, bc2 = 1 - b1**t, 1 - b2**t  # torch.optim.Adam's form
            P = tmap(lambda p, m, v: p - (lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps), P, m, v)
            return P, m, v, loss

        self.step_fn = jax.jit(step, donate_argnums=(0, 1, 2))
        self.P = {k: jnp.asarray(v) for k, v in init.items()}
        self.m = tmap(jnp.zeros_like, self.P)
        self.v = tmap(jnp.zeros_like, self.P)
        self.batch = {k: jnp.asarray(v) for k, v in batch.items()}
        self.t = 0
        self.run = Run("jax")

    def step(self) -> float:
        self.t += 1
        self.P, self.m, self.v, loss = self.step_fn(self.P, self.m, self.v, np.float32(self.t), self.batch)
        return float(loss)  # waits for the step

    def first(self):
        t0 = time.perf_counter()
        loss = self.step()
        self.run.first_s = time.perf_counter() - t0
        self.run.losses.append(loss)

    def timed(self, warmup: int, steps: int):
        timed_loop(self.run, self.step, warmup, steps)


def train_step_flops(model, batch: dict) -> int:
    """Forward + backward FLOPs of one train step: dlc's per-primitive FLOP count (`dlc summary`)
    over the train-step graph that autodiff builds (forward, loss and every parameter's
    gradient), at the batch's sizes. The optimizer update (~10 FLOPs per parameter) is left out."""
    from dlc.compiler.passes.autodiff import train_step
    from dlc.compiler.ir.dims import subs
    from dlc.runtime.engines.interpreter import bind_sizes

    return int(subs(train_step(model.graph).flops(), bind_sizes(model.graph, batch)))


# ---- one workload -----------------------------------------------------------------------------------------
def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


@dataclass
class Result:
    name: str
    runs: dict = field(default_factory=dict)  # framework key -> Run
    check: str = ""
    ok: bool = True
    others: float = float("nan")  # the most cores other processes used in one round
    flops: int = 0  # one train step's forward + backward FLOPs (dlc's count of its gradient graph)
    rounds: object = None  # the timed rounds (rounds.Rounds)

    def best_peer(self) -> str | None:
        """The fastest framework other than dlc's (lowest median), None when none was timed."""
        timed = [k for k, r in self.runs.items() if k not in OWN and r.times]
        return min(timed, key=lambda k: self.runs[k].median_ms, default=None)

    def ratio(self, peer: str | None) -> Ratio:
        """dlc's time over peer's, the median over rounds of each round's ratio (below 1: dlc is
        faster); `peer` may be dlc_f32."""
        if self.rounds is None or peer not in self.rounds.names or "dlc" not in self.rounds.names:
            return Ratio(*(float("nan"),) * 3, 0)
        return self.rounds.ratio("dlc", peer)

    def utilization(self, key: str | None, peak_gflops: float) -> float:
        """Train-step FLOPs / median step time / the machine's peak, as a fraction."""
        r = self.runs.get(key)
        return self.flops / (r.median_ms * 1e-3) / (peak_gflops * 1e9) if r and r.times else float("nan")


def run_workload(name: str, args, frameworks: set, jax_reason: str) -> Result:
    from dlc.runtime.training.gradcheck import init_params

    res = Result(name)
    print(f"\n== {name} ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)", flush=True)
    if args.wait_idle:
        wait_idle(args.wait_idle)

    dlc = None
    # the parameters: dlc's initializers, float64 -> float32, shared by every framework
    model = load_workload(name).build(training=True)
    init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(model, args.seed).items()}
    batch = make_batch(name, args.seed, args.batch)
    n_params = sum(int(np.prod(p.type.shape)) for p in model.params if p.trainable)
    res.flops = train_step_flops(model, batch)
    print(
        f"  {n_params:,} parameters; batch "
        + ", ".join(f"{k} {list(v.shape)}" for k, v in batch.items())
        + f"; {res.flops / 1e6:,.1f} MFLOP per train step (forward + backward)"
    )

    runners = {}
    if "dlc" in frameworks:
        dlc = DlcRunner(name, init, batch, args.engine, args.lr, args.seed, precision=args.precision)
        runners["dlc"] = dlc
        if args.precision == "bf16" and "dlc_f32" in frameworks:
            runners["dlc_f32"] = DlcRunner(name, init, batch, args.engine, args.lr, args.seed, label="dlc f32")
    for variant in TORCH_VARIANTS:
        if variant in frameworks:
            runners[variant] = TorchRunner(
                name, torch_state(name, init), batch, args.lr, variant, precision=args.precision
            )
    if "jax" in frameworks and not jax_reason:
        runners["jax"] = JaxRunner(name, init, batch, args.lr)

    # first steps (compile), then the correctness check, then timing
    for key, r in list(runners.items()):
        try:
            r.first()
        except RuntimeError as e:
            if key not in TORCH_VARIANTS:
                raise
            # a peer's library without this workload on this CPU (oneDNN's bf16 LSTM needs AVX-512)
            print(f"  {r.run.framework:<16} cannot run {name} on this CPU: {str(e).splitlines()[0]}", flush=True)
            del runners[key]
            continue
        res.runs[key] = r.run
        extra = f"   (parse + build {r.build_s * 1e3:.0f} ms before it)" if key == "dlc" else ""
        print(
            f"  {r.run.framework:<16} first step {r.run.first_s * 1e3:10.1f} ms   loss {r.run.losses[0]:.7f}{extra}",
            flush=True,
        )
    ref_key = next((k for k in TORCH_VARIANTS if k in runners), None)
    rtol = BF16_LOSS_RTOL if args.precision == "bf16" else LOSS_RTOL
    if ref_key:
        ref = runners[ref_key].run.losses[0]
        bad = [
            f"{runners[k].run.framework} {r.run.losses[0]:.7f}"
            for k, r in runners.items()
            if k != ref_key and not rel(r.run.losses[0], ref) <= rtol
        ]
        if bad:
            res.ok = False
            res.check = "LOSS MISMATCH"
            print(
                f"  ERROR: first-step loss differs from PyTorch's {ref:.7f} by more than {rtol:g} relative: "
                + "; ".join(bad)
                + f". {name} is not timed.",
                file=sys.stderr,
                flush=True,
            )
            return res
        others = [rel(r.run.losses[0], ref) for k, r in runners.items() if k != ref_key]
        res.check = f"ok ({max(others):.1e})" if others else "-"
    else:
        res.check = "-"

    fast = not (dlc and dlc.kind == "reference")
    steps, warmup, rounds = counts(name, args, fast)
    if fast and args.steps is None and not args.quick and warmup:
        steps = None  # as many as fill SLOT_SECONDS of each, by the warm-up's medians
    # PAUSE_S lets the previous framework's spinning worker threads go to sleep
    res.rounds = interleave(
        {k: timed(r.step) for k, r in runners.items()},
        rounds,
        steps,
        warmup,
        pause_s=PAUSE_S,
        seconds_each=SLOT_SECONDS,
    )
    for key, r in runners.items():
        r.run.take(res.rounds, key)
        print(
            f"  {r.run.framework:<16} median {r.run.median_ms:10.2f} ms   ({r.run.spread()}, warm-up {warmup})",
            flush=True,
        )
    res.others = res.rounds.most_others
    print(f"  others of each round: {res.rounds.others_text()}")
    if note := wide_note(name, {f"dlc/{k}": res.ratio(k) for k in runners if k != "dlc"}):
        print(note, flush=True)
    if res.others > 0.25:
        print(
            f"  warning: other processes used up to {res.others:.2f} of {os.cpu_count()} cores while {name} was "
            "timed: multi-threaded step times suffer most",
            file=sys.stderr,
            flush=True,
        )

    # losses after the Adam updates: every framework ran the same steps on the same batch
    if ref_key:
        ref_losses = runners[ref_key].run.losses
        for k, r in runners.items():
            if k == ref_key:
                continue
            common = min(len(ref_losses), len(r.run.losses), TRAJ_STEPS)
            if common > 1:
                worst = max(rel(a, b) for a, b in zip(ref_losses[1:common], r.run.losses[1:common]))
                step = max(range(1, common), key=lambda i: rel(ref_losses[i], r.run.losses[i])) + 1
                msg = f"steps 2..{common}: max loss difference vs torch {worst:.1e} (step {step})"
                if worst > TRAJ_RTOL:
                    print(f"  WARNING {r.run.framework}: {msg}: the updates may differ", file=sys.stderr)
                    res.check += " traj!"
                else:
                    print(f"  {r.run.framework:<16} {msg}")
    return res


def counts(name: str, args, fast: bool) -> tuple:
    """(timed steps per round, warm-up steps, rounds) for a workload on a fast or reference engine."""
    if args.quick:
        pre = "" if fast else "reference_"
        steps, warmup, rounds = QUICK[pre + "steps"], QUICK[pre + "warmup"], QUICK[pre + "rounds"]
    else:
        steps = DEFAULT_STEPS[name][0 if fast else 1]
        warmup = DEFAULT_WARMUP[0 if fast else 1]
        rounds = DEFAULT_ROUNDS[0 if fast else 1]
    return (
        steps if args.steps is None else args.steps,
        warmup if args.warmup is None else args.warmup,
        rounds if args.rounds is None else args.rounds,
    )


# ---- the table --------------------------------------------------------------------------------------------
def fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def table(results: list, keys: list, peak_gflops: float) -> str:
    """One row per workload; `keys` are the frameworks that ran (FRAMEWORKS order)."""
    cols = (
        ["workload", "dlc engine"]
        + [f"{k} ms" for k in keys]
        + ["best peer", "dlc/torch", "dlc/best"]
        + ["f32/bf16"] * ("dlc_f32" in keys)
        + [f"{k} first (s)" for k in keys]
        + ["MFLOP/step", "dlc % peak", "best % peak", "loss check", "others"]
    )
    nan = float("nan")
    rows = []
    for r in results:
        d, best = r.runs.get("dlc"), r.best_peer()
        row = [r.name, d.framework[5:-1] if d else "-"]
        row += [fmt(r.runs[k].median_ms if k in r.runs else nan) for k in keys]
        row += [best or "-", str(r.ratio("torch")), str(r.ratio(best))]
        row += [fmt(1 / r.ratio("dlc_f32").median)] * ("dlc_f32" in keys)
        row += [fmt(r.runs[k].first_s if k in r.runs else nan, 3) for k in keys]
        row += [
            f"{r.flops / 1e6:,.1f}",
            fmt(100 * r.utilization("dlc", peak_gflops), 1),
            fmt(100 * r.utilization(best, peak_gflops), 1),
            r.check,
            r.rounds.others_text() if r.rounds else "-",
        ]
        rows.append(row)
    return markdown(cols, rows)


def markdown(cols: list, rows: list) -> str:
    """A markdown table, its columns padded to their widest cell."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def as_json(results: list, peak: dict, threads: int, versions: dict) -> dict:
    """Every workload's numbers, for --json."""
    peak_gflops = peak["gflops"][threads]
    workloads = {}
    for r in results:
        best = r.best_peer()
        workloads[r.name] = {
            "ok": r.ok,
            "check": r.check,
            "others": r.others,
            "flops_per_step": r.flops,
            "others_per_round": r.rounds.others if r.rounds else [],
            "best_peer": best,
            "dlc_over_torch": vars(r.ratio("torch")),
            "dlc_over_best": vars(r.ratio(best)),
            "frameworks": {
                k: {
                    "name": run.framework,
                    "median_ms": run.median_ms,
                    "first_s": run.first_s,
                    "times_ms": [t * 1e3 for t in run.times],
                    "others": run.others,
                    "round_median_ms": [t * 1e3 for t in run.round_s],
                    "threads": run.teams[-len(run.times) :] if run.teams else None,
                    "utilization": r.utilization(k, peak_gflops),
                }
                for k, run in r.runs.items()
            },
        }
    return json_safe(
        {
            "versions": versions,
            "threads": threads,
            "peak_gflops": {str(n): g for n, g in peak["gflops"].items()},
            "peak_others": {str(n): cores for n, cores in peak["others"].items()},
            "workloads": workloads,
        }
    )


def json_safe(o):
    """`o` with every nan (in dicts and lists) as None: JSON has no nan."""
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [json_safe(v) for v in o]
    return None if isinstance(o, float) and o != o else o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--engine",
        choices=("native", "reference"),
        default="native",
        help="dlc engine (default native, which never falls back: a model it cannot compile stops with its located error)",
    )
    ap.add_argument("--only", choices=tuple(DEFAULT_STEPS), action="append", help="run only this workload (repeatable)")
    ap.add_argument(
        "--steps",
        type=int,
        help="timed steps per framework and round (default: about 0.25 s of each; with --warmup 0, 4 for mlp/lenet, 2 "
        "for lstm/transformer; 1 on the reference engine)",
    )
    ap.add_argument(
        "--rounds", type=int, help="rounds of every framework in turn (default 5; 3 on the reference engine)"
    )
    ap.add_argument("--warmup", type=int, help="untimed steps after the first (default 3; 1 on the reference engine)")
    ap.add_argument(
        "--quick", action="store_true", help="a fast smoke run: 3 rounds of 1 step (1 round on the reference engine)"
    )
    ap.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help=f"comma-separated subset of {','.join(FRAMEWORKS)} (default all)",
    )
    ap.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each workload, wait up to S seconds until other processes use < 0.25 cores",
    )
    ap.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="run N processes that each keep a core busy beside every framework (a busy neighbour)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="of the products: bf16 is dlc's precision = \"bf16\" and torch.autocast (no JAX)",
    )
    ap.add_argument("--batch", type=int, help="examples per step (default: each workload's)")
    ap.add_argument("--json", metavar="PATH", help="also write every workload's numbers to PATH as JSON")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="dlc's first steps with an empty compile cache (a new DLC_CACHE_DIR) but its GEMM kernels "
        "built: they are compiled first, once, and timed apart",
    )
    ap.add_argument(
        "--first-at-o3",
        action="store_true",
        help="dlc's first steps run O3 code (DLC_QUICK_CODE=0), not the quick code a run starts with",
    )
    args = ap.parse_args(argv)
    if args.first_at_o3:
        os.environ["DLC_QUICK_CODE"] = "0"
    if (
        args.steps is not None
        and args.steps < 1
        or args.rounds is not None
        and args.rounds < 1
        or args.warmup is not None
        and args.warmup < 0
    ):
        ap.error("--steps and --rounds must be at least 1 and --warmup at least 0")
    if args.load < 0 or args.load and args.wait_idle:
        ap.error("--load takes a count of at least 0, and cannot be combined with --wait-idle")
    frameworks = {f.strip() for f in args.frameworks.split(",") if f.strip()}
    if not frameworks <= set(FRAMEWORKS):
        ap.error(f"--frameworks takes {', '.join(FRAMEWORKS)}, got {args.frameworks}")

    jax_reason = "not run with bf16 products" if args.precision == "bf16" else ""
    if "jax" in frameworks and not jax_reason:
        try:
            import jax  # noqa: F401
        except ImportError as e:
            jax_reason = f"JAX is not installed ({e})"
    if frameworks & set(TORCH_VARIANTS):
        # Inductor compiles in a pool of worker processes that stay busy in the background
        # while the other frameworks are timed (others 0.44 cores on the MLP): compile in-process
        os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
        import torch

        torch.set_num_threads(args.threads)
        tver = torch.__version__
    else:
        tver = "not run"
    jax_on = "jax" in frameworks and not jax_reason

    print(
        f"dlc train-step benchmark: Adam lr {args.lr}, {args.precision} products, seed {args.seed}, "
        f"engine {args.engine}" + (" (quick)" if args.quick else "")
    )
    import platform

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {tver} ({args.threads} threads), "
        + (f"jax {__import__('jax').__version__}" if jax_on else f"jax skipped: {jax_reason or 'not requested'}")
        + f", {os.cpu_count()} cpus"
    )

    from peak import cached_or_measure, describe, uncertain_note

    peak = cached_or_measure()
    peak_threads = min(args.threads, max(peak["gflops"]))
    print(describe(peak))

    if args.cold:
        import tempfile

        os.environ["DLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlc-cold-")
    if frameworks & set(OWN) and args.engine == "native":
        # compiled once per machine and dlc version (docs/native.md, Cache): not any model's first step
        from dlc.runtime.engines import cache

        t0 = time.perf_counter()
        cache.gemm_symbols()
        print(
            f"dlc's GEMM kernels: {time.perf_counter() - t0:.2f} s "
            f"({'compiled' if cache.stats['compiles'] else 'read from the cache'}; not in the first steps)"
        )
    if args.load:
        print(f"under load: {args.load} process(es) keep a core busy beside every framework")
    results = []
    with cpu_hogs(args.load):
        for name in args.only or list(DEFAULT_STEPS):
            results.append(run_workload(name, args, frameworks, jax_reason))

    keys = [k for k in FRAMEWORKS if any(k in r.runs for r in results)]
    print(
        "\nmedian train-step time (ms, the median over rounds of each round's median); best peer: the fastest "
        "other framework; dlc/torch, dlc/best: the median over rounds of each round's ratio, its p25-p75 in "
        "brackets, 'wide' past ±15 % (below 1: dlc is faster); first-step (compile) time (s), not in the medians; MFLOP/step: forward + "
        f"backward FLOPs of one step (dlc's count of the gradient graph, without the Adam update); % peak: those "
        f"FLOPs / median step time / the {peak_threads}-thread FMA peak; others: cores used by other processes "
        "in each round (0 = quiet machine)\n"
    )
    print(table(results, keys, peak["gflops"][peak_threads]))
    if note := uncertain_note(peak):
        print(note)
    if jax_reason:
        print(f"note: JAX column skipped: {jax_reason}")
    if args.json:
        versions = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": tver,
            "jax": __import__("jax").__version__ if jax_on else None,
            "engine": args.engine,
        }
        Path(args.json).write_text(json.dumps(as_json(results, peak, peak_threads, versions), indent=1) + "\n")
        print(f"wrote {args.json}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"\nFAILED: first-step losses disagree for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
