"""The step module of a kernel program: one function per kernel, and a driver that runs them all.

    void dlc_step(i8** arguments, i64* sizes, i64 nthreads)

The engine keeps a pointer table: one entry per buffer of the program, then one per
run-time check (the site's number + 1, in place of a pointer), then one per buffer of
the optimizer update's program (update.py). A kernel never sees that table: it reads the few entries it uses
from its own argument slots, and `arguments` is the concatenation of every kernel call's
slots (`StepModule.arguments` names the table entry behind each). So kernels that differ
only in the buffers they touch, as the layers of a deep network do, are one function,
compiled once. `sizes` holds the value of every symbolic dim (in `KernelProgram.symbols`
order); sizes[-1], the i64 before them, is the fault flag (builder.FAULT_SLOT), which the
caller clears before a call and reads after. Math functions call the C library (expf, tanhf, ...) where scalar.py does not
inline them.

A module built to check numerics (`dlc train --check-numerics`) calls the host function
in the global `dlc_check` after every kernel of the program, with the kernel's number;
it tests what the kernel wrote with the module's `dlc_nonfinite_*` counters, and a
non-zero answer stops the driver there (the engine sets the fault flag, so the update
does not run). Built without, the module is the same as ever.
"""

from __future__ import annotations

import io
import itertools
import pickle
import re
from dataclasses import dataclass, fields
from typing import Callable

from llvmlite import ir

from dlc.compiler.ir.graph import collector_paused
from dlc.compiler.native.codegen import parallel_compile
from dlc.compiler.native.codegen.builder import Arguments, KernelBuilder, fault_flag
from dlc.compiler.native.codegen.fpmode import subnormals_flushed
from dlc.compiler.native.codegen.parallel import parallel_loop
from dlc.compiler.native.program import Kernel, KernelProgram
from dlc.compiler.native.codegen.types import i8, i32, i64

CHECK = "dlc_check"  # i64 (*)(i64 kernel): 0 if what kernel wrote is finite (set by the engine)
# i64 NAME(i8* values, i64 n): how many of the n values are NaN or Inf, which the engine's check calls
NONFINITE = {"f32": "dlc_nonfinite_f32", "f64": "dlc_nonfinite_f64"}


@dataclass
class KernelFunction:
    """The function of one kernel, as its rule (Kernel.emit) builds it: `nested` are the
    compiled kernels it runs, (function, argument slots, profile number) each, which
    `run_nested` calls."""

    module: ir.Module
    prog: KernelProgram
    fn: ir.Function
    nested: list
    run_nested: Callable[[ir.IRBuilder], int]

    def serial(self) -> KernelBuilder:
        """The builder of a function that runs on the calling thread; the nested kernels'
        argument slots come first, then its own."""
        return KernelBuilder(self.module, self.prog, self.fn, Arguments(e for _, refs, _ in self.nested for e in refs))

    def team(self, loop, extent, work) -> KernelBuilder:
        """The builder of a function that runs `loop(kb, first)` on a thread team, each
        thread on a slice `first` of its outermost axis of `extent` (parallel.parallel_loop)."""
        return parallel_loop(self.module, self.prog, self.fn, loop, extent, work)

    def library(self, name: str, fnty: ir.FunctionType) -> ir.Function:
        """A routine of the GEMM library (runtime/engines/cache.py), declared here."""
        fn = self.module.globals.get(name)
        return fn if fn is not None else ir.Function(self.module, fnty, name)


@dataclass
class StepModule:
    """The module of a program, and what its driver reads: `arguments[k]` is the
    pointer-table entry (module docstring) that goes in slot k of its argument array.
    `functions[i]` names the function of kernel i, numbered in program order with a scan
    before its body (as `profile`); alike kernels share one."""

    module: ir.Module
    arguments: list
    functions: list


# llvmlite makes several objects per instruction, all alive until the module is compiled: the
# cyclic collector, passing over them again and again, took 30-40% of the time of building a module
@collector_paused()
def build_module(
    prog: KernelProgram,
    name: str = "dlc_step",
    update: KernelProgram | None = None,
    profile: list | None = None,
    check: bool = False,
) -> StepModule:
    """The module of a program; with `update` (update.lower_update) the driver ends with
    the optimizer step, its buffers after the program's buffers and checks in the pointer table.
    With `profile` (a list, filled with (kernel, nesting depth)), every kernel call adds
    its cycles to the global array `dlc_profile`, indexed like that list. With `check`, the
    driver calls `dlc_check` after each of prog's kernels (module docstring)."""
    module = ir.Module(name)
    sig = ir.FunctionType(ir.VoidType(), [i8.as_pointer().as_pointer(), i64.as_pointer(), i64])
    driver = ir.Function(module, sig, name)
    numbered: list = []
    functions: dict = {}  # kernel number -> the name of its function
    alike: dict = {}  # the text of a kernel's functions, their name left out -> the kernel function
    # a kernel with its buffers renamed (`canonical`) -> (its function, the canonical buffer behind each slot)
    alike_fields: dict = {}

    def kernel(k, depth: int, prog: KernelProgram = prog) -> tuple:
        """(its function, the entries of `prog` behind its argument slots, its profile
        number) of kernel k of `prog`; the function is one built before when that one is
        alike to the letter, or (not built again) when that one's kernel differs from k
        only in its buffers."""
        number = len(numbered)
        numbered.append((k, depth))
        key, buffers = canonical(k, prog)
        if key in alike_fields:
            fn, slots = alike_fields[key]
            functions[number] = fn.name
            return fn, [buffers[s] for s in slots], number
        nested = [kernel(j, depth + 1, prog) for j in k.nested()]
        before = len(module.globals)  # the globals it adds come after them (a dict keeps its order)
        fn = ir.Function(module, sig, f"kernel{number}")
        fn.linkage = "internal"
        # inlined, every kernel would land in the driver, one function growing with the
        # model, on which LLVM's O3 is superlinear (300 dense layers: 89 s instead of 8)
        fn.attributes.add("noinline")
        kb = k.emit(KernelFunction(module, prog, fn, nested, lambda b: calls(b, nested, fn.args)))
        kb.finish()
        added = list(itertools.islice(reversed(module.globals.values()), len(module.globals) - before))[::-1]
        made = {g.name: str(g) for g in added if isinstance(g, ir.Function) and not g.is_declaration}
        text = re.sub(rf'@"{re.escape(fn.name)}([."])', r'@"kernel\1', "\n".join(made.values()))
        if text in alike:
            for name in made:
                del module.globals[name]
        elif profile is None:  # a profiled scan's calls index dlc_profile, whose type is resized below
            parallel_compile.remember_printed(module, made)
        functions[number] = alike.setdefault(text, fn).name
        if key is not None and set(kb.args.refs) <= set(buffers):  # its slots hold buffers only
            alike_fields[key] = alike[text], [buffers.index(e) for e in kb.args.refs]
        return alike[text], kb.args.refs, number

    def calls(b, compiled: list, args):
        """Call each kernel (of a scan's body) with its slots, which follow one another
        from args[0] on."""
        at = 0
        for fn, refs, number in compiled:
            invoke(
                module,
                b,
                fn,
                [b.gep(args[0], [ir.Constant(i64, at)]), args[1], args[2]],
                None if profile is None else ir.Constant(i64, number),
            )
            at += len(refs)
        return at

    if profile is not None:
        table = ir.GlobalVariable(module, ir.ArrayType(i64, 1), "dlc_profile")  # resized below
    compiled = [kernel(k, 0) for k in prog.kernels]
    updates = [kernel(k, 0, update) for k in update.kernels] if update is not None else []
    if profile is not None:
        profile.extend(numbered)
        table.value_type = ir.ArrayType(i64, len(numbered))
        table.initializer = ir.Constant(table.value_type, [0] * len(numbered))
    checker = None
    if check:
        checker = ir.GlobalVariable(module, ir.FunctionType(i64, [i64]).as_pointer(), CHECK)
        checker.initializer = ir.Constant(checker.value_type, None)
        for dtype in NONFINITE:
            nonfinite_counter(module, dtype)
    b = ir.IRBuilder(driver.append_basic_block("entry"))
    with subnormals_flushed(module, b):
        at = run_all(module, b, compiled, driver.args, profile is not None, checker)
    arguments = [e for _, refs, _ in compiled for e in refs]
    if update is not None:  # not after a failed check: the parameters stay as they were
        first = len(prog.buffers) + len(prog.faults)
        arguments += [first + e for _, refs, _ in updates for e in refs]
        flag = fault_flag(b, driver.args[1])
        with b.if_then(b.icmp_unsigned("==", b.load_atomic(flag, "monotonic", 8), ir.Constant(i64, 0))):
            calls(b, updates, [b.gep(driver.args[0], [ir.Constant(i64, at)]), driver.args[1], driver.args[2]])
    b.ret_void()
    return StepModule(module, arguments, [functions[i] for i in range(len(numbered))])


def canonical(k, prog: KernelProgram) -> tuple:
    """(a key, its buffers): kernels of equal keys differ only in their buffers, the i-th of
    one's standing where the other's i-th stands, so their code is one function (a slot of
    it holding buffer i of one holds buffer i of the other). The key is k with its buffers
    renamed -1, -2, ... in the order its text names them, and what its code reads of them and
    of the program (dtype, size and role; the sizes' symbols); (None, None) for a kernel of a
    kind that cannot be renamed (Kernel.renamed) or that runs nested kernels."""
    if k.nested():
        return None, None
    touched = set().union(*(reads | writes for reads, writes in k.members()))
    named = dict.fromkeys(int(b) for line in k.text() for b in _BUFFER.findall(line) if int(b) in touched)
    buffers = list(named) + sorted(touched - named.keys())
    renamed = k.renamed({b: -1 - i for i, b in enumerate(buffers)})
    if renamed is None or any(b >= 0 for reads, writes in renamed.members() for b in reads | writes):
        return None, None
    described = [(prog.buffers[b].dtype, prog.buffers[b].size, prog.buffers[b].role) for b in buffers]
    key = io.BytesIO()
    _CodePickler(key, protocol=5).dump((type(k), renamed, described, tuple(prog.symbols)))
    return key.getvalue(), buffers


_BUFFER = re.compile(r"\bb(\d+)\b")  # a buffer in a kernel's text: b12


class _CodePickler(pickle.Pickler):
    """Pickles kernels (and those they hold) without where they come from (`node`, `nodes`,
    `origin`), which is no part of their code: the layers of a network give equal keys."""

    def reducer_override(self, obj):
        if isinstance(obj, Kernel):
            return type(obj), tuple((f.name, getattr(obj, f.name)) for f in fields(obj) if f.name not in _ORIGIN)
        return NotImplemented


_ORIGIN = {"node", "nodes", "origin"}


def nonfinite_counter(module: ir.Module, dtype: str):
    """i64 dlc_nonfinite_<dtype>(i8* values, i64 n): how many of the n floats are NaN or
    Inf — those whose exponent bits are all set — in an integer loop LLVM vectorizes."""
    bits, exponent = {"f32": (i32, 0x7F800000), "f64": (i64, 0x7FF0000000000000)}[dtype]
    fn = ir.Function(module, ir.FunctionType(i64, [i8.as_pointer(), i64]), NONFINITE[dtype])
    values, n = fn.args
    entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    first = b.bitcast(values, bits.as_pointer())
    zero = ir.Constant(i64, 0)
    b.cbranch(b.icmp_signed(">", n, zero), loop, done)
    b.position_at_end(loop)
    i, count = b.phi(i64), b.phi(i64)
    masked = b.and_(b.load(b.gep(first, [i])), ir.Constant(bits, exponent))
    counted = b.add(count, b.zext(b.icmp_unsigned("==", masked, ir.Constant(bits, exponent)), i64))
    nxt = b.add(i, ir.Constant(i64, 1))
    for phi, start, value in ((i, zero, nxt), (count, zero, counted)):
        phi.add_incoming(start, entry)
        phi.add_incoming(value, loop)
    b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
    b.position_at_end(done)
    total = b.phi(i64)
    total.add_incoming(zero, entry)
    total.add_incoming(counted, loop)
    b.ret(total)


def run_all(module: ir.Module, b: ir.IRBuilder, compiled: list, args, profile: bool, checker=None) -> int:
    """Call every kernel of the program, in order, from a loop over a constant table of
    (function, first argument slot, profile number): the driver stays one small loop
    however many kernels there are (as 60,000 direct calls, LLVM's O3 on the driver took
    13 minutes for a 10,000-layer MLP). Returns the number of argument slots used. With
    `checker` (the global CHECK), each kernel's number is passed to it after the kernel
    runs, and the loop stops where it answers non-zero."""
    sig = ir.FunctionType(ir.VoidType(), [a.type for a in args])
    entry = ir.LiteralStructType([sig.as_pointer(), i64, i64])
    rows, at = [], 0
    for fn, refs, number in compiled:
        rows.append(ir.Constant(entry, [fn, ir.Constant(i64, at), ir.Constant(i64, number)]))
        at += len(refs)
    table = ir.GlobalVariable(module, ir.ArrayType(entry, len(rows)), "dlc_kernels")
    table.global_constant = True
    table.linkage = "internal"
    table.initializer = ir.Constant(table.value_type, rows)
    if not rows:
        return at
    fn = b.function
    pre = b.block
    head, after = fn.append_basic_block("kernel"), fn.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(i64, name="k")
    i.add_incoming(ir.Constant(i64, 0), pre)
    field = lambda j: b.load(b.gep(table, [ir.Constant(i32, 0), i, ir.Constant(i32, j)]))
    invoke(module, b, field(0), [b.gep(args[0], [field(1)]), args[1], args[2]], field(2) if profile else None)
    nxt = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(nxt, b.block)
    more = b.icmp_signed("<", nxt, ir.Constant(i64, len(rows)))
    if checker is not None:
        more = b.and_(more, b.icmp_signed("==", b.call(b.load(checker), [i]), ir.Constant(i64, 0)))
    b.cbranch(more, head, after)
    b.position_at_end(after)
    return at


def invoke(module: ir.Module, b: ir.IRBuilder, fn, args: list, number):
    """Call fn; with a profile `number`, add the cycles it took to dlc_profile[number]."""
    if number is None:
        b.call(fn, args)
        return
    clock = module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
    start = b.call(clock, [])
    b.call(fn, args)
    cell = b.gep(module.get_global("dlc_profile"), [ir.Constant(i32, 0), number])
    b.store(b.add(b.load(cell), b.sub(b.call(clock, []), start)), cell)
