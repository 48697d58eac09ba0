"""The training loop behind `dlc train` and `dlc.load(...).train()`.

Configuration comes from the model's `train` block, overridden by flags, and is checked
whole before anything runs (check_settings). The loop shuffles mini-batches, runs one
engine step per batch, evaluates on a validation split, keeps a history, writes
checkpoints atomically (last and best), stops early, and stops cleanly on Ctrl-C (after
the current step, with a checkpoint) or on a NaN loss (naming the step, leaving the last
good checkpoint). A run resumed from its checkpoint, whichever batch it stopped after,
ends with the same parameters and history as an uninterrupted one: shuffling, dropout
and augmentation are all derived from (seed, epoch, batch) or (seed, step), and the
checkpoint keeps the loss and metric sums of a stopped epoch.
"""
from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc.compiler.frontend import syntax as A
from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.compiler.frontend.loader import Program
from dlc.compiler.frontend.model import Model
from dlc.runtime.engines import budget, distributed
from dlc.runtime.training import checkpoint, settings as config
from dlc.runtime.data import sources as datasets
from dlc.runtime.interop import weights
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.training.settings import REQUIRED, Call, Symbol, as_call, choice, flag, integer, number, to_text
from dlc.runtime.training.gradcheck import index_bound, init_params
from dlc.runtime.training.optim import clip_limit, make_optimizer, make_schedule
from dlc.runtime.training.progress import Step, make_display
from dlc.runtime.training.tensorboard import EventLog


# ---- configuration ---------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    data: object = None
    validation: object = None
    test: object = None
    batch: int = 32
    epochs: int = 10
    optimizer: object = field(default_factory=lambda: Call("adam", [], {"lr": 1e-3}))
    schedule: object = None
    clip: object = None
    l1: float = 0.0
    l2: float = 0.0
    early_stop: object = None
    freeze: list = field(default_factory=list)
    init_from: object = None
    seed: int = 0
    shuffle: bool = True
    augment: object = None
    sync_batchnorm: bool = False
    spans: dict = field(default_factory=dict)

    def span(self, name) -> Span | None:
        return self.spans.get(name)


SPEC_SETTINGS = ("data", "validation", "test", "optimizer", "schedule", "clip", "early_stop", "augment")
SEED_MAX = 2 ** 31 - 1      # the random key of every step is a pair of int32: (seed, step)


def parse_setting(text: str, name: str):
    """A flag's value written like a train setting: `adam(lr = 0.01)`, `0.1`, `xor`, `"file.npz"`.
    Text that is not a setting, a call aside, is a string: a file name such as train.npz or
    data/x.csv (which parse as expressions but have no value)."""
    try:
        value = A.parse(text, f"--{name}", start="expr")
    except DlcError:
        return text
    try:
        return config.setting_value(value)
    except DlcError:
        if isinstance(value, A.Call):       # a call's error is about its arguments
            raise
        return text


def make_config(program: Program, model_name: str, overrides: dict, require_data: bool = True,
                model: Model | None = None) -> TrainConfig:
    """The train block's settings with `overrides` (flags) applied, checked (check_settings)."""
    decl = program.model_decl(model_name)
    cfg = TrainConfig()
    given = config.settings(program.trains.get(decl.name))
    for k, v in overrides.items():
        if v is not None and k != "lr":
            if isinstance(v, str) and k in SPEC_SETTINGS:       # "split(0.2)", "digits()", "file.npz", "sgd"
                v = parse_setting(v, k)
            given[k] = (v, None)
    for name, (value, span) in given.items():
        if name not in TrainConfig.__dataclass_fields__ or name == "spans":
            known = [k for k in TrainConfig.__dataclass_fields__ if k != "spans"]
            raise DlcError(f"unknown train setting '{name}'{did_you_mean(name, known)} (known: {', '.join(known)})",
                           span)
        cfg.spans[name] = span
        setattr(cfg, name, value)
    opt = as_call(cfg.optimizer, "optimizer", "adam(lr = 1e-3)", cfg.span("optimizer"))
    args, kwargs, spans = list(opt.args), dict(opt.kwargs), dict(opt.arg_spans)
    if overrides.get("lr") is not None:      # the first positional argument of every optimizer is lr
        if args:
            args[0] = overrides["lr"]
        else:
            kwargs["lr"] = overrides["lr"]
        spans = {k: v for k, v in spans.items() if k not in (0, "lr")}     # not written in the file
    elif not args and "lr" not in kwargs:
        kwargs["lr"] = 1e-3 if opt.name in ("adam", "adamw", "rmsprop") else 1e-2
    cfg.optimizer = Call(opt.name, args, kwargs, opt.span, spans)
    check_settings(cfg, model)
    if cfg.data is None and require_data:
        raise DlcError(f"model {decl.name} has no data to train on: add `data = ...` to its train block "
                       "or pass --data", decl.span)
    return cfg


def check_settings(cfg: TrainConfig, model: Model | None = None):
    """Check every setting where it is written, before any data is loaded or code compiled;
    `dlc check` and the Trainer (on either engine) both come here through make_config. Specs
    are checked by what builds them (make_optimizer, make_schedule, clip_limit, EarlyStop,
    augment_options, split_fraction), so the checks and their use cannot disagree. A bare
    clip limit and a bare validation fraction become global_norm(x) and split(x). With the
    train model, the settings that name its parameters or metrics are checked too."""
    for name, least, most in (("batch", 1, math.inf), ("epochs", 0, math.inf), ("seed", 0, SEED_MAX)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= most:
            bound = f">= {least}" if most == math.inf else f"from {least} to {most}"
            raise DlcError(f"{name} must be an integer {bound}, got {config.show(v)}", cfg.span(name))
    for name in ("l1", "l2"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise DlcError(f"{name} must be a number >= 0, got {config.show(v)}", cfg.span(name))
    for name in ("shuffle", "sync_batchnorm"):
        if not isinstance(getattr(cfg, name), bool):
            raise DlcError(f"{name} must be true or false, got {config.show(getattr(cfg, name))}", cfg.span(name))
    if cfg.init_from is not None and not isinstance(cfg.init_from, str):
        raise DlcError("init_from takes a checkpoint path in quotes", cfg.span("init_from"))
    make_optimizer(cfg.optimizer)
    make_schedule(cfg.schedule, 1.0, 1, max(cfg.epochs, 1), cfg.span("schedule"))
    if cfg.clip is not None:
        cfg.clip = Call("global_norm", [cfg.clip], span=cfg.span("clip")) if _is_number(cfg.clip) else \
            as_call(cfg.clip, "clip", "global_norm(1.0)", cfg.span("clip"))
        clip_limit(cfg.clip)
    if _is_number(cfg.validation):
        cfg.validation = Call("split", [cfg.validation], span=cfg.span("validation"))
    for name in ("test", "validation"):
        if _is_split(getattr(cfg, name)):
            split_fraction(getattr(cfg, name))
    augment_options(cfg.augment, cfg.span("augment"))
    metrics = None
    if model is not None:
        frozen_names(model, cfg.freeze, cfg.span("freeze"))
        stats = batch_statistics(model)
        if cfg.batch == 1 and stats:
            raise DlcError(f"batch = 1: model {model.name} keeps batch statistics ({', '.join(stats)}), which a "
                           "batch of one example cannot give (its variance is undefined); use batch = 2 or more",
                           cfg.span("batch"))
        metrics = metric_names(model)
    EarlyStop(cfg.early_stop, cfg.span("early_stop"), cfg.validation is not None, metrics)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_split(spec) -> bool:
    return isinstance(spec, Call) and spec.name == "split"


def split_fraction(call: Call) -> float:
    """The held-out fraction of split(fraction)."""
    return call.bind({"fraction": REQUIRED}).check("fraction", number, positive=True, below=1)


def augment_options(spec, span=None) -> dict | None:
    """images(shift = 0, flip = false, noise = 0.0) as keyword arguments of data.augment."""
    if spec is None:
        return None
    call = as_call(spec, "augment", "images(shift = 1, flip = false, noise = 0.0)", span)
    if call.name != "images":
        raise DlcError(f"augment takes images(shift = 1, flip = false, noise = 0.0), got {call.name}", call.span)
    args = call.bind({"shift": 0, "flip": False, "noise": 0.0})
    return {"shift": args.check("shift", integer, low=0), "flip": args.check("flip", flag),
            "noise": args.check("noise", number, low=0)}


def metric_names(model: Model) -> list:
    """The loss and metrics a training step reports (an epoch's row adds their val_ twins)."""
    return ["loss"] + [k[7:] for k in model.graph.outputs if k.startswith("metric:")]


def batch_statistics(model: Model) -> list:
    """The state a training step updates from the batch (batchnorm's running mean and variance)."""
    return [k[7:] for k in model.graph.outputs if k.startswith("update:")]


def batch_bounds(n: int, size: int, merge_single: bool = False, ranks: int = 1) -> list:
    """(start, stop) of each batch over n examples. With `merge_single`, a last batch of one
    example joins the batch before it: batch statistics of one example are undefined. Shared
    by `ranks` processes, a last batch that cannot give each rank one example (two with
    `merge_single`) joins it too."""
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < ranks * (2 if merge_single else 1):
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


# ---- data ------------------------------------------------------------------------------------------
def frozen_names(model: Model, patterns, span=None) -> set:
    """The parameters that `freeze` names: a name (f5 freezes f5.W and f5.b), a full
    parameter name, or a shell-style pattern ("conv*")."""
    patterns = patterns if isinstance(patterns, list) else [patterns] if patterns else []
    frozen = set()
    for p in patterns:
        if not isinstance(p, (str, Symbol)):
            raise DlcError(f"freeze takes names or patterns, got {p!r}", span)
        pat = p.name if isinstance(p, Symbol) else p
        hits = {q.name for q in model.params
                if q.name == pat or q.name.startswith(pat + ".") or fnmatch.fnmatch(q.name, pat)}
        if not hits:
            raise DlcError(f"freeze: no parameter matches '{pat}'", span)
        frozen |= hits
    return frozen


def load_data(spec, base: Path, what: str, span=None) -> datasets.Dataset:
    if isinstance(spec, Symbol):
        spec = Call(spec.name, span=spec.span)
    if not isinstance(spec, (Call, str)):
        raise DlcError(f"{what} must be a data source such as digits() or a file path, got {spec!r}", span)
    return datasets.load(spec, base)


def input_arrays(model: Model, ds: datasets.Dataset, need_targets: bool = True) -> dict:
    """Match the data's columns to the model's inputs: by name when every input has a
    column of its name, else in order (inputs and targets as declared)."""
    wanted = [i for i in model.inputs if need_targets or not i.is_target]
    cols = ds.columns
    if all(i.name in cols for i in wanted):
        arrays = {i.name: cols[i.name] for i in wanted}
    else:
        values = list(cols.values())
        if len(values) < len(wanted):
            raise DlcError(f"the data has {len(values)} column(s) ({', '.join(cols)}) but model {model.name} needs "
                           f"{len(wanted)}: {', '.join(i.name for i in wanted)}")
        arrays = {i.name: v for i, v in zip(wanted, values)}
    return {i.name: fit_input(i, arrays[i.name], model) for i in wanted}


def fit_input(inp, arr: np.ndarray, model: Model) -> np.ndarray:
    """An array for input `inp`: its shape checked, its dtype the input's, its values
    (for an index input) within what the model can look up."""
    typ = inp.type
    want_tail = typ.shape[1:]
    have = arr.shape[1:]
    if len(want_tail) != len(have) or any(isinstance(w, int) and w != h for w, h in zip(want_tail, have)):
        if all(isinstance(w, int) for w in want_tail) and int(np.prod(have)) == int(np.prod(want_tail)):
            arr = arr.reshape((arr.shape[0],) + tuple(want_tail))
        else:
            raise DlcError(f"the data for {inp.name} has shape {list(arr.shape)}, which does not fit "
                           f"{'target' if inp.is_target else 'input'} {inp.name}: {typ}", inp.span)
    what = datasets.not_numbers(arr)
    if what:
        raise DlcError(f"the data for {inp.name} holds {what}, not numbers", inp.span)
    if typ.is_float:
        return arr.astype(np.float32)
    if typ.dtype == "bool":
        return arr.astype(bool)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DlcError(f"{inp.name} is {typ} but the data has fractional values", inp.span)
    node = next(n for n in model.graph.nodes_with("input") if model.graph.attrs(n)["name"] == inp.name)
    bound = index_bound(model.graph, node)
    if bound is not None and arr.size and (arr.min() < 0 or arr.max() >= bound):     # before the cast can wrap
        raise DlcError(f"{inp.name} has values from {arr.min():.0f} to {arr.max():.0f}, but the model takes "
                       f"0 to {bound - 1} there", inp.span)
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise DlcError(f"{inp.name} has values beyond the 32-bit integers of {typ}", inp.span)
    return arr.astype(np.int32)


def mean_metrics(engine, params: dict, arrays: dict, batch: int) -> dict:
    """Loss and metrics over a data set, weighted by batch size. A data-parallel engine's
    ranks each score their share of the examples, and the sums are reduced."""
    world = getattr(engine, "world", None)
    if world is not None:
        lo, hi = world.shard(len(next(iter(arrays.values()))))
        arrays = {k: a[lo:hi] for k, a in arrays.items()}
    n = len(next(iter(arrays.values())))
    totals: dict = {}
    for lo, hi in batch_bounds(n, batch):
        for name, v in engine.evaluate(params, {k: a[lo:hi] for k, a in arrays.items()}).items():
            totals[name] = totals.get(name, 0.0) + v * (hi - lo)
    return world.mean_metrics(totals, n) if world is not None else {name: v / n for name, v in totals.items()}


def prepare_data(cfg: TrainConfig, base: Path, model: Model) -> tuple:
    """(train, validation, test, meta): the data bound to the model's inputs, with the
    test and validation splits held out deterministically from the seed. Each must hold an
    example (an empty one has no mean loss, no metric, no epoch to take)."""
    full = load_data(cfg.data, base, "data", cfg.span("data"))
    sets, empty = {"test": None, "validation": None}, {}
    for name, seed in (("test", cfg.seed), ("validation", cfg.seed + 1)):
        spec = getattr(cfg, name)
        if _is_split(spec):
            n = len(full)
            full, sets[name] = full.split(split_fraction(spec), seed)
            empty[name] = f"{name} = {to_text(spec)} holds out no example of the {n}: use a larger fraction or more data"
        elif spec is not None:
            sets[name] = load_data(spec, base, name, cfg.span(name))
            empty[name] = f"the {name} data has no examples"
    sets["data"] = full
    split = any(_is_split(spec) for spec in (cfg.test, cfg.validation))
    empty["data"] = "the training data has no examples" + (" left after the splits" if split else "")
    bound = {name: input_arrays(model, ds) if ds is not None else None for name, ds in sets.items()}     # shapes first
    for name, ds in sets.items():
        if ds is not None and len(ds) == 0:
            raise DlcError(empty[name], cfg.span(name))
    return bound["data"], bound["validation"], bound["test"], full.meta


# ---- the data a checkpoint was trained on -----------------------------------------------------------
DATA_SETTINGS = ("data", "validation", "test")


def data_settings(cfg: TrainConfig) -> dict:
    """The data settings a run resolved (file and flags), as checkpoints record them."""
    return {name: config.to_json(getattr(cfg, name)) for name in DATA_SETTINGS} | {"seed": cfg.seed}


def evaluation_data(program: Program, model: Model, data, saved: dict | None, log) -> dict:
    """The arrays `dlc eval` scores: `data` (a source, a path or its text) when given; else,
    with the data settings a checkpoint recorded (`saved`, else the train block's), the test
    data, else the validation data, else the training data itself. `log` is told which, with a
    note when the data is what the weights were trained on."""
    if saved:
        cfg = TrainConfig(**{name: config.from_json(saved[name]) for name in DATA_SETTINGS}, seed=saved["seed"])
    else:
        cfg = make_config(program, model.name, {}, require_data=data is None)
    base, trained_on = Path(program.path).parent, to_text(cfg.data)
    if data is not None:
        spec = parse_setting(data, "data") if isinstance(data, str) else data
        log(f"evaluating {to_text(spec)}")
        if to_text(spec) == trained_on:
            log("note: this is the data the weights were trained on (but for any held-out splits)")
        return input_arrays(model, load_data(spec, base, "data"))
    train, val, test, _ = prepare_data(cfg, base, model)

    def held_out(which: str, spec) -> str:
        if _is_split(spec):
            return f"the {which} split ({split_fraction(spec) * 100:g}% of {trained_on}, seed {cfg.seed})"
        return f"the {which} data {to_text(spec)}"

    if test is not None:
        log(f"evaluating {held_out('test', cfg.test)}")
        return test
    if val is not None:
        log(f"evaluating {held_out('validation', cfg.validation)}")
        return val
    log(f"evaluating the training data {trained_on}")
    log("note: there is no test or validation data, so this scores the examples the weights were trained on")
    return train


def initial_parameters(model: Model, seed: int) -> dict:
    """The parameters a run starts from: the model's initializers with the key (seed, 0), floats in float32."""
    params = init_params(model, seed, float_dtype="f32")
    # asarray, not ascontiguousarray, which makes a scalar parameter (perceptron's b) an array of one
    return {k: np.asarray(v, np.float32, order="C") if v.dtype.kind == "f" else v for k, v in params.items()}


def to_stderr(msg: str):
    print(msg, file=sys.stderr)


# ---- the loop ------------------------------------------------------------------------------------------
@dataclass
class Result:
    history: list
    params: dict
    out_dir: Path
    test: dict
    stopped: str          # "done", "early stop", "interrupted"
    written: list = field(default_factory=list)     # the checkpoints this run wrote: "last.npz", "best.npz"


class Trainer:
    def __init__(self, program: Program, model_name: str | None, overrides: dict, out_dir: Path | None,
                 log=None, backend: str = "auto", progress="auto", tensorboard=None):
        """`progress` chooses what the run shows while it runs (runtime/training/progress.py); with
        "none" only warnings, notes and errors are logged. `tensorboard`: a folder for
        TensorBoard event files (runtime/training/tensorboard.py)."""
        self.program, self.backend = program, backend
        self.train_model = program.build(model_name, training=True)
        self.train_model.require_loss("there is nothing to train")
        self.eval_model = program.build(model_name, training=False)
        self.name = self.train_model.name
        self.cfg = make_config(program, self.name, overrides, model=self.train_model)
        self.augment_options = augment_options(self.cfg.augment, self.cfg.span("augment"))
        self.base = Path(program.path).parent
        self.out = Path(out_dir) if out_dir else self.base / "runs" / self.name
        self.log = log or to_stderr
        self.world = distributed.world()        # None unless launched as several processes (mpirun, srun)
        if self.world is not None and self.cfg.sync_batchnorm:     # batch statistics over the global batch
            self.train_model = program.build(model_name, training=True, replicas=self.world.size)
        if self.world is not None and self.world.rank:      # rank 0 reports and writes the files
            self.log, progress, tensorboard = (lambda msg: None), "none", None
        self.quiet = progress == "none"
        self.display = make_display(progress, self.log)
        self.reporters = [self.display] + ([EventLog(tensorboard)] if tensorboard else [])
        self.source_hash = checkpoint.source_hash(Path(program.path).read_text()) \
            if Path(program.path).exists() else ""

    # -- set-up --
    def trainable(self) -> list:
        frozen = frozen_names(self.train_model, self.cfg.freeze, self.cfg.span("freeze"))
        return [q.name for q in self.train_model.params if q.trainable and q.name not in frozen]

    def early_stop(self) -> "EarlyStop":
        return EarlyStop(self.cfg.early_stop, self.cfg.span("early_stop"), self.cfg.validation is not None,
                         metric_names(self.train_model))

    def initial_params(self) -> dict:
        params = initial_parameters(self.train_model, self.cfg.seed)
        if self.cfg.init_from:
            path = self.cfg.init_from
            path = (self.base / path) if not Path(path).is_absolute() else Path(path)
            params, report = weights.transfer(path, params, self.train_model.params)
            self.say(f"init_from {path}: {report}")
        return params

    # -- run --
    def run(self, resume=False, engine=None) -> Result:
        if self.world is None:
            return self._run(resume, engine)
        with self.world.failing_together():
            return self._run(resume, engine)

    def _run(self, resume, engine) -> Result:
        cfg, begun = self.cfg, time.time()
        train, val, test, self.meta = prepare_data(cfg, self.base, self.train_model)
        n = len(next(iter(train.values())))
        stats = batch_statistics(self.train_model)
        if stats and n == 1:
            raise DlcError(f"the training data has one example, but model {self.name} keeps batch statistics "
                           f"({', '.join(stats)}), which need two or more examples per batch", cfg.span("data"))
        if self.world is not None:
            self.world.check_batch(cfg.batch, 2 if stats else 1, cfg.span("batch"))
            for name, arrays in (("training", train), ("validation", val), ("test", test)):
                if arrays is not None:
                    self.world.check_data(name, len(next(iter(arrays.values()))), cfg.span(name))
        bounds = batch_bounds(n, cfg.batch, merge_single=bool(stats), ranks=self.world.size if self.world else 1)
        trainable = self.trainable()
        optimizer = make_optimizer(cfg.optimizer)
        schedule = make_schedule(cfg.schedule, optimizer.lr, len(bounds), cfg.epochs, cfg.span("schedule"))
        stop = self.early_stop()
        expected = {p.name: p.type.shape for p in self.train_model.params}

        budget.require_model(self.train_model, trainable, len(optimizer.slots()))   # before the initializer allocates
        params, saved_opt, path = self.initial_params(), {}, None
        epoch, step, skip, history, partial = 0, 0, 0, [], None
        if resume:
            path = resume if isinstance(resume, (str, Path)) and not isinstance(resume, bool) else self.out / "last.npz"
            saved, saved_opt, meta = checkpoint.load(path)
            checkpoint.check_params(path, saved, expected)
            if meta.get("model") not in (None, self.name):
                raise DlcError(f"{path} is a checkpoint of model '{meta.get('model')}', not '{self.name}'")
            params = {k: v.copy() for k, v in saved.items()}
            epoch, step, skip = meta.get("epoch", 0), meta.get("step", 0), meta.get("batch", 0)
            history, partial = meta.get("history", []), meta.get("partial")
            if skip > len(bounds):
                raise DlcError(f"{path} stopped after batch {skip} of an epoch, but an epoch now has {len(bounds)} "
                               "batch(es): the data or the batch size changed since")
            stop.restore(meta.get("early_stop"))
            if meta.get("source_hash") not in (None, self.source_hash):
                self.log(f"note: {self.program.path} changed since {path} was written")
            if meta.get("optimizer") not in (None, optimizer.name):     # another optimizer's state means nothing here
                self.log(f"note: {path} was trained with {meta['optimizer']}; {optimizer.name} starts afresh")
                saved_opt = {}
            self.say(f"resuming from {path}: epoch {epoch + 1}, "
                     + (f"after batch {skip} of {len(bounds)}" if skip else "from its start"))
        # optimizer state from the checkpoint where it has one, fresh for the rest
        opt_state = checkpoint.optimizer_state(path, saved_opt,
                                               optimizer.init({name: params[name] for name in trainable}))
        if self.world is not None:
            self.world.broadcast_state(params, opt_state)

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DlcError(f"cannot keep checkpoints in {self.out}: "
                           + ("it is a file" if self.out.exists() else e.strerror)) from None
        for name in ("last.npz", "best.npz"):    # temporary files a killed run left
            checkpoint.remove_stale_temporaries(self.out / name, begun)
        self.written = []
        # compiled once everything else is known to be right; a quiet run does not announce it (without a log,
        # make_engine prints a fallback's warning on stderr)
        engine = engine or make_engine(self.backend, self.train_model, self.eval_model, optimizer, trainable,
                                       cfg.l1, cfg.l2, cfg.clip, log=None if self.quiet else self.log,
                                       split=self.world is not None)
        interrupted = _Interrupt()
        if self.world is not None:
            engine = distributed.DataParallel(engine, self.world, interrupted, stats)
        stopped = "done"
        with interrupted, self.reporting():
            while epoch < cfg.epochs:
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n) if cfg.shuffle else np.arange(n)
                # an epoch resumed inside continues the sums of its first batches, saved with the checkpoint
                totals, seen = (dict(partial["totals"]), partial["seen"]) if partial else ({}, 0)
                partial, started, seen_before = None, time.perf_counter(), seen
                for b in range(skip, len(bounds)):
                    lo, hi = bounds[b]
                    batch = self.augment({k: v[order[lo:hi]] for k, v in train.items()}, epoch, b)
                    lr = schedule(step)
                    values = engine.train_step(params, opt_state, batch, lr, step + 1,
                                               np.array([cfg.seed, step + 1], np.int32))
                    step += 1
                    if not math.isfinite(values["loss"]):
                        self.write_history(history)
                        raise DlcError(f"the loss became {values['loss']} at step {step} (epoch {epoch + 1}, "
                                       f"batch {b + 1}); training stopped. The last good checkpoint is "
                                       f"{self.out / 'last.npz'}" + (" (none was written yet)"
                                                                     if not (self.out / 'last.npz').exists() else "")
                                       + ". Try a lower learning rate or gradient clipping.")
                    seen += hi - lo
                    for name, v in values.items():
                        totals[name] = totals.get(name, 0.0) + v * (hi - lo)
                    self.progress(Step(step=step, epoch=epoch, epochs=cfg.epochs, done=b + 1 - skip,
                                       total=len(bounds) - skip, per_epoch=len(bounds), totals=totals, seen=seen,
                                       fresh=seen - seen_before, started=started, lr=lr))
                    if interrupted.requested:
                        self.save("last.npz", params, opt_state, epoch, step, b + 1, history, stop,
                                  {"totals": totals, "seen": seen})
                        self.display.close()
                        self.log(f"interrupted: saved {self.out / 'last.npz'} (epoch {epoch + 1}, batch {b + 1}); "
                                 "continue with --resume")
                        self.write_history(history)
                        return Result(history, params, self.out, {}, "interrupted", self.written)
                skip = 0
                row = {"epoch": epoch + 1, "lr": schedule(step - 1), "time": round(time.perf_counter() - started, 3)}
                row.update({k: v / max(seen, 1) for k, v in totals.items() if k != "grad_norm"})
                if val is not None:
                    row.update({f"val_{k}": v for k, v in mean_metrics(engine, params, val, cfg.batch).items()})
                history.append(row)
                for reporter in self.reporters:
                    reporter.epoch(row, cfg.epochs)
                epoch += 1
                improved, done = stop.update(row)
                self.save("last.npz", params, opt_state, epoch, step, 0, history, stop)
                self.write_history(history, plot=False)
                if improved:
                    self.save("best.npz", params, opt_state, epoch, step, 0, history, stop)
                if self.world is not None:
                    self.world.await_writer()
                if done:
                    stopped = "early stop"
                    self.say(f"early stop: {stop.monitor} did not improve for {stop.patience} epochs")
                    break
        # the best epoch of this run or of the one resumed; none yet after 0 epochs, whatever the folder holds
        if stop.restore_best and stop.best is not None and (self.out / "best.npz").exists() and self.writes:
            params = checkpoint.load(self.out / "best.npz")[0]
        if self.world is not None:      # rank 0 read best.npz
            self.world.broadcast(params, "the end")
        self.write_history(history)
        if self.world is not None:
            self.world.await_writer()
        result = mean_metrics(engine, params, test, cfg.batch) if test is not None else {}
        return Result(history, params, self.out, result, stopped, self.written)

    def augment(self, batch: dict, epoch: int, b: int) -> dict:
        if self.augment_options is None:
            return batch
        first = self.train_model.inputs[0].name
        rng = np.random.default_rng([self.cfg.seed, epoch, b, 7])
        return {**batch, first: datasets.augment(batch[first], rng, **self.augment_options)}

    # -- reporting and files --
    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and history: rank 0 of a distributed run does."""
        return self.world is None or self.world.rank == 0

    def progress(self, s: Step):
        """After every step: the display and the event log."""
        for reporter in self.reporters:
            reporter.step(s)

    def say(self, message: str):
        """What the run is doing (resuming, init_from, early stop): not with progress "none"."""
        if not self.quiet:
            self.log(message)

    @contextlib.contextmanager
    def reporting(self):
        """The display and the event log, ended however the loop ends (the end, Ctrl-C, a NaN
        loss, an error)."""
        try:
            yield
        finally:
            for reporter in self.reporters:
                reporter.close()

    def save(self, name, params, opt_state, epoch, step, batch, history, stop, partial=None):
        """A checkpoint; `partial` holds the loss and metric sums of an epoch stopped after `batch`."""
        if not self.writes:
            return
        if name not in self.written:
            self.written.append(name)
        checkpoint.save(self.out / name, params, opt_state, {
            "model": self.name, "source_hash": self.source_hash, "epoch": epoch, "step": step, "batch": batch,
            "partial": partial, "seed": self.cfg.seed, "optimizer": self.cfg.optimizer.name, "history": history,
            "early_stop": stop.state(), "meta": _jsonable(self.meta), "data": data_settings(self.cfg)})

    def write_history(self, history: list, plot: bool = True):
        """history.json and history.csv (after every epoch, and when a run stops: at its end,
        on Ctrl-C, on a NaN loss), each replaced at once; history.png with `plot`."""
        if not history or not self.writes:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))
        table = io.StringIO()
        w = csv.DictWriter(table, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(history)
        for name, text in (("history.json", json.dumps(history, indent=1)), ("history.csv", table.getvalue())):
            tmp = self.out / f".{name}.tmp"
            try:
                tmp.write_text(text)
                os.replace(tmp, self.out / name)
            except OSError as e:        # the checkpoints matter more: say so and go on
                self.log(f"note: cannot write {self.out / name}: {e.strerror}")
        if not plot:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        metrics = [k for k in keys if k not in ("epoch", "lr", "time") and not k.startswith("val_")]
        # a panel per metric (with its val_ twin), and one of the learning rate: the schedule beside its effect
        fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4 * (len(metrics) + 1), 3), squeeze=False)
        epochs = [r["epoch"] for r in history]
        for ax, m in zip(axes[0], metrics):
            ax.plot(epochs, [r.get(m) for r in history], label=m)
            if f"val_{m}" in keys:
                ax.plot(epochs, [r.get(f"val_{m}") for r in history], label=f"val_{m}")
            ax.set_xlabel("epoch")
            ax.legend()
        lr = axes[0][-1]
        lr.plot(epochs, [r.get("lr") for r in history], label="lr (the epoch's last step)")
        lr.set_xlabel("epoch")
        lr.set_ylabel("lr")
        lr.legend()
        fig.tight_layout()
        fig.savefig(self.out / "history.png")
        plt.close(fig)


def _jsonable(v):
    return json.loads(json.dumps(v, default=lambda x: x.tolist() if isinstance(x, np.ndarray) else str(x)))


class EarlyStop:
    """patience(n = 5, monitor = val_loss, mode = none, restore_best = true): stop after n
    epochs without improvement of `monitor` (val_loss, else loss, by default). `mode` says
    whether improving is going down ("min") or up ("max"); without it, a monitor whose name
    contains "acc" goes up, any other down. Without early stopping, `best` still tracks the
    monitored value. `metrics` (the model's loss and metrics), when given, checks the monitor."""

    def __init__(self, spec, span, has_validation: bool, metrics: list | None = None):
        self.patience, self.restore_best, mode = None, False, None
        self.monitor = "val_loss" if has_validation else "loss"
        if spec is not None:
            call = as_call(spec, "early_stop", "patience(5, monitor = val_loss)", span)
            if call.name != "patience":
                raise DlcError(f"early_stop takes patience(n, monitor = val_loss, mode = min, restore_best = true), "
                               f"got {call.name}", call.span)
            args = call.bind({"n": 5, "monitor": None, "mode": None, "restore_best": True})
            self.patience = args.check("n", integer, low=1)
            monitor = args["monitor"]
            if isinstance(monitor, Symbol):
                monitor = monitor.name
            if monitor is not None and not isinstance(monitor, str):
                raise DlcError(f"patience: 'monitor' must be a metric name such as val_loss, got "
                               f"{config.show(monitor)}", args.span("monitor"))
            self.monitor, span = monitor or self.monitor, args.span("monitor")
            if args["mode"] is not None:
                mode = args.check("mode", choice, options=("min", "max"))
            self.restore_best = args.check("restore_best", flag)
        self.mode = mode or ("max" if "acc" in self.monitor else "min")
        if metrics is not None:
            known = metrics + [f"val_{m}" for m in metrics if has_validation]
            if self.monitor not in known:
                raise DlcError(f"early_stop monitors '{self.monitor}', which is not among {', '.join(known)}"
                               + ("" if has_validation else " (val_ values need validation data)"), span)
        self.best, self.bad = None, 0

    def update(self, row: dict) -> tuple[bool, bool]:
        value = row[self.monitor]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return better, self.patience is not None and self.bad >= self.patience

    def state(self):
        return {"best": self.best, "bad": self.bad}

    def restore(self, state):
        if state:
            self.best, self.bad = state.get("best"), state.get("bad", 0)


class _Interrupt:
    """Ctrl-C asks the loop to stop after the current step instead of killing it mid-update.
    The ranks of a distributed run stop after the same step: `agreed` is then what they
    agreed after the last one (runtime/engines/distributed.py), and a Ctrl-C that came later
    counts at the next."""

    def __init__(self):
        self.asked = False
        self.agreed = None

    @property
    def requested(self) -> bool:
        return self.asked if self.agreed is None else self.agreed

    def __enter__(self):
        def handler(signum, frame):
            if self.asked:          # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.asked = True
        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:          # not the main thread: no handler, plain KeyboardInterrupt
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False

