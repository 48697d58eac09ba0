"""The LLVM floor of the native backend: a kernel program (compiler/native/program/__init__.py) into
LLVM IR and machine code. The only modules of the compiler that import llvmlite, with each
kernel kind's loops.py (tests/project/test_llvm_floor.py).

- builder.py: KernelBuilder (values, loops, accesses, alias scopes); scalar.py: the scalar
  rule of every elementwise primitive, by dtype class (EMIT); shared_loops.py: the loop
  pieces several kinds share; intrinsics.py, types.py: intrinsic declarations, vector
  helpers, LLVM types; parallel.py: parallel regions; threadpool.py: the thread pool
  they and the GEMM hand work to; fpmode.py: the floating-point mode
  kernels run in;
- driver.py: the step module, each kernel's function and the driver that calls them;
- gemm/: the packed GEMM routines the GEMM kernels call, a package of BLIS's layers (its
  __init__.py names its modules); amx.py: the AMX tiles (the bf16 GEMM's and the int8
  product's);
- jit.py: the host target and compilation; parallel_compile.py: a module compiled in parts
  on every core; interrupts.py: Ctrl-C put off while llvmlite's binding code runs."""
