"""The C toolchain `dlc build` compiles and links with: the system's `cc` ($CC), else the
`ziglang` package's `zig cc` (pip install "dlc[build]"), a self-contained clang and lld."""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dlc.compiler.errors import DlcError

CFLAGS = ["-std=gnu11", "-O2", "-ffp-contract=off", "-fPIC", "-fvisibility=hidden"]


@dataclass
class Toolchain:
    name: str  # what `dlc build` reports: "cc (/usr/bin/cc)", "zig cc (ziglang 0.13.0)"
    cc: list
    ar: list
    libs: list  # what a program linking the static library adds: libm, libpthread
    macos: bool = False  # it links a macOS .dylib (Mach-O), not an ELF .so
    cross: str = ""  # zig's name of the other machine it compiles for ("aarch64-linux-gnu"); "": this one

    def run(self, args: list, what: str):
        try:
            done = subprocess.run(args, capture_output=True, text=True)
        except OSError as e:
            raise DlcError(f"cannot run {shlex.join(args[:1])} to {what}: {e.strerror}") from None
        if done.returncode:
            raise DlcError(f"{what} failed ({self.name}):\n$ {shlex.join(args)}\n{done.stderr.strip()}")

    def compile(self, source: Path, obj: Path, include: Path):
        self.run(self.cc + CFLAGS + [f"-I{include}", "-c", str(source), "-o", str(obj)], f"compiling {source.name}")

    @property
    def suffix(self) -> str:
        """The shared library's file ending."""
        return ".dylib" if self.macos else ".so"

    def shared(self, objects: list, out: Path):
        names = (
            [f"-Wl,-install_name,@rpath/{out.name}"]
            if self.macos
            else [f"-Wl,-soname,{out.name}", "-Wl,-z,noexecstack"]
        )
        self.run(self.cc + ["-shared", "-o", str(out), *map(str, objects), *names] + self.libs, f"linking {out.name}")

    def archive(self, objects: list, out: Path):
        out.unlink(missing_ok=True)
        self.run(self.ar + ["rcs", str(out), *map(str, objects)], f"archiving {out.name}")


def find(choice: str = "auto", triple: str = "") -> Toolchain:
    """`choice`: auto (cc when there is one, else zig), cc or zig; `triple`: LLVM's triple of
    the machine the library is for (default this one), for which zig cc cross-compiles."""
    here = platform.machine()
    arch = {"arm64": "aarch64"}.get(triple.split("-")[0], triple.split("-")[0]) if triple else here
    macos = "-apple-" in triple
    native = arch == here and not macos
    libs = ["-lm", "-lpthread"]
    cc = os.environ.get("CC") or shutil.which("cc")
    if choice in ("auto", "cc") and cc and native:
        ar = os.environ.get("AR") or shutil.which("ar")
        if ar is None:
            raise DlcError("found cc but no `ar` to write the static library: install binutils")
        return Toolchain(f"cc ({cc})", shlex.split(cc), [ar], libs)
    system = f"{arch}-macos" if macos else f"{arch}-linux-gnu"
    if choice == "cc":
        raise DlcError(
            "no C compiler `cc` on this machine (nor $CC): install one, or use --toolchain zig "
            '(pip install "dlc[build]")'
            if native
            else f"cc compiles for this machine ({here} Linux), not {system}: use --toolchain zig, which cross-compiles"
        )
    if importlib.util.find_spec("ziglang") is None:
        raise DlcError(
            'no C compiler on this machine: install one (cc), or pip install "dlc[build]" for zig cc'
            if native
            else f'building for {system} takes zig cc: pip install "dlc[build]"'
        )
    zig = [sys.executable, "-m", "ziglang"]
    from importlib.metadata import version

    return Toolchain(
        f"zig cc (ziglang {version('ziglang')})",
        zig + ["cc", "-target", system],
        zig + ["ar"],
        libs,
        macos,
        "" if native else system,
    )
