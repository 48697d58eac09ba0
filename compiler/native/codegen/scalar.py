"""Scalar code: what one element of an `Op` expression is, in LLVM IR.

EMIT maps (primitive, dtype class) to the primitive's scalar rule, in the manner of
tinygrad's `code_for_op`; the class ("float", "int" or "bool", types.dtype_class) is
that of the values the op works on: its operands', a select's branches', a comparison's
operands', a cast's source. A rule is rule(kb, op, args) -> value, kb the KernelBuilder
(builder.py), op the program's Op node, args its operands' values. A float primitive
whose record names a C library function (Primitive.libm) and that has no rule of its own
calls it. Also here: the inline exp, tanh and erf polynomials, casts, and the counter-based
random generator.
"""

from __future__ import annotations

import math
from typing import Callable

from llvmlite import ir

from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.program import Op, Random
from dlc.compiler.native.codegen.types import LL, dtype_class, element, f32, f64, i1, i32, i64, is_float

EMIT: dict[tuple[str, str], Callable] = {}


def emits(names: str, *classes: str):
    """Decorator: the scalar rule of the primitives `names` (space-separated) on `classes`."""

    def register(rule):
        for name in names.split():
            for cls in classes:
                EMIT[name, cls] = rule
        return rule

    return register


def emit(kb, e: Op, args: list) -> ir.Value:
    rule = EMIT.get((e.name, dtype_class(args[-1].type)))
    if rule is None:
        raise NotImplementedError(f"native {e.name} on {e.dtype}")
    return rule(kb, e, args)


def lanewise(name: str, operands: str) -> bool:
    """Whether the rule of `name` on operands of dtype `operands` builds, given vectors, each
    lane's scalar code (codegen/lanes.py): it calls no C library function (the inline f32 exp,
    tanh, erf and logistic do not; on f64 they call it) and divides no integers (the idle
    lanes of a vector loop's last step hold 0)."""
    key = (name, dtype_class(LL[operands]))
    if key not in EMIT or key in CALLS or key in (("div", "int"), ("mod", "int")):
        return False
    return not (operands == "f64" and name in ("exp", "tanh", "erf", "logistic"))


# ---- on every class ------------------------------------------------------------------------------
@emits("cast", "float", "int", "bool")
def _cast(kb, e, a):
    return cast(kb, a[0], e.dtype)


@emits("select", "float", "int", "bool")
def _select(kb, e, a):
    return kb.b.select(a[0], a[1], a[2])


_PREDICATE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


@emits("lt le gt ge eq ne", "float")
def _compare_floats(kb, e, a):
    """Ordered, as numpy: a comparison with NaN is false, but NaN != x is true."""
    cmp = _PREDICATE[e.name]
    return kb.b.fcmp_ordered(cmp, a[0], a[1]) if e.name != "ne" else kb.b.fcmp_unordered(cmp, a[0], a[1])


@emits("lt le gt ge eq ne", "int")
def _compare_integers(kb, e, a):
    return kb.b.icmp_signed(_PREDICATE[e.name], a[0], a[1])


@emits("lt le gt ge eq ne", "bool")
def _compare_bools(kb, e, a):
    """Unsigned: as a signed i1, true is -1, below false."""
    return kb.b.icmp_unsigned(_PREDICATE[e.name], a[0], a[1])


# ---- bool --------------------------------------------------------------------------------------------
emits("logical_and", "bool")(lambda kb, e, a: kb.b.and_(a[0], a[1]))
emits("logical_or", "bool")(lambda kb, e, a: kb.b.or_(a[0], a[1]))
emits("logical_not", "bool")(lambda kb, e, a: kb.b.xor(a[0], ir.Constant(i1, 1)))


# ---- float -------------------------------------------------------------------------------------------
emits("add", "float")(lambda kb, e, a: kb.b.fadd(a[0], a[1]))
emits("sub", "float")(lambda kb, e, a: kb.b.fsub(a[0], a[1]))
emits("mul", "float")(lambda kb, e, a: kb.b.fmul(a[0], a[1]))
emits("div", "float")(lambda kb, e, a: kb.b.fdiv(a[0], a[1]))
emits("neg", "float")(lambda kb, e, a: kb.b.fneg(a[0]))
# NaN propagates, as in numpy
emits("maximum minimum", "float")(lambda kb, e, a: kb.intrinsic(f"llvm.{e.name}", *a))
emits("abs", "float")(lambda kb, e, a: kb.intrinsic("llvm.fabs", a[0]))
emits("sqrt", "float")(lambda kb, e, a: kb.intrinsic("llvm.sqrt", a[0]))
emits("fma", "float")(lambda kb, e, a: kb.intrinsic("llvm.fma", *a))
# the operations the lowering writes itself, which no graph has: a float quantized to u8
# (an int8 product's input, kernels/int8)
LOWERING_ONLY = ("quantize_u8",)


@emits("quantize_u8", "float")
def _quantize_u8(kb, e, a):
    """clip(rint(x / s_x) + z_x, 0, 255) in float32 (int8.quantize), NaN as 0.0, as a byte."""
    b = kb.b
    x, scale, zero = a
    zeroed = b.select(b.fcmp_unordered("uno", x, x), ir.Constant(f32, 0.0), x)
    t = b.fadd(kb.intrinsic("llvm.rint", b.fdiv(zeroed, scale)), zero)
    t = kb.intrinsic("llvm.minnum", kb.intrinsic("llvm.maxnum", t, ir.Constant(f32, 0.0)), ir.Constant(f32, 255.0))
    return b.trunc(b.fptoui(t, i32), ir.IntType(8))


@emits("sign", "float")
def _sign(kb, e, a):
    b, t = kb.b, element(a[0].type)
    one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
    pos = b.select(b.fcmp_ordered(">", a[0], zero), one, zero)
    return b.select(b.fcmp_ordered("<", a[0], zero), ir.Constant(t, -1.0), pos)


@emits("exp tanh", "float")
def _exp_tanh(kb, e, a):
    """f32 inline (the loops vectorize); the polynomials are float's, so f64 calls libm."""
    if a[0].type == f64:
        return kb.call(e.name, f64, a)
    return exp(kb, a[0]) if e.name == "exp" else tanh(kb, a[0])


@emits("erf", "float")
def _erf(kb, e, a):
    """f32 inline, as exp and tanh (GELU's exact form calls it on every activation of a BERT); f64 calls libm."""
    return kb.call("erf", f64, a) if a[0].type == f64 else erf(kb, a[0])


@emits("mod", "float")
def _mod_floats(kb, e, a):
    """Floor modulo, as numpy: the sign of the divisor."""
    b = kb.b
    r = kb.call("fmod" if a[0].type == f64 else "fmodf", a[0].type, a)
    zero = ir.Constant(r.type, 0.0)
    wrong = b.and_(b.fcmp_ordered("!=", r, zero), b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", a[1], zero)))
    return b.select(wrong, b.fadd(r, a[1]), r)


@emits("logistic", "float")
def _logistic(kb, e, a):
    b, x = kb.b, a[0]
    if x.type == f64:
        one = ir.Constant(f64, 1.0)
        return b.fdiv(one, b.fadd(one, kb.call("exp", f64, [b.fneg(x)])))
    # 1 / (1 + exp(-x)), written so that neither branch overflows
    zero, one = ir.Constant(f32, 0.0), ir.Constant(f32, 1.0)
    z = exp(kb, b.fneg(kb.intrinsic("llvm.fabs", x)))
    pos = b.fdiv(one, b.fadd(one, z))
    return b.select(b.fcmp_ordered(">=", x, zero), pos, b.fdiv(z, b.fadd(one, z)))


def _libm(function: str):
    return lambda kb, e, a: kb.call(function + ("f" if a[0].type == f32 else ""), a[0].type, a)


# the rules that call the C library: a call takes one element, not a vector (codegen/lanes.py)
CALLS = {("mod", "float")}
for _prim in PRIMITIVES.values():
    if _prim.libm and (_prim.name, "float") not in EMIT:
        EMIT[_prim.name, "float"] = _libm(_prim.libm)
        CALLS.add((_prim.name, "float"))


# ---- int ---------------------------------------------------------------------------------------------
emits("add", "int")(lambda kb, e, a: kb.b.add(a[0], a[1]))
emits("sub", "int")(lambda kb, e, a: kb.b.sub(a[0], a[1]))
emits("mul", "int")(lambda kb, e, a: kb.b.mul(a[0], a[1]))
emits("maximum", "int")(lambda kb, e, a: kb.b.select(kb.b.icmp_signed(">", a[0], a[1]), a[0], a[1]))
emits("minimum", "int")(lambda kb, e, a: kb.b.select(kb.b.icmp_signed("<", a[0], a[1]), a[0], a[1]))


@emits("div mod", "int")
def _floor_div_mod(kb, e, a):
    """Floor division and modulo, as numpy."""
    b = kb.b
    q = b.sdiv(a[0], a[1])
    r = b.srem(a[0], a[1])
    adjust = b.and_(
        b.icmp_signed("!=", r, ir.Constant(r.type, 0)),
        b.icmp_signed(
            "!=", b.icmp_signed("<", r, ir.Constant(r.type, 0)), b.icmp_signed("<", a[1], ir.Constant(r.type, 0))
        ),
    )
    if e.name == "mod":
        return b.select(adjust, b.add(r, a[1]), r)
    return b.sub(q, b.zext(adjust, q.type))


@emits("pow", "int")
def _pow_integers(kb, e, a):
    """x ** y by squaring, over the bits of y but its sign, without branches (so loops
    vectorize). numpy refuses a negative y; here it counts as y mod 2 ** (bits - 1)."""
    b, t = kb.b, element(a[0].type)
    result, base, y = ir.Constant(t, 1), a[0], a[1]
    for _ in range(t.width - 1):
        result = b.select(b.trunc(y, i1), b.mul(result, base), result)
        base = b.mul(base, base)
        y = b.lshr(y, ir.Constant(t, 1))
    return result


# ---- the inline math, casts and the random generator ----------------------------------------------
def poly(kb, x, coeffs):
    """Horner: coeffs[0] * x^k + ... + coeffs[k], each step one fused multiply-add. The
    FMAs are the rule's own: no float operation carries LLVM's `contract` flag, so a value
    has the same bits whichever kernel computes it (docs/native.md, same bits)."""
    acc = ir.Constant(f32, coeffs[0])
    for c in coeffs[1:]:
        acc = kb.intrinsic("llvm.fma", acc, x, ir.Constant(f32, c))
    return acc


def exp(kb, x):
    """expf inline, without a library call, so that loops using it vectorize: range
    reduction by ln 2 and the Cephes polynomial (about 1 ulp). Above 88 the argument is
    halved by ln 2 first so that 2^n stays a normal float; below -87.3 the result is 0."""
    b = kb.b
    c = lambda v: ir.Constant(f32, v)
    big = b.fcmp_ordered(">", x, c(88.0))
    tiny = b.fcmp_ordered("<", x, c(-87.3365478515625))
    x = b.select(big, b.fsub(x, c(0.693147180559945)), x)
    x = b.select(b.fcmp_ordered(">", x, c(88.3762626647949)), c(88.3762626647949), x)
    x = b.select(tiny, c(0.0), x)
    n = kb.intrinsic("llvm.floor", b.fadd(b.fmul(x, c(1.44269504088896341)), c(0.5)))
    r = b.fsub(b.fsub(x, b.fmul(n, c(0.693359375))), b.fmul(n, c(-2.12194440e-4)))
    p = poly(
        kb, r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]
    )
    y = b.fadd(b.fadd(b.fmul(p, b.fmul(r, r)), r), c(1.0))
    y = b.fmul(y, b.bitcast(b.shl(b.add(b.fptosi(n, i32), ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32))
    y = b.select(big, b.fmul(y, c(2.0)), y)
    return b.select(tiny, c(0.0), y)


def tanh(kb, x):
    """tanhf inline: an odd polynomial near 0 (Cephes), 1 - 2 / (exp(2|x|) + 1) beyond."""
    b = kb.b
    ax = kb.intrinsic("llvm.fabs", x)
    z = b.fmul(x, x)
    small = b.fadd(
        x,
        b.fmul(
            b.fmul(x, z),
            poly(kb, z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1]),
        ),
    )
    e = exp(kb, b.fmul(ax, ir.Constant(f32, 2.0)))
    large = b.fsub(ir.Constant(f32, 1.0), b.fdiv(ir.Constant(f32, 2.0), b.fadd(e, ir.Constant(f32, 1.0))))
    large = b.select(b.fcmp_ordered("<", x, ir.Constant(f32, 0.0)), b.fneg(large), large)
    return b.select(b.fcmp_ordered("<", ax, ir.Constant(f32, 0.625)), small, large)


# erff as x P(x^2) / Q(x^2) on [-4, 4] (Eigen's and XLA's float erf): outside it erf is +-1 in float32
ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def erf(kb, x):
    """erff inline, without a library call, so that loops using it vectorize: a rational function of
    the argument clamped to [-4, 4] (within 6 ulp of erf, 3.4e-7 absolute; NaN stays NaN)."""
    b = kb.b
    x = kb.intrinsic("llvm.maximum", kb.intrinsic("llvm.minimum", x, ir.Constant(f32, 4.0)), ir.Constant(f32, -4.0))
    x2 = b.fmul(x, x)
    return b.fdiv(b.fmul(x, poly(kb, x2, ERF_P)), poly(kb, x2, ERF_Q))


def cast(kb, v, dtype):
    """v converted to dtype, as numpy's astype (a float is true where it is not 0, NaN too)."""
    b, t = kb.b, LL[dtype]
    src = element(v.type)
    if src == t:
        return v
    if is_float(t):
        if is_float(src):
            return b.fpext(v, t) if isinstance(t, ir.DoubleType) else b.fptrunc(v, t)
        return b.uitofp(v, t) if src == i1 else b.sitofp(v, t)
    if t == i1:
        return (
            b.fcmp_unordered("!=", v, ir.Constant(src, 0.0))
            if is_float(src)
            else b.icmp_signed("!=", v, ir.Constant(src, 0))
        )
    if is_float(src):
        return b.fptosi(v, t)
    return b.zext(v, t) if src == i1 else (b.sext(v, t) if src.width < t.width else b.trunc(v, t))


def mix(kb, x):
    """lowbias32, as in primitives.counter_bits."""
    b = kb.b
    for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = b.xor(x, b.lshr(x, ir.Constant(i32, shift)))
        x = b.mul(x, ir.Constant(i32, mul))
    return b.xor(x, b.lshr(x, ir.Constant(i32, 16)))


def random(kb, e: Random, idx) -> ir.Value:
    """A draw of the counter-based generator, as primitives._random."""
    b = kb.b
    key = kb.buffer(e.key, "i32")
    seed = b.load(key)
    step = b.load(b.gep(key, [ir.Constant(i64, 1)]))
    stream = ir.Constant(i32, e.stream)
    for t in e.steps:  # inside scans every step draws anew, as primitives._random
        t = b.trunc(kb.dim(t), i32)
        stream = mix(kb, b.add(b.add(b.mul(stream, ir.Constant(i32, 0x01000193)), t), ir.Constant(i32, 1)))
    i = b.trunc(kb.affine(e.at, idx), i32)

    def uniform(stream):  # in (0, 1), from the top 24 bits, in double precision
        k = mix(kb, b.xor(seed, mix(kb, b.add(b.mul(stream, ir.Constant(i32, 0x9E3779B9)), mix(kb, step)))))
        bits = mix(kb, b.add(mix(kb, b.xor(i, k)), k))
        u = b.fadd(b.uitofp(b.lshr(bits, ir.Constant(i32, 8)), f64), ir.Constant(f64, 0.5))
        return b.fmul(u, ir.Constant(f64, 2.0**-24))

    u = uniform(stream)
    if e.dist == "normal":  # Box-Muller on a second stream
        u2 = uniform(b.add(stream, ir.Constant(i32, 0x5BD1E995)))
        radius = kb.intrinsic("llvm.sqrt", b.fmul(ir.Constant(f64, -2.0), kb.call("log", f64, [u])))
        u = b.fmul(radius, kb.call("cos", f64, [b.fmul(ir.Constant(f64, 2.0 * math.pi), u2)]))
    return b.fptrunc(u, LL[e.dtype])
