"""The kernel program: buffers, the kernels that compute them and the expressions those
compute. `Kernel` is what every kernel has; each kind of kernel is a module of
compiler/native/kernels/.

Values are expressions over an iteration index. Leaves are affine in the index: a load
from a buffer at offset + sum(coeff[r] * i[r]), the index itself (iota), or counter-based
random bits at a linear index; `Op` applies a primitive's scalar rule to its operands
(compiler/native/scalar.py). lower.py builds a program from a graph, memory.py plans its
temporaries, driver.py compiles it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
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
    steps: tuple = ()    # the step number of each enclosing scan (a Dim over their step symbols), outermost first
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
class Kernel(ABC):
    """What every kernel records, given by name: the graph node it computes (its last),
    and the graph nodes it computes (`nodes`) with their (op, span) (`origin`), set by
    Lowering.emit.

    Each kind of kernel is a subclass, in a module of its own in compiler/native/kernels/,
    that holds its fields and its rules: its text (`text`), the buffers it touches
    (`accesses`) and how its function is built (`emit`). The rest of the backend asks the
    kernel and never looks at its kind; a kind that misses a rule cannot be made."""
    node: int = -1
    nodes: tuple = ()
    origin: tuple = ()

    calls_gemm = False      # its function calls dlc's GEMM library (the graph page says so)

    @property
    def kind(self) -> str:
        """What the graph page calls it: its class's name without "Kernel"."""
        return type(self).__name__.removesuffix("Kernel")

    @property
    def family(self) -> str:
        """What `dlc compile --emit fused` calls it: its kind in lower case."""
        return self.kind.lower()

    @abstractmethod
    def text(self) -> list:
        """Its lines in `dlc compile --emit kernels` (render.py): a kernel's line ends with
        the source line of what it computes (render.located); the lines of the kernels it
        holds follow its own, two spaces in."""

    @abstractmethod
    def accesses(self) -> tuple:
        """(reads, writes): the buffers it reads and writes itself, from which memory.py
        plans the temporaries' memory."""

    @abstractmethod
    def emit(self, f):
        """Build its function with f (driver.KernelFunction): a builder that runs on the
        calling thread (`f.serial()`) or one whose loop nest a thread team splits
        (`f.team(...)`). Returns that builder, which the driver finishes. The loop nests
        themselves are LLVM code (kernels/<kind>/loops.py, gemm.py), imported inside `emit`, so that
        lowering a graph never loads LLVM."""

    def nested(self) -> list:
        """The kernels it runs, each compiled to a function of its own before it (a
        scan's body)."""
        return []

    def heading(self) -> str | None:
        """What stands for it in `dlc compile --emit fused` when it runs nested kernels
        (a scan's loop); None when it computes graph nodes itself."""
        return None

    def map_space(self) -> tuple | None:
        """The iteration space it can share with the maps next to it in one loop
        (fusion.fuse_maps): a map's shape; None for every other kernel."""
        return None

    def members(self) -> list:
        """The (reads, writes) of each store its loop makes in turn: one, but for a fused
        map, whose later members may take an earlier one's value from a register."""
        return [self.accesses()]

    def runs(self, sizes: dict) -> int:
        """How often each of its nested kernels runs per run of it (a scan's length)."""
        return 1

    def flops(self, sizes: dict) -> int | None:
        """The floating-point operations of one run at these dim sizes, for a kernel that
        contracts (a GEMM, a convolution: `dlc bench` gives its GFLOP/s); None for others."""
        return None


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


def expr_reads(e) -> set:
    """The buffers an expression loads from."""
    return {buffer_of(leaf) for leaf in leaves(e)}


def buffer_of(leaf) -> int:
    """The buffer a memory-reading leaf reads."""
    return leaf.table if isinstance(leaf, Gather) else leaf.key if isinstance(leaf, Random) else \
        leaf.load.buffer if isinstance(leaf, Guarded) else leaf.buffer
