"""Memory planning (compiler/native/memory.py): liveness of temporaries and their arena."""

from dataclasses import fields
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.native import memory
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.frontend.loader import load
from dlc.compiler.native.lower import lower
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.program import Affine, Gather, Guarded, KernelProgram, Load, Op, Random
from dlc.compiler.passes.optimize import optimize
from dlc.compiler.frontend.settings import Call
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.engines.native import Executable, NativeEngine
from dlc.runtime.optim.optimizers import make_optimizer

EXAMPLES = Path(__file__).parents[2] / "examples"
SIZES = {"B": 4, "T": 5, "S": 6}
# recurrent (scans, a reversed one, attention), convolutional, transformers, an MLP
PROGRAMS = [
    "char_lstm",
    "seq2seq_luong",
    "bilstm_tagger",
    "lenet5",
    "resnet",
    "transformer_classifier",
    "transformer_seq2seq",
    "digits_mlp",
]


def train_program(name: str) -> KernelProgram:
    """The kernel program of an example's train step, as the native engine builds it."""
    return lower(optimize(train_step(load(str(EXAMPLES / f"{name}.dl")).build(training=True).graph)))


def sizes_of(program: KernelProgram) -> dict:
    return {s: 0 if s.startswith("$") else SIZES[s] for s in program.symbols}


def overlap(a, b) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


# ---- packing --------------------------------------------------------------------------------------
def test_packing_reuses_memory_of_dead_buffers_only():
    live = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (4, 4)}
    nbytes = {0: 100, 1: 64, 2: 100, 3: 300}
    offsets, arena = memory.pack(nbytes, live)
    assert all(o % memory.ALIGN == 0 for o in offsets.values())
    assert offsets[3] == 0  # the largest, alone at its time
    assert offsets[0] == offsets[2] == 0  # 0 is dead when 2 is born
    assert offsets[1] == 128  # live with both: after them, aligned
    assert arena == 320


def test_large_buffers_start_at_different_offsets_modulo_a_page():
    # eight 32 KB buffers live at once (an RNN step's gates): not all 4K-aliased
    live = {b: (0, 1) for b in range(8)}
    offsets, arena = memory.pack({b: 32768 for b in live}, live)
    assert len({o % memory.PAGE for o in offsets.values()}) == 8
    assert arena <= 8 * 32768 + memory.PAGE


def test_the_packing_in_program_order_reuses_memory_of_dead_buffers_only():
    live = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (4, 4)}
    offsets, arena = memory._in_order({0: 100, 1: 64, 2: 100, 3: 300}, live)
    assert offsets == {0: 0, 1: 128, 2: 0, 3: 0} and arena == 320  # 0 and 1 are dead when 3 is born


def test_a_buffer_no_kernel_touches_takes_no_room():
    offsets, arena = memory.pack({0: 64, 1: 1000}, {0: (0, 0)})
    assert offsets == {0: 0, 1: 0} and arena == 1000 + 24


# ---- liveness on a hand-made program with a loop ----------------------------------------------------
def looped_program() -> KernelProgram:
    p = KernelProgram()
    x = p.buffer("f32", 8, "input").id
    d, a, h, s, c, free = (p.buffer("f32", 8, "temp").id for _ in range(6))
    out = p.buffer("f32", 8, "output").id
    load = lambda b: Load(b, Affine(0, (1,)), "f32")
    m = lambda o, src: MapKernel((8,), o, Affine(0, (1,)), load(src))
    p.kernels = [
        m(d, x),
        m(a, d),  # 0, 1
        ScanKernel(3, False, "$t0", [m(h, a), m(s, h)]),  # 2: [3, 4]
        m(c, s),
        m(out, c),  # 5, 6
        m(free, x),
    ]  # 7
    p.symbols = ["$t0"]
    return p


def test_buffers_used_in_a_loop_live_for_the_whole_loop():
    p = looped_program()
    live = memory.intervals(p)
    d, a, h, s, c, free = range(1, 7)
    # a: written before the loop, read in it; h: only in the body; s: written in it, read after
    assert live == {d: (0, 1), a: (1, 4), h: (2, 4), s: (2, 5), c: (5, 6), free: (7, 7)}
    plan = memory.plan(p, {"$t0": 0}, live)
    assert 7 not in plan.offsets  # the output has memory of its own
    ranges = {b: (o, o + plan.nbytes[b] - 1) for b, o in plan.offsets.items()}
    assert len({ranges[a], ranges[h], ranges[s]}) == 3 and not overlap(ranges[a], ranges[h])
    assert plan.arena == 3 * 64 and plan.temp_bytes == 6 * 32


# ---- liveness and packing of real train steps ------------------------------------------------------
def touched(k) -> set:
    """The buffers a kernel (not a scan) reads or writes, read off its fields here, not
    with the planner's own helpers."""
    if isinstance(k, FusedMapKernel):  # values kept in registers touch no memory
        return set().union(*(touched(m) for m in k.maps)) - k.registers
    found = set()

    def walk(e):
        if isinstance(e, Load):
            found.add(e.buffer)
        elif isinstance(e, Gather):
            found.add(e.table)
            walk(e.idx)
        elif isinstance(e, Guarded):
            walk(e.load)
        elif isinstance(e, Random):
            found.add(e.key)
        elif isinstance(e, Op):
            for a in e.args:
                walk(a)

    for f in fields(k):
        value = getattr(k, f.name)
        if f.name in ("out", "upd", "x", "g", "w", "partial", "packed", "products") and value is not None:  # buffer ids
            found.add(value)
        elif f.name in ("a", "b", "c"):  # GEMM operands: (buffer, offset, ...)
            found.add(value[0])
        elif f.name in ("expr", "idx"):
            walk(value)
        elif f.name in ("epilogue", "transform") and value is not None:  # the map a kernel runs in its store, or runs
            found |= touched(value)
        elif f.name == "also":  # a reduction's: the sums in its pass
            for out, expr in value:
                found.add(out)
                walk(expr)
    return found


def kernel_count(kernels: list) -> int:
    return sum(1 + (kernel_count(k.body) if isinstance(k, ScanKernel) else 0) for k in kernels)


def expected_intervals(program: KernelProgram) -> dict:
    """Liveness by its definition: kernels numbered in execution order (a scan, then its
    body); a temporary lives from the first to the last kernel touching it, and one
    touched inside a loop lives over the whole outermost loop."""
    temps = {b.id for b in program.buffers if b.role == "temp"}
    live: dict = {}
    position = 0

    def walk(kernels, loop):
        nonlocal position
        for k in kernels:
            here = position
            position += 1
            if isinstance(k, ScanKernel):
                walk(k.body, loop or (here, here + kernel_count(k.body)))
                continue
            lo, hi = loop or (here, here)
            for b in touched(k) & temps:
                first, last = live.get(b, (lo, hi))
                live[b] = (min(first, lo), max(last, hi))

    walk(program.kernels, None)
    return live


# the greedy packing, and the one pass in program order of programs with very many temporaries
PACKINGS = {"greedy": memory.GREEDY_UP_TO, "in_order": 0}


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_no_two_live_buffers_share_memory(name, packing, monkeypatch):
    monkeypatch.setattr(memory, "GREEDY_UP_TO", PACKINGS[packing])
    p = train_program(name)
    live = memory.intervals(p)
    assert live == expected_intervals(p)
    plan = memory.plan(p, sizes_of(p), live)
    temps = {b.id for b in p.buffers if b.role == "temp"}
    assert set(plan.offsets) == temps  # inputs, params, consts, outputs never shared
    scans = sum(isinstance(k, ScanKernel) for k in p.kernels)
    if name in ("char_lstm", "seq2seq_luong", "bilstm_tagger"):
        assert scans >= 2  # the forward and the backward loop
    for b, off in plan.offsets.items():
        assert off % memory.ALIGN == 0 and off + plan.nbytes[b] <= plan.arena
    for b1, b2 in combinations(live, 2):
        if overlap(live[b1], live[b2]):
            r1 = (plan.offsets[b1], plan.offsets[b1] + plan.nbytes[b1] - 1)
            r2 = (plan.offsets[b2], plan.offsets[b2] + plan.nbytes[b2] - 1)
            assert not overlap(r1, r2), (b1, b2)
    # never worse than separate buffers, never better than the most bytes live at once
    peak = max(sum(plan.nbytes[b] for b, (s, e) in live.items() if s <= t <= e) for t in range(kernel_count(p.kernels)))
    colors = sum(memory.PAGE for n in plan.nbytes.values() if n >= memory.PAGE)
    assert peak <= plan.arena <= sum(-(-n // 64) * 64 for n in plan.nbytes.values()) + colors
    assert plan.arena < 0.9 * plan.temp_bytes


# ---- the native engine on the arena ----------------------------------------------------------------
def poison_temporaries(monkeypatch):
    """Before every native call, fill each temporary with garbage (NaN, or 1 for integers),
    so that a kernel reading memory it did not write, or expecting it zero, shows."""
    layout = Executable.layout

    def poisoned(self, sizes, fixed):
        lay = layout(self, sizes, fixed)
        plan = self.plans[tuple(sizes[s] for s in self.program.symbols)]
        ordered = sorted(plan.offsets, key=lambda b: lay.arrays[b].dtype.kind == "f")  # floats last
        for b in ordered:
            lay.arrays[b][...] = np.nan if lay.arrays[b].dtype.kind == "f" else 1
        return lay

    monkeypatch.setattr(Executable, "layout", poisoned)


def steps(engine_class, train, evaluation, sizes, n=3):
    trainable = [p.name for p in train.params if p.trainable]
    opt = make_optimizer(Call("sgd", [], {"lr": 1e-3}))
    engine = engine_class(train, evaluation, opt, trainable)
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    state = opt.init({k: params[k] for k in trainable})
    losses = []
    for step in range(1, n + 1):
        feeds = sample_inputs(train, sizes, seed=step)
        feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
        losses.append(engine.train_step(params, state, feeds, 1e-3, step, np.array([0, step], np.int32))["loss"])
    return engine, params, losses


@pytest.mark.parametrize(
    "name, packing",
    [
        ("char_lstm", "greedy"),
        ("seq2seq_luong", "greedy"),
        ("lenet5", "greedy"),
        ("transformer_classifier", "greedy"),
        ("seq2seq_luong", "in_order"),
    ],
)
def test_native_training_on_a_poisoned_arena_matches_the_reference(name, packing, monkeypatch):
    monkeypatch.setattr(memory, "GREEDY_UP_TO", PACKINGS[packing])
    poison_temporaries(monkeypatch)
    program = load(str(EXAMPLES / f"{name}.dl"))
    train, evaluation = program.build(training=True), program.build(training=False)
    _, ref, ref_losses = steps(ReferenceEngine, train, evaluation, SIZES)
    engine, nat, nat_losses = steps(NativeEngine, train, evaluation, SIZES)
    np.testing.assert_allclose(nat_losses, ref_losses, rtol=1e-4)
    for k in ref:
        assert np.abs(nat[k] - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-4) < 1e-4, k
    # the temporaries really are views of one arena, some of them sharing bytes
    exe = engine.train_exe
    ((key, plan),) = exe.plans.items()
    arrays = exe.layouts[key].arrays
    base = arrays[next(iter(plan.offsets))].base
    assert all(arrays[b].base is base for b in plan.offsets)
    assert plan.arena < plan.temp_bytes


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping holding `address` in /proc/self/smaps."""
    flags, inside = None, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            flags = line.split()[1:]
    return flags


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_the_arena_is_zero_page_aligned_and_not_advised_into_huge_pages():
    arena = memory.arena_zeros(8 << 20)
    assert arena.nbytes == 8 << 20 and arena.flags.writeable and not arena.any()
    assert arena.ctypes.data % memory.ALIGN == 0
    # MADV_HUGEPAGE, which numpy asks for from the array's first whole page on
    assert "hg" not in _vm_flags(arena.ctypes.data + arena.nbytes // 2)
    packed = memory.aligned_zeros(8 << 20, np.uint8)
    assert "hg" in _vm_flags(packed.ctypes.data + packed.nbytes // 2)  # packed weights keep them
