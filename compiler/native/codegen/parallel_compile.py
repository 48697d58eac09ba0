"""Compiling one LLVM module on every core.

LLVM compiles a module on one thread, and llvmlite runs every call into LLVM under one
lock, so a process compiles one thing at a time. A train step's module is mostly
independent kernels, and each is a `noinline` function called through the step's table:
no optimisation crosses one. So the module is cut there into parts of about equal size,
part 0 is compiled in this process and each other part in a child process
(`python -m dlc.compiler.native.codegen.parallel_compile`, which reads the part's IR and writes its
object), at the same time; the JIT links the objects when it loads them
(runtime/engines/cache.py). Each function's machine code is what it would be in the whole
module: the same bits on any number of parts.

A part is the module's text less the functions of the other parts, which it declares
instead where it calls them; a function called from another part loses `internal` so the
objects can link. Everything a function reaches but through a `noinline` call (its
helpers, the globals it uses, a function that shares one with it) stays in its part.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass

from llvmlite import ir

from dlc.compiler.native.codegen import jit

# Below this much IR text a module compiles in about the time a child process takes to
# start (50 ms): it is compiled whole, here.
MIN_SPLIT_CHARS = 200_000
_REFERENCE = re.compile(r'@"([^"]+)"|@([-a-zA-Z$._][-a-zA-Z$._0-9]*)')


def jobs() -> int:
    """How many processes compile a module: $DLC_COMPILE_JOBS, else the cores this
    process may run on."""
    value = os.environ.get("DLC_COMPILE_JOBS")
    if value:
        from dlc.compiler.errors import DlcError

        if not value.isdigit() or int(value) < 1:
            raise DlcError(f"DLC_COMPILE_JOBS must be a whole number of processes, at least 1, not '{value}'")
        return int(value)
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class ModuleText:
    """What compiling a module takes of it, as text: its IR (`text`, what `str(module)`
    gives), the IR of each part it is compiled as (the whole text, or `jobs()` parts of a
    large module), the functions it defines for the outside (its objects must have them all)
    and those it calls that others define. Taken once, so that the llvmlite module, hundreds
    of thousands of objects in cycles, can go: while it lived, every pass of Python's cyclic
    garbage collector walked it (a second of MobileNetV2's first step), and a module waiting
    for its O3 compile (runtime/engines/tiers.py) lived for minutes."""

    text: str
    parts: tuple
    exported: tuple
    declared: tuple


def module_text(module: ir.Module) -> ModuleText:
    """The module's ModuleText, each global printed once."""
    pieces = printed(module)
    text = _assemble(module, list(pieces.values()))
    n = jobs()
    parts = split(module, pieces, n) if n > 1 and len(text) >= MIN_SPLIT_CHARS else [text]
    return ModuleText(text, tuple(parts), tuple(jit.exported_functions(module)), tuple(jit.declared_functions(module)))


def taken(module: ir.Module) -> ModuleText:
    """module_text of a module its caller drops next: the module is dismantled after."""
    unit = module_text(module)
    dismantle(module)
    return unit


def dismantle(module: ir.Module):
    """Break the reference cycles of a module whose text was taken, so that its objects are
    freed as it is dropped, each by its count, not by a pass of the cyclic collector over
    hundreds of thousands of them (a transformer's step module: 0.06 s against 0.4). The
    module is empty after."""
    for fn in module.functions:
        for block in fn.blocks:
            for instruction in block.instructions:
                if isinstance(instruction, ir.PhiInstr):  # a loop's phi and the value it carries hold each other
                    instruction.incomings = []
            block.instructions, block.terminator = [], None
        fn.blocks, fn.args = [], ()
    module.globals.clear()
    module.metadata, module.namedmetadata = [], {}


def _assemble(module: ir.Module, body: list) -> str:
    header = [
        f'; ModuleID = "{module.name}"',
        f'target triple = "{module.triple}"',
        f'target datalayout = "{module.data_layout}"',
        '',
    ]
    types = [t.get_declaration() for t in module.get_identified_types().values()]
    return "\n".join(header + types + body + module._get_metadata_lines())


def printed(module: ir.Module) -> dict:
    """Each global's IR text, by name: the text `remember_printed` kept, else printed now."""
    before = _printed_before.get(module, {})
    return {g.name: before.get(g.name) or str(g) for g in module.globals.values()}


# The text of functions printed while their module was built (codegen/driver.py compares
# kernels by it), which module_text takes instead of printing them again: llvmlite prints
# in Python, a tenth of building a module.
_printed_before: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remember_printed(module: ir.Module, texts: dict):
    """Keep `texts`, the final IR text of some of module's functions by name (none of them
    changes after), for module_text."""
    _printed_before.setdefault(module, {}).update(texts)


def split(module: ir.Module, pieces: dict, parts: int) -> list[str]:
    """The IR text of each part of `module` (at most `parts`, fewer when it has fewer units
    to share out), given each global's text (`printed`)."""
    values = module.globals
    defined = [name for name, g in values.items() if not _is_declaration(g)]
    unit = {name: name for name in defined}

    def root(name):
        while unit[name] != name:
            unit[name] = unit[unit[name]]
            name = unit[name]
        return name

    references = {name: _references(pieces[name], name, unit) for name in defined}
    for name in defined:
        for other in references[name]:
            if not _noinline(values[other]):
                unit[root(name)] = root(other)
    sizes: dict = {}
    for name in defined:
        sizes[root(name)] = sizes.get(root(name), 0) + len(pieces[name])
    # largest unit first, each into the lightest part
    loads = [0] * min(parts, len(sizes))
    part_of_unit = {}
    for r in sorted(sizes, key=lambda r: (-sizes[r], r)):
        p = loads.index(min(loads))
        part_of_unit[r] = p
        loads[p] += sizes[r]
    part = {name: part_of_unit[root(name)] for name in defined}
    called_across = {other for name in defined for other in references[name] if part[other] != part[name]}
    used_in: dict = {}  # the parts whose functions reference each function
    for name in defined:
        for other in references[name]:
            used_in.setdefault(other, set()).add(part[name])

    texts = []
    for p in range(len(loads)):
        body = []
        for name in values:
            text = pieces[name]
            if name not in part:  # a declaration: every part has it
                body.append(text)
            elif part[name] == p:
                body.append(_external(text) if name in called_across else text)
            elif p in used_in.get(name, ()):
                body.append(_declaration(text))
        texts.append(_assemble(module, body))
    return texts


def _is_declaration(g) -> bool:
    return isinstance(g, ir.Function) and not g.blocks


def _noinline(g) -> bool:
    return isinstance(g, ir.Function) and "noinline" in g.attributes


def _references(text: str, name: str, defined: dict) -> set:
    found = {a or b for a, b in _REFERENCE.findall(text)}
    return {other for other in found if other in defined and other != name}


def _first_line(text: str) -> tuple[str, str]:
    line, _, rest = text.partition("\n")
    return line, rest


def _external(text: str) -> str:
    """A function definition with its `internal`/`private` linkage taken off."""
    line, rest = _first_line(text)
    return re.sub(r"^define (internal |private )", "define ", line) + "\n" + rest


def _declaration(text: str) -> str:
    """The declaration of a defined function, from its definition's first line."""
    line, _ = _first_line(text)
    return re.sub(r"^define (internal |private )?", "declare ", line.rstrip(" {"))


def compile_objects(unit: ModuleText, level: int = jit.OPT_LEVEL) -> list[bytes]:
    """The machine code of a module (its ModuleText) at O`level`: one object per part,
    compiled at once in this process and a child process each but the first."""
    children = [Child(part, level) for part in unit.parts[1:]]
    objects = [_compile(unit.parts[0], level)]
    return objects + [child.result() for child in children]


def _compile(text: str, level: int) -> bytes:
    ref = jit.optimize(jit.parse(text), level)
    return jit.target_machine(jit.codegen_level(ref, level)).emit_object(ref)


class Child:
    """A part compiled at O`level` in a child process. If the child cannot start or fails,
    `result` compiles the part here instead: the same code either way."""

    def __init__(self, text: str, level: int):
        self.text, self.level, self.out = text, level, None
        cpu, features = jit.host_cpu()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, cpu, features, str(level)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self.proc = None
            return
        # the pipes are fed and drained beside this process's own work
        self.thread = threading.Thread(target=self._talk, daemon=True)
        self.thread.start()

    def _talk(self):
        try:
            out, _ = self.proc.communicate(self.text.encode())
            if self.proc.returncode == 0 and out:
                self.out = out
        except OSError:
            pass

    def done(self) -> bool:
        """Whether `result` returns without waiting for the child."""
        return self.proc is None or not self.thread.is_alive()

    def result(self) -> bytes:
        if self.proc is not None:
            self.thread.join()
        return self.out if self.out is not None else _compile(self.text, self.level)

    def stop(self):
        """End the child (its result is not wanted)."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()


def main(argv: list) -> int:
    """The child: compile the IR on stdin at the level named for the CPU the parent named
    (it must be the one this process compiles for) and write the object to stdout."""
    cpu, features, level = argv
    if jit.host_cpu() != (cpu, features):
        print("parallel_compile: this process would compile for another CPU than its parent", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(_compile(sys.stdin.buffer.read().decode(), int(level)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
