"""Fixtures of the native tests."""

import pytest

from dlc.compiler.native.codegen import jit


@pytest.fixture
def other_machine():
    """jit.compile_for (as `dlc build --target` calls it) from now on in this test, and for
    this machine again after it."""
    yield jit.compile_for
    jit._other_machine = None
    jit.host_cpu.cache_clear()
    jit._shared_tm.cache_clear()


@pytest.fixture
def compile_for_aarch64(other_machine):
    """Compile for the AArch64 level given (jit.AARCH64_LEVELS) from now on in this test."""
    return lambda level: other_machine("aarch64-unknown-linux-gnu", *jit.AARCH64_LEVELS[level])
