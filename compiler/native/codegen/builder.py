"""KernelBuilder: the LLVM IR of one kernel function — its values (dims, pointers, affine
indices), loop nests, memory accesses with their alias scopes, run-time checks.

Every kernel function is

    void kernel(i8** slots, i64* sizes, i64 nthreads)

it reads the few pointer-table entries it uses from its own argument slots (driver.py),
and `sizes` holds the value of every symbolic dim (in `KernelProgram.symbols` order).
"""

from __future__ import annotations


from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.lanes import LaneBuilder, Lanes
from dlc.compiler.native.program import Affine, Const, Gather, Guarded, Index, KernelProgram, Load, Op, Random, Size
from dlc.compiler.native.codegen.scalar import emit, random
from dlc.compiler.native.codegen.types import LL, i1, i8, i32, i64, is_float


# The fault flag, i64: 0, or the site + 1 of a failed run-time check (KernelProgram.faults). It
# is the i64 just before the sizes array, sizes[-1]: each caller's own (an engine's layout, a
# library's instance), so that calls on different sizes arrays may run at once.
FAULT_SLOT = -1


def fault_flag(b: ir.IRBuilder, sizes: ir.Value) -> ir.Value:
    return b.gep(sizes, [ir.Constant(i64, FAULT_SLOT)])


def _alias_scopes(module: ir.Module) -> dict:
    """The module's alias scopes: "domain", and buffer id -> its scope. Kept on the module:
    the scopes' metadata refers to the module, so a table keyed by it (even weakly) would
    keep every module ever built alive."""
    if not hasattr(module, "dlc_alias_scopes"):
        module.dlc_alias_scopes = {"domain": module.add_metadata([ir.MetaDataString(module, "dlc.buffers")])}
    return module.dlc_alias_scopes


# LLVM's loop hints for a loop nest whose accesses are all contiguous (or invariant) along
# its innermost loop. LLVM fully unrolls short loops before its loop vectorizer runs, which
# leaves the loop around them innermost; it then vectorized that one across rows, with gathers
# and scatters. So the innermost loop, from ROLLED_FROM iterations, is not unrolled (it
# vectorizes along the row), and the loops around it are never vectorized (a short innermost
# loop is unrolled into scalar code instead): in ResNet-18's first stage the col2im took 0.9
# ms instead of 2.2, the im2col 1.2 instead of 1.9 (docs/native.md, "Loop hints").
ROLLED_FROM = 16
# ... and for a loop nest that adds into memory through a stride along its innermost loop (a
# strided convolution's col2im), LLVM vectorized the read-modify-write with gathers and
# scatters, which cost more than scalar code: MobileNetV2's stride-2 depthwise input gradient
# at 16 x 16 outputs took 6.9 ms a step of 74 on Zen 4, 1.8 as scalar code. No loop of such
# a nest is vectorized. (A map's strided loads alone keep LLVM's gathers: max pooling's
# stride-2 taps took 3.9 ms as gathers, 4.9 as scalar code.)
UNROLL_DISABLE = ("llvm.loop.unroll.disable",)
VECTORIZE_DISABLE = ("llvm.loop.vectorize.enable", False)


def loop_hint(module: ir.Module, hint: tuple) -> ir.values.MDValue:
    """The module's `llvm.loop` node holding `hint` (a name, and a flag). A loop's node refers
    to itself, which llvmlite's uniquing `add_metadata` cannot build. One node per hint for
    every loop, so that kernels alike stay alike to the letter (driver.py)."""
    nodes = module.__dict__.setdefault("dlc_loop_hints", {})
    if hint not in nodes:
        name, *flag = hint
        hint_node = module.add_metadata([ir.MetaDataString(module, name)] + [ir.Constant(i1, f) for f in flag])
        node = ir.values.MDValue(module, [], name=str(len(module.metadata)))
        node.operands = (node, hint_node)
        nodes[hint] = node
    return nodes[hint]


class Arguments:
    """A kernel's argument slots: slot k holds pointer-table entry `refs[k]`."""

    def __init__(self, first=()):
        self.refs = list(first)

    def slot(self, entry: int) -> int:
        if entry not in self.refs:
            self.refs.append(entry)
        return self.refs.index(entry)


class KernelBuilder:
    def __init__(self, module: ir.Module, prog: KernelProgram, fn: ir.Function, args: Arguments | None = None):
        self.m, self.p, self.fn = module, prog, fn
        # the entry block only loads sizes and buffer pointers and makes stack slots, so
        # that they sit outside every loop; the code goes in the blocks after it
        entry, body = fn.append_basic_block("entry"), fn.append_basic_block("body")
        self.eb = ir.IRBuilder(entry)
        self.eb.position_before(self.eb.branch(body))
        self.b = LaneBuilder(body)
        ptrs, sizes = fn.args[0], fn.args[1]
        self.sizes = {
            s: self.eb.load(self.eb.gep(sizes, [ir.Constant(i64, k)]), name=s) for k, s in enumerate(prog.symbols)
        }
        self.ptrs = {}
        self.slots = ptrs
        self.args = Arguments() if args is None else args
        self.stored: dict = {}  # (buffer, index) -> value stored earlier in this iteration
        self.accesses: list = []  # (load or store, buffer) to annotate
        self.fault = None  # the largest fault site + 1 seen by this function's checks
        self.lanes: Lanes | None = None  # the step of the vector loop being built (loops' `lanes`)

    def alloca(self, t):
        return self.eb.alloca(t)

    # -- values --
    def dim(self, d) -> ir.Value:
        """The value of a dim (an int, a Dim, or already an i64 value)."""
        if isinstance(d, ir.Value):
            return d
        if isinstance(d, int):
            return ir.Constant(i64, d)
        total = None
        for mono, coef in d.terms.items():
            term = ir.Constant(i64, coef)
            for sym in mono:
                term = self.b.mul(term, self.sizes[sym])
            total = term if total is None else self.b.add(total, term)
        return total

    def argument(self, entry: int) -> ir.Value:
        """The pointer-table entry, loaded once in the entry block."""
        if entry not in self.ptrs:
            self.ptrs[entry] = self.eb.load(self.eb.gep(self.slots, [ir.Constant(i64, self.args.slot(entry))]))
        return self.ptrs[entry]

    def buffer(self, bid: int, dtype: str) -> ir.Value:
        key = (bid, dtype)
        if key not in self.ptrs:
            self.ptrs[key] = self.eb.bitcast(self.argument(bid), LL[dtype].as_pointer())
        return self.ptrs[key]

    def affine(self, a: Affine, idx: list) -> ir.Value:
        v = self.dim(a.offset)
        for c, i in zip(a.coeffs, idx):
            if isinstance(c, int) and c == 0:
                continue
            v = self.b.add(v, i if isinstance(c, int) and c == 1 else self.b.mul(self.dim(c), i))
        return v

    # -- loops --
    def loops(self, shape, body, idx=None, first=None, contiguous=False, scattered=False, rolled=False, lanes=None):
        """Nested loops over shape (outermost first); body(indices). `first` = (lo, hi)
        limits the outermost loop (a thread's share). `contiguous`: every access of the body
        is contiguous or invariant along the innermost loop, whose loop hints then say so
        (ROLLED_FROM). `scattered`: the body adds into memory strided along the innermost
        loop, and no loop is vectorized (gathers and scatters cost more than scalar code).
        `rolled`: the innermost loop is not unrolled (a body of vector code already, whose
        loads of one iteration unrolled would be kept in registers for the next). `lanes` =
        (count, axis): the innermost loop steps by count, its body built on vectors, lane k
        at element i + k of index position `axis` (codegen/lanes.py)."""
        idx = idx or []
        if len(idx) == len(shape):
            body(idx)
            return
        b = self.b
        lo, n = (ir.Constant(i64, 0), self.dim(shape[len(idx)])) if first is None or idx else first
        pre = b.block
        head = b.append_basic_block("loop")
        after = b.append_basic_block("after")
        b.cbranch(b.icmp_signed(">", n, lo), head, after)
        b.position_at_end(head)
        i = b.phi(i64, name=f"i{len(idx)}")
        i.add_incoming(lo, pre)
        step = 1
        if lanes is not None and len(idx) + 1 == len(shape):
            step, axis = lanes
            self.lanes = Lanes(b, step, axis, b.sub(n, i))
            body(idx + [i])
            self.lanes = None
        else:
            self.loops(shape, body, idx + [i], contiguous=contiguous, scattered=scattered, rolled=rolled, lanes=lanes)
        nxt = b.add(i, ir.Constant(i64, step))
        i.add_incoming(nxt, b.block)
        back = b.cbranch(b.icmp_signed("<", nxt, n), head, after)
        if scattered or contiguous and len(idx) + 1 < len(shape):
            back.set_metadata("llvm.loop", loop_hint(self.m, VECTORIZE_DISABLE))
        elif (
            rolled
            and len(idx) + 1 == len(shape)
            or contiguous
            and isinstance(shape[-1], int)
            and shape[-1] >= ROLLED_FROM
        ):
            back.set_metadata("llvm.loop", loop_hint(self.m, UNROLL_DISABLE))
        b.position_at_end(after)

    # -- expressions --
    def expr(self, e, idx) -> ir.Value:
        """The value of expression `e` at index `idx` (each kind asks for one of the methods below)."""
        return e.emit(self, idx)

    def const(self, e: Const) -> ir.Value:
        t = LL[e.dtype]
        return ir.Constant(t, float(e.value) if is_float(t) else int(e.value))

    def size(self, e: Size) -> ir.Value:
        return self.b.trunc(self.dim(e.dim), i32)

    def load(self, e: Load, idx) -> ir.Value:
        b = self.b
        if (e.buffer, e.at) in self.stored:
            return self.stored[e.buffer, e.at]
        ptr = b.gep(self.buffer(e.buffer, e.dtype if e.dtype != "bool" else "i8"), [self.affine(e.at, idx)])
        if self.lanes is not None and e.at.coeffs[self.lanes.axis] == 1:
            return self.lanes.load(self, ptr, e.dtype, e.buffer)
        v = self.disjoint(b.load(ptr), e.buffer)  # a scalar, in every lane of a vector loop
        return b.trunc(v, i1) if e.dtype == "bool" else v

    def index(self, e: Index, idx) -> ir.Value:
        v = self.affine(e.at, idx)
        if self.lanes is not None:
            v = self.lanes.steps(self.b, v, e.at.coeffs[self.lanes.axis])
        return self.b.sitofp(v, LL[e.dtype]) if e.dtype in ("f32", "f64") else self.b.trunc(v, LL[e.dtype])

    def random(self, e: Random, idx) -> ir.Value:
        return random(self, e, idx)

    def gather(self, e: Gather, idx) -> ir.Value:
        b = self.b
        row = b.sext(self.expr(e.idx, idx), i64)
        ok = self.in_range(row, e.count, e.site)
        at = b.select(ok, b.add(b.mul(row, self.dim(e.stride)), self.affine(e.rows, idx)), ir.Constant(i64, 0))
        v = self.disjoint(b.load(b.gep(self.buffer(e.table, e.dtype), [at])), e.table)
        return b.select(ok, v, ir.Constant(v.type, None))

    def guarded(self, e: Guarded, idx) -> ir.Value:
        """e's load where its guards hold, else its fill (the load then at index 0, inside the
        buffer); in a vector loop, whose axis the guards do not vary along (lanes.vectorizes),
        one test for all its lanes."""
        b = self.b
        ok = self.inside(e.guards, idx)
        at = b.select(ok, self.affine(e.load.at, idx), ir.Constant(i64, 0))
        ptr = b.gep(self.buffer(e.load.buffer, e.load.dtype), [at])
        if self.lanes is not None and e.load.at.coeffs[self.lanes.axis] == 1:
            v = self.lanes.load(self, ptr, e.load.dtype, e.load.buffer)
            return b.select(ok, v, ir.Constant(v.type, [e.fill] * v.type.count))
        v = self.disjoint(b.load(ptr), e.load.buffer)
        return b.select(ok, v, ir.Constant(v.type, e.fill))

    def op(self, e: Op, idx) -> ir.Value:
        return emit(self, e, [self.expr(a, idx) for a in e.args])

    def inside(self, guards, idx) -> ir.Value:
        """Whether every guarded index is within [0, size)."""
        b, ok = self.b, ir.Constant(i1, 1)
        for a, size in guards:
            v = self.affine(a, idx)
            ok = b.and_(ok, b.and_(b.icmp_signed(">=", v, ir.Constant(i64, 0)), b.icmp_signed("<", v, self.dim(size))))
        return ok

    def in_range(self, v, count, site: int) -> ir.Value:
        """Whether 0 <= v < count; where not, the function reports fault `site`. Callers
        read and write at index 0 instead, so memory outside a buffer is never touched.
        The fault is a max-reduction in a register, so loops with checks still vectorize."""
        b = self.b
        ok = b.and_(b.icmp_signed(">=", v, ir.Constant(i64, 0)), b.icmp_signed("<", v, self.dim(count)))
        if self.fault is None:
            self.fault = self.alloca(i64)
            self.eb.store(ir.Constant(i64, 0), self.fault)
        seen = b.load(self.fault)
        code = self.eb.ptrtoint(self.argument(len(self.p.buffers) + site), i64)  # site + 1 (module docstring)
        hit = b.select(ok, ir.Constant(i64, 0), code)
        b.store(b.select(b.icmp_unsigned(">", hit, seen), hit, seen), self.fault)
        return ok

    def replaces_max(self, v, best) -> ir.Value:
        """Whether v takes the place of the running maximum, as numpy's argmax: the first
        NaN wins, and nothing replaces it. Lane by lane for vectors."""
        b = self.b
        t = v.type.element if isinstance(v.type, ir.VectorType) else v.type
        if t == ir.IntType(1):  # bool: true (1) is the larger, not -1
            return b.icmp_unsigned(">", v, best)
        if not is_float(t):
            return b.icmp_signed(">", v, best)
        return b.and_(b.fcmp_unordered(">", v, best), b.fcmp_ordered("ord", best, best))

    def finish(self):
        """Annotate the accesses, report a fault to the fault flag (sizes[-1]), return."""
        self.annotate()
        b = self.b
        if self.fault is not None:
            seen = b.load(self.fault)
            with b.if_then(b.icmp_unsigned("!=", seen, ir.Constant(i64, 0))):
                b.store_atomic(seen, fault_flag(b, self.fn.args[1]), "monotonic", 8)
        b.ret_void()

    def call(self, name, ret, args):
        return self.b.call(declare(self.m, name, ret, [a.type for a in args]), args)

    def intrinsic(self, name, *args):
        """The overloaded intrinsic `name` (llvm.fma, ...) on args of one type, scalars or vectors."""
        args = self.b.matched(*args)
        t = args[0].type
        if isinstance(t, ir.VectorType):  # llvmlite names the overloads of scalar types only
            suffix = f"v{t.count}{t.element.intrinsic_name}"
            return self.b.call(declare(self.m, f"{name}.{suffix}", t, [t] * len(args)), list(args))
        return self.b.call(self.m.declare_intrinsic(name, [t], ir.FunctionType(t, [t] * len(args))), list(args))

    def store(self, bid, dtype, at: ir.Value, v: ir.Value, step: int = 1):
        """v at element `at` of buffer bid; in a vector loop, lane k at at + k · step."""
        if self.lanes is not None:
            self.lanes.store(
                self, self.b.gep(self.buffer(bid, "i8" if dtype == "bool" else dtype), [at]), dtype, bid, v, step
            )
        elif dtype == "bool":
            self.disjoint(self.b.store(self.b.zext(v, i8), self.b.gep(self.buffer(bid, "i8"), [at])), bid)
        else:
            self.disjoint(self.b.store(v, self.b.gep(self.buffer(bid, dtype), [at])), bid)

    def disjoint(self, access, bid: int):
        """Note an access for `annotate`."""
        self.accesses.append((access, bid))
        return access

    def annotate(self):
        """Tell LLVM that accesses to different buffers never overlap (scoped noalias, one
        scope per buffer), so loops touching many buffers vectorize without runtime
        overlap checks. True: distinct buffers are distinct arrays, or arena slots whose
        live ranges, both covering this kernel, are disjoint (compiler/native/memory.py)."""
        scopes = _alias_scopes(self.m)
        # named by argument slot, not buffer, so that kernels alike are alike to the letter
        used = sorted({self.args.slot(bid) for _, bid in self.accesses})
        for slot in used:
            if slot not in scopes:
                scopes[slot] = self.m.add_metadata([ir.MetaDataString(self.m, f"dlc.s{slot}"), scopes["domain"]])
        own = {slot: self.m.add_metadata([scopes[slot]]) for slot in used}
        others = {slot: self.m.add_metadata([scopes[o] for o in used if o != slot]) for slot in used}
        for access, bid in self.accesses:
            slot = self.args.slot(bid)
            access.set_metadata("alias.scope", own[slot])
            access.set_metadata("noalias", others[slot])
        self.accesses.clear()
