"""The kinds of kernel a kernel program is made of, a package each (tinygrad's renderers,
JAX's rules next to their primitive): its `__init__.py` holds the class (the fields
lowering fills in, and its rules — its text, the buffers it touches, how its function is
built; compiler/native/program/__init__.py's `Kernel` says what each does) and the lowering rules
of the primitives that become it (`@register_lowering`, compiler/native/program/registry.py); its
`loops.py`, the loop nests in LLVM IR, which only the class's `emit` imports: lowering a
graph never loads LLVM (tests/native/test_llvm_free.py); for a kind that only calls a
library (gemm), those calls.

This package imports none of its kinds: `rules.load()` imports every one, so a new kind is
a new package here and nothing else. A kind's `loops.py` may not import its own
`__init__.py` (that would be an import cycle); what its loops need of the kernel they read
from the kernel itself."""
