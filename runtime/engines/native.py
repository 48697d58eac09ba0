"""The native engine: each step is one call of LLVM-compiled code.

A graph is lowered to kernels (compiler/native/lower.py), compiled with llvmlite into one
module whose driver runs them all (compiler/native/codegen/driver.py), and called through a
pointer table built once per batch shape. The train step's driver ends with the
optimizer's update graph, compiled (compiler/native/update.py): every trained parameter
lives in one flat array, its gradient and each of its state slots in others, so the
update is one pass that writes them in place. Inputs are checked (shape, dtype) before any
native call. Compiled objects are cached on disk by a hash of the IR, the CPU and the
dlc version.
"""

from __future__ import annotations

import ctypes
import operator
from types import MappingProxyType

import numpy as np

from dlc.compiler.passes.autodiff import hvp_graph, train_step
from dlc.compiler.native.buckets import BUCKET, REDUCED, gradient_buckets
from dlc.compiler.native.codegen.driver import CHECK, NONFINITE, build_module
from dlc.compiler.ir.dims import concrete, derive, numel
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.model import Model
from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.ir.update import GROUP
from dlc.compiler.native.lower import lower
from dlc.compiler.native.memory import aligned_zeros, intervals, plan, views
from dlc.compiler.native.program import BUFFER_DTYPES, KernelProgram
from dlc.compiler.native.update import lower_update, touched
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines import budget, cache, numerics
from dlc.runtime.engines.cores import threads
from dlc.runtime.engines.distributed import optimizer_shards
from dlc.runtime.engines.reference import _scalars, predict_graph
from dlc.runtime.engines.interpreter import bind_sizes
from dlc.runtime.engines.parameters import Parameters, require_writable
from dlc.runtime.optim import second_order
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.engines.tiers import TieredDriver

# the random key of evaluation and prediction: always zeros (read only, as every input)
NO_KEY = np.zeros(2, np.int32)
NO_KEY.flags.writeable = False
# a host function a HostCallKernel calls: (the address of an f32 buffer, its element count); ctypes takes
# the GIL. The address comes as an int: a pointer object and np.ctypeslib.as_array cost twice the time
HOST_CALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
# the driver's numerics check (compiler/native/codegen/driver.py CHECK): kernel number -> 0 if its values are finite
NUMERICS_CHECK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)
# the module's counters of non-finite values (driver.NONFINITE): (address, n) -> how many
NONFINITE_COUNT = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)


class NonFiniteOutput(Exception):
    """A step checking numerics wrote a value that is not finite: `kernels`, those that wrote
    the buffer that holds it, the last one just before the check (none: a parameter or an
    input holds it)."""

    def __init__(self, kernels: list):
        super().__init__(kernels)
        self.kernels = kernels


class NumericsCheck:
    """What the driver of a module built with `check` (compiler/native/codegen/driver.py) calls after
    each kernel: the NaN and Inf values in each float buffer the kernel is the last to write
    (`watched`; a scan writes what its body's kernels write, and a concat's buffer is tested
    once, after its last piece), counted by the module's own loop; the parameters and
    inputs before the call. At the first one the driver stops, and the fault flag keeps the
    optimizer's update from running."""

    def __init__(self, program: KernelProgram, compiled):
        self.program = program
        self.fault = None  # the fault flag of the call under way (its layout's)
        last = {bid: i for i, k in enumerate(program.kernels) for bid in self._writes(k)}
        self.watched: dict = {}  # kernel number -> the buffers it is the last to write
        for bid, i in last.items():
            if program.buffers[bid].role in ("temp", "output") and program.buffers[bid].dtype in NONFINITE:
                self.watched.setdefault(i, []).append(bid)
        # the parameters and inputs, tested before the call (after an update that overflowed)
        self.given = [b.id for b in program.buffers if b.role in ("param", "input") and b.dtype in NONFINITE]
        self.counts: dict = {}  # the element count of each watched buffer, per set of sizes
        self.running: tuple = ()  # (the pointer table, the counts) of the call under way
        self.found = None  # the kernels that wrote the first non-finite value
        self.count = {dtype: NONFINITE_COUNT(compiled.address(name)) for dtype, name in NONFINITE.items()}
        self.callback = NUMERICS_CHECK(self._after)
        slot = ctypes.c_void_p.from_address(compiled.engine.get_global_value_address(CHECK))
        slot.value = ctypes.cast(self.callback, ctypes.c_void_p).value

    def _writes(self, k) -> set:
        return set(k.accesses()[1]).union(*map(self._writes, k.nested()))

    def arm(self, table: np.ndarray, sizes: dict, fault: ctypes.c_int64):
        """Before a call: its pointer table, dim sizes and fault flag. NonFiniteOutput,
        written by no kernel, if a parameter or an input is not finite."""
        self.fault = fault
        key = tuple(sizes[s] for s in self.program.symbols)
        if key not in self.counts:
            self.counts[key] = {
                bid: int(concrete(self.program.buffers[bid].size, sizes))
                for bid in self.given + [b for bids in self.watched.values() for b in bids]
            }
        self.running, self.found = (table, self.counts[key]), None
        if any(self._nonfinite(bid) for bid in self.given):
            raise NonFiniteOutput([])

    def _nonfinite(self, bid: int) -> int:
        table, counts = self.running
        return self.count[self.program.buffers[bid].dtype](int(table[bid]), counts[bid])

    def _after(self, kernel: int) -> int:
        """After kernel number `kernel`: 1 (stop) if a value it wrote is not finite."""
        for bid in self.watched.get(kernel, ()):
            if self._nonfinite(bid):
                self.found = [k for k in self.program.kernels[: kernel + 1] if bid in self._writes(k)]
                self.fault.value = -1
                return 1
        return 0

    def report(self):
        """After a call: NonFiniteOutput if a kernel wrote a value that is not finite."""
        if self.found is not None:
            kernels, self.found = self.found, None
            raise NonFiniteOutput(kernels)


class Executable:
    """One lowered graph, compiled; owns the buffers of every batch shape it has seen.
    `resident` gives the bytes, by part (runtime/engines/budget.py), of the arrays the engine
    keeps for it (parameters, gradients, optimizer state); by default the parameters
    it is given at each call. `hosts`: the host functions its HostCallKernels call, by
    name, each given the buffer as an array to rewrite in place; one not given leaves the
    buffer as it is (replica_mean in one process: the identity). `check_numerics`: after each
    kernel, what it was the last to write is tested (NumericsCheck), and `run` raises
    NonFiniteOutput at the first kernel whose values are not finite. `precision`: of the
    operands of its matmuls and convolutions (compiler/native/lower.py). `pack_weights` (a
    prediction's, lower.py's PACK_WEIGHTS): its first kernel packs the weights its GEMMs read
    packed, again at every call unless `run` is told the version of unchanged weights. `buckets`: (the
    bytes of a bucket, the parameters whose gradients the buckets hold): each bucket is handed
    to the host as soon as the step has finished it (compiler/native/buckets.py;
    `self.buckets` lists them). `int8`: the quantization (QuantizedProduct by product name)
    whose integer products it computes in int8 (compiler/native/kernels/int8). `forward`: the
    graph is a forward pass alone (an evaluation's), whose first layers, as a prediction's,
    run an example at a time (compiler/passes/examples.py)."""

    def __init__(
        self,
        graph,
        update: KernelProgram | None = None,
        profile=False,
        resident: dict | None = None,
        hosts: dict | None = None,
        check_numerics=False,
        precision: str = "f32",
        buckets: tuple | None = None,
        pack_weights: str | None = None,
        int8: dict | None = None,
        model=None,
        forward: bool = False,
    ):
        self.graph = graph
        self.model = model  # the graph's model: where a refusal of memory points
        self.what = "the train step" if update is not None else "a forward pass"
        self.resident = resident
        self.program: KernelProgram = lower(optimize(graph), precision, pack_weights, int8, forward)
        self.buckets = gradient_buckets(self.program, *buckets) if buckets else []
        self.profile = [] if profile else None  # (kernel, depth) per slot of dlc_profile
        if profile:
            built = build_module(self.program, "dlc_step", update=update, profile=self.profile, check=check_numerics)
            self.driver, arguments = (
                TieredDriver.optimized_only(cache.compile_cached(built.module), "dlc_step"),
                built.arguments,
            )
        else:

            def build():
                built = build_module(self.program, "dlc_step", update=update, check=check_numerics)
                return built.module, built.arguments

            parts = (self.program, update) + (("check numerics",) if check_numerics else ())
            # the numerics check is bound to its module's globals: one tier
            self.driver = TieredDriver(parts, build, "dlc_step", quick=not check_numerics)
            arguments = self.driver.extra
        self.layouts: dict = {}
        self.packed: dict = {}  # the packed weights (kernels/gemm), by buffer
        self.packed_at = None  # the version of the weights they hold (`run`)
        self.live = intervals(self.program)  # temporaries share an arena (compiler/native/memory.py)
        self.plans: dict = {}  # its layout per set of sizes
        self.memory: dict = {}  # bytes by part (runtime/engines/budget.py) per set of sizes
        # the pointer table (compiler/native/codegen/driver.py): buffers, checks, the update's buffers
        self.checks = len(self.program.buffers)
        self.extras = self.checks + len(self.program.faults)
        self.entries = self.extras + (len(update.buffers) if update is not None else 0)
        self.arguments = np.array(arguments, np.intp)
        self.param_slots = [(bid, DTYPES[self.program.buffers[bid].dtype]) for bid in self.program.params.values()]
        self._given = None  # (the arrays `given` was last given, its dict): see `given`
        if self.arguments.size and not (0 <= self.arguments.min() and self.arguments.max() < self.entries):
            raise DlcError(
                f"the compile cache in {cache.cache_dir()} holds a bad entry for {self.what}: delete the directory"
            )
        self.host_error = None
        self.arrays: list = []  # the buffers of the call under way, or of the last
        self.hosts = {b.id: self._host(b.name, hosts or {}) for b in self.program.buffers if b.role == "host"}
        self.input_dtypes = {graph.attrs(n)["name"]: DTYPES[graph.types(n)[0].dtype] for n in graph.nodes_with("input")}
        self.bound: dict = {}  # the sizes of the dims, by the shapes of the feeds
        # tests what each kernel writes (NumericsCheck); the module's driver calls it
        self.numerics = NumericsCheck(self.program, self.compiled) if check_numerics else None

    @property
    def compiled(self) -> cache.Loaded:
        """The machine code that runs (runtime/engines/tiers.py)."""
        return self.driver.loaded

    def _host(self, name: str, hosts: dict):
        """The C function of host function `name`. An exception cannot cross a ctypes
        callback (it would be printed and the step would go on): it is kept and raised
        once the native call returns."""
        function = hosts.get(name)

        def call(address, n):
            try:
                if function is not None:
                    function(np.frombuffer((ctypes.c_float * n).from_address(address), np.float32))
            except BaseException as e:
                self.host_error = self.host_error or e

        return HOST_CALL(call)

    def cycles(self) -> np.ndarray:
        """Cycles spent in each kernel since the last call (profiling builds only)."""
        addr = self.compiled.engine.get_global_value_address("dlc_profile")
        counts = np.ctypeslib.as_array((ctypes.c_int64 * len(self.profile)).from_address(addr))
        out = counts.copy()
        counts[:] = 0
        return out

    def layout(self, sizes: dict, fixed: dict) -> "Layout":
        """Buffers and the pointer table for one set of dim sizes. `fixed` gives the
        arrays that live elsewhere (parameters, gradients, state): they may change from
        call to call, so their slots are bound at every call (`run`)."""
        key = tuple(sizes[s] for s in self.program.symbols)
        lay = self.layouts.get(key)
        if lay is None:
            self.plans[key], self.memory[key] = self._fitting_plan(sizes, fixed)
            temps = views(self.plans[key], self.program)
            arrays = []
            for b in self.program.buffers:
                if b.id in fixed or b.role == "host":
                    arrays.append(None)
                elif b.role == "const":
                    arrays.append(np.ascontiguousarray(b.data))
                elif b.role == "packed":  # of every layout: their sizes are the weights'
                    if b.id not in self.packed:
                        self.packed[b.id] = aligned_zeros(int(concrete(b.size, sizes)), BUFFER_DTYPES[b.dtype])
                    arrays.append(self.packed[b.id])
                elif b.id in temps:
                    arrays.append(temps[b.id])
                else:
                    arrays.append(aligned_zeros(max(1, int(concrete(b.size, sizes))), BUFFER_DTYPES[b.dtype]))
            table = np.zeros(self.entries, np.uint64)
            table[: self.checks] = [0 if a is None else a.ctypes.data for a in arrays]
            for bid, function in self.hosts.items():
                table[bid] = ctypes.cast(function, ctypes.c_void_p).value
            table[self.checks : self.extras] = np.arange(1, self.extras - self.checks + 1)
            lay = self.layouts[key] = Layout(self, sizes, arrays, table)
        return lay

    def _fitting_plan(self, sizes: dict, fixed: dict) -> tuple:
        """The arena plan for these sizes, once the memory of a step is known to fit, and
        that memory by part: what the engine keeps (`resident`) and the step's activations."""
        p = plan(self.program, sizes, self.live, exclude=fixed)

        def activations(s: dict) -> dict:
            # what a layout allocates: the arena and the buffers that live nowhere else
            arena = (p if s == sizes else plan(self.program, s, self.live, exclude=fixed)).arena
            return {
                "activations": arena + sum(budget.buffer_bytes(b, s) for b in budget.own_buffers(self.program, fixed))
            }

        resident = self.resident or {"parameters": sum(a.nbytes for a in fixed.values())}
        budget.require_step(self.what, self.graph, sizes, resident, activations, self.model)
        budget.require_work(self.what, self.graph, sizes, threads())
        return p, resident | activations(sizes)

    def run(self, feeds: dict, fixed: dict, extra=(), weights: int | None = None) -> tuple:
        """Run on feeds; returns (every buffer, the sizes of the symbolic dims). `extra`:
        the arrays of the slots after the checks (the update's buffers), in order. `weights`:
        the version of the parameters in `fixed` (runtime/engines/parameters.py), while which
        the weights an earlier call packed are theirs; None (not known: an array may have been
        changed in place) packs them again."""
        sizes = self._sizes(feeds)
        lay = self.layout(sizes, fixed)
        arrays = lay.bound(fixed)
        for name, bid in self.program.inputs.items():
            lay.bind(bid, np.ascontiguousarray(feeds[name], self.input_dtypes[name]))
        for slot, a in enumerate(extra):
            lay.bind(self.extras + slot, a)
        self.arrays = arrays  # what a host function may read during the call
        if self.program.weights_ready is not None and (weights is None or weights != self.packed_at):
            arrays[self.program.weights_ready][:] = 0  # the weights given may be new: packed again
            self.packed_at = weights
        lay.fault.value = 0
        if self.numerics is not None:
            self.numerics.arm(lay.table, sizes, lay.fault)
        self.driver.run(lay.address, lay.sizes, threads())
        if self.host_error is not None:
            error, self.host_error = self.host_error, None
            raise error
        if self.numerics is not None:
            self.numerics.report()
        if lay.fault.value:
            what, count, span = self.program.faults[lay.fault.value - 1]
            raise DlcError.at_user_line(f"{what}: index out of range [0, {concrete(count, sizes)})", span)
        return arrays, sizes

    def given(self, params: dict) -> dict:
        """The parameters `run` is given (`fixed`) as the native code reads them: contiguous,
        of the declared dtype (no copy when they are). When none needed a copy, a read-only
        mapping, the same object while `params` holds the same arrays, which `run` then binds
        without looking at each (`Layout.bound`): the Python of a call runs after its native
        code has emptied the caches, and a prediction of mobilenet_v2 gives 106 parameters."""
        values = list(map(params.__getitem__, self.program.params))
        if self._given is not None and all(map(operator.is_, values, self._given[0])):
            return self._given[1]
        fixed = {bid: np.ascontiguousarray(v, dtype) for v, (bid, dtype) in zip(values, self.param_slots)}
        if not all(map(operator.is_, fixed.values(), values)):
            self._given = None
            return fixed
        self._given = (values, MappingProxyType(fixed))
        return self._given[1]

    def output(self, name: str, arrays: list, sizes: dict) -> np.ndarray:
        """Output `name` of a run (its buffers and sizes), a copy in its evaluated shape."""
        count, shape = self.layout(sizes, {}).outputs[name]
        return arrays[self.program.outputs[name]][:count].reshape(shape).copy()

    def _sizes(self, feeds: dict) -> dict:
        """bind_sizes, once per shape of the feeds (a prediction of one example is ~20 µs of
        native code; walking the graph to bind its sizes took longer); "$t0", ...: the step
        indices of scans, which the loops themselves write."""
        key = tuple(np.shape(feeds[name]) if name in feeds else None for name in self.input_dtypes)
        sizes = self.bound.get(key)
        if sizes is None:
            sizes = self.bound[key] = {s: 0 for s in self.program.symbols if s.startswith("$")} | derive(
                bind_sizes(self.graph, feeds), self.program.symbols
            )
        return sizes


class Layout:
    """An executable's buffers for one set of dim sizes and the pointer table of their
    addresses, with what is computed once for those sizes: the element count each buffer
    must have and each output's shape. The slots of arrays given at each call (parameters,
    inputs, the update's arrays) are bound by `bind`, which checks each new array and keeps
    the one each slot points to: an array bound again (a parameter, from call to call) is
    neither checked again nor its address read (a microsecond each, several after the
    native code has emptied the caches), and the parameters of `Executable.given`'s mapping
    of the last call are not even looked at (`bound`)."""

    def __init__(self, exe: "Executable", sizes: dict, arrays: list, table: np.ndarray):
        self.arrays, self.table = arrays, table
        key = [sizes[s] for s in exe.program.symbols]
        # the fault flag, then the sizes (compiler/native/codegen/driver.py): the step is given the sizes' address
        self.dims = (ctypes.c_int64 * (1 + len(key)))(0, *key)
        self.fault = ctypes.c_int64.from_buffer(self.dims)
        self.sizes = ctypes.addressof(self.dims) + ctypes.sizeof(ctypes.c_int64)
        # slot -> (dtype, element count, name) of the array it takes; the update's slots
        # (after the checks) are the engine's own arrays, which it sized
        self.wants = {
            b.id: (np.dtype(BUFFER_DTYPES[b.dtype]), int(concrete(b.size, sizes)), b.name or str(b.id))
            for b in exe.program.buffers
        }
        self.held: dict = {}  # slot -> the array whose address it holds
        self.last = None  # (the arrays given, the buffers) of the last `bound`
        # the driver's arguments: each kernel's slots of the table (driver.py), kept as the
        # table changes, so that a call passes them as they are
        self.arguments = exe.arguments
        self.args = table[exe.arguments]
        self.address = self.args.ctypes.data
        self.places: dict = {}  # slot -> where the arguments hold it
        self.outputs = {}  # output name -> (element count, shape)
        for name in exe.program.outputs:
            shape = tuple(int(concrete(d, sizes)) for d in exe.graph.outputs[name].type.shape)
            self.outputs[name] = (int(np.prod(shape, dtype=np.int64)), shape)

    def bound(self, fixed) -> list:
        """The layout's buffers with the arrays `fixed` (slot -> array) bound in their slots
        (`bind`). `Executable.given`'s read-only mapping of the last call again: that call's,
        bound already."""
        if self.last is None or fixed is not self.last[0] or type(fixed) is not MappingProxyType:
            arrays = list(self.arrays)
            for bid, a in fixed.items():
                arrays[bid] = self.bind(bid, a)
            self.last = (fixed, arrays)
        return self.last[1]

    def bind(self, slot: int, a: np.ndarray | None) -> np.ndarray | None:
        """Point `slot` at `a`. The native code reads and writes `a` as that buffer: it must be
        exactly that (the engine converts what users give it; this guards the boundary). An
        array it holds already was checked when it came."""
        if self.held.get(slot) is a:
            return a
        want = self.wants.get(slot)
        if want is not None and (a.dtype != want[0] or not a.flags.c_contiguous or a.size < want[1]):
            raise TypeError(f"buffer {want[2]} needs {want[1]} contiguous {want[0]} elements, got {a.dtype} {a.shape}")
        address = 0 if a is None else a.ctypes.data
        places = self.places.get(slot)
        if places is None:
            places = self.places[slot] = np.flatnonzero(self.arguments == slot)
        self.table[slot] = address
        self.args[places] = address
        self.held[slot] = a
        return a


class UpdateCall:
    """The optimizer's update compiled alone (a split engine's second call): the step module
    of an empty program with the update after it (driver.py), so its code is the code the
    single call runs. Its arrays are the engine's flat arrays, which never move, so the
    pointer table is built once."""

    def __init__(self, update: KernelProgram, arrays: list):
        def build():
            built = build_module(KernelProgram(), "dlc_update", update=update)
            return built.module, built.arguments

        self.driver = TieredDriver(("dlc_update", update), build, "dlc_update")
        table = np.array([0 if a is None else a.ctypes.data for a in arrays], np.uint64)
        self.args = table[np.array(self.driver.extra, np.intp)]
        self.dims = (ctypes.c_int64 * 1)(0)  # the fault flag, no sizes: an empty program has no checks

    def __call__(self):
        self.driver.run(self.args.ctypes.data, ctypes.addressof(self.dims) + ctypes.sizeof(ctypes.c_int64), threads())


class NativeEngine:
    """An `Engine` (runtime/engines/protocol.py) on compiled code."""

    name = "native"
    world = None  # one process: a data-parallel run wraps the engine (DataParallel)

    def __init__(
        self,
        train_model: Model,
        eval_model: Model,
        optimizer: Optimizer | None = None,
        trainable: list | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        clip=None,
        profile=False,
        split=False,
        check_numerics=False,
        precision: str = "f32",
        buckets: int = 0,
        shard: tuple | None = None,
        int8: dict | None = None,
    ):
        """`split`: the gradients and the update are two calls (`gradients`, `apply_update`), so that
        a data-parallel run (runtime/engines/distributed.py) can average the gradients between them;
        with `buckets` (bytes), one call again, which hands each bucket of gradients to
        `allreduce` (set by the run: `start(gradients)`, then `finish(loss and metrics)`) as
        soon as the backward pass has finished it, and runs the update once `finish` has returned
        (compiler/native/buckets.py): the allreduce overlaps the backward pass.
        `check_numerics`: the train step tests each kernel's values and stops at the first one
        not finite, which the reference evaluation of the step traces to its origin
        (runtime/engines/numerics.py). `precision`: of the operands of every matmul and
        convolution ("bf16": rounded to bfloat16, summed in float32); parameters, optimizer
        state and the update stay float32. `shard`: (this rank, the ranks) of a run with
        `shard_optimizer = true`: the engine's update (always its own call) runs on this
        rank's share of the flat trained parameters (`shards`, contiguous ranges of them),
        reading the share's gradient from the start of the gradient array (where MPI's
        in-place reduce-scatter leaves it), and it holds that share's optimizer state only
        (runtime/engines/distributed.py). `int8`: the quantization (QuantizedProduct by
        product name) whose integer products its evaluation and prediction compute in int8
        (docs/quantization.md, "Engines")."""
        self.optimizer, self.l1, self.l2, self.clip = optimizer, l1, l2, clip
        self.precision = precision
        self.int8 = int8  # its evaluation and prediction's integer products (docs/quantization.md)
        self.profiling = profile  # the train step's and the prediction's builds count cycles (`dlc bench`)
        self.trainable = list(trainable or [])
        self.params_info = {p.name: p for p in train_model.params}
        self.train_exe = self.update_call = self._hvp = None
        self.train_graph = train_model.graph
        self.model = train_model  # where a refusal of memory points
        self.replicas = None  # replica_mean of a data-parallel run (runtime/engines/distributed.py)
        self.allreduce = None  # the gradient buckets' allreduce of a data-parallel run (same)
        if optimizer is not None:
            slots = len(optimizer.slots())
            budget.require_model(train_model, self.trainable, slots)  # before anything is allocated
            step = train_step(train_model.graph)
            size = {p.name: int(numel(p.type.shape)) for p in train_model.params}
            self.n_trained = sum(size[n] for n in self.trainable)
            self.shards = optimizer_shards(self.n_trained, shard[1]) if shard else [(0, self.n_trained)]
            self.shard = self.shards[shard[0]] if shard else self.shards[0]
            self.sharded = shard is not None
            self.flat = np.zeros(max(sum(size.values()), 1), np.float32)
            self.grads = np.zeros(max(self.n_trained, 1), np.float32)
            self.state = {s: np.zeros(max(self.shard[1] - self.shard[0], 1), np.float32) for s in optimizer.slots()}
            resident = {
                "parameters": self.flat.nbytes,
                "gradients": self.grads.nbytes,
                "optimizer state": sum(a.nbytes for a in self.state.values()),
            }
            # the trained parameters group by group, so that each parameter group is one range of the flat
            # arrays, whose update tells an element's group from its index; a bucketed step orders them by bucket
            bucketed = split and buckets > 0 and not shard
            trained = self.trainable if bucketed else sorted(self.trainable, key=optimizer.group_number)
            starts = (
                None
                if bucketed or len(optimizer.groups) == 1
                else tuple(
                    sum(size[n] for n in trained if optimizer.group_number(n) < g) - self.shard[0]
                    for g in range(1, len(optimizer.groups))
                )
            )
            update = self._update_program(starts)
            self.fused_update = update is not None and not shard and (not split or buckets > 0)
            self.train_exe = Executable(
                step,
                model=train_model,
                update=update if self.fused_update else None,
                profile=profile,
                resident=resident,
                check_numerics=check_numerics,
                precision=precision,
                hosts={
                    "replica_mean": self._replica_mean,
                    BUCKET: self._bucket_final,
                    REDUCED: self._gradients_reduced,
                },
                buckets=(buckets, self.trainable) if split and self.fused_update else None,
            )
            self.update_call = (
                UpdateCall(update, self.update_arrays) if update is not None and not self.fused_update else None
            )
            # the flat arrays: the trained parameters (in bucket order, each bucket one range), then the others
            order = [n for bucket in self.train_exe.buckets or [trained] for n in bucket] + [
                n for n in size if n not in self.trainable
            ]
            self.offsets, at = {}, 0
            for name in order:
                self.offsets[name], at = at, at + size[name]
            # the first offset of each bucket -> its end
            self.bucket_ends = {self.offsets[b[0]]: self.offsets[b[-1]] + size[b[-1]] for b in self.train_exe.buckets}
            if self.group is not None:  # each element's parameter group, written range by range
                for name in self.trainable:
                    first, last = self._share(name)
                    if first < last:
                        self.group[first:last] = optimizer.group_number(name)
            self.adopted = None
        self.eval_model = eval_model
        self._eval, self._predict = None, {}  # the predictions by their way of packing weights (`_prediction`)
        if optimizer is None:  # an inference engine: fail now, not at the first batch, if it cannot compile
            lower(eval_model.graph, precision)

    def _replica_mean(self, values: np.ndarray):
        """replica_mean's host call: `values` averaged over the ranks in place (the identity
        in one process, where the graph has no replica_mean unless built for ranks)."""
        if self.replicas is not None:
            self.replicas(values)

    def _bucket_final(self, first: np.ndarray):
        """A bucket's host call (compiler/native/buckets.py): `first` is its first gradient,
        within the flat gradient array, which holds the bucket from there on."""
        if self.allreduce is not None:
            start = (first.ctypes.data - self.grads.ctypes.data) // self.grads.itemsize
            self.allreduce.start(self.grads[start : self.bucket_ends[start]])

    def _gradients_reduced(self, _):
        """The host call before the update: every bucket's allreduce is done. The step's loss
        and metrics, computed by then, are handed over too: their allreduce can go with the
        gradients'."""
        if self.allreduce is not None:
            self.allreduce.finish(self._values(self.train_exe.arrays))

    def finish_compiling(self):
        """Wait for the O3 code of every program compiled so far (runtime/engines/tiers.py): what
        runs next is the code a long run runs (a benchmark times it)."""
        for program in (self.train_exe, self.update_call, self._eval, *self._predict.values(), self._hvp):
            if program is not None:
                program.driver.finish()

    def train_memory(self) -> dict:
        """Bytes by part (runtime/engines/budget.py PARTS) that training holds at the batch shape it
        last laid out: parameters, gradients, optimizer state, and the step's activations
        (the arena its temporaries share and the buffers outside it)."""
        return list(self.train_exe.memory.values())[-1]

    @property
    def eval_exe(self) -> Executable:
        if self._eval is None:
            self._eval = Executable(
                self.eval_model.graph, precision=self.precision, int8=self.int8, model=self.eval_model, forward=True
            )
        return self._eval

    @property
    def predict_exe(self) -> Executable:
        """The prediction of a model's Parameters (runtime/engines/parameters.py): its weights
        packed once per version, as a built library's are packed once per change."""
        return self._prediction("once")

    def _prediction(self, pack_weights: str) -> Executable:
        """The prediction whose weights are packed as `pack_weights` says (PACK_WEIGHTS): "once"
        for Parameters, whose version says when they change; "each call" for a plain dict,
        whose arrays may have changed in place before any call, packing only what a GEMM
        would pack anyway (compiler/native/__init__.py)."""
        if pack_weights not in self._predict:
            self.eval_model.require_outputs("to predict")
            self._predict[pack_weights] = Executable(
                predict_graph(self.eval_model),
                profile=self.profiling,
                precision=self.precision,
                pack_weights=pack_weights,
                int8=self.int8,
                model=self.eval_model,
            )
        return self._predict[pack_weights]

    # -- the optimizer --
    def _update_program(self, starts: tuple | None) -> KernelProgram | None:
        """The optimizer's update graph over the flat arrays, lowered to update them in
        place; the arrays behind its buffers (`update_arrays`) and its per-step scalars,
        one f64 each in `scalars` (fed by `_set_scalars`). None without trained parameters.
        `starts`: where parameter groups 1, 2, ... begin in this rank's share, when they lie
        one after another; else, with groups, each element's group is an array (`group`)."""
        self.update_arrays, self.scalars, self.scalar_names = [], np.zeros(0), []
        lo, hi = self.shard
        self.group = None
        if lo == hi or self.optimizer.full_batch:  # nothing to update here; L-BFGS, Newton: no update graph
            return None
        prog = lower_update(self.optimizer.graph(hi - lo, self.l1, self.l2, self.clip, starts=starts))
        # a share's gradient is read from the start of the gradient array, where an in-place reduce-scatter leaves it
        arrays = {"param": self.flat[lo:hi], "grad": self.grads[: hi - lo], **self.state}
        if GROUP in prog.inputs:
            self.group = arrays[GROUP] = np.zeros(hi - lo, np.int32)  # set with the offsets
        self.scalar_names = [name for name in prog.inputs if name not in arrays]
        self.scalars = np.zeros(len(self.scalar_names), np.float64)
        arrays.update({name: self.scalars[k : k + 1] for k, name in enumerate(self.scalar_names)})
        used = touched(prog)
        for b in prog.buffers:
            if b.id not in used:
                self.update_arrays.append(None)
            elif b.role == "input":
                self.update_arrays.append(arrays[b.name])
            elif b.role == "const":
                self.update_arrays.append(np.ascontiguousarray(b.data))
            else:  # what the update computes on the way: the gradient's norm
                self.update_arrays.append(np.zeros(max(1, int(b.size)), DTYPES[b.dtype]))
        return prog

    def _set_scalars(self, lr: float, step: int):
        values = self.optimizer.step_scalars(lr, step)
        self.scalars[:] = [values[name] for name in self.scalar_names]

    def _adopt(self, params: dict, opt_state: dict):
        """Move parameters and optimizer state into the flat arrays (the dicts then hold
        views of them, so checkpoints and the trainer see every update)."""
        require_writable(params, "a train step")
        if self.adopted == (id(params), id(opt_state)) and all(params[n].base is self.flat for n in self.offsets):
            return
        for name, off in self.offsets.items():
            size = int(numel(self.params_info[name].type.shape))
            view = self.flat[off : off + size].reshape(params[name].shape)
            view[...] = params[name]
            params[name] = view
        lo = self.shard[0]
        for name in (n for n in self.trainable if n in opt_state):  # a sharded engine's, once: then cleared
            off, size = self.offsets[name], int(numel(self.params_info[name].type.shape))
            first, last = self._share(name)
            for slot, flat in self.state.items():
                if first < last:
                    flat[first:last] = opt_state[name][slot].ravel()[first + lo - off : last + lo - off]
                if not self.sharded:  # the run's state becomes a view of the engine's
                    opt_state[name][slot] = flat[off : off + size].reshape(self.params_info[name].type.shape)
        if self.sharded:  # the whole state is given up: a checkpoint gathers the shares (DataParallel.whole_state)
            opt_state.clear()
        self.adopted = (id(params), id(opt_state))
        budget.release_freed()  # the arrays they were given in, unless the caller keeps them

    def _share(self, name: str) -> tuple:
        """(first, last): where trained parameter `name`'s part in this rank's share lies in the
        share's arrays (the optimizer state, the groups); first >= last when it has none."""
        lo, hi = self.shard
        off = self.offsets[name]
        return max(off, lo) - lo, min(off + int(numel(self.params_info[name].type.shape)), hi) - lo

    def _fixed(self, exe: Executable, params: dict, grads: bool) -> dict:
        fixed = exe.given(params)
        if grads:
            fixed = dict(fixed)
            for name in self.trainable:
                bid = exe.program.outputs[f"grad:{name}"]
                off, size = self.offsets[name], int(numel(self.params_info[name].type.shape))
                fixed[bid] = self.grads[off : off + size]
        return fixed

    # -- the engine interface --
    def train_step(self, params: dict, opt_state: dict, batch: dict, lr: float, step: int, key: np.ndarray) -> dict:
        if self.optimizer.full_batch:  # its evaluations call the train step, compiled without an update
            return self.optimizer.step(self, params, opt_state, batch, lr, key)
        self._adopt(params, opt_state)
        self._set_scalars(lr, step)
        return self._step(params, batch, key, extra=self.update_arrays)

    def gradients(self, params: dict, opt_state: dict, batch: dict, key: np.ndarray) -> tuple[dict, np.ndarray]:
        """A split engine's first half of a step: (the loss and metrics, the flat gradient of
        the trained parameters, which `apply_update` reads; the caller may change it in place)."""
        if self.fused_update:  # its step would apply the update too: not a first half
            raise DlcError(
                "gradients() needs an engine built with split=True and no buckets: this one's step applies the update"
            )
        self._adopt(params, opt_state)
        return self._step(params, batch, key), self.grads

    def apply_update(self, params: dict, opt_state: dict, grads: np.ndarray, lr: float, step: int):
        """A split engine's second half of a step: the optimizer's update from `grads` (the
        array `gradients` gave)."""
        assert grads is self.grads, "the update reads the engine's own gradient array"
        self._adopt(params, opt_state)
        self._set_scalars(lr, step)
        if self.update_call is not None:
            self.update_call()

    def _step(self, params: dict, batch: dict, key, extra=()) -> dict:
        """Run the train step executable; the batch statistics it updates are written to `params`."""
        exe = self.train_exe
        feeds = {**batch, "rng": np.asarray(key, np.int32)}
        try:
            arrays, _ = exe.run(feeds, self._fixed(exe, params, True), extra=extra)
        except NonFiniteOutput as e:
            raise self._nonfinite(e.kernels, feeds, params) from None
        for name, bid in exe.program.outputs.items():
            if name.startswith("update:"):
                target = params[name[7:]]
                target[...] = arrays[bid][: target.size].reshape(target.shape)
        return self._values(arrays)

    def _values(self, arrays: list) -> dict:
        """The loss and metrics of a train step, from its buffers."""
        outputs = self.train_exe.program.outputs
        return _scalars(
            {name: arrays[bid][0] for name, bid in outputs.items() if not name.startswith(("update:", "grad:"))}
        )

    def hvp(self, params: dict, batch: dict, key: np.ndarray, v: np.ndarray) -> np.ndarray:
        """H v, flat over the trained parameters like v, H the Hessian of the batch's loss: the
        graph of autodiff.hvp_graph compiled once (as `dlc gradcheck --hessian` compiles it), in float32."""
        if self._hvp is None:
            self._hvp = Executable(hvp_graph(self.train_graph), model=self.model)
        exe = self._hvp
        feeds = {
            **batch,
            "rng": np.asarray(key, np.int32),
            **second_order.direction_feeds(exe.graph, self.trainable, params, v),
        }
        arrays, sizes = exe.run(feeds, exe.given(params))
        return np.concatenate([exe.output(f"hvp:{name}", arrays, sizes).ravel() for name in self.trainable])

    def _nonfinite(self, kernels: list, feeds: dict, params: dict) -> numerics.NonFinite:
        """The origin of the first non-finite value of a step, which `kernels` wrote: the
        reference evaluation of the step finds the node among theirs that made it; where
        that evaluation stays finite (it rounds differently), the last kernel is named."""
        found = numerics.locate(self.train_exe.graph, feeds, params, {v for k in kernels for v in k.nodes})
        if found is not None:
            return found
        op, span = kernels[-1].origin[0] if kernels[-1].origin else (kernels[-1].class_name, None)
        line = (span.caller or span).line if span is not None else "?"
        return numerics.NonFinite.at_user_line(
            f"the kernel of line {line}'s `{op}` wrote a value that is not finite, yet the reference evaluation of "
            "the step, which rounds differently, stays finite there",
            span,
        )

    def evaluate(self, params: dict, batch: dict) -> dict:
        exe = self.eval_exe
        arrays, _ = exe.run({**batch, "rng": NO_KEY}, self._fixed(exe, params, False))
        return _scalars(
            {
                name: arrays[bid][0]
                for name, bid in exe.program.outputs.items()
                if name == "loss" or name.startswith("metric:")
            }
        )

    def predict(self, params: dict, batch: dict) -> dict:
        versioned = isinstance(params, Parameters)
        exe = self._prediction("once" if versioned else "each call")
        arrays, sizes = exe.run(
            {**batch, "rng": NO_KEY}, self._fixed(exe, params, False), weights=params.version if versioned else None
        )
        return {name[7:]: exe.output(name, arrays, sizes) for name in exe.program.outputs}
