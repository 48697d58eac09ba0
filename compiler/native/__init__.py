"""The native backend. It takes an optimized graph and gives machine code; it never imports
the runtime.

- program.py: the kernel program (buffers, loop kernels, the expressions they compute);
- lower.py: the lowering rule of every primitive, graph -> kernel program, and the
  horizontal fusion of map kernels; memory.py: the arena of its temporaries;
- scalar.py: the scalar rule of every elementwise primitive, by dtype class (EMIT);
- builder.py (KernelBuilder: values, loops, accesses, alias scopes), kernels.py (the loop
  kernels), parallel.py (libgomp regions), driver.py (the step module), update.py (the
  fused optimizer update), gemm.py (the GEMM library): LLVM IR;
- jit.py: target detection and compilation; render.py: kernel programs as text."""
