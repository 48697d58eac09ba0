"""The GEMM's blockings, one per machine: GemmConfig (the micro-tile, the vector width, the
blocks packed at once, what the micro-kernel multiplies), `AVX2`, `AVX512`, `NEON` and the
AMX tiles' `AMX`, and the choice of the target's (`default_config`, `bf16_config`). A new
machine's blocking is a GemmConfig here and its line in `default_config`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.native import A_PANEL_ROWS
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.amx import TILE_ROWS, has_tiles


@dataclass(frozen=True)
class GemmConfig:
    """Blocking of the generated GEMM (all sizes in elements)."""

    mr: int = 6  # micro-tile rows (broadcast A values)
    nr: int = 16  # micro-tile columns (nr // vw vectors per row)
    vw: int = 8  # float lanes per vector: 8 = AVX2 ymm, 16 = AVX-512 zmm
    kc: int = 256  # depth of a packed K slice
    mc: int = 144  # rows of op(A) packed at once (multiple of mr)
    nc: int = 1024  # columns of op(B) packed at once (multiple of nr)
    serial_below: int = 1 << 18  # M·N·K·batch under which no threads are forked
    # chunks of a product per thread of the pool: an idle thread takes a stalled one's, but
    # each chunk packs the whole of the operand it shares with the others (A when the chunks
    # split N, B when they split M)
    chunks_per_thread: int = 2
    operands: str = "f32"  # what the micro-kernel multiplies: one of OPERANDS
    # rows of a block up to which its tiles read op(B)'s whole panels where they lie (0:
    # never; macro_loop.py), where that was measured faster than packing B
    stored_b_rows: int = 0

    def __post_init__(self):
        # runs of FEW_VECTORS vectors start at whole panels too (few_rows.py `packed_b`)
        if (
            self.vw not in (4, 8, 16)
            or self.nr % self.vw
            or self.mc % self.mr
            or self.nc % self.nr
            or FEW_VECTORS * self.vw % self.nr
            or self.chunks_per_thread < 1
        ):
            raise ValueError(f"inconsistent GEMM blocking {self}")
        if self.operands not in OPERANDS or self.operands == "bf16-pairs" and self.vw not in (4, 16):
            raise ValueError(f"no {self.operands} operands for the GEMM blocking {self}")
        if self.amx and (self.mr, self.nr, self.vw) != (2 * TILE_ROWS, 2 * TILE_ROWS, 16) or self.kc % self.k_step:
            raise ValueError(f"no {self.operands} operands for the GEMM blocking {self}")
        if not self.bf16 and A_PANEL_ROWS % self.mr:  # where the packs of A's matrices start
            raise ValueError(f"inconsistent GEMM blocking {self}: {A_PANEL_ROWS} rows are not whole panels")

    @property
    def bf16(self) -> bool:
        """Its operands are rounded to bfloat16 (its routines are the `bf16` ones)."""
        return self.operands != "f32"

    @property
    def amx(self) -> bool:
        """Its micro-kernel runs on the AMX tiles."""
        return self.operands == "bf16-amx"

    @property
    def k_step(self) -> int:
        """K slices start at multiples of this: a bfloat16 pair, or a tile's depth."""
        return {"bf16-pairs": 2, "bf16-amx": TILE_DEPTH}.get(self.operands, 1)

    @property
    def vector_registers(self) -> int:
        """The ISA's vector registers: 16 under AVX2, 32 under AVX-512 and AArch64's NEON."""
        return 16 if self.vw == 8 else 32

    @property
    def tag(self) -> str:
        """Names the module-level helpers shared by all routines of this blocking."""
        operands = self.operands if self.bf16 else ""
        return f"{self.mr}x{self.nr}v{self.vw}k{self.kc}m{self.mc}n{self.nc}{operands}"

    @property
    def b_offset(self) -> int:
        """Offset (floats) of the B block in a pack buffer: after the A block, 64-byte aligned."""
        return -(-self.mc * self.kc // 16) * 16

    @property
    def pack_floats(self) -> int:
        """Floats in one thread's pack buffer (A block + B block)."""
        return self.b_offset + self.kc * self.nc


# What the micro-kernel multiplies: "f32" floats (llvm.fma); "bf16-round" floats rounded to
# bfloat16 while they are packed (llvm.fma: the conversion path, any machine);
# "bf16-pairs" bfloat16 packed as pairs along K, two products per lane with vdpbf16ps
# (AVX512_BF16) or BFDOT (AArch64's bf16); "bf16-amx" bfloat16 in the AMX tiles' layouts,
# multiplied by tdpbf16ps.
OPERANDS = ("f32", "bf16-round", "bf16-pairs", "bf16-amx")

# tdpbf16ps multiplies a 16 x 32 bfloat16 tile of A (codegen/amx.py) by a 32 x 16 one of B
# (16 rows of 16 pairs along K) into 16 x 16 floats of C.
TILE_DEPTH = 32

# the vectors of a C row that a block of at most FEW_ROWS rows (few_rows.py) keeps in registers
FEW_VECTORS = 8

# A block of few rows (GemmConfig.stored_b_rows) reads op(B) where it lies only where the
# block's op(B) is at most STORED_B_FLOATS, as a product's activations are, in cache: from
# memory, rows a page and more apart and each read in runs of NR floats, it was slower than
# packing's reading whole rows (on a Zen 4, [32 x 768] @ [768 x 30522] took 1.3 times as long;
# [24 x 96] @ [96 x 3136] three quarters)
STORED_B_FLOATS = 1 << 20

AVX2 = GemmConfig()
# (the AVX2 tile's rows of 16 floats are one cache line: its tiles reading B where it lies
# were slower than packing it at 32 rows and 512 to 2048 columns)
AVX512 = GemmConfig(mr=8, nr=32, vw=16, kc=256, mc=144, nc=1024, stored_b_rows=32)
# AArch64's 32 128-bit registers: 24 accumulators (12 rows of two vectors), the two B
# vectors and three of A, whose lanes each FMA takes (fmla by element)
NEON = GemmConfig(mr=12, nr=8, vw=4, kc=256, mc=144, nc=1024)
# 32 x 32 of C in four tiles; a K slice of A's panel and of B's is 32 KB each (bfloat16).
# One chunk a thread: the tiles multiply about four times as fast as the FMAs, so the shared
# operand packed again by a second chunk cost more than the balance it bought (on an Emerald
# Rapids, 2 threads, BERT's and an MLP's products: 4-20 % of the product's time)
AMX = GemmConfig(mr=32, nr=32, vw=16, kc=512, mc=256, nc=1024, chunks_per_thread=1, operands="bf16-amx")

# The cores (LLVM's names) whose vdpbf16ps multiplies fewer pairs than their FMAs floats: Intel's with AMX
# issue a 512-bit vdpbf16ps once in two cycles and it takes both FMA ports (an Emerald Rapids without its
# tiles: 0.46 a cycle against 2 FMAs, 14.6 products a cycle against 32), so its bf16 GEMM ran at 0.5-0.6 of
# the float32 one. Without the tiles (a virtual machine that hides them, Linux's refusal) they multiply
# rounded floats by FMAs.
SLOW_PAIRS = ("sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids")


def default_config(vector_width: int | None = None) -> GemmConfig:
    """`NEON` on AArch64 (vector_width 4); on x86-64 `AVX2` (8) or `AVX512` (16). When
    None: the target's (jit.vector_width: AVX512 where the host has AVX-512F, unless the
    environment variable DLC_GEMM_VW=8 asks for AVX2)."""
    if jit.target_arch() == "aarch64":
        if vector_width not in (None, 4):
            raise ValueError(f"no GEMM blocking for vector width {vector_width} on AArch64")
        return NEON
    vector_width = vector_width or jit.vector_width()
    if vector_width == 16:
        if not jit.host_has("avx512f"):
            raise ValueError("the AVX-512 GEMM needs a host with AVX-512F")
        return AVX512
    if vector_width == 8:
        return AVX2
    raise ValueError(f"no GEMM blocking for vector width {vector_width}")


def bf16_config() -> GemmConfig:
    """The blocking of the bf16 routines, by the host's features: the AMX tiles where it
    has AMX-BF16 (and Linux grants the tile state), else bfloat16 pairs and vdpbf16ps
    where it has AVX512_BF16 (and the AVX-512 blocking is the default) and is not one of
    SLOW_PAIRS, or BFDOT in the NEON blocking where the AArch64 target has bf16, else the
    default blocking with its operands rounded while packing. DLC_TARGET forces each path
    on a host that has more (jit.REMOVED; avx512bf16: the pairs, on SLOW_PAIRS too)."""
    cfg = default_config()
    if cfg.vw == 16 and has_tiles("tdpbf16ps"):
        return AMX
    if cfg.vw == 4:
        pairs = jit.host_has("bf16")
    else:
        pays = jit.host_cpu()[0] not in SLOW_PAIRS or jit.forced_target() == "avx512bf16"
        pairs = cfg.vw == 16 and jit.host_has("avx512bf16") and pays
    return replace(cfg, operands="bf16-pairs" if pairs else "bf16-round")
