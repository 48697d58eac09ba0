"""The native int8 program (compiler/native/kernels/int8): integer products compiled with the rest
of the graph, against the reference int8 engine bit for bit — dense, strided, padded, dilated,
grouped and depthwise convolutions, saturating and NaN inputs, the largest sums int32 holds —
on every DLC_TARGET this host can run (AMX's tdpbusd, vpdpbusd 512 and 256 bits, vpmaddwd) and
thread count; each value quantized by the kernel that makes it; the AArch64 levels' dot products."""

import re

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir import int8
from dlc.compiler.native.codegen import amx, jit
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.kernels.int8 import Int8Kernel
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.int8 import products
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines import cache
from dlc.runtime.engines.int8 import Int8Engine, calibrate
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.reference import predict_graph
from helpers.int8 import every_product_integer


@pytest.fixture(scope="module", autouse=True)
def short_sums_too():
    """The kernels on every product, short sums too (helpers/int8.py)."""
    with every_product_integer():
        yield


# DLC_TARGET -> (the features it needs of the host, the instruction of its dot products, their registers)
TARGETS = {
    "host": ((), None, None),
    "avx512bf16": (("avx512vnni",), "vpdpbusd", "zmm"),
    "avxvnni": (("avxvnni",), "vpdpbusd", "ymm"),
    "avx2": (("avx2",), "vpmaddwd", "ymm"),
}

# every output's float part is elementwise (bias, relu, max pooling), which the native engine
# computes as numpy does: so the outputs are the reference's bits, not only the products
PROGRAM = """
model m {
    input x: f32[B, 4, 9, 9]
    a = conv2d(x, 8, 3, padding = 1, stride = 2, act = relu)    # 4 channels: one load a tap
    g = conv2d(a, 8, 3, padding = "same", groups = 2)           # 4 channels a group
    d = conv2d(g, 8, 3, groups = 8)                              # depthwise: a byte a tap
    f = conv2d(g, 4, 3, groups = 4, stride = 2, padding = 1)    # 2 channels a group
    e = conv2d(x, 5, 3, dilation = 2, padding = 2)
    h = dense(flatten(maxpool2d(d, 2)), 24, relu)
    output y = dense(h, 5)
    output u = f
    output v = relu(e)
    output z = dense(x, 3)
    output w = conv2d(maxpool2d(maxpool2d(a, 2, 1), 3, 2, 1), 4, 3, padding = 1)   # pooled channels last
}
"""


def _model(source: str):
    return load_text(source, "m.dl").build("m", training=False)


def _same_bits(want: dict, got: dict):
    assert set(want) == set(got)
    for name, a in want.items():
        assert got[name].dtype == a.dtype and np.array_equal(got[name].view(np.int32), a.view(np.int32)), name


@pytest.fixture
def compile_for(monkeypatch):
    """Compile for DLC_TARGET `target` from now on in this test (the target is read once per
    process otherwise), or skip where the host lacks its features."""

    def use(target: str):
        jit.host_cpu.cache_clear()
        if not all(jit.host_has(f) for f in TARGETS[target][0]):
            pytest.skip(f"this host lacks {', '.join(TARGETS[target][0])}")
        monkeypatch.setenv("DLC_TARGET", target)
        jit.host_cpu.cache_clear()
        jit._shared_tm.cache_clear()

    yield use
    monkeypatch.undo()
    jit.host_cpu.cache_clear()
    jit._shared_tm.cache_clear()


@pytest.fixture(scope="module")
def quantized():
    model = _model(PROGRAM)
    rng = np.random.default_rng(2)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    x = rng.normal(size=(3, 4, 9, 9)).astype(np.float32)
    quantization = calibrate(model.graph, params, [{"x": x}])
    assert len([p for p in products(model.graph) if p.integer]) == 9
    x[0, 0, 0, :3] = [np.nan, np.inf, -1e30]  # the input seen later holds what saturates
    x = np.concatenate([x, 3 * x])
    return model, params, quantization, {"x": x}, Int8Engine(model, model, quantization).predict(params, {"x": x})


@pytest.mark.sets_target
@pytest.mark.parametrize("target", [t for t in TARGETS if t != "avx512bf16"])  # that one: the tiles' test
def test_native_int8_equals_the_reference_int8_engine_bit_for_bit(quantized, target, compile_for):
    compile_for(target)
    model, params, quantization, feeds, want = quantized
    _same_bits(want, NativeEngine(model, model, int8=quantization).predict(params, feeds))


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_native_int8_gives_the_same_bits_on_any_thread_count(quantized, threads, monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", threads)
    model, params, quantization, feeds, want = quantized
    feeds = {"x": np.concatenate([feeds["x"]] * 40)}  # rows enough for every thread
    got = NativeEngine(model, model, int8=quantization).predict(params, feeds)
    _same_bits({k: np.concatenate([v] * 40) for k, v in want.items()}, got)


def _program(model, quantization):
    return lower(optimize(predict_graph(model)), int8=quantization)


def _dense_assembly() -> str:
    """The assembly of a quantized dense layer's program, for the target compiled for."""
    model = _model("model m {\n input x: f32[B, 40]\n output y = dense(x, 20)\n}")
    params = {p.name: np.ones(p.type.shape, np.float32) for p in model.params}
    quantization = calibrate(model.graph, params, [{"x": np.ones((1, 40), np.float32)}])
    return jit.assembly(build_module(_program(model, quantization)).module)


@pytest.mark.sets_target
@pytest.mark.parametrize("target", list(TARGETS))
def test_the_dot_products_are_vpdpbusd_where_the_target_has_vnni_else_vpmaddwd(target, compile_for):
    """Never vpmaddubsw, which saturates the sum of two u8 · s8 products to 16 bits."""
    compile_for(target)
    asm = _dense_assembly()
    assert "vpmaddubsw" not in asm
    _, instruction, registers = TARGETS[target]
    if target == "host":  # on AArch64 without dotprod the plain vector form is NEON's widening multiply-add
        arm = "usdot" if jit.host_has("i8mm") else "sdot" if jit.host_has("dotprod") else "smlal"
        instruction, registers = (
            (arm, None)
            if jit.target_arch() == "aarch64"
            else ("vpdpbusd", "zmm")
            if jit.host_has("avx512vnni")
            else ("vpdpbusd", "ymm")
            if jit.host_has("avxvnni")
            else ("vpmaddwd", None)
        )
    assert re.search(rf"\b{instruction}\s" + (rf"[^\n]*%{registers}" if registers else ""), asm), instruction
    # blocks of 16 rows on the AMX tiles where the target has AMX-INT8, and only there
    assert bool(re.search(r"\btdpbusd\s", asm)) == (target == "host" and amx.has_tiles("tdpbusd"))


def test_refused_tile_state_leaves_the_products_in_registers_and_says_so(monkeypatch, capsys):
    """Where Linux refuses the AMX tile state, no tile instruction is compiled (it would be
    SIGILL), nor loaded from the compile cache: the step's entry is another than where it
    was granted (tests/native/test_compile_cache.py); and one line on stderr says so."""
    if not (jit.host_has("amx-int8") and jit.host_has("amx-tile")):
        pytest.skip("the host has no AMX-INT8")
    model = _model("model m {\n input x: f32[B, 40]\n output y = dense(x, 20)\n}")
    params = {p.name: np.ones(p.type.shape, np.float32) for p in model.params}
    program = _program(model, calibrate(model.graph, params, [{"x": np.ones((1, 40), np.float32)}]))
    granted = cache._built_key((program, None))
    monkeypatch.setattr(amx, "request_tiles", lambda: 1)
    amx.tiles_granted.cache_clear()
    try:
        asm = jit.assembly(build_module(program).module)
        refused = cache._built_key((program, None))
    finally:
        amx.tiles_granted.cache_clear()
    assert "tdpbusd" not in asm and re.search(r"\bvpdpbusd\s[^\n]*%zmm", asm)
    assert refused != granted
    assert capsys.readouterr().err.count("did not grant the AMX tile state") == 1


@pytest.mark.parametrize(
    "level, instruction", [("aarch64", "smlal"), ("aarch64-dotprod", "sdot"), ("aarch64-i8mm", "usdot")]
)
def test_on_aarch64_the_dot_products_are_the_levels_own(level, instruction, compile_for_aarch64):
    """Compiled for each AArch64 level (`dlc build --target`): NEON's widening smlal at the
    ARMv8.2-A baseline, sdot with dotprod, usdot with i8mm; never another level's
    (tests/deploy/test_aarch64.py runs them under qemu)."""
    compile_for_aarch64(level)
    asm = _dense_assembly()
    found = {i for i in ("smlal", "sdot", "usdot") if re.search(rf"\b{i}\s", asm)}
    assert found == {instruction}, found


def test_each_integer_products_input_is_quantized_where_it_is_made(quantized):
    """Quantize-on-store: the map that computes an integer product's input (a bias and
    activation in the previous product's store, a max pooling) stores it in u8; no float32
    copy of it is made."""
    model, _, quantization, _, _ = quantized
    prog = _program(model, quantization)
    kernels = [k for k in prog.kernels if isinstance(k, Int8Kernel)]
    assert len(kernels) == 9 and sum(k.window is not None for k in kernels) == 6
    maps = [m for k in prog.kernels for m in getattr(k.epilogue if isinstance(k, Int8Kernel) else k, "maps", [])]
    quantizing = [m for m in maps if "quantize_u8" in m.expr.text()]
    # x for a, e and z; a, g twice (read by two products), maxpool(d), h, the pools of a
    assert all(prog.buffers[m.out].dtype == "i8" for m in quantizing) and len(quantizing) == 9
    # a's relu and h's in their products' stores: quantized there (a's channels last, as g
    # reads it), h never stored in float32
    assert sum(1 for k in kernels if k.epilogue is not None and "quantize_u8" in "".join(k.epilogue.text())) == 2
    # a's relu pooled twice for w: stored, pooled and quantized channels last, as the
    # convolutions make and read it, so that no map between them transposes
    pooled = [m for m in maps if "maximum" in m.expr.text() and m.shape[2:] != (1, 1)]
    assert len(pooled) == 2 and all(m.out_at.coeffs[1] == 1 for m in pooled)
    assert all(
        x.load.at.coeffs[1] == 1 if hasattr(x, "load") else x.at.coeffs[1] == 1 for m in pooled for x in m.expr.leaves()
    )


@pytest.mark.parametrize(
    "weight, k", [(-127, int8.LONGEST_SUM), (-128, (2**31 - 1) // (255 * 128)), (127, int8.LONGEST_SUM)]
)
def test_the_largest_sums_are_exact(weight, k):
    """255 · w over the most terms whose sum int32 holds (and z_x 255, the input at 0): a
    product path that saturated a pair of u8 · s8 products to 16 bits, as vpmaddubsw does,
    or a sum to 32 bits, would clip them."""
    model = _model(f"model m {{\n input x: f32[B, {k}]\n output y = dense(x, 3, bias = false)\n}}")
    weights = np.full((k, 3), weight, np.int8)
    weights[:, 2] = 1
    (name,) = [p.weight for p in products(model.graph)]
    q = {name: int8.QuantizedProduct(weights, np.ones(3, np.float32), np.float32(1.0), np.uint8(0))}
    # 18 rows: a block of 16 on the AMX tiles where the host has them, then rows in registers
    x = np.tile(np.stack([np.full(k, 300.0), np.full(k, -1e30), np.linspace(-1, 300, k)]).astype(np.float32), (6, 1))
    params = {name: np.zeros((k, 3), np.float32)}
    want = Int8Engine(model, model, q).predict(params, {"x": x})
    assert want["y"][0, 0] == np.float32(255 * weight * k)
    _same_bits(want, NativeEngine(model, model, int8=q).predict(params, {"x": x}))
    q[name].input_zero_point = np.uint8(255)
    q[name].input_scale = np.float32(2.0**-20)
    want = Int8Engine(model, model, q).predict(params, {"x": x})
    assert want["y"][1, 0] == np.float32(-255 * weight * k) * np.float32(2.0**-20)
    _same_bits(want, NativeEngine(model, model, int8=q).predict(params, {"x": x}))


def test_images_of_any_size_through_one_program():
    """Symbolic height and width (the windows' bounds and the padded copy's size read at run
    time), three channels (kernel rows of nine bytes), a dilated convolution reading the first
    one's quantized relu."""
    model = _model(
        "model m {\n input x: f32[B, 3, H, W]\n a = conv2d(x, 8, 3, padding = 1, act = relu)\n"
        " output y = conv2d(a, 4, 3, padding = 1, dilation = 2)\n}"
    )
    rng = np.random.default_rng(1)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    quantization = calibrate(model.graph, params, [{"x": rng.normal(size=(2, 3, 7, 5)).astype(np.float32)}])
    native = NativeEngine(model, model, int8=quantization)
    for shape in ((2, 3, 7, 5), (3, 3, 4, 9), (1, 3, 3, 3)):
        feeds = {"x": rng.normal(size=shape).astype(np.float32)}
        _same_bits(Int8Engine(model, model, quantization).predict(params, feeds), native.predict(params, feeds))


# depthwise convolutions (choose/int8.py): 70 channels (whole blocks of 4 vectors, then a
# vector and a masked one of AVX-512's 16 lanes; AVX2's 8), 3 x 3 with the next one's
# quantization in its store (blocks of rows between runs of it, an image's rows split
# across them), 5 x 5 at stride 2, dilated, a conv1d's; pointwise ones (1 x 1 of 32
# channels: matmuls of the pixels) before and after a depthwise one, and a 1 x 1 one of 70
# channels (not whole steps of four: windows); batches of 3 and 1
SEPARABLE = """
model m {
    input x: f32[B, 70, 11, 13]
    input s: f32[B, 20, 30]
    a = conv2d(x, 70, 3, padding = 1, groups = 70, act = relu)
    output y = conv2d(a, 70, 5, stride = 2, padding = 2, groups = 70)
    output z = relu(conv2d(x, 70, 3, dilation = 2, padding = 2, groups = 70))
    output u = conv1d(s, 20, 3, padding = 1, groups = 20)
    e = conv2d(a, 32, 1, act = relu)
    d = conv2d(conv2d(e, 32, 1, act = relu), 32, 3, stride = 2, padding = 1, groups = 32, act = relu)
    output p = conv2d(d, 24, 1)
}
"""


@pytest.mark.sets_target
@pytest.mark.parametrize("target", [t for t in TARGETS if t != "avx512bf16"])
def test_depthwise_and_pointwise_convolutions_give_the_reference_bits(target, compile_for):
    compile_for(target)
    kernels = _integer_kernels_of_the_reference_bits(SEPARABLE, {"x": (70, 11, 13), "s": (20, 30)}, seed=4)
    found = sorted(k.weights.implementation for k in kernels)
    assert found == ["int8 depthwise"] * 5 + ["int8 pointwise"] * 2 + ["int8 windows"]
    assert all((k.window is None) == (k.weights.implementation == "int8 pointwise") for k in kernels)
    assert sum(k.epilogue is not None for k in kernels) >= 3


def _integer_kernels_of_the_reference_bits(source: str, shapes: dict, seed: int) -> list:
    """The integer kernels of the program of `source` calibrated on random inputs of `shapes`
    (each without its batch axis), once its outputs are the reference int8 engine's bits on
    batches of 3 and 1 of larger inputs (some saturate)."""
    model = _model(source)
    rng = np.random.default_rng(seed)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    feeds = {k: rng.normal(size=(3, *shape)).astype(np.float32) for k, shape in shapes.items()}
    quantization = calibrate(model.graph, params, [feeds])
    native = NativeEngine(model, model, int8=quantization)
    for n in (3, 1):
        feeds = {k: 3 * rng.normal(size=(n, *shape)).astype(np.float32) for k, shape in shapes.items()}
        _same_bits(Int8Engine(model, model, quantization).predict(params, feeds), native.predict(params, feeds))
    return [k for k in _program(model, quantization).kernels if isinstance(k, Int8Kernel)]


@pytest.mark.parametrize(
    "level, instruction", [("aarch64", "smlal"), ("aarch64-dotprod", "sdot"), ("aarch64-i8mm", "usdot")]
)
def test_depthwise_and_pointwise_convolutions_compile_for_aarch64(level, instruction, compile_for_aarch64):
    """NEON's four lanes: the depthwise kernel's four taps' products by the level's own dot
    products, as the other products' (smlal's widening ones at the baseline), a vector and a
    masked one of 70 channels (tests/deploy/test_aarch64.py runs int8 libraries under qemu)."""
    model = _model(SEPARABLE)
    rng = np.random.default_rng(5)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    feeds = {"x": rng.normal(size=(1, 70, 11, 13)), "s": rng.normal(size=(1, 20, 30))}
    quantization = calibrate(model.graph, params, [{k: v.astype(np.float32) for k, v in feeds.items()}])
    compile_for_aarch64(level)
    asm = jit.assembly(build_module(_program(model, quantization)).module)
    assert {i for i in ("smlal", "sdot", "usdot") if re.search(rf"\b{i}\s", asm)} == {instruction}


# first layers read by kernel rows (choose/int8.py): 3 channels in 7 x 7 windows at stride 2
# (runs of 21 bytes in steps of 24), in 3 x 3 ones of odd images of a value computed from
# the input (stored for its padded copy, not computed by the map that quantizes it; the
# windows at the copy's far edges, its last run reading into the slack), 1 channel in 5 x 5
# ones unpadded, 5 channels dilated down the columns only, padded unevenly, a conv1d's; each
# the next one's quantization in its store
STEMS = """
model m {
    input x: f32[B, 3, 17, 15]
    input g: f32[B, 1, 12, 12]
    input f: f32[B, 5, 9, 9]
    input s: f32[B, 4, 40]
    a = conv2d(x, 20, 7, stride = 2, padding = 3, act = relu)
    output y = conv2d(a, 16, 3, padding = 1)
    output z = conv2d((x - 0.5) * 2.0, 32, 3, stride = 2, padding = 1, act = relu6)
    output u = conv2d(g, 6, 5)
    output v = conv2d(f, 8, 3, dilation = (2, 1), padding = (1, 2))
    output w = conv1d(s, 8, 7, padding = 3)
}
"""


@pytest.mark.sets_target
@pytest.mark.parametrize("target", [t for t in TARGETS if t != "avx512bf16"])
def test_first_layers_read_by_kernel_rows_give_the_reference_bits(target, compile_for):
    compile_for(target)
    shapes = {"x": (3, 17, 15), "g": (1, 12, 12), "f": (5, 9, 9), "s": (4, 40)}
    kernels = _integer_kernels_of_the_reference_bits(STEMS, shapes, seed=7)
    assert sorted(k.weights.implementation for k in kernels) == ["int8 kernel rows"] * 5 + ["int8 windows"]


# a residual network's images between integer convolutions (Lowering.channels_last): the
# stem's ReLU and its max pooling (padded taps: guarded loads, in vectors of channels), each
# block's input added to its last convolution's sums and ReLU (the residual stream, in the
# convolution's store), a strided block with a 1 x 1 shortcut, the global average pooling
RESIDUAL = """
model m {
    input x: f32[B, 16, 12, 12]
    a = maxpool2d(conv2d(x, 32, 3, padding = 1, act = relu), 3, 2, 1)
    r = relu(conv2d(conv2d(a, 32, 3, padding = 1, act = relu), 32, 3, padding = 1) + a)
    d = conv2d(r, 48, 1, stride = 2)
    s = relu(conv2d(conv2d(r, 48, 3, stride = 2, padding = 1, act = relu), 48, 3, padding = 1) + d)
    output y = dense(global_avg_pool(s), 10)
}
"""


@pytest.mark.sets_target
@pytest.mark.parametrize("target", [t for t in TARGETS if t != "avx512bf16"])
def test_a_residual_stream_stays_channels_last_with_the_reference_bits(target, compile_for):
    compile_for(target)
    kernels = _integer_kernels_of_the_reference_bits(RESIDUAL, {"x": (16, 12, 12)}, seed=8)
    stores = [m.out_at.coeffs for k in kernels if k.epilogue for m in getattr(k.epilogue, "maps", [k.epilogue])]
    assert len(stores) >= 6 and all(c[1] == 1 for c in stores), stores  # unit stride along the channels


# fewer rows than channels (loops.shared_blocks): a dense layer and a convolution over 2 x 2
# pixels of 130 channels (two whole blocks of AVX-512's 64, then a block of 2; AVX2's 16 and
# 8 blocks), each with the next product's quantization in its store; batches of 1 and 3
# share out channels, one of 40 rows (160 convolution rows, 40 dense rows: the dense layer
# still shares channels)
FEW_ROWS = """
model m {
    input x: f32[B, 24, 4, 4]
    a = conv2d(x, 130, 3, stride = 2, padding = 1, act = relu)
    b = conv2d(a, 130, 3, padding = 1, act = relu)
    h = dense(flatten(b), 300, relu)
    output y = dense(h, 130)
}
"""


@pytest.mark.sets_target
@pytest.mark.parametrize("target, threads", [("host", "1"), ("host", "2"), ("host", "3"), ("avx2", "2")])
def test_products_of_fewer_rows_than_channels_share_out_channels_with_the_same_bits(
    target, threads, compile_for, monkeypatch
):
    compile_for(target)
    monkeypatch.setenv("DLC_NUM_THREADS", threads)
    model = _model(FEW_ROWS)
    rng = np.random.default_rng(6)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    quantization = calibrate(model.graph, params, [{"x": rng.normal(size=(4, 24, 4, 4)).astype(np.float32)}])
    native = NativeEngine(model, model, int8=quantization)
    for n in (1, 3, 40):
        feeds = {"x": 2 * rng.normal(size=(n, 24, 4, 4)).astype(np.float32)}
        _same_bits(Int8Engine(model, model, quantization).predict(params, feeds), native.predict(params, feeds))


# the AMX tiles' edges: 19 rows (a block of 16 and 3 in registers), convolutions' rows not a
# multiple of 16; K of 36 (one tile, short), 126 (a tile read in place and 62 bytes copied,
# not a multiple of 4), 300 (25 taps: their loop), 288 (70 channels a tap: two loads of
# them) and 2304 (36 taps of 64 channels, gathered in two pieces); 20 and 70 channels (a
# tile's columns masked, two blocks of tiles); two groups
TILES = """
model m {
    input x: f32[B, 3, 7, 6]
    a = conv2d(x, 20, 3, padding = 1, act = relu)
    b = conv2d(a, 36, 5, padding = 2, groups = 2)
    c = conv2d(b, 70, 1, stride = 2)
    d = conv2d(c, 16, 2)
    output y = dense(flatten(d), 70)
    output z = relu(dense(flatten(x), 5))
    output v = conv2d(conv2d(a, 64, 1), 16, 6, padding = 2)
}
"""


@pytest.mark.sets_target
@pytest.mark.parametrize("target", ["host", "avx512bf16"])
def test_the_amx_tiles_edges_give_the_reference_bits(target, compile_for):
    """Where the host has AMX-INT8, `host` runs every product here on the tiles (tdpbusd)
    and DLC_TARGET=avx512bf16 on zmm vpdpbusd alone: both the reference int8 engine's bits."""
    compile_for(target)
    model = _model(TILES)
    rng = np.random.default_rng(5)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    x = rng.normal(size=(19, 3, 7, 6)).astype(np.float32)
    quantization = calibrate(model.graph, params, [{"x": x}])
    x[1] *= 4  # saturates
    asm = jit.assembly(build_module(_program(model, quantization)).module)
    tiles = target == "host" and amx.has_tiles("tdpbusd")
    assert len(re.findall(r"\btdpbusd\s", asm)) >= 8 * tiles and bool(re.search(r"\btdpbusd\s", asm)) == tiles
    if jit.host_has("avx512vnni"):  # the rows past the last block of 16 (other hosts: the instruction test)
        assert re.search(r"\bvpdpbusd\s[^\n]*%zmm", asm)
    want = Int8Engine(model, model, quantization).predict(params, {"x": x})
    _same_bits(want, NativeEngine(model, model, int8=quantization).predict(params, {"x": x}))
