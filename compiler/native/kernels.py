"""LLVM IR for a kernel program: one function per kernel, and a driver that runs them all.

    void dlc_step(i8** arguments, i64* sizes, i64 nthreads)

The engine keeps a pointer table: one entry per buffer of the program, then one per
run-time check (the site's number + 1, in place of a pointer), then the optimizer
update's five arrays. A kernel never sees that table: it reads the few entries it uses
from its own argument slots, and `arguments` is the concatenation of every kernel call's
slots (`StepModule.arguments` names the table entry behind each). So kernels that differ
only in the buffers they touch, as the layers of a deep network do, are one function,
compiled once. `sizes` holds the value of every symbolic dim (in `Program.symbols`
order). Kernels are loop nests over their iteration space; the innermost loop walks the
last axis, where loads are usually contiguous, so LLVM vectorizes it. Math functions
call the C library (expf, tanhf, ...).
"""
from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass

from llvmlite import ir

from ..dims import numel
from .lower import (AccumulateKernel, Affine, Const, FusedMapKernel, Gather, GemmKernel, Guarded, Index, Load,
                     MapKernel,
                     MaxPoolGradKernel, Op, Program, Random, ReduceKernel, ScanKernel, ScatterAddKernel, Size,
                     SmallGemmKernel)
from .gemm import declare, default_config, gemm_name, masked, splat, vec_ptr

i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
f32, f64 = ir.FloatType(), ir.DoubleType()
LL = {"f32": f32, "f64": f64, "i32": i32, "i64": i64, "bool": i1, "i8": i8}
FAST = ("contract",)
GEMM_TYPE = ir.FunctionType(i32, [i64] * 3 + [f32.as_pointer(), i64, i64] * 3 + [i64, i64])
LIBM = {"log": "log", "log1p": "log1p", "sin": "sin", "cos": "cos", "erf": "erf", "pow": "pow"}   # + "f" for f32


_SCOPES: "weakref.WeakKeyDictionary[ir.Module, dict]" = weakref.WeakKeyDictionary()
FAULT = "dlc_fault"     # i64: 0, or the site + 1 of a failed run-time check (Program.faults)


def fault_flag(module: ir.Module) -> ir.GlobalVariable:
    if FAULT not in module.globals:
        flag = ir.GlobalVariable(module, i64, FAULT)
        flag.initializer = ir.Constant(i64, 0)
    return module.get_global(FAULT)


def _alias_scopes(module: ir.Module) -> dict:
    """The module's alias scopes: "domain", and buffer id -> its scope."""
    if module not in _SCOPES:
        _SCOPES[module] = {"domain": module.add_metadata([ir.MetaDataString(module, "dlc.buffers")])}
    return _SCOPES[module]


class Arguments:
    """A kernel's argument slots: slot k holds pointer-table entry `refs[k]`."""

    def __init__(self, first=()):
        self.refs = list(first)

    def slot(self, entry: int) -> int:
        if entry not in self.refs:
            self.refs.append(entry)
        return self.refs.index(entry)


class KernelBuilder:
    def __init__(self, module: ir.Module, prog: Program, fn: ir.Function, args: Arguments | None = None):
        self.m, self.p, self.fn = module, prog, fn
        # the entry block only loads sizes and buffer pointers and makes stack slots, so
        # that they sit outside every loop; the code goes in the blocks after it
        entry, body = fn.append_basic_block("entry"), fn.append_basic_block("body")
        self.eb = ir.IRBuilder(entry)
        self.eb.position_before(self.eb.branch(body))
        self.b = ir.IRBuilder(body)
        ptrs, sizes = fn.args[0], fn.args[1]
        self.sizes = {s: self.eb.load(self.eb.gep(sizes, [ir.Constant(i64, k)]), name=s)
                      for k, s in enumerate(prog.symbols)}
        self.ptrs = {}
        self.slots = ptrs
        self.args = Arguments() if args is None else args
        self.stored: dict = {}      # (buffer, index) -> value stored earlier in this iteration
        self.accesses: list = []    # (load or store, buffer) to annotate
        self.fault = None           # the largest fault site + 1 seen by this function's checks

    def alloca(self, t):
        return self.eb.alloca(t)

    # -- values --
    def dim(self, d) -> ir.Value:
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
    def loops(self, shape, body, idx=None, first=None):
        """Nested loops over shape (outermost first); body(indices). `first` = (lo, hi)
        limits the outermost loop (a thread's share)."""
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
        self.loops(shape, body, idx + [i])
        nxt = b.add(i, ir.Constant(i64, 1))
        i.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, n), head, after)
        b.position_at_end(after)

    # -- expressions --
    def expr(self, e, idx) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            t = LL[e.dtype]
            return ir.Constant(t, float(e.value) if e.dtype in ("f32", "f64") else int(e.value))
        if isinstance(e, Size):
            return b.trunc(self.dim(e.dim), i32)
        if isinstance(e, Load):
            if (e.buffer, e.at) in self.stored:
                return self.stored[e.buffer, e.at]
            ptr = b.gep(self.buffer(e.buffer, e.dtype if e.dtype != "bool" else "i8"), [self.affine(e.at, idx)])
            v = self.disjoint(b.load(ptr), e.buffer)
            return b.trunc(v, i1) if e.dtype == "bool" else v
        if isinstance(e, Index):
            v = self.affine(e.at, idx)
            return b.sitofp(v, LL[e.dtype]) if e.dtype in ("f32", "f64") else b.trunc(v, LL[e.dtype])
        if isinstance(e, Random):
            return self.random(e, idx)
        if isinstance(e, Gather):
            row = b.sext(self.expr(e.idx, idx), i64)
            ok = self.in_range(row, e.count, e.site)
            at = b.select(ok, b.add(b.mul(row, self.dim(e.stride)), self.affine(e.rows, idx)), ir.Constant(i64, 0))
            v = self.disjoint(b.load(b.gep(self.buffer(e.table, e.dtype), [at])), e.table)
            return b.select(ok, v, ir.Constant(v.type, None))
        if isinstance(e, Guarded):
            ok = self.inside(e.guards, idx)
            at = self.b.select(ok, self.affine(e.load.at, idx), ir.Constant(i64, 0))
            v = self.disjoint(b.load(b.gep(self.buffer(e.load.buffer, e.load.dtype), [at])), e.load.buffer)
            return b.select(ok, v, ir.Constant(v.type, e.fill))
        if isinstance(e, Op):
            return self.op(e, [self.expr(a, idx) for a in e.args])
        raise TypeError(e)

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
        code = self.eb.ptrtoint(self.argument(len(self.p.buffers) + site), i64)      # site + 1 (module docstring)
        hit = b.select(ok, ir.Constant(i64, 0), code)
        b.store(b.select(b.icmp_unsigned(">", hit, seen), hit, seen), self.fault)
        return ok

    def replaces_max(self, v, best) -> ir.Value:
        """Whether v takes the place of the running maximum, as numpy's argmax: the first
        NaN wins, and nothing replaces it."""
        b = self.b
        if not isinstance(v.type, (ir.FloatType, ir.DoubleType)):
            return b.icmp_signed(">", v, best)
        return b.and_(b.fcmp_unordered(">", v, best), b.fcmp_ordered("ord", best, best))

    def finish(self):
        """Annotate the accesses, report a fault to the module's `dlc_fault`, return."""
        self.annotate()
        b = self.b
        if self.fault is not None:
            seen = b.load(self.fault)
            with b.if_then(b.icmp_unsigned("!=", seen, ir.Constant(i64, 0))):
                b.store_atomic(seen, fault_flag(self.m), "monotonic", 8)
        b.ret_void()

    def call(self, name, ret, args):
        return self.b.call(declare(self.m, name, ret, [a.type for a in args]), args)

    def intrinsic(self, name, *args):
        t = args[0].type
        return self.b.call(self.m.declare_intrinsic(name, [t], ir.FunctionType(t, [t] * len(args))), list(args))

    def op(self, e: Op, a: list) -> ir.Value:
        b, n = self.b, e.name
        flt = e.dtype in ("f32", "f64") if not n.startswith(("lt", "le", "gt", "ge", "eq", "ne")) else \
            isinstance(a[0].type, (ir.FloatType, ir.DoubleType))
        if n.startswith("cast_"):
            return self.cast(a[0], n[5:])
        if n in ("lt", "le", "gt", "ge", "eq", "ne"):
            cmp = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[n]
            if isinstance(a[0].type, (ir.FloatType, ir.DoubleType)):
                return b.fcmp_ordered(cmp, a[0], a[1]) if n != "ne" else b.fcmp_unordered(cmp, a[0], a[1])
            return b.icmp_signed(cmp, a[0], a[1])
        if n == "select":
            return b.select(a[0], a[1], a[2])
        if n == "logical_and":
            return b.and_(a[0], a[1])
        if n == "logical_or":
            return b.or_(a[0], a[1])
        if n == "logical_not":
            return b.xor(a[0], ir.Constant(i1, 1))
        if flt:
            f = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv}.get(n)
            if f:
                return f(a[0], a[1], flags=FAST)
            if n == "neg":
                return b.fneg(a[0])
            if n in ("maximum", "minimum"):     # NaN propagates, as in numpy
                return self.intrinsic(f"llvm.{n}", *a)
            if n == "abs":
                return self.intrinsic("llvm.fabs", a[0])
            if n == "sign":
                one, zero = ir.Constant(a[0].type, 1.0), ir.Constant(a[0].type, 0.0)
                pos = b.select(b.fcmp_ordered(">", a[0], zero), one, zero)
                return b.select(b.fcmp_ordered("<", a[0], zero), ir.Constant(a[0].type, -1.0), pos)
            if a[0].type == f64 and n in ("exp", "tanh"):     # the inline polynomials are float's
                return self.call(n, f64, a)
            if n == "exp":
                return self.exp(a[0])
            if n == "tanh":
                return self.tanh(a[0])
            if n == "mod":      # floor modulo, as numpy: the sign of the divisor
                r = self.call("fmod" if a[0].type == f64 else "fmodf", a[0].type, a)
                zero = ir.Constant(r.type, 0.0)
                wrong = b.and_(b.fcmp_ordered("!=", r, zero),
                               b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", a[1], zero)))
                return b.select(wrong, b.fadd(r, a[1]), r)
            if n == "logistic" and a[0].type == f64:
                one = ir.Constant(f64, 1.0)
                return b.fdiv(one, b.fadd(one, self.call("exp", f64, [b.fneg(a[0])])))
            if n == "logistic":
                # 1 / (1 + exp(-x)), written so that neither branch overflows
                x = a[0]
                zero, one = ir.Constant(x.type, 0.0), ir.Constant(x.type, 1.0)
                z = self.exp(b.fneg(self.intrinsic("llvm.fabs", x)))
                pos = b.fdiv(one, b.fadd(one, z))
                return b.select(b.fcmp_ordered(">=", x, zero), pos, b.fdiv(z, b.fadd(one, z)))
            if n == "sqrt":
                return self.intrinsic("llvm.sqrt", a[0])
            if n in LIBM:
                return self.call(LIBM[n] + ("f" if a[0].type == f32 else ""), a[0].type, a)
        else:
            f = {"add": b.add, "sub": b.sub, "mul": b.mul}.get(n)
            if f:
                return f(a[0], a[1])
            if n in ("div", "mod"):   # floor division and modulo, as numpy
                q = b.sdiv(a[0], a[1])
                r = b.srem(a[0], a[1])
                adjust = b.and_(b.icmp_signed("!=", r, ir.Constant(r.type, 0)),
                                b.icmp_signed("!=", b.icmp_signed("<", r, ir.Constant(r.type, 0)),
                                              b.icmp_signed("<", a[1], ir.Constant(r.type, 0))))
                if n == "mod":
                    return b.select(adjust, b.add(r, a[1]), r)
                return b.sub(q, b.zext(adjust, q.type))
            if n == "neg":
                return b.neg(a[0])
            if n in ("maximum", "minimum"):
                return b.select(b.icmp_signed(">" if n == "maximum" else "<", a[0], a[1]), a[0], a[1])
        raise NotImplementedError(f"native {n} on {e.dtype}")

    def poly(self, x, coeffs):
        """Horner: coeffs[0] * x^k + ... + coeffs[k]."""
        b, acc = self.b, ir.Constant(f32, coeffs[0])
        for c in coeffs[1:]:
            acc = b.fadd(b.fmul(acc, x, flags=FAST), ir.Constant(f32, c), flags=FAST)
        return acc

    def exp(self, x):
        """expf inline, without a library call, so that loops using it vectorize: range
        reduction by ln 2 and the Cephes polynomial (about 1 ulp). Above 88 the argument is
        halved by ln 2 first so that 2^n stays a normal float; below -87.3 the result is 0."""
        b = self.b
        c = lambda v: ir.Constant(f32, v)
        big = b.fcmp_ordered(">", x, c(88.0))
        tiny = b.fcmp_ordered("<", x, c(-87.3365478515625))
        x = b.select(big, b.fsub(x, c(0.693147180559945)), x)
        x = b.select(b.fcmp_ordered(">", x, c(88.3762626647949)), c(88.3762626647949), x)
        x = b.select(tiny, c(0.0), x)
        n = self.intrinsic("llvm.floor", b.fadd(b.fmul(x, c(1.44269504088896341)), c(0.5)))
        r = b.fsub(b.fsub(x, b.fmul(n, c(0.693359375))), b.fmul(n, c(-2.12194440e-4)))
        p = self.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                          5.0000001201e-1])
        y = b.fadd(b.fadd(b.fmul(p, b.fmul(r, r)), r), c(1.0))
        y = b.fmul(y, b.bitcast(b.shl(b.add(b.fptosi(n, i32), ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32))
        y = b.select(big, b.fmul(y, c(2.0)), y)
        return b.select(tiny, c(0.0), y)

    def tanh(self, x):
        """tanhf inline: an odd polynomial near 0 (Cephes), 1 - 2 / (exp(2|x|) + 1) beyond."""
        b = self.b
        ax = self.intrinsic("llvm.fabs", x)
        z = b.fmul(x, x)
        small = b.fadd(x, b.fmul(b.fmul(x, z), self.poly(z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                                           1.33314422036e-1, -3.33332819422e-1])))
        e = self.exp(b.fmul(ax, ir.Constant(f32, 2.0)))
        large = b.fsub(ir.Constant(f32, 1.0), b.fdiv(ir.Constant(f32, 2.0), b.fadd(e, ir.Constant(f32, 1.0))))
        large = b.select(b.fcmp_ordered("<", x, ir.Constant(f32, 0.0)), b.fneg(large), large)
        return b.select(b.fcmp_ordered("<", ax, ir.Constant(f32, 0.625)), small, large)

    def cast(self, v, dtype):
        b, t = self.b, LL[dtype]
        src = v.type
        if src == t:
            return v
        if isinstance(t, (ir.FloatType, ir.DoubleType)):
            if isinstance(src, (ir.FloatType, ir.DoubleType)):
                return b.fpext(v, t) if isinstance(t, ir.DoubleType) else b.fptrunc(v, t)
            return b.uitofp(v, t) if src == i1 else b.sitofp(v, t)
        if t == i1:
            return b.fcmp_unordered("!=", v, ir.Constant(src, 0.0)) if isinstance(src, (ir.FloatType, ir.DoubleType)) else \
                b.icmp_signed("!=", v, ir.Constant(src, 0))
        if isinstance(src, (ir.FloatType, ir.DoubleType)):
            return b.fptosi(v, t)
        return b.zext(v, t) if src == i1 else (b.sext(v, t) if src.width < t.width else b.trunc(v, t))

    def mix(self, x):
        """lowbias32, as in primitives.counter_bits."""
        b = self.b
        for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B)):
            x = b.xor(x, b.lshr(x, ir.Constant(i32, shift)))
            x = b.mul(x, ir.Constant(i32, mul))
        return b.xor(x, b.lshr(x, ir.Constant(i32, 16)))

    def random(self, e: Random, idx) -> ir.Value:
        b = self.b
        key = self.buffer(e.key, "i32")
        seed = b.load(key)
        step = b.load(b.gep(key, [ir.Constant(i64, 1)]))
        stream = ir.Constant(i32, e.stream)
        for t in e.steps:      # inside scans every step draws anew, as primitives._random
            t = b.trunc(self.sizes[t], i32)
            stream = self.mix(b.add(b.add(b.mul(stream, ir.Constant(i32, 0x01000193)), t), ir.Constant(i32, 1)))
        i = b.trunc(self.affine(e.at, idx), i32)

        def uniform(stream):       # in (0, 1), from the top 24 bits, in double precision
            k = self.mix(b.xor(seed, self.mix(b.add(b.mul(stream, ir.Constant(i32, 0x9E3779B9)), self.mix(step)))))
            bits = self.mix(b.add(self.mix(b.xor(i, k)), k))
            u = b.fadd(b.uitofp(b.lshr(bits, ir.Constant(i32, 8)), f64), ir.Constant(f64, 0.5))
            return b.fmul(u, ir.Constant(f64, 2.0 ** -24))
        u = uniform(stream)
        if e.dist == "normal":      # Box-Muller on a second stream
            u2 = uniform(b.add(stream, ir.Constant(i32, 0x5BD1E995)))
            radius = self.intrinsic("llvm.sqrt", b.fmul(ir.Constant(f64, -2.0), self.call("log", f64, [u])))
            u = b.fmul(radius, self.call("cos", f64, [b.fmul(ir.Constant(f64, 2.0 * math.pi), u2)]))
        return b.fptrunc(u, LL[e.dtype])

    def store(self, bid, dtype, at: ir.Value, v: ir.Value):
        if dtype == "bool":
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
        live ranges, both covering this kernel, are disjoint (compiler/memory.py)."""
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


def _map(kb: KernelBuilder, k: MapKernel | FusedMapKernel, prog: Program, first=None):
    maps = k.maps if isinstance(k, FusedMapKernel) else [k]

    def body(idx):
        for m in maps:
            v = kb.expr(m.expr, idx)
            kb.store(m.out, prog.buffers[m.out].dtype, kb.affine(m.out_at, idx), v)
            kb.stored[m.out, m.out_at] = v     # later members read it from the register
        kb.stored.clear()
    kb.loops(k.shape, body, first=first)


PARALLEL_BELOW = 1 << 15   # elements x operations: less is not worth waking a second thread


def _operations(k: MapKernel | FusedMapKernel) -> int:
    """Operations per element of a map (one for a copy): its work, with the element count."""
    count = lambda e: 1 + sum(count(a) for a in e.args) if isinstance(e, Op) else 0
    return sum(1 + count(m.expr) for m in (k.maps if isinstance(k, FusedMapKernel) else [k]))


def _parallel_map(module, prog, k: MapKernel, fn: ir.Function, sig):
    """fn runs the map on a team of threads (libgomp), each on a slice of the outermost
    axis; small maps, and maps inside a team already, run serially."""
    part = ir.Function(module, ir.FunctionType(ir.VoidType(), list(sig.args[:2]) + [i64, i64]), fn.name + ".part")
    part.linkage = "internal"
    inner = KernelBuilder(module, prog, part)
    _map(inner, k, prog, first=(part.args[2], part.args[3]))
    inner.finish()

    data_ty = ir.LiteralStructType([sig.args[0], sig.args[1], i64])      # buffers, sizes, outer extent
    vptr = i8.as_pointer()
    worker = ir.Function(module, ir.FunctionType(ir.VoidType(), [vptr]), fn.name + ".worker")
    worker.linkage = "internal"
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    data = b.bitcast(worker.args[0], data_ty.as_pointer())
    ptrs, sizes, n = (b.load(b.gep(data, [ir.Constant(i32, 0), ir.Constant(i32, j)])) for j in range(3))
    tid = b.sext(b.call(declare(module, "omp_get_thread_num", i32, []), []), i64)
    nth = b.sext(b.call(declare(module, "omp_get_num_threads", i32, []), []), i64)
    chunk = b.sdiv(b.add(n, b.sub(nth, ir.Constant(i64, 1))), nth)
    lo = b.mul(tid, chunk)
    hi = b.add(lo, chunk)
    hi = b.select(b.icmp_signed("<", hi, n), hi, n)
    b.call(part, [ptrs, sizes, lo, hi])
    b.ret_void()

    kb = KernelBuilder(module, prog, fn, inner.args)      # fn passes its arguments on to part
    b = kb.b
    total = b.mul(kb.dim(numel(k.shape)), ir.Constant(i64, _operations(k)))
    level = b.call(declare(module, "omp_get_level", i32, []), [])
    serial = b.or_(b.or_(b.icmp_signed("<", total, ir.Constant(i64, PARALLEL_BELOW)),
                         b.icmp_signed("<=", fn.args[2], ir.Constant(i64, 1))),
                   b.icmp_signed(">", level, ir.Constant(i32, 0)))
    alone, team, done = (fn.append_basic_block(x) for x in ("alone", "team", "done"))
    b.cbranch(serial, alone, team)
    b.position_at_end(alone)
    b.call(part, [fn.args[0], fn.args[1], ir.Constant(i64, 0), kb.dim(k.shape[0])])
    b.branch(done)
    b.position_at_end(team)
    cell = kb.alloca(data_ty)
    for j, v in enumerate((fn.args[0], fn.args[1], kb.dim(k.shape[0]))):
        b.store(v, b.gep(cell, [ir.Constant(i32, 0), ir.Constant(i32, j)]))
    gomp = declare(module, "GOMP_parallel", ir.VoidType(), [worker.type, vptr, i32, i32])
    b.call(gomp, [worker, b.bitcast(cell, vptr), b.trunc(fn.args[2], i32), ir.Constant(i32, 0)])
    b.branch(done)
    b.position_at_end(done)
    return kb


def _strides(shape) -> list:
    acc, out = 1, []
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return list(reversed(out))


def _reduce(kb: KernelBuilder, k: ReduceKernel, prog: Program):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    kept = [d for r, d in enumerate(k.shape) if r not in k.axes]
    kept_strides = iter(_strides(kept))
    out_coeffs = tuple(0 if r in k.axes else next(kept_strides) for r in range(len(k.shape)))
    out_at = Affine(0, out_coeffs)
    t = LL[dtype]
    if k.op == "argmax":
        axis = k.axes[0]
        outer = [d for r, d in enumerate(k.shape) if r != axis]

        def per_row(oidx):
            idx_of = lambda j: oidx[:axis] + [j] + oidx[axis:]
            first = kb.expr(k.expr, idx_of(ir.Constant(i64, 0)))
            best = kb.alloca(first.type)
            where = kb.alloca(i64)
            b.store(first, best)
            b.store(ir.Constant(i64, 0), where)

            def step(jidx):
                v = kb.expr(k.expr, idx_of(jidx[0]))
                better = kb.replaces_max(v, b.load(best))
                b.store(b.select(better, v, b.load(best)), best)
                b.store(b.select(better, jidx[0], b.load(where)), where)
            kb.loops((k.shape[axis],), step)
            kb.store(k.out, "i32", kb.affine(Affine(0, tuple(_strides(outer))), oidx), b.trunc(b.load(where), i32))
        kb.loops(tuple(outer), per_row)
        return
    if t in (f32, f64):
        init = ir.Constant(t, 0.0 if k.op == "sum" else -math.inf)
    else:
        init = ir.Constant(t, 0 if k.op == "sum" else -(1 << (t.width - 1)))

    kb.loops(tuple(kept), lambda idx: kb.store(k.out, dtype, kb.affine(Affine(0, tuple(_strides(kept))), idx), init))
    # the trailing reduced axes accumulate in a register; the rest into memory
    trail = len(k.shape)
    while trail > 0 and (trail - 1) in k.axes:
        trail -= 1
    head, tail = k.shape[:trail], k.shape[trail:]

    def combine(acc, v):
        if k.op == "sum":
            return b.fadd(acc, v, flags=("fast",)) if t in (f32, f64) else b.add(acc, v)
        if t in (f32, f64):
            return kb.intrinsic("llvm.maximum", acc, v)      # NaN propagates, as in numpy
        return b.select(b.icmp_signed(">", v, acc), v, acc)

    def outer(hidx):
        if not tail:
            at = kb.affine(out_at, hidx)
            ptr = b.gep(kb.buffer(k.out, dtype), [at])
            b.store(combine(b.load(ptr), kb.expr(k.expr, hidx)), ptr)
            return
        acc = kb.alloca(t)
        b.store(init, acc)
        kb.loops(tail, lambda tidx: b.store(combine(b.load(acc), kb.expr(k.expr, hidx + tidx)), acc))
        at = kb.affine(out_at, hidx + [ir.Constant(i64, 0)] * len(tail))
        ptr = b.gep(kb.buffer(k.out, dtype), [at])
        b.store(combine(b.load(ptr), b.load(acc)), ptr)
    kb.loops(head, outer)


def _scatter_add(kb: KernelBuilder, k: ScatterAddKernel, prog: Program):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    total = prog.buffers[k.out].size
    kb.loops((total,), lambda idx: kb.store(k.out, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))
    flat = _strides(k.idx_shape)

    def each(idx):
        row = b.sext(kb.expr(k.idx, idx), i64)
        ok = kb.in_range(row, k.count, k.site)
        src = b.mul(kb.affine(Affine(0, tuple(flat)), idx), kb.dim(k.row))
        dst = b.mul(b.select(ok, row, ir.Constant(i64, 0)), kb.dim(k.row))
        zero = ir.Constant(LL[dtype], 0.0)

        def inner(r):
            pd = b.gep(kb.buffer(k.out, dtype), [b.add(dst, r[0])])
            ps = b.gep(kb.buffer(k.upd, dtype), [b.add(src, r[0])])
            b.store(b.fadd(b.load(pd), b.select(ok, b.load(ps), zero)), pd)
        kb.loops((k.row,), inner)
    kb.loops(k.idx_shape, each)


def _small_gemm(kb: KernelBuilder, k: SmallGemmKernel):
    """Each MR x NR tile of C is a set of vector accumulators over the whole batch and K:
    A broadcast, a row of B loaded as vectors (masked past N), llvm.fma — the GEMM's
    micro-kernel without packing, which pays off only when C is this small."""
    b, cfg = kb.b, default_config()
    VW = cfg.vw
    vty, mty = ir.VectorType(f32, VW), ir.VectorType(i1, VW)
    fma = declare(kb.m, f"llvm.fma.v{VW}f32", vty, [vty] * 3)
    mload, mstore = masked(kb.m, vty)
    zero = ir.Constant(vty, [0.0] * VW)
    (ab, aoff, lda, sa), (bb, boff, ldb, sb), (cb, coff, ldc) = k.a, k.b, k.c
    A, B, C = kb.buffer(ab, "f32"), kb.buffer(bb, "f32"), kb.buffer(cb, "f32")

    def vec(ptr, at, lanes, value=None):
        p = vec_ptr(b, b.gep(ptr, [at]), vty)
        if lanes == VW:
            return b.load(p, align=4) if value is None else b.store(value, p, align=4)
        mask = ir.Constant(mty, [int(j < lanes) for j in range(VW)])
        if value is None:
            return b.call(mload, [p, ir.Constant(i32, 4), mask, zero])
        return b.call(mstore, [value, p, ir.Constant(i32, 4), mask])

    for i0 in range(0, k.m, cfg.mr):
        rows = range(i0, min(i0 + cfg.mr, k.m))
        for j0 in range(0, k.n, cfg.nr):
            lanes = [min(VW, k.n - j) for j in range(j0, min(j0 + cfg.nr, k.n), VW)]
            acc = {(r, v): kb.alloca(vty) for r in rows for v in range(len(lanes))}
            for slot in acc.values():
                b.store(zero, slot)

            def step(idx, rows=rows, lanes=lanes, acc=acc, j0=j0):
                n, kk = idx
                brow = b.add(b.add(b.mul(n, kb.dim(sb)), b.mul(kk, kb.dim(ldb))), kb.dim(boff + j0))
                bv = [vec(B, b.add(brow, ir.Constant(i64, v * VW)), w) for v, w in enumerate(lanes)]
                acol = b.add(b.add(b.mul(n, kb.dim(sa)), kk), kb.dim(aoff))
                for r in rows:
                    a = splat(b, b.load(b.gep(A, [b.add(acol, kb.dim(r * lda))])), vty)
                    for v in range(len(lanes)):
                        b.store(b.call(fma, [a, bv[v], b.load(acc[r, v])]), acc[r, v])
            kb.loops((k.batch, k.k), step)
            for r in rows:
                for v, w in enumerate(lanes):
                    vec(C, kb.dim(coff + r * ldc + j0 + v * VW), w, b.load(acc[r, v]))


def _zero(kb: KernelBuilder, bid: int, prog: Program):
    dtype = prog.buffers[bid].dtype
    kb.loops((prog.buffers[bid].size,), lambda idx: kb.store(bid, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))


def _accumulate(kb: KernelBuilder, k: AccumulateKernel, prog: Program):
    b = kb.b
    _zero(kb, k.out, prog)

    def each(idx):
        ok = kb.inside(k.guards, idx)
        at = b.select(ok, kb.affine(k.at, idx), ir.Constant(i64, 0))
        v = kb.expr(k.expr, idx)
        ptr = b.gep(kb.buffer(k.out, "f32"), [at])
        b.store(b.fadd(b.load(ptr), b.select(ok, v, ir.Constant(f32, 0.0))), ptr)
    kb.loops(k.shape, each)


def _maxpool_grad(kb: KernelBuilder, k: MaxPoolGradKernel, prog: Program):
    b = kb.b
    _zero(kb, k.out, prog)
    N, C, H, W = k.shape
    Ho, Wo = k.out_hw
    (kh, kw), (sh, sw), (ph, pw) = k.kernel, k.stride, k.padding
    best, where = kb.alloca(f32), kb.alloca(i64)
    plane_x = kb.dim(H * W)

    def each(idx):
        n, c, ho, wo = idx
        plane = b.mul(b.add(b.mul(n, kb.dim(C)), c), plane_x)
        b.store(ir.Constant(f32, -math.inf), best)
        b.store(ir.Constant(i64, -1), where)

        def window(ij):
            h = b.sub(b.add(b.mul(ho, kb.dim(sh)), ij[0]), kb.dim(ph))
            w = b.sub(b.add(b.mul(wo, kb.dim(sw)), ij[1]), kb.dim(pw))
            ok = b.and_(b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H))),
                        b.and_(b.icmp_signed(">=", w, ir.Constant(i64, 0)), b.icmp_signed("<", w, kb.dim(W))))
            pos = b.add(b.mul(h, kb.dim(W)), w)
            v = b.load(b.gep(kb.buffer(k.x, "f32"), [b.select(ok, b.add(plane, pos), ir.Constant(i64, 0))]))
            v = b.select(ok, v, ir.Constant(f32, -math.inf))
            better = kb.replaces_max(v, b.load(best))
            b.store(b.select(better, v, b.load(best)), best)
            b.store(b.select(better, pos, b.load(where)), where)
        kb.loops((kh, kw), window)
        hit = b.load(where)
        found = b.icmp_signed(">=", hit, ir.Constant(i64, 0))
        gi = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), idx)
        g = b.load(b.gep(kb.buffer(k.g, "f32"), [gi]))
        ptr = b.gep(kb.buffer(k.out, "f32"), [b.add(plane, b.select(found, hit, ir.Constant(i64, 0)))])
        b.store(b.fadd(b.load(ptr), b.select(found, g, ir.Constant(f32, 0.0))), ptr)
    kb.loops((N, C, Ho, Wo), each)


@dataclass
class StepModule:
    """The module of a program, and what its driver reads: `arguments[k]` is the
    pointer-table entry (module docstring) that goes in slot k of its argument array."""
    module: ir.Module
    arguments: list


def build_module(prog: Program, name: str = "dlc_step", update: dict | None = None,
                 profile: list | None = None) -> StepModule:
    """The module of a program; with `update` (see add_update) the driver ends with the
    optimizer step, on the five arrays after the buffers and checks in the pointer table.
    With `profile` (a list, filled with (kernel, nesting depth)), every kernel call adds
    its cycles to the global array `dlc_profile`, indexed like that list."""
    module = ir.Module(name)
    flag = fault_flag(module)       # the engine clears it before a call and reads it after
    sig = ir.FunctionType(ir.VoidType(), [i8.as_pointer().as_pointer(), i64.as_pointer(), i64])
    driver = ir.Function(module, sig, name)
    gemms: dict = {}
    numbered: list = []
    alike: dict = {}        # the text of a kernel's functions, their name left out -> the kernel function

    def kernel(k, depth: int) -> tuple:
        """(its function, the table entries of its argument slots, its profile number) of
        kernel k; the function is one built before when that one is alike to the letter."""
        number = len(numbered)
        numbered.append((k, depth))
        body = [kernel(j, depth + 1) for j in k.body] if isinstance(k, ScanKernel) else []
        before = set(module.globals)
        fn = ir.Function(module, sig, f"kernel{number}")
        fn.linkage = "internal"
        # inlined, every kernel would land in the driver, one function growing with the
        # model, on which LLVM's O3 is superlinear (300 dense layers: 89 s instead of 8)
        fn.attributes.add("noinline")
        if isinstance(k, (MapKernel, FusedMapKernel)) and k.shape:
            kb = _parallel_map(module, prog, k, fn, sig)
        elif body:      # the body's argument slots first, then the scan's own
            kb = KernelBuilder(module, prog, fn, Arguments(e for _, refs, _ in body for e in refs))
        else:
            kb = KernelBuilder(module, prog, fn)
        if isinstance(k, MapKernel):
            if not k.shape:
                _map(kb, k, prog)
        elif isinstance(k, ReduceKernel):
            _reduce(kb, k, prog)
        elif isinstance(k, ScatterAddKernel):
            _scatter_add(kb, k, prog)
        elif isinstance(k, AccumulateKernel):
            _accumulate(kb, k, prog)
        elif isinstance(k, MaxPoolGradKernel):
            _maxpool_grad(kb, k, prog)
        elif isinstance(k, SmallGemmKernel):
            _small_gemm(kb, k)
        elif isinstance(k, GemmKernel):
            key = (k.trans_a, k.trans_b)
            if key not in gemms:    # defined in the GEMM library (runtime/cache.py), declared here
                gemms[key] = ir.Function(module, GEMM_TYPE, gemm_name(*key, False))
            args = [kb.dim(k.m), kb.dim(k.n), kb.dim(k.k)]
            for bid, off, ld, stride in (k.a, k.b, k.c):
                args += [kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld), kb.dim(stride)]
            args += [kb.dim(k.batch), fn.args[2]]
            kb.b.call(gemms[key], args)
        elif isinstance(k, ScanKernel):
            _scan(kb, k, prog, lambda b: calls(b, body, fn.args))
        kb.finish()
        made = [g for n, g in module.globals.items()
                if n not in before and isinstance(g, ir.Function) and not g.is_declaration]
        text = re.sub(rf'@"{re.escape(fn.name)}([."])', r'@"kernel\1', "\n".join(map(str, made)))
        if text in alike:
            for g in made:
                del module.globals[g.name]
        return alike.setdefault(text, fn), kb.args.refs, number

    def calls(b, kernels: list, args):
        """Call each kernel with its slots, which follow one another from args[0] on."""
        at = 0
        for fn, refs, number in kernels:
            slots = b.gep(args[0], [ir.Constant(i64, at)])
            at += len(refs)
            if profile is None:
                b.call(fn, [slots, args[1], args[2]])
                continue
            clock = module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
            start = b.call(clock, [])
            b.call(fn, [slots, args[1], args[2]])
            cell = b.gep(module.get_global("dlc_profile"), [ir.Constant(i32, 0), ir.Constant(i32, number)])
            b.store(b.add(b.load(cell), b.sub(b.call(clock, []), start)), cell)
        return at

    if profile is not None:
        table = ir.GlobalVariable(module, ir.ArrayType(i64, 1), "dlc_profile")    # resized below
    kernels = [kernel(k, 0) for k in prog.kernels]
    if profile is not None:
        profile.extend(numbered)
        table.value_type = ir.ArrayType(i64, len(numbered))
        table.initializer = ir.Constant(table.value_type, [0] * len(numbered))
    b = ir.IRBuilder(driver.append_basic_block("entry"))
    at = calls(b, kernels, driver.args)
    arguments = [e for _, refs, _ in kernels for e in refs]
    if update is not None:      # not after a failed check: the parameters stay as they were
        upd = add_update(module, **update)
        first = len(prog.buffers) + len(prog.faults)
        arguments += range(first, first + 5)
        slot = lambda k, t: b.bitcast(b.load(b.gep(driver.args[0], [ir.Constant(i64, at + k)])), t.as_pointer())
        with b.if_then(b.icmp_unsigned("==", b.load_atomic(flag, "monotonic", 8), ir.Constant(i64, 0))):
            b.call(upd, [slot(0, f32), slot(1, f32), slot(2, f32), slot(3, f32), slot(4, f64)])
    b.ret_void()
    return StepModule(module, arguments)


def _scan(kb: KernelBuilder, k: ScanKernel, prog: Program, run_body):
    """The step index goes into the sizes array, where the body's kernels read it."""
    b = kb.b
    length = kb.dim(k.length)
    slot = b.gep(kb.fn.args[1], [ir.Constant(i64, prog.symbols.index(k.var))])

    def step(idx):
        t = b.sub(b.sub(length, ir.Constant(i64, 1)), idx[0]) if k.reverse else idx[0]
        b.store(t, slot)
        run_body(b)
    kb.loops((k.length,), step)


# ---- the fused optimizer update -------------------------------------------------------------------
# scalars[k] of the update: set by the engine before every step (runtime/native.py), in double
# precision as torch.optim computes them in Python floats, and rounded to float here as torch
# rounds them: rate1 = 1 - beta1, rate2 = 1 - beta2 (RMSprop: 1 - alpha), step_size = lr / (1 -
# beta1^t), bias2_sqrt = (1 - beta2^t)^0.5, decay = 1 - lr * weight_decay
SCALARS = ("lr", "beta1", "beta2", "rate1", "rate2", "eps", "weight_decay", "step_size", "bias2_sqrt", "momentum",
           "l1", "l2", "clip", "decay")


def add_update(module: ir.Module, rule: str, n: int, *, nesterov=False, decoupled=False, momentum=False,
               penalties=False, clip: str | None = None, name="dlc_update") -> ir.Function:
    """One pass over the flat parameter, gradient and state arrays of all trained
    parameters, following runtime/optim.py: penalties, clipping, then the rule
    (sgd, rmsprop or adam) with torch.optim's float32 operations in torch's order, a
    fused multiply-add wherever torch's vectorized CPU kernels use one (lerp, addcmul,
    add with alpha), so that the same gradients give the same parameters.

        void dlc_update(float* p, float* g, float* s1, float* s2, double* scalars)
    """
    fp = f32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, fp, fp, fp, f64.as_pointer()]), name)
    fn.linkage = "internal"
    P, G, S1, S2, sc = fn.args
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    k = {s: b.fptrunc(b.load(b.gep(sc, [ir.Constant(i64, j)])), f32) for j, s in enumerate(SCALARS)}
    one = ir.Constant(f32, 1.0)
    total = ir.Constant(i64, n)

    def loop(body):
        pre = b.block
        head, after = fn.append_basic_block("loop"), fn.append_basic_block("after")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(i64)
        i.add_incoming(ir.Constant(i64, 0), pre)
        body(i)
        nxt = b.add(i, ir.Constant(i64, 1))
        i.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, total), head, after)
        b.position_at_end(after)

    def grad(i):
        g = b.load(b.gep(G, [i]))
        if penalties:
            p = b.load(b.gep(P, [i]))
            zero = ir.Constant(f32, 0.0)
            sign = b.select(b.fcmp_ordered(">", p, zero), one,
                            b.select(b.fcmp_ordered("<", p, zero), ir.Constant(f32, -1.0), zero))
            g = b.fadd(g, b.fmul(k["l1"], sign))
            g = b.fadd(g, b.fmul(b.fmul(ir.Constant(f32, 2.0), k["l2"]), p))
        return g

    scale = one
    if clip == "global_norm":
        acc = b.alloca(f64)
        b.store(ir.Constant(f64, 0.0), acc)

        def sumsq(i):
            g = b.fpext(grad(i), f64)
            b.store(b.fadd(b.load(acc), b.fmul(g, g), flags=("fast",)), acc)
        loop(sumsq)
        norm = b.call(module.declare_intrinsic("llvm.sqrt", [f64]), [b.load(acc)])
        s = b.fdiv(b.fpext(k["clip"], f64), b.fadd(norm, ir.Constant(f64, 1e-6)))
        scale = b.fptrunc(b.select(b.fcmp_ordered("<", s, ir.Constant(f64, 1.0)), s, ir.Constant(f64, 1.0)), f32)

    fma = lambda x, y, z: b.call(declare(module, "llvm.fma.f32", f32, [f32] * 3), [x, y, z])
    sqrt = lambda x: b.call(module.declare_intrinsic("llvm.sqrt", [f32]), [x])
    neg_lr = b.fneg(k["lr"])
    # torch.lerp(m, g, w) = fma(w, g - m, m) for |w| < 0.5, else fma(w - 1, g - m, g)
    near = b.fcmp_ordered("<", b.call(module.declare_intrinsic("llvm.fabs", [f32]), [k["rate1"]]),
                          ir.Constant(f32, 0.5))
    lerp_w = b.select(near, k["rate1"], b.fsub(k["rate1"], one))

    def step(i):
        pp = b.gep(P, [i])
        p = b.load(pp)
        g = b.fmul(grad(i), scale)
        if clip == "value":
            lim = k["clip"]
            g = b.select(b.fcmp_ordered(">", g, lim), lim, b.select(b.fcmp_ordered("<", g, b.fneg(lim)), b.fneg(lim), g))
        if not decoupled:
            g = fma(p, k["weight_decay"], g)                        # grad.add(param, alpha=weight_decay)
        if rule == "sgd":
            if momentum:
                ps = b.gep(S1, [i])
                buf = b.fadd(b.fmul(b.load(ps), k["momentum"]), g)
                b.store(buf, ps)
                g = fma(buf, k["momentum"], g) if nesterov else buf
            b.store(fma(g, neg_lr, p), pp)                          # param.add_(grad, alpha=-lr)
            return
        ps2 = b.gep(S2 if rule == "adam" else S1, [i])              # exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
        v = fma(b.fmul(k["rate2"], g), g, b.fmul(b.load(ps2), k["beta2"]))
        b.store(v, ps2)
        if rule == "rmsprop":
            avg = b.fadd(sqrt(v), k["eps"])
            if momentum:                                            # buf.mul_(momentum).addcdiv_(g, avg)
                pm = b.gep(S2, [i])
                buf = b.fadd(b.fmul(b.load(pm), k["momentum"]), b.fdiv(g, avg))
                b.store(buf, pm)
                b.store(fma(buf, neg_lr, p), pp)                    # param.add_(buf, alpha=-lr)
            else:                                                   # param.addcdiv_(g, avg, value=-lr)
                b.store(b.fadd(p, b.fdiv(b.fmul(neg_lr, g), avg)), pp)
            return
        if decoupled:
            p = b.fmul(p, k["decay"])                               # param.mul_(1 - lr * weight_decay)
        ps1 = b.gep(S1, [i])
        m = b.load(ps1)
        m = fma(lerp_w, b.fsub(g, m), b.select(near, m, g))         # exp_avg.lerp_(g, 1 - beta1)
        b.store(m, ps1)
        den = b.fadd(b.fdiv(sqrt(v), k["bias2_sqrt"]), k["eps"])
        b.store(b.fadd(p, b.fdiv(b.fmul(b.fneg(k["step_size"]), m), den)), pp)  # addcdiv_(m, den, -step_size)
    if n:
        loop(step)
    b.ret_void()
    return fn
