"""Fuzzing dlc: mutated programs through the front end, random models through both engines.

    python -m dlc.tools.fuzz --n 100000            # mutants of the examples through `dlc check`
    python -m dlc.tools.fuzz --n 0 --native 200    # random models: native engine vs reference
    python -m dlc.tools.fuzz --show 1234           # print input 1234 of the campaign

Input i of seed s is a pure function of (s, i, the corpus), so a failure found here or
in tests/frontend/test_fuzz.py (which uses the same mutator) is reproduced by its index. Every
input must end in success or a DlcError; anything else is a failure, keyed by exception
type and place, and minimized (delta debugging on top-level items, lines, then tokens)
into a folder.
Inputs run in batches, each batch in a worker subprocess, so a crash (a signal) or a
hang in native code is seen and attributed to its input (docs/architecture.md, Fuzzing).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

import dlc
from dlc.compiler.errors import DlcError

PACKAGE_ROOT = Path(dlc.__file__).resolve().parent
EXAMPLES = PACKAGE_ROOT / "examples"

# numbers that stress static evaluation: overflow to inf, more digits than int() takes, nan
EXTREME_NUMBERS = ("0", "-1", "1e309", "1" + "0" * 5000, "nan", "1e-400", "0.0", "2147483648", "99999999999999999999")
MEMORY = 4 << 30  # bytes of address space a worker may use
NOT_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00")


# ---- the corpus, cut into tokens ------------------------------------------------------------------
@dataclass(frozen=True)
class Tok:
    type: str  # the grammar's terminal, or GAP for whitespace and comments
    text: str
    line: int


GAP = "GAP"


def tokenize(text: str) -> list[Tok]:
    """The grammar's own lexer, keeping whitespace and comments (as GAP tokens), so the
    tokens join back into the text. Raises lark's UnexpectedInput on text it cannot lex."""
    from dlc.compiler.frontend.syntax import _parser

    parser = _parser()
    ignored = set(parser.lexer_conf.ignore)
    return [Tok(GAP if t.type in ignored else t.type, str(t), t.line) for t in parser.lex(text, dont_ignore=True)]


def join(tokens: list[Tok]) -> str:
    return "".join(t.text for t in tokens)


def builtin_names() -> list[str]:
    """The builtins' and the standard library's function names."""
    from dlc.compiler.frontend.builtins import BUILTINS
    from dlc.compiler.frontend.loader import stdlib_env

    return sorted(BUILTINS) + sorted(stdlib_env().vars)


class Corpus:
    """The seed files (the examples, each alone or after a standard-library file, whose
    defs then shadow the library's) and the vocabulary mutations draw from."""

    def __init__(self, examples: dict[str, str], stdlib: dict[str, str]):
        self.examples = [tokenize(examples[k]) for k in sorted(examples)]
        self.stdlib = [tokenize(stdlib[k]) for k in sorted(stdlib)]
        self.builtin_names = builtin_names()
        self.by_type: dict[str, list[str]] = {}
        for tokens in self.examples + self.stdlib:
            for t in tokens:
                self.by_type.setdefault(t.type, set()).add(t.text)
        self.by_type = {k: sorted(v) for k, v in self.by_type.items()}

    @classmethod
    def default(cls, examples_dir: Path = EXAMPLES) -> "Corpus":
        examples = {p.name: p.read_text() for p in sorted(Path(examples_dir).glob("*.dl"))}
        if not examples:
            raise DlcError(f"no .dl examples in {examples_dir} to fuzz from (pass --examples DIR)")
        lib = resources.files("dlc.compiler").joinpath("stdlib")
        stdlib = {f.name: f.read_text() for f in lib.iterdir() if f.name.endswith(".dl")}
        return cls(examples, stdlib)

    def seed(self, rng: random.Random) -> list[Tok]:
        tokens = list(rng.choice(self.examples))
        if rng.random() < 0.3:
            tokens = list(rng.choice(self.stdlib)) + [Tok(GAP, "\n", 0)] + tokens
        return tokens

    def mutant(self, seed: int, index: int) -> bytes:
        """Input `index` of the campaign `seed`: a seed file with 1 to 4 mutations."""
        rng = random.Random(f"{seed}:{index}")
        tokens = self.seed(rng)
        for _ in range(min(4, 1 + int(rng.expovariate(1.0)))):
            tokens = rng.choice(MUTATIONS)(self, tokens, rng)
        data = join(tokens).encode()
        if rng.random() < 0.05:
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(NOT_UTF8) + data[at:]
        return data


def _pick(tokens: list[Tok], rng: random.Random, types=None) -> int | None:
    places = [i for i, t in enumerate(tokens) if t.type != GAP and (types is None or t.type in types)]
    return rng.choice(places) if places else None


def delete(corpus, tokens, rng):
    i = _pick(tokens, rng)
    return tokens if i is None else tokens[:i] + tokens[i + 1 :]


def duplicate(corpus, tokens, rng):
    i = _pick(tokens, rng)
    return tokens if i is None else tokens[: i + 1] + [Tok(GAP, " ", 0), tokens[i]] + tokens[i + 1 :]


def swap(corpus, tokens, rng):
    i, j = _pick(tokens, rng), _pick(tokens, rng)
    if i is None:
        return tokens
    tokens = list(tokens)
    tokens[i], tokens[j] = tokens[j], tokens[i]
    return tokens


def replace_number(corpus, tokens, rng):
    i = _pick(tokens, rng, {"NUMBER"})
    if i is None:
        return tokens
    return tokens[:i] + [Tok("NUMBER", rng.choice(EXTREME_NUMBERS), tokens[i].line)] + tokens[i + 1 :]


def replace_name(corpus, tokens, rng):
    """A name by another of the file's names or a builtin's (dense, reshape, ...)."""
    i = _pick(tokens, rng, {"NAME"})
    if i is None:
        return tokens
    pool = sorted({t.text for t in tokens if t.type == "NAME"}) if rng.random() < 0.5 else corpus.builtin_names
    return tokens[:i] + [Tok("NAME", rng.choice(pool), tokens[i].line)] + tokens[i + 1 :]


def replace_same_kind(corpus, tokens, rng):
    """Any token by another of its terminal seen in the corpus: f32 by i32, * by @, ..."""
    i = _pick(tokens, rng)
    if i is None:
        return tokens
    return (
        tokens[:i] + [Tok(tokens[i].type, rng.choice(corpus.by_type[tokens[i].type]), tokens[i].line)] + tokens[i + 1 :]
    )


def splice_lines(corpus, tokens, rng):
    """Whole lines of another seed file inserted at a line start of this one."""
    donor = rng.choice(corpus.examples + corpus.stdlib)
    first = rng.randint(1, donor[-1].line)
    lines = [t for t in donor if first <= t.line < first + rng.randint(1, 6)]
    starts = [i + 1 for i, t in enumerate(tokens) if t.type == GAP and "\n" in t.text] or [0]
    at = rng.choice(starts)
    return tokens[:at] + lines + [Tok(GAP, "\n", 0)] + tokens[at:]


MUTATIONS = (delete, duplicate, swap, replace_number, replace_name, replace_same_kind, splice_lines)


# ---- one input through the front end ---------------------------------------------------------------
@dataclass
class FuzzOutcome:
    kind: str  # ok, error (a DlcError), internal, hang, crash; for models also mismatch
    key: str = ""  # the failure's identity: what and where
    detail: str = ""  # the message, the traceback

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "error")


WATCH_EVERY_S = 0.02  # how often the watchdog of time_limit reads the CPU clock


class Hang(BaseException):
    """The time budget of one input ran out (a BaseException: dlc's own handlers must not eat it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang (in the main thread, which calls this) after `seconds` of its own CPU
    time: not the clock on the wall, which measures the neighbours too (a worker that waits
    without using the CPU is caught by its parent's limit on the wall, Worker.run), nor the
    process's CPU time, which other threads of the process (a test suite's) use up too. A
    watchdog thread reads the main thread's CPU clock and signals it."""

    def alarm(signum, frame):
        raise Hang()

    main = threading.get_ident()
    clock = time.pthread_getcpuclockid(main)
    deadline = time.clock_gettime(clock) + seconds
    done, lock = threading.Event(), threading.Lock()

    def watch():
        while not done.wait(WATCH_EVERY_S):
            if time.clock_gettime(clock) > deadline:
                with lock:  # never once the main thread has left: SIGPROF would end it
                    if not done.is_set():
                        signal.pthread_kill(main, signal.SIGPROF)
                return

    previous = signal.signal(signal.SIGPROF, alarm)
    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()
        watchdog.join()
        signal.signal(signal.SIGPROF, previous)


def place(frames) -> str:
    """The innermost of (file, line, function) frames in dlc's own code (not the
    fuzzer's, not a library's), else the innermost, as path:line (function)."""
    frames = list(frames)
    ours = [
        f for f in frames if f[0].startswith(str(PACKAGE_ROOT)) and not f[0].startswith(str(PACKAGE_ROOT / "tools"))
    ]
    if not frames:
        return "?"
    file, line, function = (ours or frames)[-1]
    return f"{os.path.relpath(file, PACKAGE_ROOT) if ours else file}:{line} ({function})"


def failure(e: BaseException) -> FuzzOutcome:
    frames = traceback.extract_tb(e.__traceback__)
    where = place((f.filename, f.lineno, f.name) for f in frames)
    if isinstance(e, Hang):
        # where the alarm lands varies from input to input: one key for every hang in Python
        return FuzzOutcome("hang", "hang", f"stopped in {where}\n" + "".join(traceback.format_list(frames[-8:])))
    return FuzzOutcome(
        "internal", f"{type(e).__name__} at {where}", "".join(traceback.format_exception(type(e), e, e.__traceback__))
    )


def check_input(data: bytes, path: Path, seconds: float = 10.0) -> FuzzOutcome:
    """`dlc check` on data written to path, in this process: load, build for training
    and evaluation, every train setting (runtime/cli/commands/check.py), and the rendering
    of the error, all within `seconds`."""
    from dlc.runtime.cli.commands import check

    path.write_bytes(data)
    try:
        with time_limit(seconds), contextlib.redirect_stdout(io.StringIO()):
            try:
                check.run(argparse.Namespace(file=str(path), model=None))
            except DlcError as e:
                return FuzzOutcome("error", "", e.render())
        return FuzzOutcome("ok")
    except (Exception, Hang) as e:
        return failure(e)


# ---- random models, native engine against the reference ----------------------------------------
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "elu", "leaky_relu", "softplus", "swish", "selu", "identity")
MODEL_SIZES = {"B": 3, "T": 4}


def random_model(rng: random.Random) -> str:
    """A valid model from a small grammar of layers: a body on vectors, images or
    sequences, then a classification, regression or binary head with its loss."""
    kind = rng.choice(("vector", "image", "sequence"))
    body = []
    if kind == "image":
        c, size = rng.randint(1, 3), rng.choice((4, 5, 6, 8))
        body.append(f"input x: f32[B, {c}, {size}, {size}]")
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(("conv", "conv", "pool", "batchnorm", "act"))
            if op == "conv":
                k = rng.randint(1, min(3, size))
                if rng.random() < 0.5:
                    body.append(
                        f"x = conv2d(x, {rng.randint(1, 6)}, {k}, padding = \"same\", act = {rng.choice(ACTIVATIONS)})"
                    )
                else:
                    stride = rng.choice((1, 1, 2))
                    body.append(
                        f"x = conv2d(x, {rng.randint(1, 6)}, {k}, stride = {stride}, act = {rng.choice(ACTIVATIONS)})"
                    )
                    size = (size - k) // stride + 1
            elif op == "pool" and size >= 2:
                body.append(f"x = {rng.choice(('maxpool2d', 'avgpool2d'))}(x, 2)")
                size //= 2
            elif op == "batchnorm":
                body.append("x = batchnorm(x)")
            else:
                body.append(f"x = {rng.choice(ACTIVATIONS)}(x)")
        body.append(rng.choice(("h = flatten(x)", "h = global_avg_pool(x)")))
    elif kind == "sequence":
        d = rng.choice((2, 4, 6))
        body.append(f"input x: f32[B, T, {d}]")
        for _ in range(rng.randint(1, 2)):
            op = rng.choice(("rnn", "lstm", "gru", "bidirectional", "attention", "layernorm", "dense"))
            units = rng.choice((2, 4, 6))
            if op in ("rnn", "lstm", "gru"):
                body.append(f"x = {op}(x, {units}{', reverse = true' if rng.random() < 0.3 else ''})")
                d = units
            elif op == "bidirectional":
                body.append(f"x = bidirectional(x, {rng.choice(('lstm', 'gru', 'rnn'))}, {units})")
                d = 2 * units
            elif op == "attention":
                heads = rng.choice([h for h in (1, 2, 3) if d % h == 0])
                body.append(f"x = x + self_attention(x, {heads})")
            elif op == "layernorm":
                body.append("x = layernorm(x)")
            else:
                body.append(f"x = dense(x, {units}, {rng.choice(ACTIVATIONS)})")
                d = units
        body.append(rng.choice(("h = mean(x, 1)", "h = x[:, -1]", "h = max(x, 1)")))
    else:
        body.append(f"input x: f32[B, {rng.randint(1, 8)}]")
        body.append("h = x")
    for _ in range(rng.randint(0, 2)):
        body.append(
            rng.choice(
                (
                    f"h = dense(h, {rng.randint(1, 8)}, {rng.choice(ACTIVATIONS)})",
                    "h = layernorm(h)",
                    f"h = dropout(h, {rng.choice((0.1, 0.5))})",
                )
            )
        )
    head = rng.choice(("classes", "regression", "binary"))
    k = rng.randint(2, 5)
    if head == "classes":
        body += [
            "target y: i32[B]",
            f"logits = dense(h, {k})",
            "loss sparse_cross_entropy(logits, y)",
            "metric accuracy = accuracy(logits, y)",
            "output probs = softmax(logits)",
        ]
    elif head == "regression":
        body += [
            f"target y: f32[B, {k}]",
            f"out = dense(h, {k})",
            f"loss {rng.choice(('mse', 'mae', 'huber'))}(out, y)",
            "output pred = out",
        ]
    else:
        body += [
            "target y: f32[B, 1]",
            "p = dense(h, 1, sigmoid)",
            "loss binary_cross_entropy(p, y)",
            "metric accuracy = binary_accuracy(p, y)",
            "output prob = p",
        ]
    return "model fuzz {\n" + "".join(f"    {line}\n" for line in body) + "}\n"


class Mismatch(Exception):
    """The native engine and the reference engine disagree."""


def compare_engines(text: str, sizes: dict = MODEL_SIZES, lr: float = 0.1):
    """One SGD step and an evaluation and a prediction on both engines, from the same
    parameters and batch: the losses, metrics and outputs agree to 1e-4, and each
    parameter's update to 1e-3 of its norm (a float32 gradient summed in another order)
    plus 1e-6 of the largest update."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.engines.reference import ReferenceEngine
    from dlc.runtime.training.gradcheck import init_params, sample_inputs
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.optim.optimizers import make_optimizer

    program = load_text(text, "model.dl")
    train, evaluation = program.build(training=True), program.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    start = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    batch = {
        k: v.astype(np.float32) if v.dtype == np.float64 else v
        for k, v in sample_inputs(train, sizes, seed=1).items()
        if k != "rng"
    }
    runs = []
    for engine_class in (ReferenceEngine, NativeEngine):
        optimizer = make_optimizer(Call("sgd", [], {"lr": lr}))
        engine = engine_class(train, evaluation, optimizer, trainable)
        params = {k: v.copy() for k, v in start.items()}
        stats = engine.train_step(
            params, optimizer.init({n: params[n] for n in trainable}), batch, lr, 1, np.array([0, 1], np.int32)
        )
        runs.append((stats, params, engine.evaluate(params, batch), engine.predict(params, batch)))
    (ref_stats, ref, ref_eval, ref_pred), (nat_stats, nat, nat_eval, nat_pred) = runs
    for what, r, n in (("train step", ref_stats, nat_stats), ("evaluate", ref_eval, nat_eval)):
        if r.keys() - {"grad_norm"} != n.keys() - {"grad_norm"}:  # the native step has no norm to clip by
            raise Mismatch(f"{what} results: native {sorted(n)}, reference {sorted(r)}")
        for k in r.keys() & n.keys():
            if not abs(n[k] - r[k]) <= 1e-4 * max(1.0, abs(r[k])):
                raise Mismatch(f"{what} {k}: native {n[k]!r}, reference {r[k]!r}")
    steps = {
        name: ((ref[name] - start[name]).astype(np.float64), (nat[name] - start[name]).astype(np.float64))
        for name in ref
    }
    # a gradient that cancels (a bias before a layernorm) is float32 rounding of terms as
    # large as the model's other gradients: its error is measured against the largest step
    largest = max((np.linalg.norm(r) for r, _ in steps.values()), default=0.0)
    for name, (step_ref, step_nat) in steps.items():
        if not np.linalg.norm(step_nat - step_ref) <= 1e-3 * np.linalg.norm(step_ref) + 1e-6 * largest + 1e-7:
            raise Mismatch(
                f"update of {name}: relative error "
                f"{np.linalg.norm(step_nat - step_ref) / max(np.linalg.norm(step_ref), 1e-30):.3g}"
            )
    for k in ref_pred:
        if not np.allclose(nat_pred[k], ref_pred[k], rtol=1e-4, atol=1e-5):
            raise Mismatch(f"output {k}: largest difference {np.abs(nat_pred[k] - ref_pred[k]).max():.3g}")


def check_model(text: str, seconds: float = 60.0) -> FuzzOutcome:
    """compare_engines as a FuzzOutcome. A generated model is valid, so a DlcError is a failure too."""
    try:
        with time_limit(seconds):
            compare_engines(text)
        return FuzzOutcome("ok")
    except Mismatch as e:
        return FuzzOutcome("mismatch", f"mismatch in {str(e).split(':')[0]}", str(e))
    except DlcError as e:
        return FuzzOutcome("refused", f"DlcError: {e.message[:60]}", e.render())
    except (Exception, Hang) as e:
        return failure(e)


# ---- worker subprocesses ------------------------------------------------------------------------
def worker_main(seconds: float, workdir: Path):
    """Answer jobs from stdin ("check N" or "model N", then N bytes) with one JSON
    FuzzOutcome per line on the original stdout; anything dlc prints goes to stderr."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    faulthandler.enable()  # a crash leaves its Python stack on stderr
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))  # a huge allocation fails, not the machine
    os.environ.setdefault("DLC_CACHE_DIR", str(workdir / "cache"))  # random models' code: not the user's cache
    while header := sys.stdin.buffer.readline():
        kind, size = header.split()
        data = sys.stdin.buffer.read(int(size))
        out = (
            check_input(data, workdir / "input.dl", seconds)
            if kind == b"check"
            else check_model(data.decode(), 6 * seconds)
        )
        proto.write(json.dumps(out.__dict__) + "\n")
        proto.flush()


class Worker:
    """A worker subprocess. A job with no answer well after the worker's own alarm (a
    hang in native code) kills it; a worker that dies mid-job is a crash."""

    def __init__(self, seconds: float, command=None, grace: float = 5.0):
        # on the wall: the worker's own limit is CPU time, which a busy machine stretches
        self.limits = {"check": 3 * seconds + grace, "model": 18 * seconds + grace}
        self.stderr = tempfile.TemporaryFile()
        self.workdir = tempfile.mkdtemp(prefix="dlc-fuzz-")  # removed by close, even after a kill
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", DLC_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "dlc.tools.fuzz", "--worker", self.workdir, "--timeout", str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )

    def run(self, kind: str, data: bytes) -> FuzzOutcome:
        try:
            self.proc.stdin.write(f"{kind} {len(data)}\n".encode() + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self.died()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.limits[kind])
        if not ready:
            self.close()
            return FuzzOutcome("hang", "hang in native code (no answer to the alarm)")
        line = self.proc.stdout.readline()
        return FuzzOutcome(**json.loads(line)) if line else self.died()

    def died(self) -> FuzzOutcome:
        code = self.proc.wait()
        self.stderr.seek(0)
        log = self.stderr.read().decode(errors="replace")
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', log)  # faulthandler's, innermost first
        what = signal.Signals(-code).name if code < 0 else f"exit status {code}"
        self.close()
        return FuzzOutcome("crash", f"{what} in {place(reversed(frames))}", log[-4000:])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---- minimizing ---------------------------------------------------------------------------------
def ddmin(units: list, fails, budget: int) -> list:
    """Delta debugging (Zeller): a 1-minimal sublist of units that still fails, removing
    ever smaller chunks; at most `budget` tests."""
    n = 2
    while len(units) >= 2 and budget > 0:
        chunk = math.ceil(len(units) / n)
        for start in range(0, len(units), chunk):
            rest = units[:start] + units[start + chunk :]
            budget -= 1
            if fails(rest):
                units, n = rest, max(n - 1, 2)
                break
            if budget <= 0:
                break
        else:
            if chunk == 1:
                break
            n = min(2 * n, len(units))
    return units


def items(lines: list[bytes]) -> list[bytes]:
    """Lines grouped into top-level items (a def, a model, a train block): brace depth
    back to 0 ends one, so removing one keeps the rest parsable."""
    out, depth = [b""], 0
    for line in lines:
        out[-1] += line
        depth += line.count(b"{") - line.count(b"}")
        if depth <= 0:
            out.append(b"")
            depth = 0
    return [x for x in out if x]


def minimize(data: bytes, fails, budget: int = 2000) -> bytes:
    """The smallest failing input found: top-level items removed, then lines, then
    tokens (when it lexes; the tokens of one line are rejoined by single spaces)."""
    lines = ddmin(items(data.splitlines(keepends=True)), lambda ls: fails(b"".join(ls)), budget)
    lines = ddmin(b"".join(lines).splitlines(keepends=True), lambda ls: fails(b"".join(ls)), budget)
    data = b"".join(lines)
    try:
        tokens = [t for t in tokenize(data.decode()) if t.type != GAP]
    except Exception:  # not UTF-8 or not lexable: lines are the units
        return data

    def text(tokens) -> bytes:
        return (
            "".join(
                ("\n" if i and t.line != tokens[i - 1].line else " " if i else "") + t.text
                for i, t in enumerate(tokens)
            ).encode()
            + b"\n"
        )

    if not fails(text(tokens)):  # the comments or the layout matter
        return data
    return text(ddmin(tokens, lambda ts: fails(text(ts)), budget))


# ---- the campaign -------------------------------------------------------------------------------
@dataclass
class Failure:
    outcome: FuzzOutcome  # the first input's
    data: bytes
    indices: list = field(default_factory=list)  # the first few inputs that failed so
    count: int = 0
    path: str = ""  # the minimized reproducer


@dataclass
class Campaign:
    seconds: float
    batch: int
    counts: dict = field(default_factory=dict)
    found: dict = field(default_factory=dict)  # key -> Failure

    def run(self, kind: str, inputs, label: str):
        """Every input in a worker, a fresh worker per batch and after a crash or hang."""
        worker, done, started = None, 0, time.time()
        reported = started
        for index, data in inputs:
            if worker is None or done % self.batch == 0:
                if worker:
                    worker.close()
                worker = Worker(self.seconds)
            out = worker.run(kind, data)
            if out.kind in ("hang", "crash") and worker.proc.poll() is not None:
                worker = Worker(self.seconds)
            self.counts[out.kind] = self.counts.get(out.kind, 0) + 1
            if out.failed:
                if out.key not in self.found:
                    print(f"{label}: input {index}: {out.key}", file=sys.stderr, flush=True)
                found = self.found.setdefault(out.key, Failure(out, data))
                found.count += 1
                if len(found.indices) < 10:
                    found.indices.append(index)
            done += 1
            if time.time() - reported > 60:
                reported = time.time()
                print(
                    f"{label}: {done} inputs, {time.time() - started:.0f} s, {len(self.found)} distinct failures",
                    file=sys.stderr,
                    flush=True,
                )
        if worker:
            worker.close()

    def minimize_all(self, kind: str, out_dir: Path, seconds_each: float):
        """Write a minimized reproducer and a note for every distinct failure."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for number, (key, found) in enumerate(sorted(self.found.items()), 1):
            worker = [Worker(self.seconds)]
            deadline = time.time() + seconds_each

            def fails(data: bytes) -> bool:
                if time.time() > deadline:
                    return False
                out = worker[0].run(kind, data)
                if worker[0].proc.poll() is not None:
                    worker[0] = Worker(self.seconds)
                return out.key == key

            small = minimize(found.data, fails)
            worker[0].close()
            stem = out_dir / f"{number:03d}-{found.outcome.kind}"
            stem.with_suffix(".dl").write_bytes(small)
            stem.with_suffix(".txt").write_text(
                f"{key}\n{found.count} inputs: {' '.join(map(str, found.indices))}"
                f"{' ...' if found.count > len(found.indices) else ''}\n\n"
                f"{found.outcome.detail}\n"
            )
            found.path = str(stem.with_suffix(".dl"))

    def summary(self, label: str, total: int) -> str:
        c = self.counts
        lines = [
            f"{label}: {total} inputs: {c.get('ok', 0)} ok, {c.get('error', 0)} DlcError, "
            f"{c.get('internal', 0)} internal errors, {c.get('hang', 0)} hangs, {c.get('crash', 0)} crashes"
            + "".join(f", {c[k]} {k}" for k in ("mismatch", "refused") if k in c)
        ]
        for key, found in sorted(self.found.items()):
            lines.append(f"  {found.outcome.kind:9} {key}  ({found.count} inputs)  {found.path}")
        return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dlc.tools.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000, help="front-end inputs (mutants of the examples)")
    p.add_argument("--native", type=int, default=0, metavar="N", help="random models run on both engines")
    p.add_argument("--seed", type=int, default=0, help="input i of a seed is always the same input")
    p.add_argument("--start", type=int, default=0, help="the first input's index")
    p.add_argument("--batch", type=int, default=500, help="inputs per worker subprocess")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per input (6x for a model)")
    p.add_argument("--out", default="fuzz-failures", help="folder for the minimized reproducers")
    p.add_argument("--minimize-seconds", type=float, default=120.0, help="time spent minimizing each failure")
    p.add_argument("--examples", default=str(EXAMPLES), help="folder of .dl seed files")
    p.add_argument("--show", type=int, metavar="I", help="print input I (of --seed) and stop")
    p.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)  # run as a worker writing inputs in DIR
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.timeout, Path(args.worker))
        return 0
    try:
        corpus = Corpus.default(Path(args.examples))
    except DlcError as e:
        print(e.render(), file=sys.stderr)
        return 2
    if args.show is not None:
        sys.stdout.buffer.write(corpus.mutant(args.seed, args.show))
        return 0
    failed = False
    for kind, label, total, inputs in (
        (
            "check",
            "front end",
            args.n,
            ((i, corpus.mutant(args.seed, i)) for i in range(args.start, args.start + args.n)),
        ),
        (
            "model",
            "native",
            args.native,
            (
                (i, random_model(random.Random(f"{args.seed}:{i}")).encode())
                for i in range(args.start, args.start + args.native)
            ),
        ),
    ):
        if not total:
            continue
        campaign = Campaign(args.timeout, args.batch)
        campaign.run(kind, inputs, label)
        campaign.minimize_all(kind, Path(args.out) / kind, args.minimize_seconds)
        print(campaign.summary(label, total))
        failed |= bool(campaign.found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
