"""The fused optimizer update: one pass over the flat parameter, gradient and state arrays,
appended to the step module's driver (driver.py)."""
from __future__ import annotations

from llvmlite import ir

from .gemm import declare
from .types import f32, f64, i64


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
