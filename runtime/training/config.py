"""The configuration of a training run: the settings of the model's `train` block
(compiler/frontend/settings.py evaluates them) with the command line's flags applied,
and every setting checked where it is written before any data is loaded or code compiled."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dlc.compiler.errors import DlcError, Span, did_you_mean, register_source
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.loader import Program
from dlc.compiler.frontend.model import Model
from dlc.compiler.frontend.syntax import size_bytes
from dlc.compiler.native import PRECISIONS
from dlc.runtime.data import registry as data_sources
from dlc.runtime.data.augment import augment_options
from dlc.runtime.engines.int8 import quantize_options
from dlc.runtime.training.early_stop import EarlyStop
from dlc.runtime.training.groups import make_groups, param_matches, patterns_of
from dlc.runtime.optim.optimizers import OPTIMIZERS, make_optimizer
from dlc.runtime.optim.options import clip_limit
from dlc.runtime.optim.schedules import make_schedule
from dlc.compiler.frontend.settings import REQUIRED, Call, Symbol, as_call, flag, number, setting_value, settings, show


# a data-parallel run's buckets of gradients: 128 KB, which parts the last layers of models of a few MB
# from their first (LeNet-5's fully connected layers from its convolutions); PyTorch DDP's are 25 MB
ALLREDUCE_BUCKET = 128 << 10


@dataclass
class TrainConfig:
    data: object = None
    validation: object = None
    test: object = None
    batch: int = 32
    epochs: int = 10
    max_steps: object = None  # the run's length in steps instead of epochs; it may end inside an epoch
    eval_every: object = None  # a history row, validation and checkpoints every N steps
    optimizer: object = field(default_factory=lambda: Call("adam", [], {"lr": 1e-3}))
    schedule: object = None
    clip: object = None
    l1: float = 0.0
    l2: float = 0.0
    early_stop: object = None
    freeze: list = field(default_factory=list)
    param_groups: object = None  # group(...) calls: parameters with settings of their own (groups.py)
    init_from: object = None
    seed: int = 0
    shuffle: bool = True
    augment: object = None
    sync_batchnorm: bool = False
    shard_optimizer: bool = False  # each of K ranks updates and holds 1/K of the optimizer state (ZeRO-1)
    check_numerics: bool = False  # stop at a step's first non-finite value (runtime/engines/numerics.py)
    memory: object = None  # bytes training may take at most (runtime/engines/budget.py)
    precision: str = "f32"  # of matmul and convolution operands (compiler/native/lower.py)
    allreduce_bucket: object = ALLREDUCE_BUCKET  # bytes of a bucket of gradients (compiler/native/buckets.py)
    remat: object = None  # checkpointed recurrences (checked and applied by the evaluator)
    quantize: object = None  # int8(...): the run's weights quantized at its end (docs/quantization.md)
    data_threads: object = None  # threads that decode streamed data (runtime/data/prefetch.py); none: the cores
    spans: dict = field(default_factory=dict)

    def span(self, name) -> Span | None:
        return self.spans.get(name)


@dataclass(frozen=True)
class Flag:
    """A setting's value given on the command line: an error about it points at the flag
    (`--batch:1:1: error: ...`, the flag's text as its source line), a usage error."""

    name: str
    value: object

    def span(self) -> Span:
        text = ", ".join(map(str, self.value)) if isinstance(self.value, list) else str(self.value)
        register_source(f"--{self.name}", text)
        return Span(f"--{self.name}", 1, 1, 1, len(text) + 1)


def flags(args, names) -> dict:
    """The settings `names` given as flags in `args` (argparse's), each a Flag; None where not given."""
    return {
        name: None if getattr(args, name) is None else Flag(name.replace("_", "-"), getattr(args, name))
        for name in names
    }


SPEC_SETTINGS = ("data", "validation", "test", "optimizer", "schedule", "clip", "early_stop", "augment")
SEED_MAX = 2**31 - 1  # the random key of every step is a pair of int32: (seed, step)


def parse_setting(text: str, name: str):
    """A flag's value written like a train setting: `adam(lr = 0.01)`, `0.1`, `xor`, `"file.npz"`.
    Text that is not a setting, a call aside, is a string: a file name such as train.npz or
    data/x.csv (which parse as expressions but have no value)."""
    try:
        value = syntax.parse(text, f"--{name}", start="expr")
    except DlcError:
        return text
    try:
        return setting_value(value)
    except DlcError:
        if isinstance(value, syntax.CallExpr):  # a call's error is about its arguments
            raise
        return text


def make_config(
    program: Program, model_name: str, overrides: dict, require_data: bool = True, model: Model | None = None
) -> TrainConfig:
    """The train block's settings with `overrides` (flags) applied, checked (check_settings)."""
    decl = program.model_decl(model_name)
    cfg = TrainConfig()
    given = settings(program.trains.get(decl.name))
    if overrides.get("remat") is not None:  # it shapes the model's graph, built before the overrides apply
        raise DlcError(
            "remat is set in the train block, where the model's recurrences are built from it; "
            f"write `remat = {overrides['remat']}` there"
        )
    overrides, flag_spans = (
        {k: v.value if isinstance(v, Flag) else v for k, v in overrides.items()},
        {k: v.span() for k, v in overrides.items() if isinstance(v, Flag)},
    )
    for k, v in overrides.items():
        if v is not None and k != "lr":
            if isinstance(v, str) and k in SPEC_SETTINGS:  # "split(0.2)", "digits()", "file.npz", "sgd"
                v = parse_setting(v, k)
            given[k] = (v, flag_spans.get(k))
    for name, (value, span) in given.items():
        if name not in TrainConfig.__dataclass_fields__ or name == "spans":
            known = [k for k in TrainConfig.__dataclass_fields__ if k != "spans"]
            raise DlcError(
                f"unknown train setting '{name}'{did_you_mean(name, known)} (known: {', '.join(known)})", span
            )
        cfg.spans[name] = span
        setattr(cfg, name, value)
    if overrides.get("epochs") is not None:  # --epochs: a run by epochs, whatever the block's max_steps
        cfg.max_steps = None
    opt = as_call(cfg.optimizer, "optimizer", "adam(lr = 1e-3)", cfg.span("optimizer"))
    args, kwargs, spans = list(opt.args), dict(opt.kwargs), dict(opt.arg_spans)
    own_lr = opt.name in OPTIMIZERS and OPTIMIZERS[opt.name].options["lr"] is not REQUIRED  # lbfgs, newton: 1
    if overrides.get("lr") is not None:  # the first positional argument of every optimizer is lr
        if args:
            args[0] = overrides["lr"]
        else:
            kwargs["lr"] = overrides["lr"]
        spans = {k: v for k, v in spans.items() if k not in (0, "lr")}  # not written in the file
        if "lr" in flag_spans:
            spans[0 if args else "lr"] = flag_spans["lr"]
    elif not args and "lr" not in kwargs and not own_lr:
        kwargs["lr"] = OPTIMIZERS[opt.name].default_lr if opt.name in OPTIMIZERS else 1e-2
    cfg.optimizer = Call(opt.name, args, kwargs, opt.span, spans)
    check_settings(cfg, model)
    if cfg.data is None and require_data:
        raise DlcError(
            f"model {decl.name} has no data to train on: add `data = ...` to its train block or pass --data", decl.span
        )
    return cfg


def check_settings(cfg: TrainConfig, model: Model | None = None):
    """Check every setting where it is written, before any data is loaded or code compiled;
    `dlc check` and the Trainer (on either engine) both come here through make_config. Specs
    are checked by what builds them (make_optimizer, make_schedule, clip_limit, EarlyStop,
    augment_options, split_args), so the checks and their use cannot disagree. A bare
    clip limit and a bare validation fraction become global_norm(x) and split(x). With the
    train model, the settings that name its parameters or metrics are checked too."""
    for name, least, most in (("batch", 1, math.inf), ("epochs", 0, math.inf), ("seed", 0, SEED_MAX)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= most:
            bound = f">= {least}" if most == math.inf else f"from {least} to {most}"
            raise DlcError(f"{name} must be an integer {bound}, got {show(v)}", cfg.span(name))
    for name in ("l1", "l2"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise DlcError(f"{name} must be a number >= 0, got {show(v)}", cfg.span(name))
    for name in ("shuffle", "sync_batchnorm", "shard_optimizer", "check_numerics"):
        if not isinstance(getattr(cfg, name), bool):
            raise DlcError(f"{name} must be true or false, got {show(getattr(cfg, name))}", cfg.span(name))
    if cfg.memory is not None:
        cfg.memory = _size(cfg, "memory", 1, "2GB or 512MB")
    cfg.allreduce_bucket = _size(cfg, "allreduce_bucket", 0, "1MB or 256KB (0: no buckets)")
    if isinstance(cfg.precision, Symbol):  # precision = bf16, unquoted
        cfg.precision = cfg.precision.name
    if cfg.precision not in PRECISIONS:
        raise DlcError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {show(cfg.precision)}", cfg.span("precision")
        )
    if cfg.init_from is not None and not isinstance(cfg.init_from, str):
        raise DlcError("init_from takes a checkpoint path in quotes", cfg.span("init_from"))
    if make_optimizer(cfg.optimizer).full_batch and (cfg.l1 or cfg.l2 or cfg.clip is not None):
        raise DlcError(
            f"{cfg.optimizer.name} takes no l1, l2 or clip: it has no update to apply them to; write a "
            "penalty in the loss instead",
            cfg.span("l1" if cfg.l1 else "l2" if cfg.l2 else "clip"),
        )
    for name in ("max_steps", "eval_every", "data_threads"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise DlcError(
                f"{name} must be an integer >= 1{' (steps)' * (name != 'data_threads')}, got {show(v)}", cfg.span(name)
            )
    if cfg.max_steps is not None and "epochs" in cfg.spans:
        raise DlcError(
            "give epochs or max_steps, not both: max_steps ends the run at that step, inside an epoch if need be",
            cfg.span("max_steps") or cfg.span("epochs"),
        )
    make_schedule(cfg.schedule, 1.0, 1, max(cfg.epochs, 1), cfg.span("schedule"))
    if cfg.clip is not None:
        cfg.clip = (
            Call("global_norm", [cfg.clip], span=cfg.span("clip"))
            if _is_number(cfg.clip)
            else as_call(cfg.clip, "clip", "global_norm(1.0)", cfg.span("clip"))
        )
        clip_limit(cfg.clip)
    if cfg.shard_optimizer:
        check_shardable(cfg)
    if _is_number(cfg.validation):
        cfg.validation = Call("split", [cfg.validation], span=cfg.span("validation"))
    for name in ("data", "test", "validation"):
        if is_split(getattr(cfg, name)) and name != "data":
            split_args(getattr(cfg, name))
        else:
            data_sources.check(getattr(cfg, name), cfg.span(name))
    augment_options(cfg.augment, cfg.span("augment"))
    quantize_options(cfg.quantize, cfg.span("quantize"))
    metrics = None
    if model is not None:
        trained_names(model, cfg)
        stats = batch_statistics(model)
        if cfg.batch == 1 and stats:
            raise DlcError(
                f"batch = 1: model {model.name} keeps batch statistics ({', '.join(stats)}), which a "
                "batch of one example cannot give (its variance is undefined); use batch = 2 or more",
                cfg.span("batch"),
            )
        metrics = metric_names(model)
    EarlyStop(cfg.early_stop, cfg.span("early_stop"), cfg.validation is not None, metrics)


def check_shardable(cfg: TrainConfig):
    """shard_optimizer = true: each rank updates its share of the flat parameters on its own,
    so the update must be elementwise."""
    span = cfg.span("shard_optimizer")
    if make_optimizer(cfg.optimizer).full_batch:
        raise DlcError(
            f"shard_optimizer = true cannot shard {cfg.optimizer.name}: its state and step are over "
            "all the parameters at once (a line search, a Hessian), not each parameter's own",
            span,
        )
    if cfg.clip is not None and cfg.clip.name == "global_norm":
        raise DlcError(
            "shard_optimizer = true cannot clip by global_norm: no rank holds the whole gradient "
            "whose norm it takes; clip = value(max) clips each element",
            span,
        )


def run_length(cfg: TrainConfig, per_epoch: int) -> tuple[int, int | None]:
    """(the epochs a run goes through, its steps when counted in steps): max_steps runs
    ceil(max_steps / per_epoch) epochs, the last one cut at max_steps."""
    if cfg.max_steps is None:
        return cfg.epochs, None
    return -(-cfg.max_steps // max(per_epoch, 1)), cfg.max_steps


def eval_period(cfg: TrainConfig) -> int | None:
    """The steps between two rows of the history (validation, checkpoints): eval_every, else a
    tenth of max_steps; none in a run by epochs without eval_every (a row per epoch)."""
    if cfg.eval_every is not None:
        return cfg.eval_every
    return max(1, cfg.max_steps // 10) if cfg.max_steps is not None else None


def _size(cfg: TrainConfig, name: str, least: int, examples: str) -> int:
    """Setting `name` in bytes: a size literal (2GB), a string ("2G") or a number of bytes."""
    value = getattr(cfg, name)
    nbytes = size_bytes(value) if isinstance(value, str) else value
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float)) or not least <= nbytes < math.inf:
        raise DlcError(f"{name} must be a size such as {examples}, got {show(value)}", cfg.span(name))
    return int(nbytes)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


SPLIT = {"fraction": REQUIRED, "tail": False}  # split(fraction, tail = false)


def is_split(spec) -> bool:
    return isinstance(spec, Call) and spec.name == "split"


def split_args(call: Call) -> tuple[float, bool]:
    """(fraction, tail) of split(fraction, tail = false): with `tail`, the last examples are held
    out, in order (the end of a text), rather than a shuffled sample of them."""
    args = call.bind(SPLIT)
    return args.check("fraction", number, positive=True, below=1), args.check("tail", flag)


def metric_names(model: Model) -> list:
    """The loss and metrics a training step reports (an epoch's row adds their val_ twins)."""
    return ["loss"] + [k[7:] for k in model.graph.outputs if k.startswith("metric:")]


def batch_statistics(model: Model) -> list:
    """The state a training step updates from the batch (batchnorm's running mean and variance)."""
    return [k[7:] for k in model.graph.outputs if k.startswith("update:")]


def frozen_names(model: Model, patterns, span=None) -> set:
    """The parameters that `freeze` names: a name (f5 freezes f5.W and f5.b), a full
    parameter name, or a shell-style pattern ("conv*")."""
    frozen = set()
    for pat in patterns_of(patterns or None, "freeze", span):
        hits = {q.name for q in model.params if param_matches(q.name, pat)}
        if not hits:
            raise DlcError(f"freeze: no parameter matches '{pat}'", span)
        frozen |= hits
    return frozen


def trained_names(model: Model, cfg: TrainConfig) -> tuple:
    """(the names of the parameters a run trains, its parameter groups over them), checked."""
    frozen = frozen_names(model, cfg.freeze, cfg.span("freeze"))
    trained = [q.name for q in model.params if q.trainable and q.name not in frozen]
    return trained, make_groups(cfg.param_groups, model.params, trained, cfg.span("param_groups"))
