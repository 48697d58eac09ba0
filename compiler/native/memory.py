"""Memory planning: the temporaries of a kernel program share one arena.

Kernels run in program order; a scan's body runs once per step, nested scans inside
it too. Linearized, every kernel gets a position (pre-order: a scan, then its body), and
every temporary buffer the interval of positions from its first to its last access. A
buffer accessed inside a scan's body is live over the whole loop (of the outermost scan
around the access): the body runs many times, so a value it reads may have been written
by the previous step, or before the loop. Two temporaries whose intervals are disjoint
never hold live data at the same time and may share memory; intervals are inclusive, so
the inputs and the output of one kernel never overlap.

Sizes are dim polynomials, known only once the batch size is, so the analysis
(`intervals`) is done once per program and the packing (`plan`) once per set of sizes:
greedy, largest first, each buffer at the lowest 64-byte aligned offset where it
overlaps no placed buffer whose interval intersects its own (buffers of 4 KB or more
at different offsets modulo 4 KB: see _first_fit). The arena is at most 11% above the
lower bound (the most bytes live at one kernel) on every example at batch sizes 1 to
256, and within 0.3% of it on the benchmark workloads at their batch sizes.

Buffers of every other kind (input, param, const, output) keep memory of their own:
inputs are rebound every call, parameters and gradients live in the engine's flat
arrays, outputs are read after the call.

No kernel relies on fresh memory being zero: maps write every element they cover
(`pad` fills with its value first, a scan's stacked outputs are written step by step
over the whole length), reductions initialize their output, GEMMs write C (C = 0 when
K = 0), small GEMMs and weight gradients write every part's slice of their partial sums,
max-pool gradients of tiling windows write every element, and scatter-add, accumulate
and the other max-pool gradients zero their output first.
(tests/native/test_memory.py trains examples with every temporary filled with NaN before
each step.) In-place reuse of a map's dying input is not done: docs/native.md says why.
"""

from __future__ import annotations

import bisect
import heapq
import mmap
from dataclasses import dataclass

import numpy as np

from dlc.compiler.ir.dims import concrete
from dlc.compiler.native.program import BUFFER_DTYPES, BUFFER_ITEMSIZE, KernelProgram

ALIGN = 64
PAGE = 4096  # buffers start at different offsets modulo this (see _first_fit)


# ---- positions --------------------------------------------------------------------------------------
def linearize(kernels: list) -> list:
    """(position, kernel, span) for every kernel, nested ones (a scan's body) included, in
    execution order; span is the (first, last) position of the top-level kernel around
    it, its nested kernels included: a kernel inside a scan runs over the whole loop."""
    out: list = []

    def walk(ks):
        for k in ks:
            out.append([len(out), k, None])
            walk(k.nested())

    for k in kernels:
        first = len(out)
        walk([k])
        for e in out[first:]:
            e[2] = (first, len(out) - 1)
    return [tuple(e) for e in out]


# ---- liveness --------------------------------------------------------------------------------------
def intervals(program: KernelProgram) -> dict:
    """buffer id -> (first, last) position, inclusive, for every temporary a kernel
    touches (a temporary no kernel touches is absent). A kernel inside a scan touches its
    buffers over the whole loop, but in the flat body of an independent scan (no step reads
    what another wrote: ScanKernel.independent) a temporary that only its kernels touch
    lives from its first to its last access, as in a program."""
    temps = {b.id for b in program.buffers if b.role == "temp"}
    kernels = linearize(program.kernels)
    flat = {  # the positions of the independent scans whose bodies nest nothing
        pos
        for pos, k, span in kernels
        if pos == span[0] and getattr(k, "independent", False) and not any(j.nested() for j in k.body)
    }
    live: dict = {}
    within: dict = {}  # buffer -> (the independent scan's position, first, last) while only its body touches it
    for pos, k, (lo, hi) in kernels:
        reads, writes = k.accesses()
        for bid in (reads | writes) & temps:
            a, b = live.get(bid, (lo, hi))
            live[bid] = (min(a, lo), max(b, hi))
            body = lo if pos != lo and lo in flat else None  # the flat body this access is in
            scan, first, last = within.get(bid, (body, pos, pos))
            within[bid] = (scan if scan == body else None, min(first, pos), max(last, pos))
    return {bid: (first, last) if scan is not None else live[bid] for bid, (scan, first, last) in within.items()}


# ---- packing ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    offsets: dict  # buffer id -> byte offset in the arena
    nbytes: dict  # buffer id -> bytes (elements * item size, at least one element)
    arena: int  # arena bytes

    @property
    def temp_bytes(self) -> int:
        """What the temporaries would take with memory of their own."""
        return sum(self.nbytes.values())


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


GREEDY_UP_TO = 20_000  # temporaries; beyond, the greedy's cost (the square of the count) dominates a compile


def pack(nbytes: dict, live: dict) -> tuple:
    """Greedy placement, each buffer at the lowest aligned offset clear of every placed
    buffer whose interval intersects its own; the better of two orders: largest first,
    and largest size x lifetime first (the first is usually best, the second wins when
    long-lived buffers would otherwise split the free space, as in an LSTM's step).
    Programs of more than GREEDY_UP_TO temporaries (a model thousands of layers deep)
    are packed in one pass in program order instead (`_in_order`), in linear time.
    Returns (offsets, arena size)."""
    if len(nbytes) > GREEDY_UP_TO:
        return _in_order(nbytes, live)
    span = lambda b: live[b][1] - live[b][0] + 1 if b in live else 0
    orders = (
        sorted(nbytes, key=lambda b: (-nbytes[b], live.get(b, (0, 0))[0], b)),
        sorted(nbytes, key=lambda b: (-nbytes[b] * span(b), -nbytes[b], b)),
    )
    return min((_first_fit(order, nbytes, live) for order in orders), key=lambda r: r[1])


def _first_fit(order: list, nbytes: dict, live: dict) -> tuple:
    # The placed buffers live at one time as a buffer are many (at a model's loss, every
    # activation kept for the backward pass): comparisons with them grow as the square
    # of a model's depth, so they are numpy operations over the placed buffers' arrays.
    offsets: dict = {}
    first, last, low, high = (np.empty(len(order), np.int64) for _ in range(4))  # of the placed buffers
    placed = 0
    for bid in order:
        if bid not in live:  # never touched: any address will do
            offsets[bid] = 0
            continue
        lo, hi = live[bid]
        size = _align(nbytes[bid])
        # a buffer of a page or more starts at its own offset modulo the page, its
        # color: a kernel streaming through many buffers that all start at one offset
        # modulo 4 KB has its loads and stores alias (L1 sets, 4K aliasing)
        step, color = (PAGE, ALIGN * (bid % (PAGE // ALIGN))) if size >= PAGE else (ALIGN, 0)
        busy = (first[:placed] <= hi) & (last[:placed] >= lo)
        offsets[bid] = at = _lowest_gap(low[:placed][busy], high[:placed][busy], size, step, color)
        first[placed], last[placed], low[placed], high[placed] = lo, hi, at, at + size
        placed += 1
    arena = max([_align(o + nbytes[b]) for b, o in offsets.items()], default=0)
    return offsets, arena


def _lowest_gap(starts, ends, size: int, step: int, color: int) -> int:
    """The lowest offset = color (mod step) where `size` bytes overlap none of the byte
    ranges [starts, ends): below the first range it fits under, else above them all."""
    by_start = np.lexsort((ends, starts))
    starts, ends = starts[by_start], ends[by_start]
    # below range i, the candidate is the lowest offset above every range before it
    above = np.maximum.accumulate(np.concatenate(([color], ends + (color - ends) % step)))
    fits = np.flatnonzero(above[:-1] + size <= starts)
    return int(above[fits[0]] if fits.size else above[-1])


def _in_order(nbytes: dict, live: dict) -> tuple:
    """Each buffer, in order of its first access, at the lowest fitting offset of the
    free list (sorted ranges [start, end), the last one open above the arena); a buffer
    returns its range to the list once the position after its last access is reached.
    Without page colors (_first_fit): the gaps they leave would make the list as long
    as the program."""
    offsets = {b: 0 for b in nbytes if b not in live}  # never touched: any address will do
    free = [[0, float("inf")]]
    dying: list = []  # heap of (last access, buffer)
    arena = 0
    for bid in sorted((b for b in nbytes if b in live), key=lambda b: (live[b][0], b)):
        lo = live[bid][0]
        while dying and dying[0][0] < lo:
            _, gone = heapq.heappop(dying)
            _release(free, offsets[gone], offsets[gone] + _align(nbytes[gone]))
        size = _align(nbytes[bid])
        for k, (start, end) in enumerate(free):  # noqa: B007  (k: the free range taken, after the loop)
            if start + size <= end:
                break
        free[k : k + 1] = [[start + size, end]] if start + size < end else []
        at = start
        offsets[bid] = at
        arena = max(arena, at + size)
        heapq.heappush(dying, (live[bid][1], bid))
    return offsets, arena


def _release(free: list, start: int, end: int):
    """Return [start, end) to the sorted free list, merged with the ranges it touches."""
    k = bisect.bisect(free, [start, end])
    if k < len(free) and free[k][0] == end:
        end = free.pop(k)[1]
    if k and free[k - 1][1] == start:
        free[k - 1][1] = end
    else:
        free.insert(k, [start, end])


def plan(program: KernelProgram, sizes: dict, live: dict | None = None, exclude=()) -> Plan:
    """The arena layout of the program's temporaries for concrete dim sizes; `live` is
    `intervals(program)` when already computed, `exclude` buffer ids kept out."""
    live = intervals(program) if live is None else live
    nbytes = {
        b.id: max(1, int(concrete(b.size, sizes))) * BUFFER_ITEMSIZE[b.dtype]
        for b in program.buffers
        if b.role == "temp" and b.id not in exclude
    }
    offsets, arena = pack(nbytes, live)
    return Plan(offsets, nbytes, arena)


def aligned_zeros(count: int, dtype) -> np.ndarray:
    """count zeros of dtype from a 64-byte boundary, where the GEMM's micro-kernel loads
    its packed operands with aligned vector loads."""
    nbytes = count * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip : skip + nbytes].view(dtype)


def arena_zeros(nbytes: int) -> np.ndarray:
    """`nbytes` zero bytes in pages of their own (an anonymous mapping: page-aligned), mapped
    as the system maps memory by default. numpy asks Linux for transparent huge pages for any
    array of 4 MB or more (MADV_HUGEPAGE), and the first touch of a huge page clears 2 MB and,
    in a virtual machine, may wait for the host to back them: on a 2-core Xeon VM, MobileNetV2's
    3.3 GB arena at 224 x 224 pixels, batch 32, made its first step 6.5 s longer so (9 ms a
    huge page), for later steps about 4 % shorter. Packed weights, which every call streams
    again, keep numpy's huge pages (`aligned_zeros`).
    The pages are mapped as the arena is made (MAP_POPULATE, where the system has it): the first
    step writes every temporary, so it would fault each page in, one trap at a time, in its
    kernels; mapped at once they cost about half (that 3.3 GB arena: 0.8 s against 1.6 faulted
    in page by page, and that first step 0.25-0.4 s shorter)."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return np.frombuffer(mmap.mmap(-1, max(nbytes, 1), flags=flags), np.uint8)


def views(p: Plan, program: KernelProgram) -> dict:
    """Each temporary's typed view of one arena (`arena_zeros`: page-aligned)."""
    arena = arena_zeros(p.arena)
    return {
        bid: arena[off : off + p.nbytes[bid]].view(BUFFER_DTYPES[program.buffers[bid].dtype])
        for bid, off in p.offsets.items()
    }
