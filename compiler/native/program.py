"""The kernel program: buffers, loop kernels and the expressions they compute.

Values are expressions over an iteration index. Leaves are affine in the index: a load
from a buffer at offset + sum(coeff[r] * i[r]), the index itself (iota), or counter-based
random bits at a linear index; `Op` applies a primitive's scalar rule to its operands
(compiler/native/scalar.py). lower.py builds a program from a graph, memory.py plans its
temporaries, driver.py compiles it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ---- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """offset + sum(coeffs[r] * i[r]) over the iteration index i."""
    offset: object
    coeffs: tuple

    def remap(self, offset_shift, coeffs):
        return Affine(self.offset + offset_shift, tuple(coeffs))


@dataclass(frozen=True)
class Load:
    buffer: int
    at: Affine
    dtype: str


@dataclass(frozen=True)
class Index:
    """The value of an affine function of the index (iota)."""
    at: Affine
    dtype: str


@dataclass(frozen=True)
class Random:
    """A draw of the counter-based generator at linear index `at`: uniform in (0, 1), or
    normal (Box-Muller on a second stream), as primitives._random."""
    key: int             # buffer holding (seed, step)
    stream: int
    at: Affine
    dtype: str
    steps: tuple = ()    # the step symbols of the enclosing scans, outermost first
    dist: str = "uniform"


@dataclass(frozen=True)
class Const:
    value: float
    dtype: str


@dataclass(frozen=True)
class Size:
    """A runtime dim as an i32 scalar."""
    dim: object
    dtype: str = "i32"


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple
    dtype: str


@dataclass(frozen=True)
class Gather:
    """table[idx, rest]: rows picked by an integer expression; `rows` is the table's
    affine over the iteration's trailing (row) dims, `stride` the row stride. An index
    outside [0, count) reads 0 and reports fault `site` (KernelProgram.faults)."""
    table: int
    idx: object
    rows: Affine
    stride: object
    dtype: str
    count: object        # rows of the table
    site: int


@dataclass(frozen=True)
class Guarded:
    """A load that reads `fill` where an index falls outside the input (padding):
    each guard is (affine row index, size) and must satisfy 0 <= index < size."""
    load: Load
    guards: tuple
    fill: float


def remap(e, shift_fn):
    """Apply an index change to every affine leaf of an expression. shift_fn maps an
    Affine to a new Affine."""
    if isinstance(e, Load):
        return Load(e.buffer, shift_fn(e.at), e.dtype)
    if isinstance(e, Index):
        return Index(shift_fn(e.at), e.dtype)
    if isinstance(e, Random):
        return Random(e.key, e.stream, shift_fn(e.at), e.dtype, e.steps, e.dist)
    if isinstance(e, Gather):
        return Gather(e.table, remap(e.idx, shift_fn), shift_fn(e.rows), e.stride, e.dtype, e.count, e.site)
    if isinstance(e, Guarded):
        return Guarded(remap(e.load, shift_fn), tuple((shift_fn(a), n) for a, n in e.guards), e.fill)
    if isinstance(e, Op):
        return Op(e.name, tuple(remap(a, shift_fn) for a in e.args), e.dtype)
    return e


# ---- buffers and kernels ------------------------------------------------------------------------
@dataclass
class Buffer:
    id: int
    dtype: str
    size: object          # elements, a dim polynomial
    kind: str             # input, param, temp, output, const, host (a host function: HostCallKernel)
    name: str = ""
    data: np.ndarray | None = None


@dataclass(kw_only=True)
class Kernel:
    """What every kernel records, given by name: the graph node it computes (its last),
    and the graph nodes it computes (`nodes`) with their (op, span) (`origin`), set by
    Lowering.emit."""
    node: int = -1
    nodes: tuple = ()
    origin: tuple = ()


@dataclass
class MapKernel(Kernel):
    """out[i] = expr(i) for every i in shape; out is written contiguously at `out_at`."""
    shape: tuple
    out: int
    out_at: Affine
    expr: object


@dataclass
class FusedMapKernel(Kernel):
    """Map kernels over one iteration space run as one loop: every iteration does each
    member's store in order. Legal when the members touch a buffer that one of them
    writes only at the index being written (see fuse_maps). `registers`: buffers of
    members whose value only later members read, in a register: they are not stored."""
    shape: tuple
    maps: list
    registers: frozenset = frozenset()


@dataclass
class ReduceKernel(Kernel):
    """out[kept(i)] = op over the reduced axes of expr(i), for i in the input shape."""
    shape: tuple
    axes: tuple
    op: str               # sum, max, argmax
    out: int
    expr: object


@dataclass
class GemmKernel(Kernel):
    """C[b] = op(A[b]) @ op(B[b]); A, B given by buffer, offset, leading dim, batch stride.
    `packed`: a buffer holding op(B) (one matrix) packed by a PackKernel, which the GEMM
    multiplies with instead of packing B itself."""
    m: object
    n: object
    k: object
    batch: object
    a: tuple              # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple
    trans_a: bool
    trans_b: bool
    packed: int | None = None


@dataclass
class PackKernel(Kernel):
    """out = op(B) (k x n) packed into the GEMM's panels (gemm.add_pack): a GEMM operand
    that stays the same at every step of a scan, packed once before the loop."""
    k: object
    n: object
    b: tuple              # (buffer, offset, ld)
    trans_b: bool
    out: int


@dataclass
class SmallGemmKernel(Kernel):
    """C (m x n) = sum over the batch of A[b] (m x k) @ B[b] (k x n), all row-major. Tiles
    of C stay in vector registers while K and the batch stream through, so nothing is
    packed (a first convolution's weight gradient: 6 x 25, K = 784 per example). The
    batch is cut into `parts` runs (threads take whole parts), each summed into its m x n
    slice of `partial`, and C is the sum of the slices in order: the same numbers
    whatever the number of threads."""
    m: int
    n: int
    k: object
    batch: object
    a: tuple              # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple              # (buffer, offset, ld)
    partial: int          # buffer of parts * m * n
    parts: int


@dataclass
class ConvKernel(Kernel):
    """A direct convolution, for few taps (C*kh*kw): no im2col buffer. x [N, C, H, W]
    (0 outside), w [O, C, kh, kw], stride 1 along W. Without `g`:
    out [N, O, Ho, Wo] = sum over c, i, j of w[o, c, i, j] * x[n, c, ho*sh + i - ph, wo + j - pw];
    `transposed`: w is [C, O, kh, kw] and read w[c, o, kh-1-i, kw-1-j] — with x the output
    gradient and padding k - 1 - p, the input gradient of a stride-1 convolution.
    With `g` [N, O, Ho, Wo] (`w` unused), the weight gradient: out [O, C, kh, kw] = sum over
    n, ho, wo of g[n, o, ho, wo] * x[...], the batch in `parts` runs summed apart into
    `partial` (parts x O x C*kh*kw) and then in order, as SmallGemmKernel."""
    x: int
    w: int | None
    out: int
    x_shape: tuple        # N, C, H, W
    w_shape: tuple        # O, C, kh, kw
    out_hw: tuple
    stride_h: int
    padding: tuple
    g: int | None = None
    partial: int | None = None
    parts: int = 1
    transposed: bool = False

    @property
    def channels(self):
        """The output's channels (O)."""
        return self.w_shape[1] if self.transposed else self.w_shape[0]


@dataclass
class ScatterAddKernel(Kernel):
    """out = 0; then out[idx(i), r] += upd[flat(i), r] for every index i of idx_shape.
    An index outside [0, count) adds nothing and reports fault `site`."""
    idx_shape: tuple
    row: object
    out: int
    idx: object           # integer expression over idx_shape
    upd: int
    count: object         # rows of out
    site: int


@dataclass
class AccumulateKernel(Kernel):
    """out[at(i)] += expr(i) for every i in shape whose guards hold (out zeroed first):
    the adjoint of reading windows (col2im, average-pool gradients). Axis 0 is the batch:
    iteration n touches only example n of out, at.coeffs[0] elements from n * at.coeffs[0]."""
    shape: tuple
    out: int
    at: Affine
    guards: tuple
    expr: object


@dataclass
class MaxPoolGradKernel(Kernel):
    """dx (zeroed) [window argmax] += g for every output position (first maximum wins)."""
    x: int
    g: int
    out: int
    shape: tuple          # N, C, H, W of x
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple


@dataclass
class HostCallKernel(Kernel):
    """Call back into the host between kernels: function(buffer, its element count), which
    rewrites the f32 buffer in place (replica_mean: an allreduce over the ranks). The
    function's address is the pointer-table entry of buffer `host` (of kind "host")."""
    host: int
    buffer: int


@dataclass
class ScanKernel(Kernel):
    """for t in 0..length (or back): sizes[var] = t, then run the body's kernels."""
    length: object
    reverse: bool
    var: str              # the symbol of the step index, "$t0", "$t1", ... by nesting depth
    body: list


@dataclass
class KernelProgram:
    """Buffers and the kernels that compute them, in order: what lowering gives the
    code generator (the loaded .dl file is loader.Program)."""
    buffers: list = field(default_factory=list)
    kernels: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)     # name -> buffer id
    inputs: dict = field(default_factory=dict)      # input name -> buffer id
    params: dict = field(default_factory=dict)      # param name -> buffer id
    symbols: list = field(default_factory=list)     # symbolic dim names, in the order of the sizes array
    faults: list = field(default_factory=list)      # (what, count, span) of each index check, by site

    def buffer(self, dtype, size, kind, name="", data=None) -> Buffer:
        b = Buffer(len(self.buffers), dtype, size, kind, name, data)
        self.buffers.append(b)
        return b

    def host(self, name: str) -> Buffer:
        """The entry of the host function `name` (one per program, however many calls)."""
        found = [b for b in self.buffers if b.kind == "host" and b.name == name]
        return found[0] if found else self.buffer("f32", 0, "host", name)

    def fault(self, what: str, count, span) -> int:
        """The site of a run-time check that an index of `what` lies in [0, count): the
        kernels report a failure (dlc_fault = site + 1), the engine raises it at `span`."""
        self.faults.append((what, count, span))
        return len(self.faults) - 1


def row_major(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc = acc * d
    return tuple(reversed(strides))


def contiguous(buffer: int, shape, dtype) -> Load:
    return Load(buffer, Affine(0, row_major(shape)), dtype)


# ---- reading expressions ----------------------------------------------------------------------
def leaves(e):
    """The memory reads of an expression: Load, Gather, Guarded and Random leaves."""
    if isinstance(e, (Load, Random)):
        yield e
    elif isinstance(e, Gather):
        yield e
        yield from leaves(e.idx)
    elif isinstance(e, Guarded):
        yield e
    elif isinstance(e, Op):
        for a in e.args:
            yield from leaves(a)


def buffer_of(leaf) -> int:
    """The buffer a memory-reading leaf reads."""
    return leaf.table if isinstance(leaf, Gather) else leaf.key if isinstance(leaf, Random) else \
        leaf.load.buffer if isinstance(leaf, Guarded) else leaf.buffer
