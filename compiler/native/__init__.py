"""The native backend: kernel IR and lowering (lower.py), fusion, memory planning
(memory.py), LLVM code generation (kernels.py, gemm.py), target detection and compilation
(jit.py). It takes an optimized graph and gives machine code; it never imports the runtime."""
