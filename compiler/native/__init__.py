"""The native backend. It takes an optimized graph and gives machine code; it never imports
the runtime. Its floors, lowest first (tests/project/test_imports.py, LAYERS):

- program/: the kernel program (buffers, the expressions kernels compute, `Kernel`), its
  text (render.py) and the lowering rules' registry (registry.py);
- codegen/: LLVM IR and machine code (the kernel builder, the scalar rules, the step
  module, the GEMM routines, the JIT), which with the kinds' loops.py alone imports llvmlite;
- kernels/: the kinds of kernel, a package each: the class and its rules (text, buffers
  touched, how its function is built), the lowering rules of the primitives that become
  it, and its loop nests (loops.py, on codegen/);
- rules/: the rules of the families without a kernel of their own, and every rule found;
- here, the planning: fusion.py (which nodes each kernel computes, and the horizontal
  fusion of map kernels), lower.py (graph -> kernel program, each node's rule in order),
  memory.py (the arena), update.py (the fused optimizer update's program), buckets.py (a
  data-parallel step's gradient buckets).

This module imports nothing: it is run by every import of the backend, and holds the
constants the runtime checks settings against without loading it."""

# the precisions of the operands of matmuls and convolutions (lower.py's `precision`); here
# so that checking a train block's `precision` does not import the backend
PRECISIONS = ("f32", "bf16")

# how a prediction's weights are packed for its GEMMs (lower.py's `pack_weights`; kernels/gemm:
# WeightPacksKernel): "each call", where the weights may have changed before any call (the
# JIT handed a plain dict of arrays), only for the products that pack B anyway; "once", where
# every change is known (a built library's setters, the version of the JIT's Parameters), for
# every product, the one-row ones too, and a float32 convolution's filters as A
PACK_WEIGHTS = ("each call", "once")

# the most threads native code is run on (the engine's --threads and DLC_NUM_THREADS, a built
# library's set_threads): the thread pool's table of workers (codegen/threadpool.py) holds one fewer
MOST_THREADS = 1024

# columns of C up to which a GEMM block multiplies without packing (codegen/gemm/few_columns.py);
# here so that the choice of a convolution's GEMM (choose/conv.py) reads it without loading LLVM
FEW_COLUMNS = 16
# rows of op(A) up to which a GEMM block multiplies without packing (codegen/gemm/few_rows.py);
# here so that the lowering (kernels/gemm `packed_a_weight`) reads it without loading LLVM
FEW_ROWS = 2

# a multiple of the rows of every float32 GEMM blocking's panels of A (6, 8 and 12): the
# packs of a batch of matrices of A given packed follow each other at whole multiples of it
# (codegen/gemm/routine.py `packed_a`, kernels/gemm `a_pack_floats`)
A_PANEL_ROWS = 24

# the filters of a tile of the direct convolution by channels (kernels/conv `conv_by_channels`),
# in whole vectors of every width (4, 8 and 16); here so that lowering reads it without LLVM
TILE_CHANNELS = 16
