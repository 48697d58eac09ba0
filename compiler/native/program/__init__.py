"""The kernel program: buffers, the kernels that compute them and the expressions those
compute. `Kernel` is what every kernel has; each kind of kernel is a module of
compiler/native/kernels/.

Values are expressions over an iteration index. Leaves are affine in the index: a load
from a buffer at offset + sum(coeff[r] * i[r]), the index itself (iota), or counter-based
random bits at a linear index; `Op` applies a primitive's scalar rule to its operands
(compiler/native/codegen/scalar.py). lower.py builds a program from a graph, memory.py plans its
temporaries, codegen/driver.py compiles it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import numpy as np

from dlc.compiler.ir.graph import DTYPES

# the numpy type of each dtype a buffer may have: the graph's, and "i8", the bytes of an int8
# product's operands (kernels/int8), which no graph value has
BUFFER_DTYPES = DTYPES | {"i8": np.int8}
BUFFER_ITEMSIZE = {dtype: np.dtype(t).itemsize for dtype, t in BUFFER_DTYPES.items()}  # bytes an element

# ---- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """offset + sum(coeffs[r] * i[r]) over the iteration index i."""

    offset: object
    coeffs: tuple

    def remap(self, offset_shift, coeffs):
        return Affine(self.offset + offset_shift, tuple(coeffs))

    def text(self) -> str:
        terms = [
            f"{c}*i{r}" if c != 1 else f"i{r}" for r, c in enumerate(self.coeffs) if not (isinstance(c, int) and c == 0)
        ]
        if not (isinstance(self.offset, int) and self.offset == 0):
            terms.insert(0, str(self.offset))
        return " + ".join(terms) or "0"


class KernelExpr:
    """An expression of a kernel's loop body. Each kind says how an index change maps it
    (`remap`, given an Affine -> Affine function for its affine leaves), which memory reads
    it holds (`leaves`; a leaf's `read_buffer`), its text (`dlc compile --emit kernels`) and
    its LLVM code, which it asks of the kernel builder (compiler/native/codegen/builder.py: the
    expression kinds' methods there), so this module never loads LLVM."""

    def remap(self, shift_fn) -> "KernelExpr":
        return self

    def renamed(self, old: int, new: int) -> "KernelExpr":
        """The expression reading buffer `new` wherever it reads `old`."""
        return self

    def leaves(self):
        return iter(())

    def text(self) -> str:
        raise NotImplementedError

    def emit(self, kb, idx):
        raise NotImplementedError


@dataclass(frozen=True)
class Load(KernelExpr):
    buffer: int
    at: Affine
    dtype: str

    def remap(self, shift_fn):
        return Load(self.buffer, shift_fn(self.at), self.dtype)

    def renamed(self, old, new):
        return Load(new, self.at, self.dtype) if self.buffer == old else self

    def leaves(self):
        yield self

    @property
    def read_buffer(self) -> int:
        return self.buffer

    def text(self):
        return f"b{self.buffer}[{self.at.text()}]"

    def emit(self, kb, idx):
        return kb.load(self, idx)


@dataclass(frozen=True)
class Index(KernelExpr):
    """The value of an affine function of the index (iota)."""

    at: Affine
    dtype: str

    def remap(self, shift_fn):
        return Index(shift_fn(self.at), self.dtype)

    def text(self):
        return f"({self.at.text()})"

    def emit(self, kb, idx):
        return kb.index(self, idx)


@dataclass(frozen=True)
class Random(KernelExpr):
    """A draw of the counter-based generator at linear index `at`: uniform in (0, 1), or
    normal (Box-Muller on a second stream), as primitives._random."""

    key: int  # buffer holding (seed, step)
    stream: int
    at: Affine
    dtype: str
    steps: tuple = ()  # the step number of each enclosing scan (a Dim over their step symbols), outermost first
    dist: str = "uniform"

    def remap(self, shift_fn):
        return Random(self.key, self.stream, shift_fn(self.at), self.dtype, self.steps, self.dist)

    def renamed(self, old, new):
        return replace(self, key=new) if self.key == old else self

    def leaves(self):
        yield self

    @property
    def read_buffer(self) -> int:
        return self.key

    def text(self):
        return f"uniform(b{self.key}, stream {self.stream}, {self.at.text()})"

    def emit(self, kb, idx):
        return kb.random(self, idx)


@dataclass(frozen=True)
class Const(KernelExpr):
    value: float
    dtype: str

    def text(self):
        return f"{self.value:g}" if isinstance(self.value, float) else str(self.value)

    def emit(self, kb, idx):
        return kb.const(self)


@dataclass(frozen=True)
class Size(KernelExpr):
    """A runtime dim as an i32 scalar."""

    dim: object
    dtype: str = "i32"

    def text(self):
        return str(self.dim)

    def emit(self, kb, idx):
        return kb.size(self)


@dataclass(frozen=True)
class Op(KernelExpr):
    name: str
    args: tuple
    dtype: str

    def remap(self, shift_fn):
        return Op(self.name, tuple(a.remap(shift_fn) for a in self.args), self.dtype)

    def renamed(self, old, new):
        return Op(self.name, tuple(a.renamed(old, new) for a in self.args), self.dtype)

    def leaves(self):
        for a in self.args:
            yield from a.leaves()

    def text(self):
        name = f"cast_{self.dtype}" if self.name == "cast" else self.name
        return f"{name}({', '.join(a.text() for a in self.args)})"

    def emit(self, kb, idx):
        return kb.op(self, idx)


@dataclass(frozen=True)
class Gather(KernelExpr):
    """table[idx, rest]: rows picked by an integer expression; `rows` is the table's
    affine over the iteration's trailing (row) dims, `stride` the row stride. An index
    outside [0, count) reads 0 and reports fault `site` (KernelProgram.faults)."""

    table: int
    idx: object
    rows: Affine
    stride: object
    dtype: str
    count: object  # rows of the table
    site: int

    def remap(self, shift_fn):
        return Gather(
            self.table, self.idx.remap(shift_fn), shift_fn(self.rows), self.stride, self.dtype, self.count, self.site
        )

    def renamed(self, old, new):
        return replace(self, table=new if self.table == old else self.table, idx=self.idx.renamed(old, new))

    def leaves(self):
        yield self
        yield from self.idx.leaves()

    @property
    def read_buffer(self) -> int:
        return self.table

    def text(self):
        return f"b{self.table}[{self.idx.text()} * {self.stride} + {self.rows.text()}]"

    def emit(self, kb, idx):
        return kb.gather(self, idx)


@dataclass(frozen=True)
class Guarded(KernelExpr):
    """A load that reads `fill` where an index falls outside the input (padding):
    each guard is (affine row index, size) and must satisfy 0 <= index < size."""

    load: Load
    guards: tuple
    fill: float

    def remap(self, shift_fn):
        return Guarded(self.load.remap(shift_fn), tuple((shift_fn(a), n) for a, n in self.guards), self.fill)

    def renamed(self, old, new):
        return Guarded(self.load.renamed(old, new), self.guards, self.fill)

    def leaves(self):
        yield self

    @property
    def dtype(self) -> str:
        return self.load.dtype

    @property
    def read_buffer(self) -> int:
        return self.load.buffer

    def text(self):
        return f"guarded({self.load.text()}, else {self.fill:g})"

    def emit(self, kb, idx):
        return kb.guarded(self, idx)


# ---- buffers and kernels ------------------------------------------------------------------------
@dataclass
class Buffer:
    id: int
    dtype: str
    size: object  # elements, a dim polynomial
    role: str  # input, param, temp, output, const, host (a host function: HostCallKernel),
    # packed (weights packed once, and their flag: kernels/gemm WeightPacksKernel)
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

    calls_gemm = False  # its function calls dlc's GEMM library (the graph page says so)

    @property
    def class_name(self) -> str:
        """What the graph page calls it: its class's name without "Kernel"."""
        return type(self).__name__.removesuffix("Kernel")

    @property
    def family(self) -> str:
        """What `dlc compile --emit fused` calls it: its class name in lower case."""
        return self.class_name.lower()

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
        themselves are LLVM code (kernels/<kind>/loops.py, codegen/gemm/), imported inside `emit`, so that
        lowering a graph never loads LLVM."""

    def nested(self) -> list:
        """The kernels it runs, each compiled to a function of its own before it (a
        scan's body)."""
        return []

    def renamed(self, names: dict) -> "Kernel | None":
        """This kernel reading and writing buffer names[b] wherever it reads or writes b (every
        buffer of its `members`), all else the same: the code generator builds one function for
        the kernels that differ only in their buffers, as a deep network's layers do, without
        building the others (codegen/driver.py). None for a kind that does not say: its
        kernels are built, and one function kept for those whose code is alike to the letter."""
        return None

    def heading(self) -> str | None:
        """What stands for it in `dlc compile --emit fused` when it runs nested kernels
        (a scan's loop); None when it computes graph nodes itself."""
        return None

    def map_space(self) -> tuple | None:
        """The iteration space it can share with the maps next to it in one loop
        (fusion.fuse_maps): a map's shape; None for every other kernel."""
        return None

    def sum_space(self) -> tuple | None:
        """The space it can share with the sums next to it in one pass (fusion.fuse_sums);
        None for every kernel but a float sum."""
        return None

    def with_sum(self, k) -> "Kernel":
        """This kernel also computing the sum k over its space (sum_space), in its pass."""
        raise NotImplementedError

    def taking(self, k, **changes) -> "Kernel":
        """This kernel with `changes`, now computing k's graph nodes too (an epilogue, a sum
        in its pass)."""
        return replace(
            self,
            nodes=tuple(dict.fromkeys(self.nodes + k.nodes)),
            origin=tuple(dict.fromkeys(self.origin + k.origin)),
            **changes,
        )

    def with_epilogue(self, m) -> "Kernel | None":
        """This kernel also computing the map (or fused map) m, the only other reader of
        what it writes, from each part of its result as soon as that is final
        (fusion.epilogues); None where it cannot (every kernel but a GEMM)."""
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
    outputs: dict = field(default_factory=dict)  # name -> buffer id
    inputs: dict = field(default_factory=dict)  # input name -> buffer id
    params: dict = field(default_factory=dict)  # param name -> buffer id
    symbols: list = field(default_factory=list)  # symbolic dim names, in the order of the sizes array
    faults: list = field(default_factory=list)  # (what, count, span) of each index check, by site
    weights_ready: int | None = None  # the flag of the packed weights, which a change of a weight clears

    def buffer(self, dtype, size, role, name="", data=None) -> Buffer:
        b = Buffer(len(self.buffers), dtype, size, role, name, data)
        self.buffers.append(b)
        return b

    def host(self, name: str) -> Buffer:
        """The entry of the host function `name` (one per program, however many calls)."""
        found = [b for b in self.buffers if b.role == "host" and b.name == name]
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
def expr_reads(e) -> set:
    """The buffers an expression loads from."""
    return {leaf.read_buffer for leaf in e.leaves()}


def expr_renamed(e, names: dict):
    """The expression reading buffer names[b] wherever it reads b (Kernel.renamed); the new
    names are none of the old (the driver's are negative), so one renaming cannot undo another."""
    for old in expr_reads(e) & names.keys():
        e = e.renamed(old, names[old])
    return e


def operand_renamed(operand: tuple, names: dict) -> tuple:
    """An operand (buffer, offset, ...) reading buffer names[buffer] (Kernel.renamed)."""
    return (names[operand[0]],) + tuple(operand[1:])


def contiguous_along(accesses, axis: int) -> bool:
    """Whether every access (an Affine, or an expression leaf) steps by 0 or 1 element along
    iteration axis `axis` (a gather's rows are picked by data: never)."""
    for a in accesses:
        at = a if isinstance(a, Affine) else getattr(getattr(a, "load", a), "at", None)
        if not isinstance(at, Affine) or at.coeffs[axis] not in (0, 1):
            return False
    return True
