"""The packs of op(A) and op(B) (BLIS's packing): a K slice of a block of MR rows of op(A),
or of NR columns of op(B), copied into k-major panels that the micro-kernel reads in order
(panels along K transposed 8 x 8 in registers, rows past the end zero), rounded to bfloat16
as they are stored for the conversion path, made pairs after (bf16_operands.py); on the AMX
tiles amx_tiles.py's packs. A convolution's windows are packed as these (window_packs.py)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import round_bf16, transpose8, vec_ptr
from dlc.compiler.native.codegen.types import f32, i32, i64
from dlc.compiler.native.codegen.gemm.amx_tiles import build_tile_pack
from dlc.compiler.native.codegen.gemm.bf16_operands import to_pairs
from dlc.compiler.native.codegen.gemm.blocking import TILE_DEPTH
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, ceil_div, fptr, gep, internal, loop, smin


def pack(gen, which: str, trans: bool):
    """Pack function for 'a' (MR-tall panels) or 'b' (NR-wide panels)."""

    def build(name):
        fn = internal(gen.m, name, ir.VoidType(), [i64, i64, fptr, i64, fptr], ["kc", "len", "src", "ld", "dst"])
        fn.attributes.add("noinline")
        fn.args[4].add_attribute("noalias")
        # op(A) non-transposed is stored M×K (k contiguous); op(B) non-transposed is K×N.
        contig_k = (which == "a") != trans
        (build_tile_pack if gen.cfg.amx else _build_pack)(gen, fn, which, contig_k)
        return fn

    return gen.shared(f"pack_{which}_{'t' if trans else 'n'}", build)


def panel_length(gen, b, k):
    """Floats a panel holds per row of A or column of B for a K slice k deep: k, or on
    the AMX tiles k rounded up to whole tiles, in bfloat16 pairs."""
    if not gen.cfg.amx:
        return k
    return b.mul(ceil_div(b, k, TILE_DEPTH), c64(TILE_DEPTH // 2))


def _build_pack(gen, fn, which, contig_k):
    """pack(kc, len, src, ld, dst): panels of P (= MR or NR) along `len`, k-major.

    Element (p, k) of the block — p along the panel direction (rows of op(A) or
    columns of op(B)), k along K — is src[p*ld + k] when `contig_k`, else src[k*ld + p].
    Panel q is stored at dst + q*P*kc, element (p, k) at [k*P + p % P]; rows past `len`
    are zero. The conversion path's values are rounded as they are stored, in the pass that
    packs them, not in a pass of their own over the panel.
    """
    cfg, vty = gen.cfg, gen.vty
    P = cfg.mr if which == "a" else cfg.nr
    kc, length, src, ld, dst = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    operand = stored_operand(gen, b)
    npanels = ceil_div(b, length, P)
    zero = ir.Constant(f32, 0.0)

    with loop(b, 0, npanels, name="q") as q:
        p0 = b.mul(q, c64(P))
        width = smin(b, c64(P), b.sub(length, p0))
        out = gep(b, dst, b.mul(p0, kc))
        full_bb = b.append_basic_block("full")
        part_bb = b.append_basic_block("part")
        next_bb = b.append_basic_block("next")
        b.cbranch(b.icmp_signed("==", width, c64(P)), full_bb, part_bb)

        # full panel
        b.position_at_end(full_bb)
        if contig_k:
            # lines along k: transpose 8×8 blocks in registers, 8 k at a time
            lines = [gep(b, src, b.mul(b.add(p0, c64(p)), ld)) for p in range(P)]
            k8 = b.mul(b.sdiv(kc, c64(8)), c64(8))
            v8 = ir.VectorType(f32, 8)
            with loop(b, 0, k8, 8, name="k8") as k:
                o = gep(b, out, b.mul(k, c64(P)))
                for g in range(0, P, 8):
                    rows = [
                        b.load(vec_ptr(b, gep(b, lines[p], k), v8), align=4) if p < P else ir.Constant(v8, ir.Undefined)
                        for p in range(g, g + 8)
                    ]
                    cols = transpose8(b, rows)
                    w = min(8, P - g)
                    for kk in range(8):
                        col = cols[kk]
                        if w < 8:
                            head = ir.Constant(ir.VectorType(i32, w), list(range(w)))
                            col = b.shuffle_vector(col, col, head)
                        dst_p = gep(b, o, c64(kk * P + g))
                        b.store(operand(col), b.bitcast(dst_p, ir.VectorType(f32, w).as_pointer()), align=4)
            with loop(b, k8, kc, name="k") as k:
                o = gep(b, out, b.mul(k, c64(P)))
                for p in range(P):
                    b.store(operand(b.load(gep(b, lines[p], k), align=4)), gep(b, o, c64(p)), align=4)
        else:
            base = gep(b, src, p0)
            with loop(b, 0, kc, name="k") as k:
                line = gep(b, base, b.mul(k, ld))
                o = gep(b, out, b.mul(k, c64(P)))
                if P % cfg.vw == 0:
                    for v in range(P // cfg.vw):
                        x = b.load(vec_ptr(b, gep(b, line, c64(v * cfg.vw)), vty), align=4)
                        b.store(operand(x), vec_ptr(b, gep(b, o, c64(v * cfg.vw)), vty), align=4)
                else:
                    for p in range(P):
                        b.store(operand(b.load(gep(b, line, c64(p)), align=4)), gep(b, o, c64(p)), align=4)
        b.branch(next_bb)

        # partial panel: clamp the index, zero what is past the end
        b.position_at_end(part_bb)
        last = b.sub(width, c64(1))
        idx = [smin(b, c64(p), last) for p in range(P)]
        ok = [b.icmp_signed("<", c64(p), width) for p in range(P)]
        if contig_k:
            lines = [gep(b, src, b.mul(b.add(p0, idx[p]), ld)) for p in range(P)]
        with loop(b, 0, kc, name="kp") as k:
            o = gep(b, out, b.mul(k, c64(P)))
            if not contig_k:
                line = gep(b, gep(b, src, p0), b.mul(k, ld))
            for p in range(P):
                x = b.load(gep(b, lines[p], k) if contig_k else gep(b, line, idx[p]), align=4)
                b.store(operand(b.select(ok[p], x, zero)), gep(b, o, c64(p)), align=4)
        b.branch(next_bb)
        b.position_at_end(next_bb)
        finish_panel(gen, b, out, kc, P)
    b.ret_void()


def stored_operand(gen, b):
    """What a pack stores of a float (vector) x: x, or on the conversion path x rounded to
    bfloat16, in the pass that packs it rather than in a pass of its own over the panel."""
    return (lambda x: round_bf16(b, x)) if gen.cfg.operands == "bf16-round" else (lambda x: x)


def finish_panel(gen, b, panel, kc, P):
    """A panel whose kc rows of P floats are all stored, made what the micro-kernel
    multiplies: with bfloat16 pairs, its rows paired in place (bf16_operands.py)."""
    if gen.cfg.operands == "bf16-pairs":
        to_pairs(gen, b, panel, kc, P)
