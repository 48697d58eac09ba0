"""The kernels that call dlc's GEMM library (compiler/native/codegen/gemm/): a batch of matrix
products, the packing of an operand that stays the same over a scan's steps, and that of a
prediction's weights, kept packed (or transformed) between calls under their flags; the
implementations of matmul (compiler/native/choose/matmul.py), and the size of a packed operand. Their code is a call of the
library (loops.py), made by `emit`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dlc.compiler.ir.dims import concrete, numel, symbols
from dlc.compiler.native import A_PANEL_ROWS, FEW_ROWS
from dlc.compiler.native.kernels.map import in_place, merged, read_once
from dlc.compiler.native.program import Affine, Kernel, operand_renamed, render
from dlc.compiler.native.program.registry import register_implementation


@dataclass
class GemmKernel(Kernel):
    """C[b] = op(A[b]) @ op(B[b]); A, B given by buffer, offset, leading dim, batch stride.
    `packed`: a buffer holding op(B) (one matrix) packed by a PackKernel, which the GEMM
    multiplies with instead of packing B itself; `ready`: (buffer, index) of the flag that
    says it is packed (a prediction's weight, WeightPacksKernel), without which the GEMM is
    given no pack and reads B. `bf16`: A and B rounded to bfloat16, the sums in float32
    (the library's bf16 routines). `epilogue`: the map (or fused map) that reads C, run by
    the GEMM on each part of C as soon as that part is final, while it is in cache, instead
    of in a pass of its own (fusion.gemm_epilogues); its space is C's: [M, N] (C[i, j]),
    [n, M, P] with C one matrix of n·P columns (C[i, n·P + p]), or [batch, M, N] (C[b][i, j]).
    `windows`: B is an image and op(B) its convolution windows (a convolution's columns
    without im2col's buffer), by this geometry (gemm/interface.py WINDOW_GEOMETRY's values)."""

    m: object
    n: object
    k: object
    batch: object
    a: tuple  # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple
    trans_a: bool
    trans_b: bool
    packed: int | None = None
    ready: tuple | None = None
    bf16: bool = False
    epilogue: object = None
    windows: tuple | None = None
    packed_a: bool = False  # `packed` holds op(A) (a PackKernel's of "a"), not op(B)

    calls_gemm = True

    def flops(self, sizes: dict) -> int:
        return 2 * numel([concrete(d, sizes) for d in (self.m, self.n, self.k, self.batch)])

    def text(self) -> list:
        packed = f" (packed in b{self.packed})" if self.packed is not None else ""
        a, b = f"{'T' if self.trans_a else ''}b{self.a[0]}", f"{'T' if self.trans_b else ''}b{self.b[0]}"
        if self.windows:
            b = f"windows of b{self.b[0]}"
        a, b = (a + packed, b) if self.packed_a else (a, b + packed)
        return [
            f"gemm {self.batch} x [{self.m} x {self.k}] @ [{self.k} x {self.n}]: b{self.c[0]} = {a} @ {b}"
            f"{render.bf16(self)}{', then in its store:' if self.epilogue else ''}{render.located(self)}"
        ] + ["  " + line for line in (self.epilogue.text() if self.epilogue else [])]

    def accesses(self) -> tuple:
        reads, writes = self.epilogue.accesses() if self.epilogue else (set(), set())
        return {self.a[0], self.b[0]} | ({self.packed} if self.packed is not None else set()) | reads, {
            self.c[0]
        } | writes

    def renamed(self, names: dict) -> "GemmKernel | None":
        if self.ready is not None and self.ready[0] not in names:  # its flag is no operand
            return None
        return replace(
            self,
            a=operand_renamed(self.a, names),
            b=operand_renamed(self.b, names),
            c=operand_renamed(self.c, names),
            packed=None if self.packed is None else names[self.packed],
            ready=None if self.ready is None else operand_renamed(self.ready, names),
            epilogue=self.epilogue and self.epilogue.renamed(names),
        )

    def with_epilogue(self, m) -> "GemmKernel | None":
        """This GEMM computing the map m in its store, where m reads C at one index that
        walks C once over m's space (C's shapes in the class's docstring, an image's rows
        and columns merged into one run of pixels); else None."""
        buf, offset, ld, stride = self.c
        if self.epilogue is not None or not hasattr(m, "maps"):  # a map, or a fused one
            return None
        while m is not None and len(m.shape) > 3:
            m = merged(m, len(m.shape) - 2)
        read = read_once(m, buf)
        if read is None:
            return None
        at = read.at
        if len(m.shape) < 2:  # a vector (a matrix-vector product's): its own pass
            fits = False
        elif len(m.shape) == 2:
            fits = self.batch == 1 and m.shape == (self.m, self.n) and at == Affine(offset, (ld, 1))
        elif self.batch == 1:
            pixels = m.shape[2]
            # along an axis of one example (an example's step of a scan), any stride will do
            n_step = at.coeffs[0] if m.shape[0] == 1 else pixels
            fits = m.shape[1] == self.m and m.shape[0] * pixels == self.n and at == Affine(offset, (n_step, ld, 1))
        else:
            fits = m.shape == (self.batch, self.m, self.n) and at == Affine(offset, (stride, ld, 1))
        if not fits:
            return None
        c, m = in_place(m, buf, at)
        return self.taking(m, c=(c,) + self.c[1:], epilogue=m, node=m.node)

    def emit(self, f):
        """A call of the library's GEMM, which runs its own thread team."""
        from dlc.compiler.native.kernels.gemm.loops import gemm_kernel

        return gemm_kernel(f, self)


@dataclass
class PackKernel(Kernel):
    """out = op(B) (k x n) packed into the GEMM's panels (gemm/routine.py `add_pack`): a GEMM operand
    that stays the same at every step of a scan, packed once before the loop; `bf16`: as
    the bf16 routines take it. With `which` "a", op(A) (n x k: its n rows along the
    panels; `b` and `trans_b` are A's) for the `packed_a` routines, `count` matrices
    `stride` apart, their packs `a_pack_floats(k, n)` apart."""

    k: object
    n: object
    b: tuple  # (buffer, offset, ld)
    trans_b: bool
    out: int
    bf16: bool = False
    which: str = "b"
    count: int = 1
    stride: object = 0

    def text(self) -> list:
        many = f"{self.count} x " if self.count != 1 else ""
        shape = f"[{self.n} x {self.k}]" if self.which == "a" else f"[{self.k} x {self.n}]"  # op(A), op(B)
        return [
            f"pack {many}{shape}: b{self.out} = panels of {'T' if self.trans_b else ''}"
            f"{'A ' if self.which == 'a' else ''}b{self.b[0]}{render.bf16(self)}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return {self.b[0]}, {self.out}

    def renamed(self, names: dict) -> "PackKernel":
        return replace(self, b=operand_renamed(self.b, names), out=names[self.out])

    @property
    def packs_apart(self):
        """Floats from one matrix's pack to the next's in `out`."""
        return a_pack_floats(self.k, self.n)

    def emit(self, f):
        kb = f.serial()
        self.call(f, kb)
        return kb

    def call(self, f, kb):
        """The library's call that packs it, at kb's place."""
        from dlc.compiler.native.kernels.gemm.loops import pack_call

        pack_call(kb, f, self)


@dataclass
class WeightPacksKernel(Kernel):
    """The weights (parameters) of a prediction that its GEMMs take as B, packed into
    buffers of role "packed", which live as long as their owner (`packs`: PackKernels):
    the program's first kernel. Weight i is packed when its flag, `ready[flags[i]]` (an i32
    array, role "packed", whose other flags are those of other copies of weights:
    `weight_flag`), is 0 and a GEMM of this call will read the packed copy, and its flag is
    then set: so a weight is packed once, not at every call. Whoever changes a weight clears
    the flags (runtime/engines/native.py when the version of its Parameters changes, or at
    every call for a plain dict; library.c when one is set). A pack
    of A (a convolution's filters: weight_packed_a; its `rows` None) is always made. The
    GEMMs that read a copy of B: those with more than gemm.FEW_ROWS rows of `rows[i]` (the row
    counts of its GEMMs) or taking it transposed; and with `one_row` (pack_weights
    "once": packs kept between calls) the one-row products too, which then stream its panels
    instead of B's rows. Without it, a weight that only one-row products take is not
    packed, and they read B (its flag stays clear: GemmKernel.ready)."""

    packs: list
    rows: list
    ready: int
    one_row: bool = False
    flags: list = field(default_factory=list)  # the index in `ready` of each pack's flag

    def text(self) -> list:
        also = ", for one-row products too" if self.one_row else ""
        return [f"weight packs, each unless its flag in b{self.ready}{also}:{render.located(self)}"] + [
            "  " + line for p in self.packs for line in p.text()
        ]

    def accesses(self) -> tuple:
        return {self.ready} | {p.b[0] for p in self.packs}, {self.ready} | {p.out for p in self.packs}

    def emit(self, f):
        from dlc.compiler.native.kernels.gemm.loops import weight_packs

        kb = f.serial()
        weight_packs(kb, f, self)
        return kb


@dataclass
class WeightTransformKernel(Kernel):
    """A copy made of a prediction's weights in another form, `transform` (a map or fused
    map: Winograd's U = G g Gᵀ of every filter, a convolution's filters in its tiles'
    order; `what` names it), on a thread team. With `ready` ((buffer, index) of a flag:
    `weight_flag`; the copy a buffer kept between calls), only while that flag is clear,
    which it then sets, so a built library makes it once until a weight changes (the JIT
    clears them as WeightPacksKernel says). `pack` (a PackKernel of "a", with `ready` only:
    `packed_a_weight`): the copy then packed for a GEMM, which reads only the pack, so
    that the copy itself lives for this kernel only."""

    what: str
    transform: object
    ready: tuple | None = None
    pack: object = None

    def text(self) -> list:
        unless = f", unless its flag b{self.ready[0]}[{self.ready[1]}] is set" if self.ready else ""
        return [f"{self.what}{unless}:{render.located(self)}"] + [
            "  " + line for line in self.transform.text() + (self.pack.text() if self.pack else [])
        ]

    def accesses(self) -> tuple:
        reads, writes = self.transform.accesses()
        flag = {self.ready[0]} if self.ready else set()
        packed, pack = ({self.pack.b[0]}, {self.pack.out}) if self.pack else (set(), set())
        return reads | flag | packed, writes | flag | pack

    def renamed(self, names: dict) -> "WeightTransformKernel":
        return replace(
            self,
            transform=self.transform.renamed(names),
            ready=self.ready and operand_renamed(self.ready, names),
            pack=self.pack and self.pack.renamed(names),
        )

    def emit(self, f):
        from dlc.compiler.native.kernels.gemm.loops import weight_transform

        return weight_transform(f, self)


def packed_floats(k, n, nr: int = 32, tiles: bool = False):
    """Floats that op(B) (k x n) takes packed (gemm/routine.py `add_pack`) for panels nr wide; 32, the
    widest of any blocking, is enough for every one. `tiles`: room for the AMX panels too
    (a bf16 program's), whose bfloat16 pairs (half a float each) fill whole tiles of 32
    along K: 16 rows more. k and n may be dim polynomials."""
    rows = k + 16 if tiles else k
    return rows * (n + nr - 1) if not isinstance(n, int) else rows * (-(-n // nr) * nr)


def a_pack_floats(k, m, bf16: bool = False):
    """Floats that op(A) (m x k) takes packed (`add_pack` of "a") for the panels of any
    float32 blocking: where the next matrix's pack starts in a batch's (codegen/gemm/routine.py
    `packed_a`). `bf16`: one matrix's for any bf16 blocking (panels of at most 32 rows, with
    room for the AMX tiles)."""
    return (k + 16) * (m + 31) if bf16 else packed_floats(k, m, nr=A_PANEL_ROWS)


def packed_a_weight(lw, a: tuple, m, k, batch, node: int) -> PackKernel | None:
    """The PackKernel of op(A) (a: buffer, offset, ld, batch stride; m x k, `batch`
    matrices, or one broadcast) for the `packed_a` routines, which then read only the pack:
    where A is made of weights only (a convolution's filters, or their Winograd transform)
    in a prediction whose every change of a weight is known (pack_weights "once": a built
    library's, the engine's of Parameters), its sizes known. The caller runs it before the
    GEMM while the weight's flag (`weight_flag`) is clear, and sets the flag. In a bf16
    program, rounded as the bf16 GEMM packs it, for one matrix of A (or a broadcast one) of
    more than FEW_ROWS rows: the GEMM packs fewer rows in no pack, and bf16's few-row
    products sum otherwise than its tiles. Else None: A is packed by the GEMM at every call
    (with "each call" the weights may be new at any call, and a copy of every weight made
    then would cost more than it saves)."""
    buffer, offset, ld, stride = a
    count = batch if stride else 1  # a broadcast A (a per-example product's filters): one pack
    if _program(lw).pack_weights != "once" or symbols([m, k, count, offset, ld, stride]):
        return None
    if lw.bf16 and (count != 1 or m <= FEW_ROWS):
        return None
    size = count * a_pack_floats(k, m, lw.bf16)
    out = lw.p.buffer("f32", size, "packed", f"{lw.p.buffers[buffer].name} packed")
    return PackKernel(
        k, m, (buffer, offset, ld), False, out.id, lw.bf16, which="a", count=count, stride=stride, node=node
    )


def weight_packed_a(lw, a: tuple, m, k, batch, node: int) -> tuple | None:
    """(buffer, flag) of op(A), a parameter (a convolution's filters), packed by the
    program's WeightPacksKernel as packed_a_weight says; else None."""
    if lw.p.buffers[a[0]].role != "param":
        return None
    pack = packed_a_weight(lw, a, m, k, batch, node)
    if pack is None:
        return None
    ready = weight_flag(lw, a[0])  # made only for a pack: pack_weights "once", a parameter
    packs = _weight_packs(lw)
    packs.packs.append(pack)
    packs.rows.append(None)
    packs.flags.append(ready[1])
    return pack.out, ready


def same_every_step(lw, operand: tuple) -> bool:
    """Whether a GEMM operand (of `Lowering.matrix`) is the same at every step of the scan
    lowering `lw`'s graph is the body of: made before the loop, at an offset without the
    step (a recurrent weight)."""
    if lw is None or lw.loop is None:
        return False
    buffer, offset = operand[:2]
    return buffer < lw.loop[1] and f"$t{lw.depth - 1}" not in symbols([offset])


def packed_before_loop(lw, operand: tuple, k, n, trans: bool, node: int) -> int | None:
    """The buffer holding a GEMM operand (of `Lowering.matrix`) packed once before the scan
    lowering `lw`'s graph is the body of, where it is the same at every step
    (`same_every_step`), else None. It is packed before the outermost scan it is the same
    in, once for all its GEMMs."""
    if not same_every_step(lw, operand):
        return None
    outer = lw.loop[0]
    buffer, offset, ld = operand[:3]
    hoisted = packed_before_loop(outer, operand, k, n, trans, node)
    if hoisted is not None:
        return hoisted
    key = (buffer, offset, ld, k, n, trans)
    if key not in outer.packs:
        out = lw.p.buffer("f32", packed_floats(k, n, tiles=lw.bf16), "temp")
        lw.emit(PackKernel(k, n, (buffer, offset, ld), trans, out.id, lw.bf16, node=node), into=outer.kernels)
        outer.packs[key] = out.id
    return outer.packs[key]


def _weight_packs(lw) -> WeightPacksKernel | None:
    """The WeightPacksKernel of the program lowering lw (of the outermost lowering, for a
    scan's body) when it is lowered with `pack_weights` (a prediction's), made the first
    time; else None."""
    root = _program(lw)
    if not root.pack_weights:
        return None
    if root.weight_packs is None:
        ready = lw.p.buffer("i32", 0, "packed", "weights packed")
        # of no node: the whole program's; packs kept between calls serve one-row products
        # too, but for bf16 products (few_rows reads B: their packs are rounded, or pairs)
        one_row = root.pack_weights == "once" and not lw.bf16
        root.weight_packs = WeightPacksKernel([], [], ready.id, one_row)
        root.kernels.insert(0, root.weight_packs)
        lw.p.weights_ready = ready.id
    return root.weight_packs


def _program(lw):
    """The lowering of the whole program that lw's is (a scan's body's) or is part of."""
    while lw.loop is not None:
        lw = lw.loop[0]
    return lw


def weight_flag(lw, weight: int) -> tuple | None:
    """(buffer, index) of a new flag that says a copy made of buffer `weight` is up to
    date, where `weight` is a parameter of a prediction lowered with `pack_weights`: a
    change of a weight clears every flag of the program (WeightPacksKernel); else None."""
    packs = _weight_packs(lw) if lw.p.buffers[weight].role == "param" else None
    if packs is None:
        return None
    flags = lw.p.buffers[packs.ready]
    flags.size += 1
    return packs.ready, flags.size - 1


def weight_packs_kept(lw, operand: tuple, k, n) -> bool:
    """Whether a GEMM operand (of `Lowering.matrix`, k x n) is a weight (a parameter) of a
    program lowered with `pack_weights` (a prediction's), its sizes and place known: one
    that `packed_weight` packs."""
    buffer, offset, ld = operand[:3]
    return (
        lw is not None
        and bool(_program(lw).pack_weights)
        and not symbols([k, n, offset, ld])
        and lw.p.buffers[buffer].role == "param"
    )


def packed_weight(lw, operand: tuple, k, n, m, trans: bool, node: int) -> tuple:
    """The buffer holding a GEMM operand (of m rows of A) that `weight_packs_kept`, packed
    once while it stays the same, and (buffer, index) of its flag: the program's
    WeightPacksKernel packs it before everything else, for all its GEMMs and calls until a
    weight changes."""
    buffer, offset, ld = operand[:3]
    packs = _weight_packs(lw)
    key = (buffer, offset, ld, k, n, trans)
    for p, rows, flag in zip(packs.packs, packs.rows, packs.flags):
        if p.which == "b" and p.b + (p.k, p.n, p.trans_b) == key:
            rows.append(m)
            return p.out, (packs.ready, flag)
    out = lw.p.buffer("f32", packed_floats(k, n, tiles=lw.bf16), "packed", f"{lw.p.buffers[buffer].name} packed")
    packs.packs.append(PackKernel(k, n, (buffer, offset, ld), trans, out.id, lw.bf16, node=node))
    packs.rows.append([m])
    ready = weight_flag(lw, buffer)
    packs.flags.append(ready[1])
    return out.id, ready


# ---- the implementations of matmul (compiler/native/choose/matmul.py) -------------------------------
def _matmul(lw, n, attrs, typ, mm, pack_b):
    """Matmul node n (`mm`: the Matmul its list reads, its operands as matrices) as a
    GemmKernel, op(B)'s pack and its flag given by pack_b(B transposed) ((None, None): none)."""
    la, lb = mm.a, mm.b
    ta, tb = attrs["ta"] != la[4], attrs["tb"] != lb[4]
    out = lw.place(lw.graph.outputs_of(n)[0], rows=True)
    packed, ready = pack_b(tb)
    c = (out.buffer, out.at.offset, out.at.coeffs[-2] if typ.rank >= 2 else mm.n, mm.m * mm.n)
    lw.emit(GemmKernel(mm.m, mm.n, mm.k, mm.batch, la[:4], lb[:4], c, ta, tb, packed, ready, lw.bf16, node=n))
    lw.set(n, out)


@register_implementation("matmul", "weights packed first")
def _weights_packed_first(lw, n, ins, attrs, typ, mm):
    _matmul(lw, n, attrs, typ, mm, lambda tb: packed_weight(lw, mm.b, mm.k, mm.n, mm.m, tb, n))


@register_implementation("matmul", "packed before the loop")
def _packed_before_the_loop(lw, n, ins, attrs, typ, mm):
    _matmul(lw, n, attrs, typ, mm, lambda tb: (packed_before_loop(lw, mm.b, mm.k, mm.n, tb, n), None))


@register_implementation("matmul", "packed by the GEMM")
def _packed_by_the_gemm(lw, n, ins, attrs, typ, mm):
    _matmul(lw, n, attrs, typ, mm, lambda tb: (None, None))
