"""dlc's thread pool (compiler/native/codegen/threadpool.py): every chunk of a job runs once,
on a thread of the team asked for, and a run inside a task runs serially on its thread; the
JIT's process maps no OpenMP run-time, keeps one pool however many engines come and go, and
exits without waiting on its workers; a forked child starts workers of its own."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.native.codegen import jit, threadpool
from dlc.runtime.engines import cache

ROOT = Path(__file__).resolve().parents[2]
i64 = ir.IntType(64)
MOST_CHUNKS = 64


@pytest.fixture(scope="module")
def drive():
    """drive(nthreads, per_thread, nested_threads, record): a job whose task records, for its
    chunk c, record[c] += 1, record[64 + c] = chunks, record[128 + c] = slot and, when
    nested_threads > 0, runs a job of its own on nested_threads threads whose one chunk
    writes record[192 + c] = (its chunks) * 1000 + (its slot) + 1."""
    m = ir.Module()
    vp, p64 = ir.IntType(8).as_pointer(), i64.as_pointer()
    inner = ir.Function(m, threadpool.TASK, "inner")
    b = ir.IRBuilder(inner.append_basic_block())
    cell = b.bitcast(inner.args[0], p64)
    b.store(b.add(b.add(b.mul(inner.args[2], i64(1000)), inner.args[3]), i64(1)), cell)
    b.ret_void()
    outer = ir.Function(m, threadpool.TASK, "outer")
    b = ir.IRBuilder(outer.append_basic_block())
    data, chunk, chunks, slot = outer.args
    record = b.bitcast(b.gep(data, [i64(8)]), p64)
    nested = b.load(b.bitcast(data, p64))
    b.atomic_rmw("add", b.gep(record, [chunk]), i64(1), "monotonic")
    b.store(chunks, b.gep(record, [b.add(chunk, i64(MOST_CHUNKS))]))
    b.store(slot, b.gep(record, [b.add(chunk, i64(2 * MOST_CHUNKS))]))
    cell = b.bitcast(b.gep(record, [b.add(chunk, i64(3 * MOST_CHUNKS))]), vp)
    b.call(threadpool.declare_run(m), [inner, cell, nested, i64(3)])
    b.ret_void()
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [vp, i64, i64]), "drive")
    b = ir.IRBuilder(fn.append_basic_block())
    b.call(threadpool.declare_run(m), [outer, fn.args[0], fn.args[1], fn.args[2]])
    b.ret_void()
    cache.pool_symbols()
    lib = jit.compile_module(m)
    call = lib.function("drive", None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)

    def run(nthreads, per_thread, nested_threads):
        data = np.zeros(1 + 4 * MOST_CHUNKS, np.int64)
        data[0] = nested_threads
        call(data.ctypes.data, nthreads, per_thread)
        return data[1:].reshape(4, MOST_CHUNKS)

    run.compiled = lib  # its code lives as long as this object
    return run


@pytest.mark.parametrize("nthreads, per_thread", [(1, 4), (2, 1), (2, 4), (3, 2), (7, 4), (16, 4)])
def test_every_chunk_runs_once_on_a_thread_of_the_team(drive, nthreads, per_thread):
    for _ in range(50):
        runs, chunks, slots, _ = drive(nthreads, per_thread, 0)
        n = nthreads * per_thread if nthreads > 1 else 1
        assert runs[:n].tolist() == [1] * n and not runs[n:].any()
        assert (chunks[:n] == n).all()
        assert ((slots[:n] >= 0) & (slots[:n] < nthreads)).all()


def test_a_run_inside_a_task_is_serial_on_the_thread_that_runs_the_task(drive):
    for _ in range(50):
        runs, chunks, slots, nested = drive(3, 4, 4)
        assert runs[:12].tolist() == [1] * 12
        # one chunk of its own, on the slot of the thread whose task started it
        assert nested[:12].tolist() == (1000 + slots[:12] + 1).tolist()


POOL_USER = """
import os, sys, numpy as np
os.environ["DLC_NUM_THREADS"] = "1"
from dlc.runtime.api import DlcModel
from dlc.runtime.training.gradcheck import init_params
def tasks():
    return len(os.listdir("/proc/self/task"))
x = np.random.default_rng(0).standard_normal((512, 1, 8, 8)).astype(np.float32)
first = DlcModel(sys.argv[1], backend="native")
first.params = {k: v.astype(np.float32) for k, v in init_params(first.eval_model).items()}
alone = first.predict({"x": x}, 512)["probs"]        # compiled, on one thread
before = tasks()
os.environ["DLC_NUM_THREADS"] = "3"
most = 0
for cycle in range(int(sys.argv[2])):
    model = DlcModel(sys.argv[1], backend="native")
    model.params = first.params
    got = model.predict({"x": x}, 512)["probs"]
    assert got.tobytes() == alone.tobytes(), cycle
    most = max(most, tasks())
    del model
maps = open("/proc/self/maps").read()
print(before, most, "gomp" in maps or "libomp" in maps)
"""


@pytest.mark.parametrize("spin, cycles", [(None, 12), ("0", 3)], ids=["default spin", "DLC_SPIN=0"])
def test_the_jit_maps_no_openmp_runtime_and_keeps_one_pool_over_many_engines(spin, cycles):
    """Engines made and dropped, each predicting on 3 threads: the same bits as one thread,
    the pool's two workers started once (no more threads however many engines), no OpenMP
    library in the process's memory, and the process exits at once after (a worker still
    spinning is stopped and joined). With DLC_SPIN=0 every job wakes sleeping workers."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DLC_SPIN", None)
    env.update({"DLC_SPIN": spin} if spin else {})
    r = subprocess.run(
        [sys.executable, "-c", POOL_USER, str(ROOT / "examples" / "digits_cnn.dl"), str(cycles)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    before, most, openmp = r.stdout.split()
    assert int(most) == int(before) + 2 and openmp == "False", r.stdout


FORKER = """
import multiprocessing, os, sys, numpy as np
os.environ["DLC_NUM_THREADS"] = "2"
from dlc.runtime.api import DlcModel
from dlc.runtime.training.gradcheck import init_params
def tasks():
    return len(os.listdir("/proc/self/task"))
model = DlcModel(sys.argv[1], backend="native")
model.params = {k: v.astype(np.float32) for k, v in init_params(model.eval_model).items()}
x = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
want = model.predict({"x": x})["y"].tobytes()       # the pool's worker started, now spinning
parent = tasks()        # counted, not assumed: qemu-user adds a thread of its own
def child(queue):
    before = tasks()
    got = model.predict({"x": x})["y"].tobytes()
    queue.put((tasks() - before, got == want))
fork = multiprocessing.get_context("fork")
queue = fork.Queue()
loader = fork.Process(target=child, args=(queue,))
loader.start()
print(*queue.get(timeout=60), flush=True)      # before os.fork: the child would print it again
loader.join()
pid = os.fork()
if pid == 0:
    sys.exit(0)                 # Python's exit stops the pool: none started in this process
print(os.waitpid(pid, 0)[1], model.predict({"x": x})["y"].tobytes() == want, tasks() - parent)
"""


def test_a_forked_child_starts_workers_of_its_own(tmp_path):
    """A process whose pool has a worker forks (multiprocessing's default on Linux, a data
    loader): the child's prediction on 2 threads starts a worker of its own and gives the
    parent's bits; a child that exits without native work exits at once; the parent's pool
    still works. A hang fails by the timeout."""
    (tmp_path / "wide.dl").write_text(
        "model m {\n    input x: f32[B, 512]\n    output y = dense(x, 512, act = relu)\n}\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", FORKER, str(tmp_path / "wide.dl")], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1", "True", "0", "True", "0"], r.stdout
