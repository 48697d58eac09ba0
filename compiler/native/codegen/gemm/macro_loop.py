"""The macro-kernel (BLIS's): the loops of one matrix's block of C over its blocks — NC
columns of op(B), K slices, MC rows of op(A), then NR x MR tiles for the micro-kernel — with
the packs each level makes (or the packs given; a block of few tiles reads B's whole panels
where they lie), and the paths that pack nothing (few_rows.py, few_columns.py); the epilogue
called on each part of C once final."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native import FEW_COLUMNS, FEW_ROWS
from dlc.compiler.native.codegen.types import f32, i1, i64
from dlc.compiler.native.codegen.gemm.blocking import STORED_B_FLOATS
from dlc.compiler.native.codegen.gemm.few_columns import few_columns
from dlc.compiler.native.codegen.gemm.few_rows import few_rows, packed_b, stored_b
from dlc.compiler.native.codegen.gemm.interface import EPILOGUE_TYPE, SIZES, SLOTS
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, ceil_div, fptr, gep, internal, loop, smin
from dlc.compiler.native.codegen.gemm.microkernel import narrow_ukernel, stored_b_ukernel, streamed_a_ukernels, ukernel
from dlc.compiler.native.codegen.gemm.packs import pack, panel_length
from dlc.compiler.native.codegen.gemm.window_packs import pack_windows


def _given_or_packed(b, fn, which: str, given, from_given, pack_here):
    """The panels of operand `which` and the floats from one panel to the next: from_given()'s,
    in the pack `given` where it is not null, else pack_here()'s (each builds at b's place)."""
    given_bb, own_bb, joined = (fn.append_basic_block(f"{which}_{n}") for n in ("given", "own", "joined"))
    b.cbranch(b.icmp_unsigned("!=", given, ir.Constant(fptr, None)), given_bb, own_bb)
    b.position_at_end(given_bb)
    at_given, given_end = from_given(), b.block
    b.branch(joined)
    b.position_at_end(own_bb)
    at_own, own_end = pack_here(), b.block
    b.branch(joined)
    b.position_at_end(joined)
    phis = b.phi(fptr), b.phi(i64)
    for phi, g, o in zip(phis, at_given, at_own):
        phi.add_incoming(g, given_end)
        phi.add_incoming(o, own_end)
    return phis


def block(gen, name, trans_a, trans_b, accumulate, packed, epilogue=False, windows=False, packed_a=False):
    """C[m0:m1, n0:n1] (+)= op(A)[m0:m1, :] @ op(B)[:, n0:n1] for one matrix. `packed`:
    op(B) is also given packed (`Bk`, laid out by `add_pack`), so it is not packed here.
    `packed_a`: op(A) is, in the same argument (`add_pack` of "a": MR-tall panels, each
    K long); given (not null), only the pack is read: by the few-columns path where the
    block has at most FEW_COLUMNS columns (a convolution's last stages at batch 1; in
    float32 and on bf16's conversion path), else by the tiled path, at any number of rows.
    `epilogue`: it is called on each part of the block as soon as the part is final —
    an MC x NC block after its last K slice, while the block is in cache (by rows: a
    part of NR columns, its rows a page apart at many pixels, missed the L1 cache on
    every row and made MobileNetV2's batch-8 prediction slower, not faster)."""
    cfg = gen.cfg
    fn = internal(
        gen.m,
        f"{name}.block",
        ir.VoidType(),
        [i64] * 5
        + [fptr, i64, fptr, i64, fptr, i64, fptr, fptr, fptr]
        + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES, i64] * epilogue
        + [i64.as_pointer()] * windows,
        ["m0", "m1", "n0", "n1", "K", "A", "lda", "B", "ldb", "C", "ldc", "Ap", "Bp", "Bk"]
        + ["epilogue", "slots", "sizes", "bi"] * epilogue
        + ["geometry"] * windows,
    )
    m0, m1, n0, n1, K, A, lda, B, ldb, C, ldc, Ap, Bp, Bk = fn.args[:14]
    Ak = Bk if packed_a else None  # a null one: A is packed here

    def finished(b, r0, r1, c0, c1):
        if epilogue:
            epi, slots, sizes, bi = fn.args[14:18]
            b.call(epi, [slots, sizes, bi, r0, r1, c0, c1])

    uk = ukernel(gen)
    narrow = None if cfg.amx or cfg.nr == cfg.vw else narrow_ukernel(gen)
    pack_b = pack(gen, "b", trans_b)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    empty_k = fn.append_basic_block("empty_k")
    main = fn.append_basic_block("main")
    b.cbranch(b.icmp_signed("<=", K, c64(0)), empty_k, main)

    b.position_at_end(empty_k)  # K = 0: C = 0 (or unchanged)
    if not accumulate:
        with loop(b, m0, m1, name="zi") as i:
            row = gep(b, C, b.mul(i, ldc))
            with loop(b, n0, n1, name="zj") as j:
                b.store(ir.Constant(f32, 0.0), gep(b, row, j))
    finished(b, m0, m1, n0, n1)
    b.ret_void()

    b.position_at_end(main)
    # Even K slices: ceil(K / ceil(K / KC)), so that no slice is tiny.
    kslices = ceil_div(b, K, cfg.kc)
    kstep = ceil_div(b, K, kslices)
    # the slices of the pairs' and the tiles' products start at even k (or whole tiles): a
    # pair never straddles two
    whole_steps = lambda k: b.mul(ceil_div(b, k, cfg.k_step), c64(cfg.k_step)) if cfg.k_step > 1 else k
    rows_few = b.icmp_signed("<=", b.sub(m1, m0), c64(FEW_ROWS))
    # a block given op(A) packed reads the pack only (a caller may keep no other A): tiled
    unpacked_a = b.icmp_unsigned("==", Ak, ir.Constant(fptr, None)) if packed_a else ir.Constant(i1, 1)
    if packed and not cfg.bf16:
        # op(B) packed (given, not null) and the columns from a panel's start: the
        # one-row product streams its panels (a null Bk: the caller's pack is not made),
        # Bᵀ's too (a transposed weight's panels are op(B)'s: an LM head's tied table)
        from_panels = b.and_(
            b.icmp_unsigned("!=", Bk, ir.Constant(fptr, None)), b.icmp_signed("==", b.srem(n0, c64(cfg.nr)), c64(0))
        )
        few_packed = fn.append_basic_block("few_rows_packed")
        other = fn.append_basic_block("not_few_packed")
        b.cbranch(b.and_(rows_few, from_panels), few_packed, other)
        b.position_at_end(few_packed)
        few_rows(gen, b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, packed_b(gen, Bk, K))
        finished(b, m0, m1, n0, n1)
        b.ret_void()
        b.position_at_end(other)
    if not (trans_b or windows):
        tiled = fn.append_basic_block("tiled")
        few = fn.append_basic_block("few_rows")
        b.cbranch(b.and_(rows_few, unpacked_a), few, tiled)
        b.position_at_end(few)
        few_rows(gen, b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, stored_b(gen, B, ldb))
        finished(b, m0, m1, n0, n1)
        b.ret_void()
        b.position_at_end(tiled)
    # op(A)'s panels given: few columns read them, but for the tiles' products and NEON's
    # pairs (its panels' 12 rows are three BFDOTs' lanes: not built)
    few_columns_a = cfg.operands in ("f32", "bf16-round") or cfg.operands == "bf16-pairs" and cfg.vw == 16
    if packed_a and not windows and few_columns_a:
        few, other = fn.append_basic_block("few_columns_packed_a"), fn.append_basic_block("not_few_packed_a")
        given_a = b.icmp_unsigned("!=", Ak, ir.Constant(fptr, None))
        b.cbranch(b.and_(b.icmp_signed("<=", b.sub(n1, n0), c64(FEW_COLUMNS)), given_a), few, other)
        b.position_at_end(few)
        few_columns(
            gen, b, m0, m1, n0, n1, K, whole_steps(kstep), A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Ak, Bp
        )
        finished(b, m0, m1, n0, n1)
        b.ret_void()
        b.position_at_end(other)
    if not (cfg.bf16 or windows):  # (a windows routine's B is an image: packed, always)
        few, packing = fn.append_basic_block("few_columns"), fn.append_basic_block("packing")
        b.cbranch(b.and_(b.icmp_signed("<=", b.sub(n1, n0), c64(FEW_COLUMNS)), unpacked_a), few, packing)
        b.position_at_end(few)
        few_columns(gen, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Bp=Bp)
        finished(b, m0, m1, n0, n1)
        b.ret_void()
        b.position_at_end(packing)
    kstep = whole_steps(kstep)
    # A block of at most `stored_b_rows` rows whose op(B) is at most STORED_B_FLOATS reads B's
    # whole panels where they lie, each row of a panel one run of B's row, and packs only its
    # last panel, where that is partial: a pack would copy all of B for the few tiles that
    # read each panel (MobileNetV2's projections: 24 to 32 filters over thousands of
    # pixels). The tiles' sums are the same.
    few_tiles = None
    if cfg.stored_b_rows and not (packed or trans_b or windows or cfg.bf16 or cfg.amx):
        few_tiles = b.and_(
            b.icmp_signed("<=", b.sub(m1, m0), c64(cfg.stored_b_rows)),
            b.icmp_signed("<=", b.mul(b.sub(n1, n0), K), c64(STORED_B_FLOATS)),
        )
    with loop(b, n0, n1, cfg.nc, name="jc") as jc:
        nc = smin(b, c64(cfg.nc), b.sub(n1, jc))
        # the columns read where they lie (whole panels), before the first one packed
        where_b = None
        if few_tiles is not None:
            where_b = b.select(few_tiles, b.mul(b.sdiv(nc, c64(cfg.nr)), c64(cfg.nr)), c64(0))
        with loop(b, 0, K, kstep, name="pc") as pc:
            kc = smin(b, kstep, b.sub(K, pc))

            # op(B)[pc, jc]: B[pc*ldb + jc], or B[jc*ldb + pc] when transposed
            def pack_here():
                if windows:
                    pack_windows(gen, b, trans_b, kc, nc, pc, jc, B, fn.args[-1], Bp)
                    return Bp, panel_length(gen, b, kc)
                j, n = (jc, nc) if where_b is None else (b.add(jc, where_b), b.sub(nc, where_b))
                bsrc = gep(b, B, b.add(b.mul(j, ldb), pc) if trans_b else b.add(b.mul(pc, ldb), j))
                b.call(pack_b, [kc, n, bsrc, ldb, Bp])
                return Bp, panel_length(gen, b, kc)

            if packed:  # the K-long panels from column jc on, from row pc on; a null Bk: packed here
                given_panels = lambda: _from_panels(gen, b, Bk, jc, pc, K, cfg.nr)
                bblock, bstride = _given_or_packed(b, fn, "b", Bk, given_panels, pack_here)
            else:
                bblock, bstride = pack_here()
            load_c = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, c64(0))
            with loop(b, m0, m1, cfg.mc, name="ic") as ic:
                mc = smin(b, c64(cfg.mc), b.sub(m1, ic))
                ablock, astride = _a_block(gen, b, fn, A, lda, Ap, Ak, trans_a, ic, mc, pc, kc, K)
                with loop(b, 0, nc, cfg.nr, name="jr") as jr:
                    nr = smin(b, c64(cfg.nr), b.sub(nc, jr))
                    crow = gep(b, C, b.add(jc, jr))

                    def tiles(call):  # call(A's panel, C's tile, its rows) for each tile of the panel
                        with loop(b, 0, mc, cfg.mr, name="ir") as ir_:
                            mr = smin(b, c64(cfg.mr), b.sub(mc, ir_))
                            call(gep(b, ablock, b.mul(ir_, astride)), gep(b, crow, b.mul(b.add(ic, ir_), ldc)), mr)

                    def from_pack():
                        bpanel = gep(b, bblock, b.mul(jr if where_b is None else b.sub(jr, where_b), bstride))
                        kernel = _ukernel(b, (uk, narrow), nr, cfg.vw)
                        if packed_a and not cfg.amx:
                            # a given op(A)'s block comes from memory in the first pass over
                            # it, fetched ahead; the passes after it find it in cache
                            streamed, narrow_streamed = streamed_a_ukernels(gen)
                            streamed = _ukernel(b, (streamed, None if narrow is None else narrow_streamed), nr, cfg.vw)
                            first = b.and_(b.not_(unpacked_a), b.icmp_signed("==", jr, c64(0)))
                            kernel = b.select(first, streamed, kernel)
                        tiles(lambda ap, ct, mr: b.call(kernel, [kc, ap, bpanel, ct, ldc, mr, nr, load_c]))

                    if where_b is None:
                        from_pack()
                    else:
                        with b.if_else(b.icmp_signed("<", jr, where_b)) as (where_it_lies, packed_here):
                            with where_it_lies:
                                bpanel = gep(b, B, b.add(b.mul(pc, ldb), b.add(jc, jr)))
                                kernel = stored_b_ukernel(gen)
                                tiles(lambda ap, ct, mr: b.call(kernel, [kc, ap, bpanel, ct, ldc, mr, nr, load_c, ldb]))
                            with packed_here:
                                from_pack()
                if epilogue:  # after the last K slice, the block is final
                    last = fn.append_basic_block("last_slice")
                    after = fn.append_basic_block("not_last")
                    b.cbranch(b.icmp_signed(">=", b.add(pc, kc), K), last, after)
                    b.position_at_end(last)
                    finished(b, ic, b.add(ic, mc), jc, b.add(jc, nc))
                    b.branch(after)
                    b.position_at_end(after)
    b.ret_void()
    return fn


def _ukernel(b, kernels: tuple, nr, vw: int):
    """Of (the micro-kernel, its narrow one or None), the one for a tile of nr columns."""
    uk, narrow = kernels
    return uk if narrow is None else b.select(b.icmp_signed("<=", nr, c64(vw)), narrow, uk)


def _a_block(gen, b, fn, A, lda, Ap, Ak, trans_a, ic, mc, pc, kc, K):
    """The panels of op(A)[ic : ic+mc, pc : pc+kc] and the floats from one panel to the
    next: packed here into Ap, or the given Ak's (not null), each panel K long."""

    def pack_here():
        asrc = gep(b, A, b.add(b.mul(pc, lda), ic) if trans_a else b.add(b.mul(ic, lda), pc))
        b.call(pack(gen, "a", trans_a), [kc, mc, asrc, lda, Ap])
        return Ap, panel_length(gen, b, kc)

    if Ak is None:
        return pack_here()

    given_panels = lambda: _from_panels(gen, b, Ak, ic, pc, K, gen.cfg.mr)
    return _given_or_packed(b, fn, "a", Ak, given_panels, pack_here)


def _from_panels(gen, b, packs, start, pc, K, P):
    """In `packs` (panels P wide, each K long: `add_pack`'s), panel start / P from row pc of
    K on, and the floats from one panel to the next."""
    rows = b.sdiv(pc, c64(2)) if gen.cfg.k_step > 1 else pc  # packed rows before row pc: pairs, tiles
    stride = panel_length(gen, b, K)
    return gep(b, packs, b.add(b.mul(start, stride), b.mul(rows, c64(P)))), stride
