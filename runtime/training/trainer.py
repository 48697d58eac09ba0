"""The training loop behind `dlc train` and `dlc.load(...).train()`.

Configuration comes from the model's `train` block, overridden by flags, and is checked
whole before anything runs (runtime/training/config.py); the run's data, batches, length,
optimizer and schedule are planned by run_plan.py (as for `dlc build --train`), and an engine (runtime/engines/protocol.py) runs
the steps. The loop shuffles mini-batches, runs one engine step per batch, evaluates on a
validation split, keeps a history (history.py), calls its callbacks (callbacks.py: the
display, TensorBoard, the caller's, early stopping, the checkpoints, last and best, written
atomically) and stops when one asks (after the epoch, or the step, it asked in); it stops
cleanly on Ctrl-C (interrupt.py: after the current step, with a checkpoint) or on a NaN
loss (naming the step, leaving the last good checkpoint). A run resumed from its
checkpoint, whichever batch it stopped after, ends with the same parameters and history
as an uninterrupted one: shuffling, dropout and augmentation are all derived from (seed,
epoch, batch) or (seed, step) (a photo's transforms from (seed, epoch, example)), and the
checkpoint keeps the loss and metric sums of a stopped epoch. Data that is decoded as it is
read (runtime/data/streamed.py) is read ahead of the steps by a pool of threads (prefetch.py),
and the rows record the share of their time the steps waited for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import Program
from dlc.compiler.frontend.model import Model
from dlc.compiler.frontend.settings import to_text
from dlc.runtime.data.augment import augment, augment_options
from dlc.runtime.data.prefetch import Batches
from dlc.runtime.data.streamed import Streamed, first_rows, is_streamed, shuffled
from dlc.runtime.engines import budget, distributed
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.engines.int8 import calibrate_arrays, quantize_options
from dlc.runtime.engines.numerics import PRODUCT_LIMIT, NonFinite, beyond_products
from dlc.runtime.engines.protocol import Engine
from dlc.runtime.interop import checkpoint, quantized, weights
from dlc.runtime.training.callbacks import Callbacks, Checkpoints, check
from dlc.runtime.training.config import (
    eval_period,
    make_config,
    metric_names,
    trained_names,
)
from dlc.runtime.training.early_stop import EarlyStop
from dlc.runtime.training.gradcheck import init_params
from dlc.runtime.training.history import History, save_history
from dlc.runtime.training.inputs import data_settings
from dlc.runtime.training.interrupt import Interrupt
from dlc.runtime.training.progress import Step, make_display
from dlc.runtime.training.run_plan import batch_bounds, plan_run, windows_drawn
from dlc.runtime.training.tensorboard import EventLog


# ---- scoring --------------------------------------------------------------------------------------------
def mean_metrics(engine: Engine, params: dict, arrays: dict, batch: int, threads: int | None = None) -> dict:
    """Loss and metrics over a data set, weighted by batch size. A data-parallel engine's
    ranks each score their share of the examples, and the sums are reduced. Streamed columns
    are read by `threads` threads (runtime/data/prefetch.py)."""
    world = engine.world
    if world is not None:
        lo, hi = world.shard(len(next(iter(arrays.values()))))
        arrays = {k: a[lo:hi] for k, a in arrays.items()}
    n = len(next(iter(arrays.values())))
    totals: dict = {}
    bounds = batch_bounds(n, batch)
    for (lo, hi), part in zip(bounds, Batches(arrays, ((slice(lo, hi), None) for lo, hi in bounds), threads)):
        for name, v in engine.evaluate(params, part).items():
            totals[name] = totals.get(name, 0.0) + v * (hi - lo)
    return world.mean_metrics(totals, n) if world is not None else {name: v / n for name, v in totals.items()}


# ---- the start -----------------------------------------------------------------------------------------
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
    history: History  # a row per epoch; history["loss"]: a column over the epochs
    params: dict
    out_dir: Path
    test: dict
    stopped: str  # "done", "early stop", "stopped" (by a callback), "interrupted"
    written: list = field(default_factory=list)  # the checkpoints this run wrote: "last.npz", "best.npz"

    def __post_init__(self):
        self.history = History(self.history)


# the largest share of a run's time that rewriting its history files between rows may take
HISTORY_SHARE = 0.05


class Trainer:
    def __init__(
        self,
        program: Program,
        model_name: str | None,
        overrides: dict,
        out_dir: Path | None,
        log=None,
        backend: str = "auto",
        progress="auto",
        tensorboard=None,
        callbacks=(),
    ):
        """`progress` chooses what the run shows while it runs (runtime/training/progress.py); with
        "none" only warnings, notes and errors are logged. `tensorboard`: a folder for
        TensorBoard event files (runtime/training/tensorboard.py). `callbacks`: the caller's
        (callbacks.py), called after those."""
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
        self.world = distributed.world()  # None unless launched as several processes (mpirun, srun)
        if self.world is not None and self.cfg.sync_batchnorm:  # batch statistics over the global batch
            self.train_model = program.build(model_name, training=True, replicas=self.world.size)
        if self.world is not None and self.world.rank:  # rank 0 reports and writes the files
            self.log, progress, tensorboard = (lambda msg: None), "none", None
        self.quiet = progress == "none"
        self.warned_overflow = False
        self.streamed, self.waited = False, 0.0  # whether the data is decoded as read; the row's wait for it
        self.history_written, self.history_cost = 0.0, 0.0  # when write_history last wrote, and how long it took
        self.display = make_display(progress, self.log)
        self.callbacks = check([self.display, *([EventLog(tensorboard)] if tensorboard else []), *callbacks])
        self.source_hash = checkpoint.source_hash(Path(program.path).read_text()) if Path(program.path).exists() else ""

    # -- set-up --
    def trainable(self) -> list:
        return trained_names(self.train_model, self.cfg)[0]

    def early_stop(self) -> "EarlyStop":
        return EarlyStop(
            self.cfg.early_stop,
            self.cfg.span("early_stop"),
            self.cfg.validation is not None,
            metric_names(self.train_model),
        )

    def initial_params(self) -> dict:
        params = initial_parameters(self.train_model, self.cfg.seed)
        if self.cfg.init_from:
            path = self.cfg.init_from
            path = (self.base / path) if not Path(path).is_absolute() else Path(path)
            params, report = weights.transfer(path, params, self.train_model.params)
            self.say(f"init_from {path}: {report}")
        return params

    def checkpoint_meta(self) -> dict:
        """What every checkpoint of the run records besides its place in it (`meta`: the
        data's facts, which prepare_data gives)."""
        return {
            "model": self.name,
            "source_hash": self.source_hash,
            "seed": self.cfg.seed,
            "optimizer": self.cfg.optimizer.name,
            "meta": _jsonable(self.meta),
            "data": data_settings(self.cfg),
        }

    # -- run --
    def run(self, resume=False, engine=None, overwrite: bool = False) -> Result:
        """Train from the start, or from a checkpoint with `resume` (True: the folder's last.npz;
        or a path). A new run refuses a folder holding another run's checkpoints unless
        `overwrite` (checkpoint.claim_folder)."""
        with budget.capped(self.cfg.memory, self.cfg.span("memory")):
            if self.world is None:
                return self._run(resume, engine, overwrite)
            with self.world.failing_together():
                return self._run(resume, engine, overwrite)

    def _run(self, resume, engine, overwrite) -> Result:
        cfg, begun = self.cfg, time.time()
        fresh = not resume and self.writes  # a new run: a folder of another run's is refused before any work
        if fresh:
            checkpoint.refuse_another_run(self.out, overwrite)
        ranks = self.world.size if self.world else 1
        run = plan_run(cfg, self.base, self.train_model, ranks)
        val, test, self.meta, n, bounds = run.val, run.test, run.meta, run.examples, run.bounds
        epochs, last_step, trainable, optimizer, schedule = (
            run.epochs,
            run.last_step,
            run.trainable,
            run.optimizer,
            run.schedule,
        )
        train = self.photo_transform(run.train)
        self.streamed = streamed = is_streamed(train)
        if self.meta.get("skipped"):
            self.log(f"note: {self.meta['skipped']} file(s) of the data Pillow cannot decode are left out (skip_bad)")
        if self.world is not None:
            self.world.check_batch(cfg.batch, 2 if run.statistics else 1, cfg.span("batch"))
            for name, arrays in (("training", train), ("validation", val), ("test", test)):
                if arrays is not None:
                    self.world.check_data(name, len(next(iter(arrays.values()))), cfg.span(name))
        sampled = self.meta.get("windows")  # text(windows = "random"): every step draws its batch
        period = eval_period(cfg)  # steps between the history's rows; none: a row per epoch
        if optimizer.full_batch and self.world is not None:
            raise DlcError(
                f"{optimizer.name} trains in one process: its line search is not shared between ranks",
                cfg.span("optimizer"),
            )
        if cfg.shard_optimizer and self.backend == "reference":
            raise DlcError(
                "shard_optimizer = true needs the native engine: the reference engine updates every "
                "parameter in one interpreted step",
                cfg.span("shard_optimizer"),
            )
        if cfg.shard_optimizer and self.world is None:
            self.say("note: shard_optimizer = true in one process: it holds the whole optimizer state")
        stop = self.early_stop()
        expected = {p.name: p.type.shape for p in self.train_model.params}

        budget.require_model(self.train_model, trainable, len(optimizer.slots()))  # before the initializer allocates
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
                raise DlcError(
                    f"{path} stopped after batch {skip} of an epoch, but an epoch now has {len(bounds)} "
                    "batch(es): the data or the batch size changed since"
                )
            stop.restore(meta.get("early_stop"))
            if meta.get("source_hash") not in (None, self.source_hash):
                self.log(f"note: {self.program.path} changed since {path} was written")
            if meta.get("optimizer") not in (None, optimizer.name):  # another optimizer's state means nothing here
                self.log(f"note: {path} was trained with {meta['optimizer']}; {optimizer.name} starts afresh")
                saved_opt = {}
            self.say(
                f"resuming from {path}: epoch {epoch + 1}, "
                + (f"after batch {skip} of {len(bounds)}" if skip else "from its start")
            )
            self.warn_past_schedule(schedule, step, last_step)
        # optimizer state from the checkpoint where it has one, fresh for the rest
        opt_state = checkpoint.optimizer_state(
            path, saved_opt, optimizer.init({name: params[name] for name in trainable})
        )
        saved_opt = None  # not kept for the run: a rank with shard_optimizer keeps its share only
        if self.world is not None:
            self.world.broadcast_state(params, opt_state)

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DlcError(
                f"cannot keep checkpoints in {self.out}: " + ("it is a file" if self.out.exists() else e.strerror)
            ) from None
        for name in ("last.npz", "best.npz"):  # temporary files a killed run left
            checkpoint.remove_stale_temporaries(self.out / name, begun)
        # compiled once everything else is known to be right; a quiet run does not announce it (without a log,
        # make_engine prints a fallback's warning on stderr)
        shard = (self.world.rank, self.world.size) if cfg.shard_optimizer and self.world is not None else None
        engine = engine or make_engine(
            self.backend,
            self.train_model,
            self.eval_model,
            optimizer,
            trainable,
            cfg.l1,
            cfg.l2,
            cfg.clip,
            log=None if self.quiet else self.log,
            split=self.world is not None,
            check_numerics=cfg.check_numerics,
            # a rank that stops at a non-finite value must not leave the
            # others waiting in a bucket's allreduce: the split step then
            buckets=cfg.allreduce_bucket if self.world is not None and not cfg.check_numerics else 0,
            precision=cfg.precision,
            shard=shard,
        )
        if fresh and overwrite:  # once the data, the settings and the engine are good: a failed run replaces nothing
            checkpoint.clear_run(self.out)
        interrupted = Interrupt()
        if self.world is not None:
            engine = distributed.DataParallel(engine, self.world, interrupted, run.statistics)
        checkpoints = Checkpoints(
            self.out,
            params,
            opt_state,
            history,
            stop,
            self.checkpoint_meta(),
            self.writes,
            engine.whole_state if shard else None,
        )
        events = Callbacks([*self.callbacks, stop, checkpoints])
        begin = {
            "epochs": epochs,
            "batches": len(bounds),
            "examples": n,
            "initial_epoch": epoch,
            "initial_step": step,
            "steps": last_step,
        }
        # a run resumed inside a row's steps continues the sums of its first batches, saved with the checkpoint
        totals, seen = (dict(partial["totals"]), partial["seen"]) if partial else ({}, 0)
        row_started = time.perf_counter()
        self.waited = 0.0  # seconds the row's steps waited for streamed data
        # each rank of a data-parallel run decodes only its share of a batch of streamed data, unless the batch
        # is augmented whole (augment = images(...)): DataParallel takes the share as this rank's slice
        shared = (
            self.world is not None
            and streamed
            and (self.augment_options is None or self.augment_options.get("form") == "photos")
        )
        with interrupted, self.reporting(events, begin) as end, contextlib.ExitStack() as reading:
            while epoch < epochs and step < last_step:
                events.call("on_epoch_begin", epoch, {"batch": skip})
                order = shuffled(train, np.random.default_rng([cfg.seed, epoch])) if cfg.shuffle else np.arange(n)
                started, seen_before, epoch_waited = time.perf_counter(), seen, 0.0
                epoch_steps = min(len(bounds) - skip, last_step - step)  # max_steps may end the run inside it
                rows = self.batch_rows(bounds, skip, order, epoch, step, n if sampled else 0, shared)
                reading.close()  # the last epoch's reader, and the last batch it held, let go: one epoch's at a time
                taken = reading.enter_context(contextlib.closing(iter(Batches(train, rows, cfg.data_threads))))
                for b in range(skip, len(bounds)):
                    lo, hi = bounds[b]
                    asked_at = time.perf_counter()
                    batch = next(taken)
                    if streamed:
                        waited = time.perf_counter() - asked_at
                        self.waited, epoch_waited = self.waited + waited, epoch_waited + waited
                    if shared:
                        batch = distributed.Share(batch, hi - lo)
                    else:
                        batch = self.augment(batch, epoch, b)
                    lr = schedule(step)
                    try:
                        values = engine.train_step(
                            params, opt_state, batch, lr, step + 1, np.array([cfg.seed, step + 1], np.int32)
                        )
                    except NonFinite as e:  # check_numerics: the step's parameters were not updated
                        self.write_history(history)
                        e.message = f"{e.message} {self.stopped(step + 1, epoch, b)}."
                        raise
                    step += 1
                    if not math.isfinite(values["loss"]):
                        self.write_history(history)
                        raise DlcError(
                            f"the loss became {values['loss']} {self.stopped(step, epoch, b)}"
                            ". Try a lower learning rate or gradient clipping."
                        )
                    seen += hi - lo
                    for name, v in values.items():
                        totals[name] = totals.get(name, 0.0) + v * (hi - lo)
                    asked = events.call(
                        "on_batch_end",
                        step,
                        Step(
                            step=step,
                            steps=last_step,
                            epoch=epoch,
                            epochs=epochs,
                            first=skip,
                            done=b + 1 - skip,
                            total=epoch_steps,
                            per_epoch=len(bounds),
                            totals=totals,
                            seen=seen,
                            fresh=seen - seen_before,
                            started=started,
                            lr=lr,
                            waited=epoch_waited if streamed else None,
                        ),
                    )
                    if interrupted.requested or asked:
                        checkpoints.inside(epoch, b + 1, {"totals": totals, "seen": seen})
                        self.display.close()
                        self.log(
                            f"{asked or 'interrupted'}: saved {self.out / 'last.npz'} (epoch {epoch + 1}, "
                            f"batch {b + 1}); continue with --resume"
                        )
                        self.write_history(history)
                        end["stopped"] = asked.reason if asked else "interrupted"
                        return Result(history, params, self.out, {}, end["stopped"], checkpoints.written)
                    if period is not None and (step % period == 0 or step == last_step):
                        # a row by step: the place in the epoch is what its checkpoint records
                        whole = b + 1 == len(bounds)
                        checkpoints.place = (epoch + 1, 0) if whole else (epoch, b + 1)
                        asked = self.end_row(
                            events,
                            engine,
                            params,
                            val,
                            history,
                            {"step": step, "epoch": epoch + 1},
                            schedule(step - 1),
                            row_started,
                            totals,
                            seen,
                            epoch,
                        )
                        totals, seen, row_started = {}, 0, time.perf_counter()
                        if asked or step == last_step:
                            end["epochs"] = epoch + whole
                            if asked:
                                end["stopped"] = asked.reason
                                self.say(str(asked))
                            break
                else:
                    skip = 0
                    if period is None:
                        asked = self.end_row(
                            events,
                            engine,
                            params,
                            val,
                            history,
                            {"epoch": epoch + 1},
                            schedule(step - 1),
                            started,
                            totals,
                            seen,
                            epoch,
                        )
                        totals, seen = {}, 0
                    epoch += 1
                    end["epochs"] = epoch
                    if not asked:
                        continue
                    end["stopped"] = asked.reason
                    self.say(str(asked))
                break
        # the best epoch of this run or of the one resumed; none yet after 0 epochs, whatever the folder holds
        if stop.restore_best and stop.best is not None and (self.out / "best.npz").exists() and self.writes:
            params = checkpoint.load(self.out / "best.npz")[0]
        if self.world is not None:  # rank 0 read best.npz
            self.world.broadcast(params, "the end")
        self.write_history(history)
        if self.world is not None:
            self.world.await_writer()
        result = mean_metrics(engine, params, test, cfg.batch, cfg.data_threads) if test is not None else {}
        if cfg.quantize is not None and self.writes and checkpoints.written:
            self.write_int8(params, train)
            checkpoints.written.append("int8.npz")
        return Result(history, params, self.out, result, end["stopped"], checkpoints.written)

    def write_int8(self, params: dict, train: dict):
        """`quantize = int8(...)`: the run's final weights quantized, calibrated on its training
        data, as the quantized checkpoint DIR/int8.npz (docs/quantization.md)."""
        options = quantize_options(self.cfg.quantize, self.cfg.span("quantize"))
        train = first_rows(train, options["count"] * self.cfg.batch)  # what calibration reads, decoded
        quantization, settings = calibrate_arrays(
            self.eval_model.graph, params, train, batch=self.cfg.batch, data=to_text(self.cfg.data), **options
        )
        meta = self.checkpoint_meta() | {"quantization": quantized.describe(quantization, settings, self.eval_model)}
        checkpoint.save(self.out / "int8.npz", params, {}, meta, quantized.arrays(quantization))

    def end_row(
        self,
        events: Callbacks,
        engine,
        params: dict,
        val,
        history: list,
        where: dict,
        lr: float,
        started: float,
        totals: dict,
        seen: int,
        epoch: int,
    ):
        """A row of the history (an epoch's, or the last `eval_every` steps' in a run by steps):
        the mean loss and metrics of its steps, validation, then the callbacks' on_epoch_end (the
        checkpoints written last); what asked to stop, if any."""
        elapsed = time.perf_counter() - started
        row = {**where, "lr": lr, "time": round(elapsed, 3)}
        if self.streamed:
            row["data_wait"] = round(self.waited / elapsed, 3) if elapsed > 0 else 0.0
        self.waited = 0.0
        row.update({k: v / max(seen, 1) for k, v in totals.items() if k != "grad_norm"})
        if val is not None:
            row.update(
                {
                    f"val_{k}": v
                    for k, v in mean_metrics(engine, params, val, self.cfg.batch, self.cfg.data_threads).items()
                }
            )
        history.append(row)
        asked = events.call("on_epoch_end", epoch, row)
        self.warn_overflow(params)
        self.write_history(history, final=False)
        if self.world is not None:
            self.world.await_writer()
        return asked

    def stopped(self, step: int, epoch: int, b: int) -> str:
        """Where a run that went non-finite stopped, and the checkpoint it leaves."""
        last = self.out / "last.npz"
        return (
            f"at step {step} (epoch {epoch + 1}, batch {b + 1}); training stopped. The last good checkpoint is "
            f"{last}" + ("" if last.exists() else " (none was written yet)")
        )

    def batch_rows(self, bounds: list, skip: int, order: np.ndarray, epoch: int, step: int, windows: int, shared: bool):
        """(rows, epoch) of each batch of an epoch from batch `skip`, the run at `step` before it:
        random windows of a text of `windows` positions (text(windows = "random")), else the
        shuffled `order`'s; with `shared`, this rank's share of them."""
        for b in range(skip, len(bounds)):
            lo, hi = bounds[b]
            rows = windows_drawn(windows, hi - lo, self.cfg.seed, step + 1 + b - skip) if windows else order[lo:hi]
            if shared:
                start, stop = self.world.shard(hi - lo)
                rows = rows[start:stop]
            yield rows, epoch

    def photo_transform(self, train: dict) -> dict:
        """The training data with `augment = photos(...)`'s transforms on its first input, a
        streamed column of photos (runtime/data/photos.py), which applies them as it decodes."""
        options = self.augment_options
        if options is None or options.get("form") != "photos":
            return train
        first = self.train_model.inputs[0].name
        if not isinstance(train[first], Streamed):
            raise DlcError(
                f"augment = photos(...) transforms photos as they are decoded, but the data for {first} "
                "is arrays: train on images(\"folder/\", size = N), or use augment = images(...)",
                self.cfg.span("augment"),
            )
        return {**train, first: train[first].augmented(options, self.cfg.seed, self.cfg.span("augment"))}

    def augment(self, batch: dict, epoch: int, b: int) -> dict:
        if self.augment_options is None or self.augment_options.get("form") == "photos":
            return batch
        first = self.train_model.inputs[0].name
        rng = np.random.default_rng([self.cfg.seed, epoch, b, 7])
        return {**batch, first: augment(batch[first], rng, **self.augment_options)}

    # -- reporting and files --
    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and history: rank 0 of a distributed run does."""
        return self.world is None or self.world.rank == 0

    def warn_overflow(self, params: dict):
        """Once a run, when parameters have grown past what a float32 product of two of them
        holds: the run has diverged, and the engines' results part from there (docs/training.md)."""
        if self.warned_overflow:  # once a run: no scan of the parameters after that
            return
        big = beyond_products(params)
        if not big:
            return
        self.warned_overflow = True
        named = ", ".join(f"{name} ({value:.2g})" for name, value in sorted(big.items(), key=lambda kv: -kv[1])[:4])
        more = f" and {len(big) - 4} more" if len(big) > 4 else ""
        self.log(
            DlcError(
                f"the run has diverged: parameters {named}{more} are beyond {PRODUCT_LIMIT:.2g}, where a product of two "
                "such values overflows float32. From here the engines differ: a sum of products that overflows both ways "
                "is NaN on the reference engine and ±inf on the native one, whose fused multiply-adds do not round a "
                "product before adding it. Lower the learning rate, or clip the gradients (clip = 1.0)",
                self.cfg.span("optimizer"),
            ).render("warning")
        )

    def warn_past_schedule(self, schedule, step: int, last_step: int):
        """A run resumed at or past the step where its schedule ends trains every step left at
        the schedule's final rate (min_lr: often 0, a run that changes nothing)."""
        end = schedule.end()
        if end is None or step < end[0] or step >= last_step:
            return
        at, final = end
        self.log(
            DlcError(
                f"resuming at step {step}, where the {schedule.name} schedule has ended (at step {at}): "
                f"the {last_step - step} step(s) left all train at its final rate {final:g}; a longer "
                "decay_steps decays over them",
                self.cfg.span("schedule"),
            ).render("warning")
        )

    def say(self, message: str):
        """What the run is doing (resuming, init_from, early stop): not with progress "none"."""
        if not self.quiet:
            self.log(message)

    @contextlib.contextmanager
    def reporting(self, events: Callbacks, begin: dict):
        """The callbacks' on_train_begin, and their on_train_end however the loop ends (the end,
        a callback, Ctrl-C, a NaN loss, an error), told how in the `end` logs the loop fills."""
        end = {"stopped": "done", "epochs": begin["initial_epoch"]}
        events.call("on_train_begin", begin)
        try:
            yield end
        except BaseException:
            end["stopped"] = "error"
            raise
        finally:
            events.call("on_train_end", end)

    def write_history(self, history: list, final: bool = True):
        """history.json, history.csv and history.png when the run stops (`final`: at its end, on
        Ctrl-C, on a NaN loss); the first two after a row too, unless writing them took more
        than HISTORY_SHARE of the time since they were last written: the files grow with the
        run, and rewriting them at every row of a run of many short epochs would cost more than
        its training (quadratic in its rows)."""
        if not (history and self.writes):
            return
        started = time.perf_counter()
        if not final and started - self.history_written < self.history_cost / HISTORY_SHARE:
            return
        save_history(self.out, history, self.log, plot=final)
        self.history_written = time.perf_counter()
        self.history_cost = self.history_written - started


def _jsonable(v):
    return json.loads(json.dumps(v, default=lambda x: x.tolist() if isinstance(x, np.ndarray) else str(x)))
