"""Loops computed in vectors: the innermost loop of a map, written W lanes at a time in IR.

LLVM vectorizes loops only in its O3 pipeline, so the quick code (docs/native.md, "Quick code
first") ran every elementwise map one element at a time, at a third of O3's speed. A map
whose every access along its innermost axis is contiguous or invariant, and whose every
operation is computed lane by lane in IR (scalar.py `lanewise`), is instead emitted with
vector values: the loop steps by W, a contiguous access is one vector load or store, an
invariant one a scalar in every lane. The last step, with fewer than W elements left, loads
and stores under a mask (its idle lanes read 0 and write nothing), so memory outside a
buffer is never touched. A store a whole step apart along the axis (a convolution's row
epilogue storing channels last: `store`'s `step`) stores each lane on its own. Each lane computes what the scalar loop computed for its element,
in the same operations: the bits are the same at every level and on every ISA.

`LaneBuilder` is the IRBuilder of every kernel: where an operation meets a vector and a
scalar, the scalar stands in every lane, so the scalar rules (scalar.py) build vector code
unchanged.
"""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import masked, splat
from dlc.compiler.native.codegen.scalar import lanewise
from dlc.compiler.native.codegen.types import LL, i1, i8, i32, i64
from dlc.compiler.native.program import Const, Guarded, Index, Load, Op, Size

_BINARY = "add fadd sub fsub mul fmul sdiv udiv fdiv srem urem frem and_ or_ xor shl lshr ashr".split()
_COMPARE = "icmp_signed icmp_unsigned fcmp_ordered fcmp_unordered".split()
_CAST = "trunc zext sext fptrunc fpext fptosi fptoui sitofp uitofp bitcast".split()


def lanes_of(*values) -> int | None:
    """The lane count of the vectors among `values`, None when all are scalars."""
    for v in values:
        if isinstance(v.type, ir.VectorType):
            return v.type.count
    return None


def widened(b: ir.IRBuilder, v: ir.Value, count: int | None) -> ir.Value:
    """v in every one of `count` lanes when it is a scalar (count None: v as it is); a
    constant stays a constant."""
    if count is None or isinstance(v.type, ir.VectorType):
        return v
    vty = ir.VectorType(v.type, count)
    if isinstance(v, ir.Constant):
        return ir.Constant(vty, [v.constant] * count)
    return splat(b, v, vty)


class LaneBuilder(ir.IRBuilder):
    """An IRBuilder on which an operation given a vector and scalars takes each scalar in every
    lane, and a cast of a vector to a scalar type casts each lane (module docstring)."""

    def matched(self, *values) -> list:
        count = lanes_of(*values)
        return [widened(self, v, count) for v in values]


def _lanewise(name: str, first: int, count: int):
    """The method `name` of ir.IRBuilder with its operands `first` .. `first + count - 1` matched."""
    base = getattr(ir.IRBuilder, name)

    def method(self, *args, **kwargs):
        args = list(args)
        args[first : first + count] = self.matched(*args[first : first + count])
        return base(self, *args, **kwargs)

    method.__name__ = name
    return method


def _cast(name: str):
    base = getattr(ir.IRBuilder, name)

    def method(self, value, typ, *args, **kwargs):
        count = lanes_of(value)
        if count is not None and not isinstance(typ, ir.VectorType) and _lane_cast(name, value.type, typ):
            typ = ir.VectorType(typ, count)
        return base(self, value, typ, *args, **kwargs)

    method.__name__ = name
    return method


for _name in _BINARY:
    setattr(LaneBuilder, _name, _lanewise(_name, 0, 2))
for _name in _COMPARE:
    setattr(LaneBuilder, _name, _lanewise(_name, 1, 2))
for _name in _CAST:
    setattr(LaneBuilder, _name, _cast(_name))
LaneBuilder.select = _lanewise("select", 0, 3)


def vectorizes(e, axis: int, written: dict | None = None) -> bool:
    """Whether expression e computes in vectors along index position `axis`: its loads
    contiguous or invariant along it (and at the index it is stored at, for a buffer in
    `written`: buffer -> where a member of its loop stores it), its indices' steps whole
    numbers, and its every operation built lane by lane (scalar.lanewise)."""
    written = written or {}
    if isinstance(e, Load):
        step = e.at.coeffs[axis]
        return isinstance(step, int) and step in (0, 1) and written.get(e.buffer, e.at) == e.at
    if isinstance(e, Guarded):  # one test for every lane: its guards the same along the axis
        steps = [a.coeffs[axis] for a, _ in e.guards]
        return all(isinstance(c, int) and c == 0 for c in steps) and vectorizes(e.load, axis, written)
    if isinstance(e, Index):
        return isinstance(e.at.coeffs[axis], int)
    if isinstance(e, Op):
        return all(vectorizes(a, axis, written) for a in e.args) and lanewise(e.name, e.args[-1].dtype)
    return isinstance(e, (Const, Size))


class Lanes:
    """The step of a vector loop (KernelBuilder.loops with `lanes`): `count` lanes along index
    position `axis`; `left`, the elements left from this step's first (an i64), makes `full`
    (i1) where all lanes are elements, else `mask` (which are); None: they always are."""

    def __init__(self, b: ir.IRBuilder, count: int, axis: int, left: ir.Value | None = None):
        self.count, self.axis = count, axis
        self.full = self.mask = None
        if left is not None:
            self.full = b.icmp_signed(">=", left, ir.Constant(i64, count))
            lane = ir.Constant(ir.VectorType(i64, count), list(range(count)))
            self.mask = b.icmp_signed("<", lane, widened(b, left, count))

    def load(self, kb, ptr: ir.Value, dtype: str, bid: int) -> ir.Value:
        """The vector at ptr, its lanes' elements only on a partial step."""
        b, t = kb.b, _memory_type(dtype)
        vty = ir.VectorType(t, self.count)
        vptr = b.bitcast(ptr, vty.as_pointer())
        if self.full is None:
            v = kb.disjoint(b.load(vptr, align=element_align(t)), bid)
            return b.trunc(v, i1) if dtype == "bool" else v
        load, _ = masked(kb.m, vty)
        with b.if_else(self.full) as (whole, part):
            with whole:
                a = kb.disjoint(b.load(vptr, align=element_align(t)), bid)
                a_block = b.block
            with part:
                c = kb.disjoint(
                    b.call(load, [vptr, ir.Constant(i32, element_align(t)), self.mask, ir.Constant(vty, None)]), bid
                )
                c_block = b.block
        v = b.phi(vty)
        v.add_incoming(a, a_block)
        v.add_incoming(c, c_block)
        return b.trunc(v, i1) if dtype == "bool" else v

    def store(self, kb, ptr: ir.Value, dtype: str, bid: int, v: ir.Value, step: int = 1):
        """Store the vector v (a scalar: in every lane) at ptr, lane k `step` elements after
        lane k - 1, its lanes' elements only on a partial step."""
        b, t = kb.b, _memory_type(dtype)
        v = widened(b, v, self.count)
        if dtype == "bool":
            v = b.zext(v, i8)
        if step != 1:
            self._scattered(kb, ptr, bid, v, step)
            return
        vty = ir.VectorType(t, self.count)
        vptr = b.bitcast(ptr, vty.as_pointer())
        if self.full is None:
            kb.disjoint(b.store(v, vptr, align=element_align(t)), bid)
            return
        _, store = masked(kb.m, vty)
        with b.if_else(self.full) as (whole, part):
            with whole:
                kb.disjoint(b.store(v, vptr, align=element_align(t)), bid)
            with part:
                kb.disjoint(b.call(store, [v, vptr, ir.Constant(i32, element_align(t)), self.mask]), bid)

    def _scattered(self, kb, ptr: ir.Value, bid: int, v: ir.Value, step: int):
        """Each lane of v stored on its own, `step` elements apart (no vector store or scatter
        of bytes: the lanes computed together are still most of the work)."""
        b = kb.b

        def lane(k: int):
            kb.disjoint(
                b.store(b.extract_element(v, ir.Constant(i32, k)), b.gep(ptr, [ir.Constant(i64, k * step)])), bid
            )

        if self.full is None:
            for k in range(self.count):
                lane(k)
            return
        with b.if_else(self.full) as (whole, part):
            with whole:
                for k in range(self.count):
                    lane(k)
            with part:
                for k in range(self.count):
                    with b.if_then(b.extract_element(self.mask, ir.Constant(i32, k))):
                        lane(k)

    def steps(self, b: ir.IRBuilder, v: ir.Value, coeff: int) -> ir.Value:
        """The i64 v at lane 0, v + coeff at lane 1, ...: an index's value in each lane."""
        step = ir.Constant(ir.VectorType(i64, self.count), [coeff * k for k in range(self.count)])
        return b.add(widened(b, v, self.count), step)


def _lane_cast(name: str, vty: ir.VectorType, typ: ir.Type) -> bool:
    """Whether a cast of a vector to the scalar type typ casts each lane: always but for a
    bitcast of the whole vector to a scalar of its size (a mask's bits as an integer)."""
    return name != "bitcast" or _bits(vty.element) == _bits(typ) != _bits(vty.element) * vty.count


def _bits(t: ir.Type) -> int:
    return t.width if isinstance(t, ir.IntType) else 64 if isinstance(t, ir.DoubleType) else 32


def _memory_type(dtype: str) -> ir.Type:
    return i8 if dtype == "bool" else LL[dtype]


def element_align(t: ir.Type) -> int:
    """The alignment a vector of t's lanes is accessed at: its element's (the arrays'), not the vector's."""
    return max(1, t.width // 8) if isinstance(t, ir.IntType) else (8 if t == LL["f64"] else 4)
