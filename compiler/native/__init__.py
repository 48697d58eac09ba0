"""The native backend. It takes an optimized graph and gives machine code; it never imports
the runtime.

- program.py: the kernel program (buffers, the expressions kernels compute, `Kernel`);
- kernels/: the kinds of kernel, a module each: the class and its rules (text, buffers
  touched, how its function is built);
- lower.py: the lowering rule of every primitive, graph -> kernel program, and the
  horizontal fusion of map kernels; memory.py: the arena of its temporaries;
- scalar.py: the scalar rule of every elementwise primitive, by dtype class (EMIT);
- builder.py (KernelBuilder: values, loops, accesses, alias scopes), loops.py (the
  kernels' loop nests), parallel.py (libgomp regions), driver.py (the step module),
  update.py (the fused optimizer update), gemm.py (the GEMM library): LLVM IR;
- jit.py: target detection and compilation; render.py: kernel programs as text."""

# the precisions of the operands of matmuls and convolutions (lower.py's `precision`); here
# so that checking a train block's `precision` does not import the backend
PRECISIONS = ("f32", "bf16")
