"""The peak memory of training a layer call's hover shows (`dlc summary --memory`'s numbers):
the train step's graph built, optimized and lowered, 0.1–0.4 s of CPU for the largest
examples. The server computes it ahead, after an analysis is published, in a worker process
of its own, so that it runs beside the next edit's analysis instead of taking its
interpreter's time; a build that the next analysis reuses keeps it (analysis.Build)."""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from dlc.compiler.errors import DlcError


def peak_blocker(model, config) -> DlcError | None:
    """Why the peak memory of training a built model is not known, before computing it: it
    has no loss, or its train block has an error."""
    try:
        model.require_loss("it does not train")
    except DlcError as e:
        return e
    return DlcError("its train block has an error") if config is None else None


def training_peak(model, config):
    """The peak of training `model` by layer at its train block's batch (budget.training_memory's
    parts, and the sizes it is located at), or a DlcError when it cannot be (no loss, a layer
    the native backend does not lower)."""
    from dlc.runtime.engines import budget
    from dlc.runtime.optim.optimizers import make_optimizer

    blocker = peak_blocker(model, config)
    if blocker is not None:
        return blocker
    try:
        sizes = budget.memory_sizes(model, config.batch, {})
        slots = len(make_optimizer(config.optimizer).slots())
        trainable = [p.name for p in model.params if p.trainable]
        return budget.training_memory(model, trainable, slots, sizes), sizes
    except DlcError as e:
        return DlcError(e.message)  # its place is in the worker's build: the message is what a hover shows


def _peak_of(text: str, path: str, name: str):
    """In the worker: model `name` of the document built as the analysis built it, and its peak."""
    from dlc.compiler.frontend import syntax
    from dlc.compiler.frontend.loader import load_module
    from dlc.runtime.training.config import make_config

    program = load_module(syntax.parse(text, path), path)
    model = program.check(name)
    return training_peak(model, make_config(program, name, {}, require_data=False, model=model))


def _start_worker():
    """The worker's standard output is the client's channel: what it prints goes to standard
    error. It runs at the lowest priority: where no core is free, the analysis of the next
    edit goes first. The standard library and the passes are loaded before the first job."""
    os.dup2(2, 1)
    os.nice(19)
    load_compiler()


def load_compiler():
    """What computing a peak uses, loaded before the first: the standard library, the passes
    and the lowering."""
    from dlc.compiler.frontend.loader import stdlib_env
    from dlc.compiler.native import lower  # noqa: F401
    from dlc.runtime.engines import budget  # noqa: F401

    stdlib_env()


class PeakWorker:
    """One worker process computing the peaks of models, one job at a time, the latest asked
    first (the document being edited), a job a hover waits for before it (`hurry`); a job
    not started yet can be cancelled (its Future's cancel). A worker that died is started
    again for the next job."""

    def __init__(self):
        self._start()
        self.waiting: list = []  # (the job's Future, its arguments), the next to run last
        self.running = False
        self.stopped = False  # the server is exiting: no job is started, nor its end told
        self.lock = threading.Lock()

    def _start(self):
        before = multiprocessing.active_children()
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
        self.pool.submit(int)  # start the process now, not at the first job
        self.processes = [p for p in multiprocessing.active_children() if p not in before]

    def stop(self):
        """End the worker now, the job under way too (the server is exiting: not waited for,
        and its end, the pool broken by it, is no error)."""
        with self.lock:
            self.stopped = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in self.processes:
            process.terminate()

    def submit(self, text: str, path: str, name: str) -> Future:
        job = Future()
        with self.lock:
            self.waiting.append((job, (text, path, name)))
        self._next()
        return job

    def hurry(self, job: Future):
        with self.lock:
            for i, (waiting, _) in enumerate(self.waiting):
                if waiting is job:
                    self.waiting.append(self.waiting.pop(i))
                    break

    def _next(self):
        with self.lock:
            if self.running or self.stopped:
                return
            while self.waiting:
                job, args = self.waiting.pop()
                if job.set_running_or_notify_cancel():
                    break
            else:
                return
            try:
                ran = self.pool.submit(_peak_of, *args)
            except BrokenProcessPool:
                self._start()
                ran = self.pool.submit(_peak_of, *args)
            self.running = True
        ran.add_done_callback(functools.partial(self._done, job))

    def _done(self, job: Future, ran: Future):
        with self.lock:
            self.running = False
            if self.stopped:
                return
        try:
            job.set_result(ran.result())
        except Exception as e:  # the worker died, or dlc failed in it: the job's error
            job.set_exception(e)
        self._next()
