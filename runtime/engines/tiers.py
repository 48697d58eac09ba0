"""A program's machine code in two tiers: quick code first, optimized code once it is hot.

Compiling a module at O3 takes 2.8 to 4.5 times as long as compiling its quick code (a short
list of LLVM's passes, `jit.QUICK_LEVEL`), and most of a short run (a first step, a test,
a prediction of a few examples) is that compile. So a module that is not in the compile
cache at O3 is compiled to quick code and runs at once. Once its quick code has run for as
long as its O3 compile is expected to take (`O3_SECONDS_PER_BYTE` of its quick code: the
rule of renting skis until their price is paid, which never costs more than twice the best
choice made knowing the run's length), and at least `HOT` seconds, the same
IR is compiled at O3 in child processes (compiler/native/codegen/parallel_compile.py) while
the program runs on, and the next call after they finish runs the O3 code, which is then
stored in the cache: the next run starts with it.

Both tiers compute the same bits: no float operation of dlc's IR lets LLVM reassociate or
contract it (the FMAs are explicit calls), so the optimizer may not change a result at
any level (tests/native/test_tiers.py). `DLC_QUICK_CODE=0` compiles every module at O3
before its first call; `DLC_QUICK_CODE=only` runs quick code and never starts an O3 compile
(O3 code found in the cache still runs): a run that is short or has no core to spare.
`DLC_QUICK_CODE=unoptimized` does the same with LLVM's O0 code generator (`jit.UNOPTIMIZED_LEVEL`):
a run that compiles more than it computes, a test suite's. `finish` waits for the O3 code (a benchmark times it).
"""

from __future__ import annotations

import ctypes
import math
import time
import weakref

from dlc.compiler.ir.graph import collector_paused
from dlc.compiler.native.codegen import jit, parallel_compile
from dlc.runtime.engines import cache

# the O3 compile's seconds per byte of a module's quick code (its objects): 25-33 µs over
# the examples' train steps, from the MLP's (6 KB, 0.18 s) to the ResNet example's (183 KB,
# 4.9 s) on a 2-core Xeon
O3_SECONDS_PER_BYTE = 28e-6
# ... and at least this long: most short runs (a test, a prediction of a few examples) run
# less, and never compile at O3 (a small module's O3 compile is short, but not free)
HOT = 1.0
# a driver's signature: (the arguments, the sizes, the threads)
DRIVER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TieredDriver:
    """The driver `entry` of the module that `build()` makes (with its list: compile_built's
    `parts` and `build`), in two tiers. `run(arguments, sizes, threads)` calls it; `loaded`
    is the code that runs, `extra` the list."""

    def __init__(self, parts: tuple, build, entry: str, quick: bool = True):
        """`quick`: False compiles at O3 before the first call, as DLC_QUICK_CODE=0 does."""
        self.parts, self.build, self.entry = cache.BuiltParts(parts), build, entry
        self.unit = self.children = None  # the O3 compile's input (a ModuleText), and it under way
        self.ran = 0.0  # seconds the quick code has run
        mode = jit.quick_code() if quick else "0"
        found = cache.find_built(self.parts, jit.OPT_LEVEL) if mode != "0" else None
        if found is None and mode != "0":
            self.loaded, self.extra = cache.compile_built(self.parts, self._built, jit.first_level())
            self.hot = math.inf if mode in jit.NEVER_O3 else max(HOT, O3_SECONDS_PER_BYTE * self.loaded.size)
            self.fn = DRIVER(self.loaded.address(entry))
            self.run = self._quick
        else:
            self.loaded, self.extra = found or cache.compile_built(self.parts, build)
            self.fn = self.run = DRIVER(self.loaded.address(entry))

    @classmethod
    def optimized_only(cls, loaded: cache.Loaded, entry: str) -> "TieredDriver":
        """The driver `entry` of code compiled at O3 already (a profiling build's)."""
        driver = cls.__new__(cls)
        driver.loaded, driver.extra, driver.children = loaded, None, None
        driver.fn = driver.run = DRIVER(loaded.address(entry))
        return driver

    @property
    def optimized(self) -> bool:
        """Whether the O3 code runs."""
        return self.run is self.fn

    def finish(self):
        """Compile the O3 code now if its compile has not started, and wait for it."""
        if not self.optimized:
            if self.children is None:
                self._start()
            self._take()

    def _built(self):
        # the module goes once printed (ModuleText), its cycles broken: its objects are
        # freed here, not by the collector's next pass
        with collector_paused():
            module, extra = self.build()
            self.unit = parallel_compile.taken(module)
            del module
        return self.unit, extra

    def _quick(self, *arguments):
        """A call of the quick code, timed: the O3 compile starts once it is hot, and the call
        after it is done runs the O3 code."""
        t0 = time.perf_counter()
        self.fn(*arguments)
        self.ran += time.perf_counter() - t0
        if self.children is None:
            if self.ran >= self.hot:
                self._start()
        elif all(child.done() for child in self.children):
            self._take()

    def _start(self):
        if self.unit is None:  # the quick code came from the cache: the module is built now
            self._built()
        self.children = [parallel_compile.Child(part, jit.OPT_LEVEL) for part in self.unit.parts]
        weakref.finalize(self, _stop, self.children)  # a run that ends first does not wait for them

    def _take(self):
        objects = [child.result() for child in self.children]
        self.loaded = cache.store_built(self.parts, jit.OPT_LEVEL, self.unit, objects, self.extra)
        self.unit = self.children = None
        self.fn = self.run = DRIVER(self.loaded.address(self.entry))


def _stop(children: list):
    for child in children:
        child.stop()
