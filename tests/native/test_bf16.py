"""bfloat16 mixed precision (`precision = "bf16"`, docs/native.md): every GEMM path the
machine has against the numpy emulation of the rounding, the two engines against each
other, the paths DLC_TARGET forces, training under bf16 against float32, the float32 program
untouched, and which products run in bf16 (compiler/native/bf16.py: those a GEMM
computes; the direct convolutions keep the float32 bits) and `dlc summary --bf16`."""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path


import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.evaluate import round_bf16
from dlc.compiler.native.program import render
from dlc.compiler.native import bf16
from dlc.compiler.native.codegen import amx, jit
from dlc.compiler.native.codegen.gemm import blocking, routine
from dlc.compiler.native.kernels.gemm import a_pack_floats, packed_floats
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.cli import main
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.training.config import make_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import drift  # noqa: E402
from gemm_library import GemmLibrary  # noqa: E402
from helpers.gemm_paths import bf16_gemm_paths as gemm_paths  # noqa: E402


def test_rounding_is_to_nearest_even():
    one = np.float32(1.0)
    ulp = np.float32(2.0**-7)  # bfloat16's spacing at 1
    x = np.array(
        [
            one + ulp / 2,
            one + ulp * 1.5,
            one + ulp / 2 + 2.0**-20,
            -(one + ulp / 2),
            np.inf,
            -np.inf,
            np.float32(3.4e38),
            np.nan,
        ],
        np.float32,
    )
    got = round_bf16(x)
    assert list(got[:4]) == [one, one + 2 * ulp, one + ulp, -one]  # ties to even, else nearest
    assert list(got[4:6]) == [np.inf, -np.inf] and got[6] == np.inf  # past bfloat16's largest: inf
    assert np.isnan(got[7])


@pytest.mark.parametrize("path", list(gemm_paths()))
def test_gemm_rounds_as_the_emulation(path):
    """Every variant (transposes, packed B, a row or two without packing, odd K, edge
    tiles) equals the float64 product of the operands rounded by the emulation, to
    float32 sums; and differs from the product of the unrounded operands."""
    variants = [(ta, tb, False) for ta in (False, True) for tb in (False, True)]
    lib = GemmLibrary(variants, config=gemm_paths()[path], packed=True)
    rng = np.random.default_rng(0)
    for m, n, k in [(1, 37, 5), (2, 40, 7), (7, 33, 17), (64, 100, 301), (130, 70, 513)]:
        for ta in (False, True):
            for tb in (False, True):
                for packed in (False, True):
                    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
                    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
                    op = lambda x, t: (x.T if t else x).astype(np.float64)
                    want = op(round_bf16(a), ta) @ op(round_bf16(b), tb)
                    exact = op(a, ta) @ op(b, tb)
                    got = lib(a, b, trans_a=ta, trans_b=tb, packed=packed, nthreads=2)
                    scale = np.abs(want).max()
                    assert np.abs(got - want).max() <= 1e-5 * scale, (m, n, k, ta, tb, packed)
                    if k > 16:
                        assert np.abs(got - exact).max() > 1e-4 * scale, (m, n, k, ta, tb, packed)


@pytest.mark.parametrize("path", list(gemm_paths()))
def test_batched_gemm_rounds_as_the_emulation(path):
    """A batch of products, B broadcast or not (attention's, a sequence's steps)."""
    lib = GemmLibrary([(False, True, False), (True, False, False)], config=gemm_paths()[path])
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 33, 19)).astype(np.float32)
    for b, ta, tb in [(rng.standard_normal((4, 21, 19)), False, True), (rng.standard_normal((1, 33, 21)), True, False)]:
        b = b.astype(np.float32)
        got = lib(a, b, trans_a=ta, trans_b=tb, nthreads=2)
        op = lambda x, t: np.swapaxes(x, -1, -2) if t else x
        want = op(round_bf16(a), ta).astype(np.float64) @ op(round_bf16(b), tb).astype(np.float64)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("path", list(gemm_paths()))
def test_gemm_operand_is_rounded_exactly(path):
    """x @ [[1]]: the rounded operand itself (no sums), ties and the largest values
    included; the f32 routines leave it as it is."""
    x = np.array(
        [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 3.4e38, 1e-30, 12345.678, -0.1, 7.0], np.float32
    ).reshape(-1, 1)
    one = np.ones((1, 1), np.float32)
    got = GemmLibrary([(False, False, False)], config=gemm_paths()[path])(x, one)
    assert np.array_equal(got, round_bf16(x))
    assert np.array_equal(GemmLibrary([(False, False, False)])(x, one), x)


@pytest.mark.parametrize("path", list(gemm_paths()))
def test_gemm_stays_in_its_buffers(path):
    """Operands and C inside NaN borders, shapes that end mid-tile, mid-pair and mid-panel:
    the product equals the emulation (a NaN read from outside would show), nothing outside
    C is written, and a packed B (NaN past it) fills at most what lowering allocates."""
    lib = GemmLibrary([(False, False, False), (True, True, False)], config=gemm_paths()[path], packed=True)
    rng = np.random.default_rng(3)

    def framed(shape):
        room = np.full((shape[0] + 2, shape[1] + 2), np.nan, np.float32)
        room[1:-1, 1:-1] = rng.standard_normal(shape)
        return room, room[1:-1, 1:-1]

    for m, n, k in [(3, 1, 1), (33, 17, 15), (47, 50, 33), (31, 65, 64), (65, 33, 545)]:
        for t in (False, True):
            _, a = framed((k, m) if t else (m, k))
            _, b = framed((n, k) if t else (k, n))
            for packed in (False, True):
                room, c = framed((m, n))
                lib(a, b, c, trans_a=t, trans_b=t, packed=packed, nthreads=2)
                op = lambda x: (x.T if t else x).astype(np.float64)
                want = op(round_bf16(a)) @ op(round_bf16(b))
                assert np.abs(c - want).max() <= 1e-5 * np.abs(want).max(), (m, n, k, t, packed)
                c[...] = 0
                assert np.isnan(room).sum() == room.size - m * n, (m, n, k, t, packed)
            panels = lib._packed(lib.args(np.zeros((0, k), np.float32), b, np.zeros((0, n), np.float32), False, t), t)
            assert np.isnan(panels[packed_floats(k, n, tiles=True) :]).all()


@pytest.mark.parametrize("path", list(gemm_paths()))
def test_packed_a_gives_the_bits_of_packing_in_the_product(path):
    """op(A) packed once (a prediction's filters, kept while the weights stay the same):
    the bits of the product that packs A in each K slice, on one thread or two, over edge
    rows, odd K, several K slices and a few columns (on the conversion path, by the few-columns
    path: its bits are the tiled ones); A itself is never read (NaN in it
    after its pack was made changes nothing), nor anything around B (a NaN border), and the
    pack fills at most what lowering allocates (a_pack_floats)."""
    variants = [(False, tb, acc) for tb in (False, True) for acc in (False, True)]
    lib = GemmLibrary(variants, config=gemm_paths()[path], packed=True)
    rng = np.random.default_rng(5)
    for m, n, k in [(3, 40, 7), (33, 3, 17), (70, 4, 1100), (64, 100, 301), (130, 70, 1100)]:
        for _, tb, acc in variants:
            a = rng.standard_normal((m, k)).astype(np.float32)
            shape = (n, k) if tb else (k, n)
            room = np.full((shape[0] + 2, shape[1] + 2), np.nan, np.float32)
            b = room[1:-1, 1:-1]
            b[...] = rng.standard_normal(shape)
            c0 = rng.standard_normal((m, n)).astype(np.float32)
            want = lib(a, b, c0.copy() if acc else None, trans_b=tb, accumulate=acc, nthreads=2)
            emulated = round_bf16(a).astype(np.float64) @ (round_bf16(b).T if tb else round_bf16(b)).astype(np.float64)
            emulated += c0 if acc else 0
            assert np.abs(want - emulated).max() <= 1e-5 * np.abs(emulated).max(), (m, n, k, tb, acc)
            args = lib.args(a, b, want, False, tb)
            pack = lib._packed_a(args, False)
            assert not np.isnan(pack[: a_pack_floats(k, m, bf16=True)]).all()
            assert np.isnan(pack[a_pack_floats(k, m, bf16=True) :]).all()
            for nthreads in (1, 2):
                c = c0.copy() if acc else np.full((m, n), np.nan, np.float32)
                run = lib.bind(a, b, c, trans_b=tb, accumulate=acc, nthreads=nthreads, packed_a=True)
                kept = a.copy()
                a[...] = np.nan
                assert run() == 0
                a[...] = kept
                assert c.tobytes() == want.tobytes(), (m, n, k, tb, acc, nthreads)


def test_a_bf16_packed_a_of_few_columns_takes_the_few_columns_path_but_on_the_tiles_and_neon():
    """A bf16 `packed_a` routine multiplies a block of few columns by the few-columns path
    on A's given panels (rounded floats on the conversion path; bfloat16 pairs, times op(B)'s
    pairs, under AVX512_BF16), not by the tiled one, whose narrow micro-kernel would fill a
    few of each vector's lanes; the AMX tiles, and NEON's pairs, tile."""
    cases = [
        (replace(blocking.AVX512, operands="bf16-round"), True),
        (replace(blocking.AVX512, operands="bf16-pairs"), True),
        (replace(blocking.NEON, operands="bf16-pairs"), False),
        (blocking.AMX, False),
    ]
    for config, few in cases:
        m = ir.Module()
        routine.add_gemm(m, "packed_a", packed_a=True, config=config)
        assert ("few_columns_packed_a" in str(m)) == few, config


def test_on_the_tiles_a_windows_routine_packs_floats_then_the_tiles_layout():
    """The AMX blocking's windows routine packs each panel of windows as floats, then into
    the tiles' layout from there (its bits against im2col's run in tests/native/test_gemm.py
    where the host has the tiles; here its IR is built)."""
    m = ir.Module()
    routine.add_gemm(m, "windows", trans_b=True, windows=True, config=blocking.AMX)
    calls = re.findall(r'call void @"([^"]+)"', str(m))
    assert any(c.endswith(".pack_windows_t") for c in calls) and any(c.endswith(".pack_b_n") for c in calls), calls


def test_code_on_the_tiles_is_never_generated_at_o0():
    """LLVM's O0 code generator aborts the process on the tiles a loop carries (the
    micro-kernel's sums), so a module holding tiles is generated at the quick level when O0
    is asked (DLC_QUICK_CODE=unoptimized, as in these tests), and any other module at O0."""
    tiles, floats = ir.Module(), ir.Module()
    routine.add_gemm(tiles, config=blocking.AMX)
    routine.add_gemm(floats, config=blocking.AVX2)
    assert jit.codegen_level(jit.parse(str(tiles)), jit.UNOPTIMIZED_LEVEL) == jit.QUICK_LEVEL
    assert jit.codegen_level(jit.parse(str(floats)), jit.UNOPTIMIZED_LEVEL) == jit.UNOPTIMIZED_LEVEL
    assert jit.codegen_level(jit.parse(str(tiles)), jit.OPT_LEVEL) == jit.OPT_LEVEL


def test_amx_workers_need_no_request_of_their_own(tmp_path):
    """The tile state is the process's: pool workers that already ran a float32 product
    before the request run the AMX product after it (no SIGILL)."""
    if "amx" not in gemm_paths():
        pytest.skip("the host has no AMX")
    code = (
        "import numpy as np; from dlc.compiler.native.codegen.gemm import blocking; "
        f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from gemm_library import GemmLibrary; x = np.ones((256, 256), np.float32); GemmLibrary([(False, False, False)])(x, x, nthreads=2); "
        "print(GemmLibrary([(False, False, False)], config=blocking.AMX)(x, x, nthreads=2)[0, 0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, DLC_CACHE_DIR=str(tmp_path)), capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.split() == ["256.0"], out


def test_refused_tile_state_falls_back_and_says_so_once(monkeypatch, capsys):
    """Where Linux refuses the tile state, the bf16 routines take the vdpbf16ps pairs, or on
    the cores whose pairs are slower than their FMAs (SLOW_PAIRS: every core with AMX so far)
    the conversion path, and one line on stderr says so."""
    if not (jit.host_has("amx-bf16") and jit.host_has("amx-tile")):
        pytest.skip("the host has no AMX")
    monkeypatch.setattr(amx, "request_tiles", lambda: 22)
    amx.tiles_granted.cache_clear()
    fallback = "bf16-round" if jit.host_cpu()[0] in blocking.SLOW_PAIRS else "bf16-pairs"
    try:
        assert [blocking.bf16_config().operands for _ in range(2)] == [fallback] * 2
        with pytest.raises(RuntimeError, match="tile state"):
            GemmLibrary([(False, False, False)], config=blocking.AMX)
    finally:
        amx.tiles_granted.cache_clear()
    assert capsys.readouterr().err.count("did not grant the AMX tile state (Invalid argument)") == 1


PATHS = ("bf16-round", "bf16-pairs", "bf16-amx")  # each needs the features of the one before


@pytest.mark.parametrize(
    "cpu, target, operands",
    [
        ("emeraldrapids", "host", "bf16-round"),
        ("znver4", "host", "bf16-pairs"),
        ("emeraldrapids", "avx512bf16", "bf16-pairs"),
    ],
)
def test_the_pairs_are_taken_where_they_are_faster_than_the_fmas(cpu, target, operands, monkeypatch):
    """A core whose vdpbf16ps multiplies fewer products a cycle than its FMAs (SLOW_PAIRS: an
    Emerald Rapids without its tiles) takes the conversion path, one with AVX512_BF16 otherwise
    the pairs; DLC_TARGET=avx512bf16 forces the pairs on any."""
    features = "+avx2,+fma,+avx512f,+avx512bw,+avx512bf16,-amx-bf16,-amx-tile"
    monkeypatch.setattr(jit, "host_cpu", lambda: (cpu, features))
    monkeypatch.setattr(blocking, "has_tiles", lambda instruction: False)
    monkeypatch.setenv("DLC_TARGET", target)
    monkeypatch.delenv("DLC_GEMM_VW", raising=False)
    assert blocking.bf16_config() == replace(blocking.AVX512, operands=operands)


@pytest.mark.sets_target
@pytest.mark.parametrize(
    "target, best",
    [("avx2", "bf16-round"), ("avx512", "bf16-round"), ("avx512bf16", "bf16-pairs"), ("host", "bf16-amx")],
)
def test_dlc_target_forces_each_path(target, best, tmp_path):
    """DLC_TARGET=avx512bf16 takes AMX away, avx512 also AVX512_BF16, avx2 all of
    AVX-512: the bf16 routines take the best path the target leaves (at most `best`)."""
    if target != "avx2" and not jit.host_has("avx512f"):
        pytest.skip("the host has no AVX-512")
    code = (
        "from dlc.compiler.native.codegen import amx, jit; from dlc.compiler.native.codegen.gemm import blocking; "
        "c = blocking.bf16_config(); "
        "amx = amx.has_tiles('tdpbf16ps'); "
        "print(c.operands, c.vw, jit.host_has('avx512bf16'), amx, jit.host_cpu()[0] in blocking.SLOW_PAIRS)"
    )
    env = dict(os.environ, DLC_TARGET=target, DLC_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    got, vw, pairs, amx, slow_pairs = out.split()
    pairs = pairs == "True" and (slow_pairs == "False" or target == "avx512bf16")
    assert got == ("bf16-amx" if amx == "True" else "bf16-pairs" if pairs else "bf16-round")
    assert PATHS.index(got) <= PATHS.index(best) and (vw == "8") == (target == "avx2")
    if target == "host" and "amx" in gemm_paths():
        assert got == "bf16-amx"


@pytest.mark.parametrize("level, operands", [("aarch64-i8mm", "bf16-round"), ("aarch64-bf16", "bf16-pairs")])
def test_on_aarch64_the_pairs_are_bfdot_where_the_target_has_bf16(level, operands, compile_for_aarch64):
    """Compiled for an AArch64 level with bf16 (`dlc build --target aarch64-bf16`), the bf16
    routines multiply bfloat16 pairs by BFDOT in the NEON blocking (a row or two by fmla, as
    everywhere); without it, the conversion path's fmla alone (tests/deploy/test_aarch64.py
    runs the pairs under qemu)."""
    compile_for_aarch64(level)
    config = blocking.bf16_config()
    module = ir.Module()
    routine.add_gemm(module, config=config)
    asm = jit.assembly(module)
    assert (config.operands, config.vw) == (operands, 4)
    assert (re.search(r"\bbfdot\s", asm) is not None) == (operands == "bf16-pairs") and "fmla" in asm


# ---- the engines ------------------------------------------------------------------------------------
def _gradients(name: str, engine: str, precision: str) -> tuple:
    """(loss, flat gradients) of one step of a workload (benchmarks/workloads) from its
    initial parameters."""
    train, ev, init, batches = drift.setup(name, seed=2, batch=8, steps=1)
    trainable = [p.name for p in train.params if p.trainable]
    eng = make_engine(engine, train, ev, drift._optimizer("sgd", 1.0), trainable, split=True, precision=precision)
    params = {k: v.copy() for k, v in init.items()}
    out, grads = eng.gradients(
        params, eng.optimizer.init({n: params[n] for n in trainable}), batches[0], np.array([0, 1], np.int32)
    )
    return out["loss"], np.array(grads, copy=True)


@pytest.mark.parametrize("name, within", [("mlp", 1e-4), ("lenet", 1e-4), ("lstm", 0.1)])
def test_native_bf16_gradients_are_the_reference_emulation(name, within):
    """The native engine under bf16 (GEMMs; LeNet's direct convolutions in float32 on both
    engines; the LSTM's recurrent weight packed once before its loop) gives the reference engine's bf16
    gradients, `within` a fraction of how far bf16 moves them from float32 (2-7 %). The
    MLP and LeNet agree to ~1e-7 relative: their first products read the same operands on
    both engines. Elsewhere the engines' float32 values differ in the last bits (exp and
    tanh, sums), and rounding to bfloat16 makes a difference of an ulp of float32 one of
    bfloat16 (2^16 times larger) where it crosses a rounding boundary: the LSTM's agree
    to ~5e-5 (its float32 gradients to 3e-7), 1.4 % of bf16's own change."""
    _, g32 = _gradients(name, "reference", "f32")
    loss, ref = _gradients(name, "reference", "bf16")
    native_loss, native = _gradients(name, "native", "bf16")
    norm = np.linalg.norm
    assert norm(g32 - ref) >= 1e-3 * norm(ref)
    assert norm(native - ref) <= within * norm(g32 - ref)
    assert abs(native_loss - loss) <= 1e-5 * abs(loss)


@pytest.mark.sets_target
@pytest.mark.parametrize(
    "target, operands", [("avx512bf16", "bf16-pairs"), ("avx512", "bf16-round"), ("avx2", "bf16-round")]
)
def test_forced_path_gives_the_reference_emulation(target, operands, tmp_path):
    """The native engine with DLC_TARGET forcing a path the host has (in a process of its
    own: the target is read once) gives the reference engine's bf16 gradients."""
    if target != "avx2" and not jit.host_has("avx512f") or operands == "bf16-pairs" and not jit.host_has("avx512bf16"):
        pytest.skip("the host has not this path")
    code = (
        "import sys, numpy as np; sys.path[:0] = [sys.argv[1], sys.argv[3]]; import test_bf16 as t; "
        f"from dlc.compiler.native.codegen.gemm import blocking; assert blocking.bf16_config().operands == '{operands}'; "
        "np.save(sys.argv[2], t._gradients('mlp', 'native', 'bf16')[1])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "g.npy"), str(ROOT / "tests")],
        env=dict(os.environ, DLC_TARGET=target),
        check=True,
        cwd=ROOT,
    )
    _, ref = _gradients("mlp", "reference", "bf16")
    native = np.load(tmp_path / "g.npy")
    assert np.linalg.norm(native - ref) <= 1e-6 * np.linalg.norm(ref)


def _losses(name: str, precision: str, steps: int = 100) -> np.ndarray:
    train, ev, init, batches = drift.setup(name, seed=2, batch=64, steps=steps)
    trainable = [p.name for p in train.params if p.trainable]
    eng = make_engine("native", train, ev, drift._optimizer("adam", 1e-3), trainable, precision=precision)
    params = {k: v.copy() for k, v in init.items()}
    state = eng.optimizer.init({n: params[n] for n in trainable})
    return np.array(
        [
            eng.train_step(params, state, batch, 1e-3, t, np.array([0, t], np.int32))["loss"]
            for t, batch in enumerate(batches, 1)
        ]
    )


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_bf16_training_stays_with_float32(name, monkeypatch):
    """100 Adam steps under bf16 keep the loss within 1e-2 relative of float32's, taken over
    each ten steps (one batch's loss jitters: measured, the MLP's steps come within 0.9 % on
    the AMX path and 1.1 % on the conversion path, its ten-step means within 0.2 and 0.3 %),
    and every step within 2e-2."""
    monkeypatch.setenv("DLC_NUM_THREADS", "1")
    f32, bf16 = _losses(name, "f32"), _losses(name, "bf16")
    apart = np.abs(bf16 - f32) / np.abs(f32)
    tens = np.abs(bf16.reshape(-1, 10).mean(1) - f32.reshape(-1, 10).mean(1)) / np.abs(f32.reshape(-1, 10).mean(1))
    assert tens.max() < 1e-2, (
        f"{name}: {tens.max():.1e} apart over steps {10 * tens.argmax() + 1}-{10 * tens.argmax() + 10}"
    )
    assert apart.max() < 2e-2, f"{name}: {apart.max():.1e} apart at step {apart.argmax() + 1}"
    assert apart.max() > 0  # bf16 did round


MODEL = """
model m {
    input x: f32[B, 1, 12, 12]
    target y: i32[B]
    c = conv2d(x, 16, 3, act = relu)        # 9 taps: direct
    big = conv2d(c, 8, 5, stride = 2, act = relu)       # 400 taps, 9 pixels: im2col, a GEMM, a small GEMM, col2im
    h = dense(flatten(big), 16, relu)
    loss sparse_cross_entropy(dense(h, 10), y)
}
"""


def _step_graph(source: str):
    return optimize(train_step(load_text(source).build("m", training=True).graph))


def test_float32_program_is_unchanged_and_bf16_only_flags_the_gemms(tmp_path, capsys):
    """Lowered for f32 (the default) the program has no bf16 kernel; lowered for bf16 it is
    the same program with its GEMM and small GEMM kernels flagged, and nothing else: the
    direct convolutions (the first layer's forward pass and weight gradient) stay float32.
    `dlc compile --emit kernels --precision bf16` prints it."""
    graph = _step_graph(MODEL)
    f32, bf16 = render.program(lower(graph)), render.program(lower(graph, "bf16"))
    (tmp_path / "m.dl").write_text(MODEL)
    assert main(["compile", "--emit", "kernels", "--precision", "bf16", str(tmp_path / "m.dl")]) == 0
    assert capsys.readouterr().out == bf16 + "\n"
    assert f32 == render.program(lower(graph, "f32")) and "bf16" not in f32
    flagged = [line for line in bf16.splitlines() if "(bf16)" in line]
    assert {line.split()[0] for line in flagged} == {"gemm", "small_gemm"}
    assert bf16.replace(" (bf16)", "") == f32
    assert len([line for line in bf16.splitlines() if line.startswith("direct conv")]) == 2
    with pytest.raises(ValueError, match="no precision 'f16'"):
        lower(graph, "f16")


# depthwise (dilated, so not direct: a map over its outputs; its weight gradient at 5 x 5
# pixels a reduction, its input gradient an accumulation) between pointwise GEMMs
GROUPED_MODEL = """
model m {
    input x: f32[B, 4, 9, 9]
    target y: i32[B]
    a = conv2d(x, 8, 1, act = relu)
    d = conv2d(a, 8, 3, dilation = 2, groups = 8, act = relu)
    loss sparse_cross_entropy(dense(flatten(conv2d(d, 4, 1)), 10), y)
}
"""


@pytest.mark.parametrize(
    "source, decisions",
    [
        (
            MODEL,
            {
                ("conv2d", "direct conv"),
                ("conv2d", "gemm"),
                ("matmul", "gemm"),
                ("conv2d_input_grad", "gemm"),
                ("conv2d_weight_grad", "small_gemm"),
                ("conv2d_weight_grad", "direct conv"),
            },
        ),
        (
            GROUPED_MODEL,
            {
                ("conv2d", "gemm"),
                ("conv2d", "map"),
                ("matmul", "gemm"),
                ("conv2d_input_grad", "gemm"),
                ("conv2d_input_grad", "accumulation"),
                ("conv2d_weight_grad", "gemm"),
                ("conv2d_weight_grad", "reduction"),
            },
        ),
    ],
)
def test_the_products_a_gemm_computes_run_in_bf16_and_the_others_stay_float32(source, decisions):
    """compiler/native/bf16.py: the LeNet-like direct convolutions (few taps) and the grouped
    ones' maps, reductions and accumulations stay float32, with a reason; the matmuls and
    the convolutions lowered to GEMMs (im2col, col2im, pointwise, small filters) run in
    bf16. The lowering follows the rule: a product's kernels are flagged bf16 where it runs
    in bf16 and nowhere else, and the rest of the program is the float32 one."""
    graph = _step_graph(source)
    found = bf16.products(graph)
    assert {(p.op, p.kernel) for p in found} == decisions
    assert all(p.bf16 == (p.kernel in ("gemm", "small_gemm")) and bool(p.reason) != p.bf16 for p in found)
    program = lower(graph, "bf16")
    flagged = {n for k in program.kernels if getattr(k, "bf16", False) for n in k.nodes}
    assert {p.node for p in found} & flagged == {p.node for p in found if p.bf16}
    assert render.program(program).replace(" (bf16)", "") == render.program(lower(graph))


# every product a direct convolution: a bf16 step is the float32 step
DIRECT_MODEL = """
model m {
    input x: f32[B, 2, 11, 13]
    target y: i32[B]
    a = conv2d(x, 8, 3, padding = 1, act = relu)
    c = conv2d(a, 10, 4)
    loss sparse_cross_entropy(global_avg_pool(c), y)
}
"""


def _model_gradients(source: str, engine: str, precision: str) -> np.ndarray:
    """The flat gradients of one step of model m of `source` from its initial parameters."""
    from dlc.runtime.training.gradcheck import init_params, sample_inputs

    program = load_text(source)
    train, ev = program.build("m", training=True), program.build("m", training=False)
    trainable = [p.name for p in train.params if p.trainable]
    eng = make_engine(engine, train, ev, drift._optimizer("sgd", 1.0), trainable, split=True, precision=precision)
    params = {k: v.astype(np.float32) for k, v in init_params(train, 1).items()}
    batch = {
        k: v.astype(np.float32) if v.dtype == np.float64 else v
        for k, v in sample_inputs(train, {"B": 5}, 3).items()
        if k != "rng"
    }
    _, grads = eng.gradients(
        params, eng.optimizer.init({n: params[n] for n in trainable}), batch, np.array([0, 1], np.int32)
    )
    return np.array(grads, copy=True)


def test_convolutions_kept_float32_give_the_float32_bits():
    """A step whose products are all direct convolutions (forward, input and weight
    gradients) is the float32 step under bf16, bit for bit, on both engines."""
    assert not any(p.bf16 for p in bf16.products(_step_graph(DIRECT_MODEL)))
    for engine in ("native", "reference"):
        assert np.array_equal(
            _model_gradients(DIRECT_MODEL, engine, "bf16"), _model_gradients(DIRECT_MODEL, engine, "f32")
        )


# few taps but many filters, one group: direct in float32, GEMMs in bf16 (ResNet's stem and projections)
MANY_FILTERS_MODEL = """
model m {
    input x: f32[B, 3, 12, 12]
    target y: i32[B]
    a = conv2d(x, 8, 1, act = relu)
    s = conv2d(a, 64, 3, stride = 2, padding = 1, act = relu)
    p = conv2d(s, 64, 1, stride = 2)
    loss sparse_cross_entropy(dense(global_avg_pool(p), 10), y)
}
"""


def test_convolutions_of_many_filters_run_in_bf16_as_the_reference_emulates():
    """A convolution of few taps and at least 64 filters (3 x 3 and 1 x 1 stride 2, as
    ResNet's stem and projections) is direct in float32 and, with its gradients, a GEMM in
    bf16: the native engine's bf16 gradients are the reference engine's emulation of it
    (the same operands rounded), and differ from float32's."""
    graph = _step_graph(MANY_FILTERS_MODEL)
    assert all(p.bf16 for p in bf16.products(graph))
    assert "direct conv" in render.program(lower(graph))
    ref, g32 = (_model_gradients(MANY_FILTERS_MODEL, "reference", p) for p in ("bf16", "f32"))
    native = _model_gradients(MANY_FILTERS_MODEL, "native", "bf16")
    norm = np.linalg.norm
    assert norm(g32 - ref) >= 1e-3 * norm(ref)
    assert norm(native - ref) <= 1e-5 * norm(ref)


def test_summary_says_which_products_run_in_bf16(tmp_path, capsys):
    """`dlc summary --bf16`: each product of the train step at its line, its operands and
    kernel, bf16 or float32 and why, and the count."""
    path = tmp_path / "m.dl"
    path.write_text(MODEL)
    assert main(["summary", str(path), "--bf16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if re.match(r"\d+:\d+ ", line)]
    assert len(rows) == 11
    kept = [row for row in rows if "float32" in row]
    assert [row[:2] for row in kept] == [["5:9", "conv2d"], ["5:9", "conv2d_weight_grad"]]
    assert all(
        " ".join(row).endswith(
            "direct conv float32 a direct convolution: float32 FMAs, where bf16 only adds rounding passes"
        )
        for row in kept
    )
    assert ["6:11", "conv2d", "[B,", "16,", "10,", "10],", "[8,", "16,", "5,", "5]", "gemm", "bf16"] in rows
    assert lines[-1] == (
        "9 of 11 products in bf16 (operands rounded to bfloat16, sums in float32); the rest of the step runs in float32"
    )


# ---- the setting ------------------------------------------------------------------------------------
def _config(train: str, **overrides):
    program = load_text(MODEL + f"train m {{ data = xor() {train} }}")
    return make_config(program, "m", overrides)


def test_precision_setting_and_flag():
    assert _config("").precision == "f32"
    assert _config('precision = "bf16"').precision == "bf16"
    assert _config("precision = bf16").precision == "bf16"
    assert _config('precision = "bf16"', precision="f32").precision == "f32"
    with pytest.raises(DlcError, match="precision must be one of f32, bf16, got 'fp8'"):
        _config('precision = "fp8"')


@pytest.mark.slow
def test_digits_cnn_trains_under_bf16_as_in_float32(tmp_path, capsys):
    """The digits CNN under bf16 from the command line. Its test accuracy (360 examples)
    moves with the seed in float32 too: 0.9805 with seed 0, 0.9554-0.9666 with seeds 1-3;
    under bf16 (its convolutions direct, so float32; its dense layers' GEMMs in bf16) 0.9721
    with seed 0 (350 of 360), 0.9610-0.9721 with seeds 1-3."""
    assert main(["train", str(ROOT / "examples" / "digits_cnn.dl"), "--precision", "bf16", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    test_line = next(line for line in out.splitlines() if line.startswith("test:"))
    accuracy = float(test_line.split("accuracy")[1].split()[0])
    assert accuracy >= 0.965, out
