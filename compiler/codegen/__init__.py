"""LLVM IR generators (llvmlite) for dlc's native backend."""
