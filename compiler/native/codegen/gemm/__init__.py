"""Packed, register-blocked single-precision GEMM generated with llvmlite.

`add_gemm` adds to an `ir.Module` a routine computing, for every batch index b,

    C[b] (+)= op(A[b]) @ op(B[b])        op(X) = X or Xᵀ,  op(A): M×K, op(B): K×N

in float32, with runtime sizes, leading dimensions and batch strides. Its C signature:

    int32_t name(int64_t M, int64_t N, int64_t K,
                 const float *A, int64_t lda, int64_t stride_a,
                 const float *B, int64_t ldb, int64_t stride_b,
                 float *C, int64_t ldc, int64_t stride_c,
                 int64_t batch, int64_t nthreads);

The `_epi` routines take three more arguments, an epilogue (EPILOGUE_TYPE) and two
pointers they pass it: the routine calls it on each part of C once that part holds its
final sums — an MC x NC block after its last K slice, while the block is in cache — so
that a kernel computes what is made of C there (kernels/gemm: a bias, an activation).
The `_windows` routines (`dlc_sgemm_n?_windows[_epi]`) take an image as B and its
geometry (WINDOW_GEOMETRY) after `nthreads`: op(B) is the image's convolution windows,
packed from the image itself, so that a convolution needs no im2col buffer.

All matrices are row-major: element (i, j) of a stored matrix X is X[i*ldx + j]; with
`trans_a`, A is stored K×M (op(A) = Aᵀ), with `trans_b`, B is stored N×K. A batch stride
of 0 broadcasts one matrix over the batch. It returns 0, or 1 if a pack buffer could not
be allocated. `accumulate` (C += …, else C = …) and the transposes are fixed when the
routine is generated; everything else is a runtime argument.

Structure (BLIS): for each NC-wide column block and KC-deep slice of K (slices evened
out), op(B) is packed into NR-wide panels (k-major, zero-padded), then for each MC-tall
row block op(A) is packed into MR-tall panels (panels along K are transposed 8×8 in
registers), and a micro-kernel keeps an MR×NR tile of C in MR·NR/VW vector accumulators
over the K slice: A broadcast, B loaded as vectors, llvm.fma, K innermost (UNROLL steps
an iteration). Edge tiles use masked loads/stores. Blockings: `AVX2` (6×16 on <8 x float>,
12 accumulators), `AVX512` (8×32 on <16 x float>, 16 accumulators; the default where the
host has it) and `NEON` (12×8 on <4 x float>, 24 accumulators; AArch64's). The blocking
decides which thread computes an output, never the order of its sum: K slices are 256
deep in each.

The bf16 routines (`gemm_name(..., bf16=True)`: `dlc_bgemm_*`) take the same float32
arrays and multiply them rounded to bfloat16, summing in float32 (a config's `operands`,
OPERANDS): the panels are rounded as they are packed and the float32
micro-kernel runs on them ("bf16-round", the conversion path), or on a host with
AVX512_BF16 (or AArch64's bf16) rows k and k+1 of each panel become interleaved bfloat16
pairs that the micro-kernel multiplies with vdpbf16ps (BFDOT), two products per lane
("bf16-pairs"; K slices start at even k; not on the cores whose vdpbf16ps is slower than
their FMAs, blocking.SLOW_PAIRS), or on a host with AMX the panels are packed
into the tiles' layouts and a 32 x 32 block of C is summed in four tiles by tdpbf16ps
("bf16-amx"; K slices of whole tiles of 32; Linux grants the tile state on request,
codegen/amx.py).
`bf16_config` picks the host's.

An operand B that many products share (a recurrent weight, at every step of a scan; a
built library's weights) can be packed once by `add_pack` into K-long NR-wide panels; the
`packed` routines take that copy as one more argument (or null: not packed) and skip
packing B. With a row or two of A the float32 ones read the panels too, each contiguous
over K, B transposed or not (a transposed weight's panels are op(B)'s), where the routines
without it read B's rows (few_rows.py; B transposed, they tile). The `packed_a` routines
take op(A) so, packed by `add_pack` of "a" into K-long MR-tall panels (a prediction's
convolution filters; a bf16 routine's as its own packs round them, one matrix of A, on the
tiled path), and read only it. With at most FEW_COLUMNS columns of C
nothing is packed: groups of op(A)'s rows are multiplied as they lie, or its given panels
several a pass (few_columns.py; the weight of a convolution's im2col product is A). Every path sums each element in the same order; the
order in which a block takes them is compiler/native/choose/matmul.py's docstring's.

Threads: the work is handed to dlc's thread pool (codegen/threadpool.py) in the blocking's
`chunks_per_thread` chunks per thread — over the batch when there are enough matrices, else over N when
M ≤ N, else over M, in whole tiles — and each thread packs into its own buffers, so no
barriers are needed. Below `serial_below` (M·N·K·batch), for nthreads ≤ 1, or when
called from a pool's task (a fused kernel's chunk), it runs serially on the calling
thread. Pack buffers are allocated once per module and thread slot (the running thread's
slot in the pool, one of MOST_THREADS: a slot is never shared, on any team): the threads of
one job are safe, but two host threads must not call
into one compiled module at the same time, unless its tables of pack buffers are
thread-local (`thread_local_buffers`, as in a library `dlc build` writes).

The package's modules, BLIS's layers (each imported by its own name; this file holds none):

- blocking.py: GemmConfig, the blockings of each machine (AVX2, AVX512, NEON, AMX) and the
  target's choice (`default_config`, `bf16_config`);
- interface.py: the routines' names and C signatures, which their callers share;
- routine.py: a routine's function (`add_gemm`) and a pack function's (`add_pack`): the
  entry point and its chunks for the thread pool;
- macro_loop.py: the loops of a block of C over NC, KC, MC, NR and MR, and what each packs;
- microkernel.py: the MR x NR tile of C in vector registers over a K slice;
- packs.py: op(A)'s and op(B)'s panels; window_packs.py: op(B) as a convolution's windows,
  packed from the image;
- few_rows.py, few_columns.py: the blocks multiplied without packing;
- bf16_operands.py: the bf16 routines' pairs and the rounding; amx_tiles.py: the
  micro-kernel and the packs on the AMX tiles;
- buffers.py: the pack buffers of each thread slot; context.py: what the modules share
  while they add a blocking's routines to a module (`Gen`); ir_helpers.py: loops and
  small IR pieces;
- library.py: every routine the kernels call, and the module that holds them (`gemm_module`).
"""
