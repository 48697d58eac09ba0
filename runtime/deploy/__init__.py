"""Deployment: `dlc build` writes a model as a native library with a C API (build.py),
compiled and linked by the C toolchain found on the machine (toolchain.py)."""
