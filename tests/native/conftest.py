"""Fixtures of the native tests."""

import pytest

from dlc.compiler.native.codegen import jit


@pytest.fixture
def compile_for_aarch64():
    """Compile for the AArch64 level given (jit.AARCH64_LEVELS, as `dlc build --target`
    does) from now on in this test, and for this machine again after it."""
    yield lambda level: jit.compile_for("aarch64-unknown-linux-gnu", *jit.AARCH64_LEVELS[level])
    jit._other_machine = None
    jit.host_cpu.cache_clear()
    jit._shared_tm.cache_clear()
