"""dlc's thread pool, in LLVM IR over libc's pthreads: the JIT compiles it once per process
(runtime/engines/cache.py `pool_symbols`) and `dlc build` links it into every library, so
that native code needs no OpenMP run-time.

    void dlc_pool_run(void (*task)(i8 *data, i64 chunk, i64 chunks, i64 slot),
                      i8 *data, i64 nthreads, i64 per_thread)
    void dlc_pool_stop(void)

`dlc_pool_run` splits a job into `chunks` = nthreads x per_thread chunks (per_thread 1 to
64, chunks at most MOST_CHUNKS) and returns when
`task` has run once for every chunk. The calling thread and nthreads - 1 workers take the
chunks from one atomic counter, so an idle thread takes the chunks of a stalled one; a
chunk says what to compute (a task maps it to a slice of its work), never the order of a
sum, so that the result is the same for any thread count. `slot` is the running thread's
number in the pool (the caller's is 0, worker i's is i + 1): per-thread scratch space (the
GEMM's pack buffers) is indexed by it. The run is serial, one chunk on the calling thread,
for nthreads <= 1, inside a task (a nested run: `slot` is then the running thread's), or
while another host thread holds the pool.

Workers are started when a run first needs them (at most MOST_WORKERS) and kept. Between
jobs a worker spins, checking for a new one, DLC_SPIN times (read when the pool starts;
SPIN_DEFAULT) and yielding its CPU every YIELD_EVERY checks, then sleeps on a condition
variable until the next job. `dlc_pool_stop` ends and joins the workers (at the exit of a
Python process; when a library is unloaded), and a later run starts them again. A child of
fork() sets the pool up anew at its first parallel run (the pool keeps the id of the process
that set it up), and starts workers of its own.

The job is published as one 64-bit word, generation << 32 | chunks << 16 | next chunk: a
thread claims chunk c < chunks of generation g by compare-and-swap from (g, chunks, c) to
(g, chunks, c + 1), after reading the job's other fields; the swap succeeds only while the
job is unfinished, so the fields it read were that job's and its data still lives.
"""

from __future__ import annotations

import contextlib

from llvmlite import ir

from dlc.compiler.native import MOST_THREADS
from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import i8, i32, i64

RUN, STOP = "dlc_pool_run", "dlc_pool_stop"
MOST_CHUNKS = 0xFFFF  # a job's chunks and its next one share the job's word
MOST_WORKERS = MOST_THREADS - 1  # the caller is the other thread
SPIN_DEFAULT = 1_000_000  # checks before a worker sleeps: a few ms, awake from one training step to the next
YIELD_EVERY = 256

vptr = i8.as_pointer()
TASK = ir.FunctionType(ir.VoidType(), [vptr, i64, i64, i64])
RUN_TYPE = ir.FunctionType(ir.VoidType(), [TASK.as_pointer(), vptr, i64, i64])
STOP_TYPE = ir.FunctionType(ir.VoidType(), [])
# pthread_mutex_t and pthread_cond_t are opaque and at most 64 bytes on Linux and macOS
OPAQUE = ir.ArrayType(i64, 16)


def declare_run(module: ir.Module) -> ir.Function:
    """`dlc_pool_run` in a module that hands work to the pool."""
    return declare(module, RUN, RUN_TYPE.return_type, list(RUN_TYPE.args))


def pool_module() -> ir.Module:
    """The module that defines `dlc_pool_run` and `dlc_pool_stop`."""
    m = ir.Module(name="dlc_pool")
    _Pool(m)
    return m


def _c(v, t=i64):
    return ir.Constant(t, v)


class _Pool:
    def __init__(self, m: ir.Module):
        self.m = m
        g = self.glob
        self.state = g("state", i32)  # 0: not set up, 1: being set up, 2: ready
        self.word = g("word", i64)  # generation << 32 | chunks << 16 | next chunk
        self.task, self.data = g("task", TASK.as_pointer()), g("data", vptr)
        self.team = g("team", i64)
        self.done = g("done", i64)  # chunks of the job finished
        self.busy = g("busy", i32)  # a host thread's run holds the pool
        self.sleepers, self.stopping = g("sleepers", i64), g("stopping", i32)
        self.workers = g("workers", i64)  # started (changed only by the holder of busy)
        self.threads = g("threads", ir.ArrayType(i64, MOST_WORKERS))  # pthread_t: pointer-sized
        self.mutex, self.cond = g("mutex", OPAQUE), g("cond", OPAQUE)
        # pthread_key_t is unsigned int on Linux and unsigned long on macOS: kept in 64 bits
        # (zeroed) and passed as one; both ABIs read a 32-bit argument from the register's low half
        self.key = g("key", i64)
        self.spin = g("spin", i64)
        self.pid = g("pid", i32)  # the process that set the pool up (pid_t)
        self.libc()
        self.setup = self.setup_fn()
        self.claim = self.claim_fn()
        self.worker = self.worker_fn()
        self.run_fn()
        self.stop_fn()

    def glob(self, name, ty):
        v = ir.GlobalVariable(self.m, ty, f"dlc_pool.{name}")
        v.linkage = "internal"
        v.initializer = ir.Constant(ty, None)
        v.align = 16 if isinstance(ty, ir.ArrayType) else 8
        return v

    def libc(self):
        d = lambda name, ret, *args: declare(self.m, name, ret, list(args))
        self.create = d("pthread_create", i32, i64.as_pointer(), vptr, ir.FunctionType(vptr, [vptr]).as_pointer(), vptr)
        self.join = d("pthread_join", i32, i64, vptr.as_pointer())
        self.lock, self.unlock = d("pthread_mutex_lock", i32, vptr), d("pthread_mutex_unlock", i32, vptr)
        self.mutex_init = d("pthread_mutex_init", i32, vptr, vptr)
        self.cond_init = d("pthread_cond_init", i32, vptr, vptr)
        self.wait = d("pthread_cond_wait", i32, vptr, vptr)
        self.broadcast = d("pthread_cond_broadcast", i32, vptr)
        self.key_create = d("pthread_key_create", i32, i64.as_pointer(), vptr)
        self.get = d("pthread_getspecific", vptr, i64)
        self.set = d("pthread_setspecific", i32, i64, vptr)
        self.yield_ = d("sched_yield", i32)
        self.getpid = d("getpid", i32)
        self.getenv = d("getenv", vptr, vptr)
        self.strtoll = d("strtoll", i64, vptr, vptr.as_pointer(), i32)

    # -- helpers ------------------------------------------------------------------------
    def fn(self, name, ty, linkage="internal"):
        f = ir.Function(self.m, ty, name)
        if linkage:
            f.linkage = linkage
        f.attributes.add("nounwind")
        return f, ir.IRBuilder(f.append_basic_block("entry"))

    @staticmethod
    def load(b, p, order="seq_cst"):
        return b.load_atomic(p, order, 4 if p.type.pointee == i32 else 8)

    @staticmethod
    def store(b, v, p, order="seq_cst"):
        b.store_atomic(v, p, order, 4 if p.type.pointee == i32 else 8)

    def ptr(self, b, g):
        return b.bitcast(g, vptr)

    @contextlib.contextmanager
    def loop(self, b, name):
        """A loop whose body (the block) branches to `again` or `out`: yields (again, out)."""
        f = b.function
        again, out = f.append_basic_block(name), f.append_basic_block(name + ".out")
        b.branch(again)
        b.position_at_end(again)
        yield again, out
        b.position_at_end(out)

    def if_(self, b, cond, name):
        """Continue in a new block when `cond`; returns the block taken otherwise."""
        f = b.function
        yes, no = f.append_basic_block(name), f.append_basic_block(name + ".not")
        b.cbranch(cond, yes, no)
        b.position_at_end(yes)
        return no

    def pause(self, b, count):
        """Every YIELD_EVERY-th spin (count, i64) gives the CPU to another runnable thread."""
        no = self.if_(b, b.icmp_unsigned("==", b.urem(count, _c(YIELD_EVERY)), _c(YIELD_EVERY - 1)), "yield")
        b.call(self.yield_, [])
        b.branch(no)
        b.position_at_end(no)

    def generation(self, b, w):
        return b.lshr(w, _c(32))

    # -- set-up, once per process (the JIT) or per library ----------------------------------
    def setup_fn(self):
        """Set the pool up in this process: the first time, and again in a child of fork(),
        whose copy of the pool names workers that live only in its parent (its mutex perhaps
        held by one of them, its condition variable waited on by them): the child starts with
        no workers and starts its own, as a fresh process would."""
        f, b = self.fn("dlc_pool.setup", STOP_TYPE)
        state = self.load(b, self.state, "acquire")
        here = b.call(self.getpid, [])
        ours = b.icmp_signed("==", self.load(b, self.pid, "acquire"), here)
        no = self.if_(b, b.and_(b.icmp_signed("==", state, _c(2, i32)), ours), "ready")
        b.ret_void()
        b.position_at_end(no)
        # 0 (never set up) or 2 (set up by the parent) to 1: this thread sets it up
        unset = b.icmp_signed("!=", state, _c(1, i32))
        other = self.if_(
            b,
            b.and_(unset, b.extract_value(b.cmpxchg(self.state, state, _c(1, i32), "acq_rel", "acquire"), 1)),
            "first",
        )
        forked = self.if_(b, b.icmp_signed("==", state, _c(2, i32)), "forked")
        for g in (self.workers, self.sleepers, self.done):
            b.store(_c(0), g)
        for g in (self.busy, self.stopping):
            b.store(_c(0, i32), g)
        b.branch(forked)
        b.position_at_end(forked)
        b.call(self.mutex_init, [self.ptr(b, self.mutex), ir.Constant(vptr, None)])
        b.call(self.cond_init, [self.ptr(b, self.cond), ir.Constant(vptr, None)])
        fresh = self.if_(b, b.icmp_signed("==", state, _c(0, i32)), "fresh")  # the key is inherited
        b.call(self.key_create, [self.key, ir.Constant(vptr, None)])
        b.branch(fresh)
        b.position_at_end(fresh)
        env = b.call(self.getenv, [self.cstring(b, "DLC_SPIN")])
        entry = b.block
        given_bb, chosen = b.function.append_basic_block("spin.env"), b.function.append_basic_block("spin.chosen")
        b.cbranch(b.icmp_unsigned("==", env, ir.Constant(vptr, None)), chosen, given_bb)
        b.position_at_end(given_bb)
        given = b.call(self.strtoll, [env, ir.Constant(vptr.as_pointer(), None), _c(10, i32)])
        given = b.select(b.icmp_signed("<", given, _c(0)), _c(0), given)
        b.branch(chosen)
        b.position_at_end(chosen)
        spin = b.phi(i64)
        spin.add_incoming(_c(SPIN_DEFAULT), entry)
        spin.add_incoming(given, given_bb)
        b.store(spin, self.spin)
        self.store(b, here, self.pid, "release")
        self.store(b, _c(2, i32), self.state, "release")
        b.ret_void()
        b.position_at_end(other)  # another thread sets it up: wait for it
        with self.loop(b, "wait") as (again, out):
            ready = b.icmp_signed("==", self.load(b, self.state, "acquire"), _c(2, i32))
            ours = b.icmp_signed("==", self.load(b, self.pid, "acquire"), here)
            b.call(self.yield_, [])
            b.cbranch(b.and_(ready, ours), out, again)
        b.ret_void()
        return f

    def cstring(self, b, text):
        data = bytearray(text.encode() + b"\0")
        g = ir.GlobalVariable(self.m, ir.ArrayType(i8, len(data)), f"dlc_pool.s.{text}")
        g.linkage, g.global_constant = "internal", True
        g.initializer = ir.Constant(g.type.pointee, data)
        return b.bitcast(g, vptr)

    # -- taking chunks ------------------------------------------------------------------
    def claim_fn(self):
        """claim(gen, slot): run chunks of job `gen` until none is left (or a newer job is up)."""
        f, b = self.fn("dlc_pool.claim", ir.FunctionType(ir.VoidType(), [i64, i64]))
        gen, slot = f.args
        with self.loop(b, "claim") as (again, out):
            w = self.load(b, self.word, "acquire")
            same = b.icmp_unsigned("==", self.generation(b, w), gen)
            chunks = b.and_(b.lshr(w, _c(16)), _c(MOST_CHUNKS))
            chunk = b.and_(w, _c(MOST_CHUNKS))
            task = self.load(b, self.task, "monotonic")
            data = self.load(b, self.data, "monotonic")
            team = self.load(b, self.team, "monotonic")
            mine = b.and_(b.and_(same, b.icmp_signed("<", chunk, chunks)), b.icmp_signed("<", slot, team))
            no = self.if_(b, mine, "mine")
            won = b.extract_value(b.cmpxchg(self.word, w, b.add(w, _c(1)), "acq_rel", "monotonic"), 1)
            lost = self.if_(b, won, "won")
            b.call(task, [data, chunk, chunks, slot])
            b.atomic_rmw("add", self.done, _c(1), "release")
            b.branch(again)
            b.position_at_end(lost)
            b.branch(again)
            b.position_at_end(no)
            b.branch(out)
        b.ret_void()
        return f

    # -- a worker -----------------------------------------------------------------------
    def worker_fn(self):
        """worker(gen << 32 | slot): takes the jobs after generation `gen`, until stopped."""
        f, b = self.fn("dlc_pool.worker", ir.FunctionType(vptr, [vptr]))
        arg = b.ptrtoint(f.args[0], i64)
        slot = b.and_(arg, _c(0xFFFFFFFF))
        b.call(self.set, [b.load(self.key), b.inttoptr(b.add(slot, _c(1)), vptr)])
        first = self.generation(b, arg)
        entry = b.block
        job = f.append_basic_block("job")
        b.branch(job)
        b.position_at_end(job)
        seen = b.phi(i64)  # the last generation taken
        seen.add_incoming(first, entry)
        spin = b.load(self.spin)
        # spin: check for a new job `spin` times
        count_bb = f.append_basic_block("spin")
        b.branch(count_bb)
        b.position_at_end(count_bb)
        count = b.phi(i64)
        count.add_incoming(_c(0), job)
        new = b.icmp_unsigned("!=", self.generation(b, self.load(b, self.word)), seen)
        stop = b.icmp_signed("!=", self.load(b, self.stopping), _c(0, i32))
        woke = f.append_basic_block("woke")
        more = f.append_basic_block("spin.more")
        sleep = f.append_basic_block("sleep")
        b.cbranch(b.or_(new, stop), woke, more)
        b.position_at_end(more)
        self.pause(b, count)
        nxt = b.add(count, _c(1))
        count.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_unsigned("<", nxt, spin), count_bb, sleep)
        # sleep until a run or a stop broadcasts (both publish before they look at `sleepers`)
        b.position_at_end(sleep)
        mutex, cond = self.ptr(b, self.mutex), self.ptr(b, self.cond)
        b.call(self.lock, [mutex])
        b.atomic_rmw("add", self.sleepers, _c(1), "seq_cst")
        with self.loop(b, "asleep") as (again, out):
            new = b.icmp_unsigned("!=", self.generation(b, self.load(b, self.word)), seen)
            stop = b.icmp_signed("!=", self.load(b, self.stopping), _c(0, i32))
            no = self.if_(b, b.not_(b.or_(new, stop)), "wait")
            b.call(self.wait, [cond, mutex])
            b.branch(again)
            b.position_at_end(no)
            b.branch(out)
        b.atomic_rmw("sub", self.sleepers, _c(1), "seq_cst")
        b.call(self.unlock, [mutex])
        b.branch(woke)
        b.position_at_end(woke)
        stop = b.icmp_signed("!=", self.load(b, self.stopping), _c(0, i32))
        stopped = self.if_(b, b.not_(stop), "go")
        gen = self.generation(b, self.load(b, self.word, "acquire"))
        b.call(self.claim, [gen, slot])
        seen.add_incoming(gen, b.block)
        b.branch(job)
        b.position_at_end(stopped)
        b.ret(ir.Constant(vptr, None))
        return f

    # -- the entry points -----------------------------------------------------------------
    def serial(self, b, task, data, slot):
        b.call(task, [data, _c(0), _c(1), slot])
        b.ret_void()

    def run_fn(self):
        f, b = self.fn(RUN, RUN_TYPE, linkage="")
        task, data, nthreads, per_thread = f.args
        for a, n in zip(f.args, ("task", "data", "nthreads", "per_thread")):
            a.name = n
        # a run inside a task (the key says which slot runs it) or on one thread: serial
        set_up = b.icmp_signed("==", self.load(b, self.state, "acquire"), _c(2, i32))
        entry = b.block
        look = f.append_basic_block("look")
        seen = f.append_basic_block("seen")
        b.cbranch(set_up, look, seen)
        b.position_at_end(look)
        mark = b.ptrtoint(b.call(self.get, [b.load(self.key)]), i64)
        b.branch(seen)
        b.position_at_end(seen)
        own = b.phi(i64)
        own.add_incoming(_c(0), entry)
        own.add_incoming(mark, look)
        alone = b.or_(b.icmp_signed("<=", nthreads, _c(1)), b.icmp_unsigned("!=", own, _c(0)))
        alone_bb = self.if_(b, b.not_(alone), "team")
        b.call(self.setup, [])
        held = b.extract_value(b.cmpxchg(self.busy, _c(0, i32), _c(1, i32), "acquire", "monotonic"), 1)
        taken = self.if_(b, b.not_(held), "held")
        self.serial(b, task, data, _c(0))  # another host thread's job is on the pool
        b.position_at_end(taken)
        # start the workers this run needs and the pool has not
        want = b.sub(
            b.select(b.icmp_signed("<", nthreads, _c(MOST_WORKERS + 1)), nthreads, _c(MOST_WORKERS + 1)), _c(1)
        )
        gen = self.generation(b, b.load(self.word))
        with self.loop(b, "start") as (again, out):
            have = b.load(self.workers)
            enough = self.if_(b, b.icmp_signed("<", have, want), "more")
            slot = b.add(have, _c(1))
            arg = b.inttoptr(b.or_(b.shl(gen, _c(32)), slot), vptr)
            at = b.gep(self.threads, [_c(0), have])
            status = b.call(self.create, [at, ir.Constant(vptr, None), self.worker, arg])
            failed = self.if_(b, b.icmp_signed("==", status, _c(0, i32)), "started")
            b.store(slot, self.workers)
            b.branch(again)
            for blk in (enough, failed):  # fewer workers when the system has no more threads
                b.position_at_end(blk)
                b.branch(out)
        workers = b.load(self.workers)
        team = b.add(b.select(b.icmp_signed("<", workers, want), workers, want), _c(1))
        per_thread = b.select(
            b.icmp_signed("<", per_thread, _c(1)),
            _c(1),
            b.select(b.icmp_signed(">", per_thread, _c(64)), _c(64), per_thread),
        )
        chunks = b.mul(team, per_thread)
        chunks = b.select(b.icmp_signed(">", chunks, _c(MOST_CHUNKS)), _c(MOST_CHUNKS), chunks)
        self.store(b, task, self.task, "monotonic")
        self.store(b, data, self.data, "monotonic")
        self.store(b, team, self.team, "monotonic")
        self.store(b, _c(0), self.done, "monotonic")
        gen = b.add(gen, _c(1))
        # publish (seq_cst, before `sleepers` is read)
        self.store(b, b.or_(b.shl(gen, _c(32)), b.shl(chunks, _c(16))), self.word)
        none = self.if_(b, b.icmp_signed(">", self.load(b, self.sleepers), _c(0)), "wake")
        mutex = self.ptr(b, self.mutex)
        b.call(self.lock, [mutex])
        b.call(self.broadcast, [self.ptr(b, self.cond)])
        b.call(self.unlock, [mutex])
        b.branch(none)
        b.position_at_end(none)
        key = b.load(self.key)
        b.call(self.set, [key, b.inttoptr(_c(1), vptr)])
        b.call(self.claim, [gen, _c(0)])
        b.call(self.set, [key, ir.Constant(vptr, None)])
        # wait for the chunks others took
        before = b.block
        with self.loop(b, "join") as (again, out):
            count = b.phi(i64)
            count.add_incoming(_c(0), before)
            finished = b.icmp_signed(">=", self.load(b, self.done, "acquire"), chunks)
            no = self.if_(b, b.not_(finished), "pending")
            self.pause(b, count)
            count.add_incoming(b.add(count, _c(1)), b.block)
            b.branch(again)
            b.position_at_end(no)
            b.branch(out)
        self.store(b, _c(0, i32), self.busy, "release")
        b.ret_void()
        b.position_at_end(alone_bb)
        slot = b.select(b.icmp_unsigned("!=", own, _c(0)), b.sub(own, _c(1)), _c(0))
        self.serial(b, task, data, slot)

    def stop_fn(self):
        f, b = self.fn(STOP, STOP_TYPE, linkage="")
        # only workers this process started: a child of fork() that never ran a job has none
        ready = b.and_(
            b.icmp_signed("==", self.load(b, self.state, "acquire"), _c(2, i32)),
            b.icmp_signed("==", self.load(b, self.pid, "acquire"), b.call(self.getpid, [])),
        )
        no = self.if_(b, ready, "ready")
        with self.loop(b, "hold") as (again, out):  # wait for a run in progress
            held = b.extract_value(b.cmpxchg(self.busy, _c(0, i32), _c(1, i32), "acquire", "monotonic"), 1)
            got = self.if_(b, b.not_(held), "busy")
            b.call(self.yield_, [])
            b.branch(again)
            b.position_at_end(got)
            b.branch(out)
        self.store(b, _c(1, i32), self.stopping)
        mutex = self.ptr(b, self.mutex)
        b.call(self.lock, [mutex])
        b.call(self.broadcast, [self.ptr(b, self.cond)])
        b.call(self.unlock, [mutex])
        n = b.load(self.workers)
        before = b.block
        with self.loop(b, "join") as (again, out):
            i = b.phi(i64)
            i.add_incoming(_c(0), before)
            joined = self.if_(b, b.icmp_signed("<", i, n), "each")
            b.call(self.join, [b.load(b.gep(self.threads, [_c(0), i])), ir.Constant(vptr.as_pointer(), None)])
            i.add_incoming(b.add(i, _c(1)), b.block)
            b.branch(again)
            b.position_at_end(joined)
            b.branch(out)
        b.store(_c(0), self.workers)
        self.store(b, _c(0, i32), self.stopping)
        self.store(b, _c(0, i32), self.busy, "release")
        b.ret_void()
        b.position_at_end(no)
        b.ret_void()
