"""The JIT on AArch64 under emulation (docs/native.md, Platforms): tools/arm64-root.sh makes an
arm64 Debian root (once, in dlc's cache folder, or DLC_ARM64_ROOT) and runs its default native
tests inside it under qemu-user-static (the GEMM on one thread, two and many, subnormals flushed
on every thread, the thread pool with a forked child, the int8 product); they pass there as
here, under ORC's LLJIT. Slow: the root's set-up
(debootstrap, the wheels) is minutes, and every instruction of LLVM and of the tests is emulated."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlc.compiler.frontend.parse_cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root"),
    pytest.mark.skipif(
        not all(map(shutil.which, ("debootstrap", "qemu-aarch64-static", "update-binfmts"))),
        reason="needs apt install debootstrap qemu-user-static binfmt-support",
    ),
]


def test_the_native_tests_pass_in_an_arm64_root():
    root = Path(os.environ.get("DLC_ARM64_ROOT") or cache_dir() / "arm64-root")
    r = subprocess.run(
        ["sh", str(ROOT / "tools" / "arm64-root.sh"), str(root)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),
        timeout=4 * 3600,
    )  # its packages' versions
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert re.search(r"^aarch64 \S+ orc$", r.stdout, re.M), r.stdout[-2000:]
    summary = re.search(r"^(\d+) passed.* in [\d.]+s", r.stdout, re.M)  # pytest -q's last line
    assert summary and int(summary.group(1)) >= 30 and "failed" not in summary.group(0), r.stdout[-2000:]
