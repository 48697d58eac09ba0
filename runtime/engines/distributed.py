"""Data-parallel training over MPI: `mpirun -n K dlc train FILE` (or `srun`).

Processes, transport and launch are MPI's, through mpi4py (the `mpi` extra). Each of the
K processes (ranks) holds the whole model; the train block's `batch` is the global batch,
and each rank runs the engine's step on its slice of it (`shard`). The gradients are
averaged over the ranks, weighted by the slice sizes so that the result is the gradient of
the global batch's mean loss, and every rank applies the same update. The native engine's
step is one call that hands its gradients over in buckets as the backward pass finishes
them (`BucketAllreduce`, compiler/native/buckets.py: their allreduce overlaps the rest of
the pass) and runs the update once all are averaged; with `allreduce_bucket = 0`, and on the
reference engine, it is the split step (`gradients`, `apply_update`) with one allreduce of
the flat gradient array between its halves. The loss and metrics of the step and a stop
flag (Ctrl-C on any rank) travel in a small allreduce while the ranks wait for the
gradients', so that a step waits for the other ranks once; the batch statistics a step
updates (batchnorm's running mean and variance) are averaged after it. Rank 0's parameters
and optimizer state are broadcast before the first step, so the ranks start identical and
stay so.
With `shard_optimizer = true` (ZeRO-1) each rank's engine holds the optimizer state of
a contiguous share of the flat parameters (`optimizer_shards`) and updates that share only:
the split step's allreduce becomes a reduce-scatter of the gradients, and the parameters
are all-gathered after the update; a checkpoint gathers the state on rank 0
(`DataParallel.whole_state`), so it is one file as without sharding.
With `sync_batchnorm = true` the train model holds replica_mean (batchnorm's statistics
over the global batch): the engine calls `ReplicaMean`, an allreduce in the middle of the
step, weighted like the gradients.

Every collective is nonblocking and waited for with a deadline (`World.wait`): a rank
that died or hangs makes the others stop with an error naming the collective, then
MPI_Abort ends the whole run, instead of a silent hang; so does an error on one rank
(`failing_together`).

Without a launcher (no PMI_SIZE, OMPI_COMM_WORLD_SIZE, ... above 1), `world()` is None
and nothing here runs: mpi4py is never imported.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import zlib
from contextlib import contextmanager

import numpy as np

from dlc.compiler.errors import DlcError, optional_package
from dlc.compiler.ir.dims import numel

# the variables that give the number of processes a launcher started: MPICH's and Intel
# MPI's Hydra (PMI), Open MPI, PMIx, Slurm's srun (set for a job step only, unlike SLURM_NTASKS)
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")
TIMEOUT_S = 10.0  # waiting for the other ranks at a collective (DLC_MPI_TIMEOUT)
COMPILE_TIMEOUT_S = 900.0  # waiting at the start, while every rank compiles (or reads the cache)
WRITE_TIMEOUT_S = 600.0  # waiting while rank 0 writes checkpoints
PATIENT_S = 1.0  # poll a collective (yielding the core) for this long, then sleep between polls
ABORT_GRACE_S = 0.5  # before MPI_Abort: the launcher forwards the message first (it can be lost otherwise)
PROBE_S = 3.0  # after a timeout: how long the ranks that time out listen for each other
PROBE_TAG = 0x646C63  # the probe's point-to-point messages, apart from any collective's
NAME_BYTES = 64  # of a rank's host name, exchanged at the start
SHARD_UNIT = 16  # float32s of a cache line: the optimizer shards start on one


def launched_ranks() -> int:
    """How many processes the launcher started: 1 without one."""
    sizes = [int(v) for name in LAUNCHER_SIZES if (v := os.environ.get(name, "").strip()).isdigit()]
    return max(sizes, default=1)


def world() -> World | None:
    """The communicator of a run launched as K > 1 processes, or None (one process, as always)."""
    k = launched_ranks()
    if k <= 1:
        return None
    optional_package("mpi4py", "mpi", f"training as {k} processes (mpirun, srun)")
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:
        raise DlcError(f"mpi4py cannot load an MPI library ({e}): pip install \"dlc[mpi]\" installs MPICH's") from None
    comm = MPI.COMM_WORLD
    if comm.size != k:
        raise DlcError(
            f"the launcher started {k} processes but mpi4py's MPI sees {comm.size}: mpirun is not "
            f"the one of mpi4py's MPI ({MPI.Get_library_version().splitlines()[0].strip()}); use the "
            "mpirun (or mpiexec) installed with it"
        )
    return World(MPI, comm)


def shares(n: int, k: int, unit: int = 1) -> list:
    """(start, stop) of each of k contiguous shares of n items, whole units of `unit` items
    each (the last one may end short at n), their numbers of units differing by one at most."""
    size, extra = divmod(-(-n // unit), k)
    starts = [min(n, unit * (r * size + min(r, extra))) for r in range(k + 1)]
    return list(zip(starts, starts[1:]))


def _counts(shards: list) -> list:
    """How many values each rank's share (start, stop) holds."""
    return [hi - lo for lo, hi in shards]


def optimizer_shards(n: int, k: int) -> list:
    """The ranges of the flat trained parameters whose update and optimizer state each of k
    ranks holds with `shard_optimizer = true`: each starts on a cache line (16 floats)."""
    return shares(n, k, SHARD_UNIT)


def setting(name: str, default, kind, what: str):
    """An environment variable of a distributed run: a `kind` (float, int) of at least 0
    (above 0 for float), or `default` when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if not (value > 0 if kind is float else value >= 0):
        raise DlcError(f"{name} needs {what}, got '{text}'")
    return value


class World:
    """This process's place among the ranks, and the collectives of a data-parallel run."""

    def __init__(self, MPI, comm):
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.rank, comm.size
        self.timeout = setting("DLC_MPI_TIMEOUT", TIMEOUT_S, float, "a number of seconds above 0")
        self.check_every = setting("DLC_CHECK_RANKS", 0, int, "a whole number of steps")  # 0: never
        self.hosts: list = []  # each rank's host name, once exchanged (host_names)
        # the native threads of a rank: its share of the cores of its machine, unless set
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).size
        os.environ.setdefault("DLC_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // local)))

    # -- collectives with a deadline --
    def wait(self, request, what: str, timeout: float | None = None):
        """Wait for a nonblocking collective; past the deadline, stop the whole run."""
        start = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - start
            if waited > (timeout or self.timeout):
                self.abort(
                    f"error: no answer {self._silent(self.unanswered())}for {waited:.0f} s at {what} "
                    "(DLC_MPI_TIMEOUT sets the limit)"
                )
            if waited < PATIENT_S:  # the other ranks are near: poll again, giving the core to any that shares it
                os.sched_yield()
            else:  # one is compiling, writing a checkpoint, or gone
                time.sleep(1e-3)

    def host_names(self):
        """Every rank's host name, for the messages that name a rank (at the start, while
        every rank compiles)."""
        mine = np.zeros(NAME_BYTES, np.uint8)
        name = self.MPI.Get_processor_name().encode()[:NAME_BYTES]
        mine[: len(name)] = np.frombuffer(name, np.uint8)
        every = np.zeros((self.size, NAME_BYTES), np.uint8)
        self.wait(self.comm.Iallgather(mine, every), "the start (host names)", COMPILE_TIMEOUT_S)
        self.hosts = [bytes(row).rstrip(b"\0").decode(errors="replace") for row in every]

    def unanswered(self) -> list:
        """After a collective timed out: the ranks that do not answer within PROBE_S. Each
        rank that timed out (every live one, as they wait at the same collective) sends every
        other a message and listens for theirs; a rank whose host is unreachable, stopped or
        gone sends none."""
        others = [r for r in range(self.size) if r != self.rank]
        mine, theirs = np.array([self.rank], np.int64), {r: np.zeros(1, np.int64) for r in others}
        for r in others:
            self.comm.Isend(mine, dest=r, tag=PROBE_TAG)
        pending = {r: self.comm.Irecv(theirs[r], source=r, tag=PROBE_TAG) for r in others}
        deadline = time.monotonic() + PROBE_S
        while pending and time.monotonic() < deadline:
            pending = {r: q for r, q in pending.items() if not q.Test()}
            time.sleep(1e-3)
        return sorted(pending)

    def _silent(self, ranks: list) -> str:
        """'from rank 1 (on node2), which is unreachable, stopped or gone, ' or, when every
        rank answered the probe, 'from the other ranks (one is slow or hangs) '."""
        if not ranks:
            return "from the other ranks (they answer, but one is slow or hangs) "
        named = ", ".join(f"rank {r}" + (f" (on {self.hosts[r]})" if self.hosts else "") for r in ranks)
        verb = "which is" if len(ranks) == 1 else "which are"
        return f"from {named}, {verb} unreachable, stopped or gone, "

    def abort(self, message: str):
        """Say why on standard error, then end every rank (MPI_Abort)."""
        sys.stderr.write(f"{message}\n(rank {self.rank} of {self.size}: ending every rank)\n")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(1)
        os._exit(1)  # MPICH's MPI_Abort can return while the launcher ends the ranks: nothing more may run

    @contextmanager
    def failing_together(self):
        """An error on one rank ends every rank: the others would wait for it at their next
        collective (a rank that exits normally is not an error to the launcher)."""
        try:
            yield
        except DlcError as e:
            self.abort(e.render())
        except KeyboardInterrupt:
            self.abort("interrupted")
        except Exception as e:
            if os.environ.get("DLC_DEBUG"):
                traceback.print_exc()
            self.abort(
                f"internal error: {type(e).__name__}: {e}\n(this is a bug in dlc; set DLC_DEBUG=1 for a traceback)"
            )

    def sum(self, array: np.ndarray, what: str, timeout: float | None = None) -> np.ndarray:
        """Sum `array` over the ranks, in place."""
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what, timeout)
        return array

    def broadcast(self, arrays: dict, what: str, timeout: float | None = None):
        """Rank 0's values of `arrays` (by name) on every rank, in place."""
        for name in sorted(arrays):
            self.wait(self.comm.Ibcast(arrays[name], root=0), what, timeout)

    def broadcast_state(self, params: dict, opt_state: dict):
        """Rank 0's parameters and optimizer state on every rank: they start identical."""
        self.host_names()
        self.broadcast(params, "the start (parameters)", COMPILE_TIMEOUT_S)
        for name in sorted(opt_state):
            self.broadcast(opt_state[name], "the start (optimizer state)")

    def reduce_scatter(self, array: np.ndarray, shards: list):
        """Start summing `array` over the ranks, in place: this rank's share of the sum
        (`shards`: each rank's (start, stop)) is left at the start of `array` (MPI's
        convention), the rest of it undefined; the request to wait for."""
        return self.comm.Ireduce_scatter(self.MPI.IN_PLACE, array, _counts(shards), op=self.MPI.SUM)

    def allgather(self, array: np.ndarray, shards: list, what: str):
        """Each rank's share (`shards`) of `array` on every rank, in place."""
        self.wait(self.comm.Iallgatherv(self.MPI.IN_PLACE, self._layout(array, shards)), what)

    def gather(self, share: np.ndarray, shards: list, what: str) -> np.ndarray | None:
        """Every rank's share (`shards`) in one array on rank 0 (None on the others)."""
        whole = np.zeros(shards[-1][1], share.dtype) if self.rank == 0 else None
        spec = self._layout(whole, shards) if self.rank == 0 else None
        self.wait(self.comm.Igatherv(share, spec, root=0), what, self._writer_deadline())
        return whole

    def _layout(self, array: np.ndarray, shards: list) -> list:
        """MPI's buffer of a vector collective: `array` holding each rank's share (`shards`)."""
        return [array, _counts(shards), [lo for lo, _ in shards], self.MPI.FLOAT]

    def barrier(self, what: str, timeout: float | None = None):
        self.wait(self.comm.Ibarrier(), what, timeout)

    def await_writer(self):
        """Wait while rank 0 writes checkpoints and history: a large checkpoint may take
        longer than a step's deadline."""
        self.barrier("rank 0 writing its checkpoints", self._writer_deadline())

    def _writer_deadline(self) -> float:
        """The deadline of a collective the ranks meet at while rank 0 writes: the others wait for
        the write, but rank 0 comes last, to ranks already waiting, so a rank that stopped meanwhile
        is noticed within the usual deadline."""
        return self.timeout if self.rank == 0 else WRITE_TIMEOUT_S

    # -- data --
    def shard(self, n: int) -> tuple[int, int]:
        """(start, stop) of this rank's slice of n examples: sizes differ by one at most."""
        return shares(n, self.size)[self.rank]

    def check_batch(self, batch: int, least: int, span=None):
        """The global batch splits into equal slices of at least `least` examples (two for a
        model with batch statistics)."""
        if batch % self.size:
            raise DlcError(
                f"batch = {batch} does not divide among {self.size} processes: the global batch is "
                f"split into equal slices, so use a multiple of {self.size}",
                span,
            )
        if batch < least * self.size:
            raise DlcError(
                f"batch = {batch} leaves each of the {self.size} processes fewer than {least} examples, "
                f"which the model's batch statistics need: use batch >= {least * self.size}",
                span,
            )

    def check_data(self, name: str, n: int, span=None):
        """Each rank takes a share of every data set: none may be left without an example."""
        if n < self.size:
            raise DlcError(
                f"the {name} data has {n} example(s), fewer than the {self.size} processes that share "
                "it: use more data, a larger split, or fewer processes",
                span,
            )

    def mean_metrics(self, totals: dict, n: int) -> dict:
        """Each rank's sums of loss and metrics over its `n` examples -> the means over all."""
        names = list(totals)  # the same order on every rank: one model's outputs
        sums = self.sum(np.array([totals[k] for k in names] + [n], np.float64), "the evaluation")
        return {k: float(v / sums[-1]) for k, v in zip(names, sums)}

    def checksum(self, params: dict, step: int):
        """Stop when the ranks' parameters differ (DLC_CHECK_RANKS=N checks every N steps)."""
        mine = 0
        for name in sorted(params):
            mine = zlib.crc32(np.ascontiguousarray(params[name]).tobytes(), mine)
        sums = np.zeros(self.size, np.int64)
        sums[self.rank] = mine
        self.sum(sums, "the parameter checksum")
        if len(set(sums.tolist())) > 1:
            raise DlcError(
                f"after step {step} the ranks' parameters differ (checksums by rank: "
                f"{', '.join(f'{s:08x}' for s in sums)}): this is a bug in dlc"
            )


class ReplicaMean:
    """replica_mean (compiler/ir/primitives.py) in a step of a data-parallel run: each rank's
    values weighted by its share of the global batch, summed over the ranks, in place.
    The weights are the gradients' (DataParallel), so a last batch split unevenly is exact."""

    def __init__(self, world: World):
        self.world, self.share, self.step = world, 1.0, 0

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values *= self.share
        return self.world.sum(values, f"step {self.step} (replica_mean)")


def weighted(values: dict, share: float, asked: bool) -> np.ndarray:
    """What a rank adds to the allreduce of a step's loss and metrics: its values weighted by
    its share of the global batch (the mean loss of the global batch is the slices' means
    weighted by their sizes), then its stop flag."""
    return np.array([v * share for v in values.values()] + [float(asked)], np.float64)


class BucketAllreduce:
    """The gradients' allreduce of a step that hands them over in buckets (a native engine
    built with `buckets`, compiler/native/buckets.py): each bucket, weighted by this rank's
    share of the global batch, goes to a nonblocking allreduce as soon as the backward pass
    has finished it, and `finish`, which the step calls before its update, waits for them
    all, the step's loss and metrics (`totals`, `weighted`) reduced meanwhile: a step
    waits for the other ranks once."""

    def __init__(self, world: World):
        self.world, self.share, self.step, self.asked = world, 1.0, 0, False
        self.pending, self.totals = [], np.zeros(0)

    def start(self, gradients: np.ndarray):
        gradients *= self.share
        self.pending.append(self.world.comm.Iallreduce(self.world.MPI.IN_PLACE, gradients, op=self.world.MPI.SUM))
        for request in self.pending:  # MPI moves the earlier buckets' data on only when called
            request.Test()

    def finish(self, values: dict):
        self.totals = weighted(values, self.share, self.asked)
        self.pending.append(self.world.comm.Iallreduce(self.world.MPI.IN_PLACE, self.totals, op=self.world.MPI.SUM))
        for request in self.pending:
            self.world.wait(request, f"step {self.step} (gradients)")
        self.pending = []


class Share(dict):
    """This rank's slice (World.shard) of a global batch of `total` examples, read alone: the
    trainer decodes only its rank's rows of streamed data (runtime/data/prefetch.py)."""

    def __init__(self, part: dict, total: int):
        super().__init__(part)
        self.total = total


class DataParallel:
    """An `Engine` (runtime/engines/protocol.py) for the trainer whose steps run on this rank's
    slice of the global batch, the gradients averaged over the ranks: while the native
    engine's step runs, bucket by bucket (`BucketAllreduce`), when the engine was built with
    buckets; else between the halves of its split step. `interrupted` (the trainer's Ctrl-C
    flag) is agreed on: true on every rank after the step in which any rank had it.
    Evaluation and prediction are the engine's own: mean_metrics shards the data set (`world`)."""

    def __init__(self, engine, world: World, interrupted, statistics: list):
        self.engine, self.world, self.interrupted, self.statistics = engine, world, interrupted, statistics
        self.steps = 0
        self.replicas = engine.replicas = ReplicaMean(world)  # used by a model built with sync_batchnorm
        self.buckets = None
        if getattr(engine, "bucket_ends", None):  # a native engine whose step hands over its gradients
            self.buckets = engine.allreduce = BucketAllreduce(world)
        # shard_optimizer: each rank updates its share of the parameters (the engine's `shard`)
        self.shards = engine.shards if getattr(engine, "sharded", False) else None
        getattr(engine, "eval_exe", None)  # compiled now, not at the first evaluation (a collective)
        world.barrier("the start (compiling)", COMPILE_TIMEOUT_S)

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def trainable(self) -> list:
        return self.engine.trainable

    @property
    def optimizer(self):
        return self.engine.optimizer

    def train_step(self, params: dict, opt_state: dict, batch: dict, lr: float, step: int, key: np.ndarray) -> dict:
        if self.buckets is None:
            values, grads = self.gradients(params, opt_state, batch, key)
            self.apply_update(params, opt_state, grads, lr, step)
            return values
        part, weight, step, key = self._slice(batch, key)
        b = self.buckets
        b.share, b.step, b.asked = float(weight), step, self.interrupted.asked
        values = self.engine.train_step(params, opt_state, part, lr, step, key)
        values = self._agreed(values, b.totals, weight, step, params)
        self._updated(params, step)
        return values

    def gradients(self, params: dict, opt_state: dict, batch: dict, key: np.ndarray) -> tuple[dict, np.ndarray]:
        """The global batch's loss, metrics and gradients on every rank, from this rank's slice;
        its batch statistics averaged (docs/distributed.md)."""
        w = self.world
        part, weight, step, key = self._slice(batch, key)
        values, grads = self.engine.gradients(params, opt_state, part, key)
        grads *= weight
        if self.shards:  # only this rank's share is summed: its update reads no other, from the start of grads
            request = w.reduce_scatter(grads[: self.engine.n_trained], self.shards)
        else:
            request = w.comm.Iallreduce(w.MPI.IN_PLACE, grads, op=w.MPI.SUM)
        totals = w.sum(weighted(values, float(weight), self.interrupted.asked), f"step {step} (loss)")
        w.wait(request, f"step {step} (gradients)")
        return self._agreed(values, totals, weight, step, params), grads

    def _slice(self, batch: dict, key: np.ndarray) -> tuple:
        """(this rank's slice of the batch, its share of the batch, the step, its random key);
        a `Share` is that slice already."""
        w = self.world
        n = batch.total if isinstance(batch, Share) else len(next(iter(batch.values())))
        lo, hi = w.shard(n)
        weight = np.float32((hi - lo) / n)
        seed, step = (int(k) for k in np.asarray(key).ravel())  # the key is (seed, step)
        self.replicas.share, self.replicas.step = float(weight), step
        # dropout draws from (seed, step * K + rank): its own stream per rank and step
        key = np.array([seed, step * w.size + w.rank], np.int32)
        part = dict(batch) if isinstance(batch, Share) else {k: v[lo:hi] for k, v in batch.items()}
        return part, weight, step, key

    def _agreed(self, values: dict, totals: np.ndarray, weight: np.float32, step: int, params: dict) -> dict:
        """The global batch's loss and metrics (`totals`: `weighted` summed over the ranks),
        whether any rank was interrupted, and the batch statistics averaged."""
        for name in self.statistics:  # batch statistics: each rank's, averaged
            stat = params[name]
            stat *= weight
            self.world.sum(stat, f"step {step} (batch statistics)")
        self.interrupted.agreed = bool(totals[-1] > 0)  # the same on every rank, whenever Ctrl-C came
        return dict(zip(values, totals[:-1].tolist()))

    def apply_update(self, params: dict, opt_state: dict, grads: np.ndarray, lr: float, step: int):
        """The engine's update from the averaged gradients: the same on every rank (DLC_CHECK_RANKS
        checks it)."""
        self.engine.apply_update(params, opt_state, grads, lr, step)
        if self.shards:  # each rank updated its share: every rank gets every share
            self.world.allgather(self.engine.flat[: self.engine.n_trained], self.shards, f"step {step} (parameters)")
        self._updated(params, step)

    def whole_state(self) -> dict:
        """The optimizer state of every trained parameter, {name: {slot: array}}, on rank 0
        of a run with `shard_optimizer = true`, each rank's share gathered for a checkpoint
        ({} on the other ranks; every rank calls it)."""
        e, whole = self.engine, {}
        for slot, share in e.state.items():  # the optimizer's slots, in the same order on every rank
            flat = self.world.gather(share[: e.shard[1] - e.shard[0]], self.shards, f"a checkpoint ({slot})")
            if flat is None:
                continue
            for name in e.trainable:
                shape = e.params_info[name].type.shape
                whole.setdefault(name, {})[slot] = flat[e.offsets[name] :][: int(numel(shape))].reshape(shape)
        return whole

    def _updated(self, params: dict, step: int):
        self.steps += 1
        if self.world.check_every and self.steps % self.world.check_every == 0:
            self.world.checksum(params, step)

    def evaluate(self, params: dict, batch: dict) -> dict:
        return self.engine.evaluate(params, batch)

    def predict(self, params: dict, batch: dict) -> dict:
        return self.engine.predict(params, batch)
