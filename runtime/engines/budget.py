"""Memory before allocation: what training a model, or one step on a batch, needs, computed
from the shapes and checked against the memory available, so that a model or a batch that
cannot fit is refused with the numbers (and the largest batch that fits) rather than
ending in a MemoryError, or in swapping, halfway.

The memory available is DLC_MEMORY_LIMIT when it is set (bytes, or a number with a
binary unit: 512K, 800M, 1.5G, 20GiB), the most a step may need; else the kernel's
MemAvailable (/proc/meminfo), else the free pages os.sysconf reports, plus what the
step holds already (its parameters and optimizer state, allocated before its first batch);
and while a train block's `memory = 2GB` is in force (`capped`), at most that.
Training is checked before the initializer makes the parameters (require_model: the
parameters, their gradients and the optimizer state), and both engines check each new
batch shape before its buffers are allocated (require_step: those and the step's
activations). docs/native.md, "Memory".
"""

from __future__ import annotations

import ctypes
import itertools
import os
from contextlib import contextmanager
from contextvars import ContextVar

from dlc.compiler.ir.dims import Dim, concrete, derive, numel, symbols
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.summary import size_text
from dlc.compiler.frontend.syntax import size_bytes
from dlc.compiler.ir.graph import GRADIENTS, Pattern, layer_of
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.lower import lower
from dlc.compiler.ir.graph import ITEMSIZE
from dlc.compiler.native.memory import intervals, linearize
from dlc.compiler.native.program import BUFFER_ITEMSIZE
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize

PARTS = ("parameters", "gradients", "optimizer state", "activations", "inputs")


def release_freed():
    """Give the heap pages of freed arrays back to the system (glibc's malloc_trim; elsewhere
    nothing). glibc serves an array below its mmap threshold, which rises to 32 MB as large
    arrays are freed, from its heap, and keeps the pages when the array is freed: GPT-2's
    initial parameters, once copied into the native engine's flat array, left 130 MB resident."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc
        return
    trim(0)


def limit() -> int | None:
    """DLC_MEMORY_LIMIT in bytes, or None when it is not set."""
    text = os.environ.get("DLC_MEMORY_LIMIT", "").strip()
    if not text:
        return None
    nbytes = size_bytes(text)
    if nbytes is None:
        raise DlcError(f"DLC_MEMORY_LIMIT must be a size such as 512M or 20G, got '{text}'")
    return nbytes


# the train block's `memory = 2GB` while its run lasts (Trainer.run): (bytes, the setting's span)
_SETTING: ContextVar = ContextVar("memory setting", default=None)


@contextmanager
def capped(nbytes: int | None, span=None):
    """Within: what training may need is at most `nbytes` (None: no more than otherwise)."""
    token = _SETTING.set((nbytes, span)) if nbytes is not None else None
    try:
        yield
    finally:
        if token is not None:
            _SETTING.reset(token)


def free() -> int | None:
    """Bytes the system can still give without swapping; None when it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def require(
    what: str,
    parts_at,
    sizes: dict,
    held: int = 0,
    batch: str | None = None,
    when: str = "",
    span=None,
    note: str = "",
    notes=lambda: [],
):
    """Refuse with a DlcError when the parts `parts_at(sizes)` gives (bytes by name: parameters,
    gradients, optimizer state, activations) add up to more than is available; `held` of
    those bytes are allocated already. With `batch`, the symbol of the batch size, the error
    names the largest batch that fits; `when` says when they are needed otherwise. `notes()`:
    the error's notes, worked out only when it is raised."""
    cap = limit()
    if cap is None:
        avail = free()
        cap = None if avail is None else avail + held
    available = f"{size_text(cap)} is available" if cap is not None else ""
    setting = _SETTING.get()
    if setting is not None and (cap is None or setting[0] < cap):
        cap, available, span = setting[0], f"memory = {size_text(setting[0])}", setting[1] or span
    if cap is None:
        return
    parts = parts_at(sizes)
    need = sum(parts.values())
    if need <= cap:
        return
    at = f" for batch {sizes[batch]}" if batch else when
    detail = ", ".join(f"{name} {size_text(parts[name])}" for name in PARTS if parts.get(name))
    message = f"{what} needs {size_text(need)}{at} ({detail}); {available}"
    if batch:
        fits = _largest_batch(parts_at, sizes, batch, cap)
        message += f": try batch <= {fits}" if fits else ": not even batch 1 fits"
    error = DlcError.at_user_line(message + note, span)
    error.notes += notes()
    raise error


def _largest_batch(parts_at, sizes: dict, batch: str, cap: int) -> int:
    """The largest batch below sizes[batch] whose need fits in `cap` (0: none); the need
    grows with the batch."""
    fits = lambda b: sum(parts_at(sizes | {batch: b}).values()) <= cap
    lo, hi = 0, sizes[batch] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def batch_symbol(graph) -> str | None:
    """The batch size's symbol: the one symbol that leads the graph's inputs (x: [B, T], y: [B]),
    or None."""
    leads = set()
    for n in graph.nodes_with("input"):
        shape = graph.types(n)[0].shape
        if shape and isinstance(shape[0], Dim) and len(shape[0].symbols()) == 1:
            (sym,) = shape[0].symbols()
            if shape[0] == Dim.sym(sym):
                leads.add(sym)
    return leads.pop() if len(leads) == 1 else None


def tensor_bytes(typ, sizes: dict | None = None) -> int:
    return int(numel([concrete(d, sizes or {}) for d in typ.shape])) * ITEMSIZE[typ.dtype]


def param_parts(p, trained: bool, slots: int) -> dict:
    """Bytes of one parameter, of its gradient when it is trained and of its optimizer state
    (`slots` values per trained parameter)."""
    n = tensor_bytes(p.type)
    return {"parameters": n, "gradients": n if trained else 0, "optimizer state": slots * n if trained else 0}


def model_parts(model, trainable: list, slots: int) -> dict:
    """Bytes of a model's parameters, the gradients of the trained ones (`trainable`) and
    the optimizer state (`slots` values per trained parameter)."""
    parts = [param_parts(p, p.name in set(trainable), slots) for p in model.params]
    return {name: sum(part[name] for part in parts) for name in PARTS[:3]}


def require_model(model, trainable: list, slots: int):
    """Refuse to train a model whose parameters, gradients and optimizer state cannot fit,
    at its largest parameter's declaration: before the initializer allocates them."""
    if not model.params:
        return
    largest = max(model.params, key=lambda p: tensor_bytes(p.type))
    note = (
        f": its largest parameter, {largest.name}: {largest.type}, alone takes {size_text(tensor_bytes(largest.type))}"
    )
    require(
        f"training model {model.name}",
        lambda _: model_parts(model, trainable, slots),
        {},
        when=" before its first batch",
        span=largest.span,
        note=note,
    )


def require_step(what: str, graph, sizes: dict, resident: dict, step_parts, model=None):
    """Refuse a step of `graph` at these sizes that cannot fit: `resident` (bytes by part)
    is allocated already, `step_parts(sizes)` the step's own (activations). The refusal is at
    the declaration of `model`, the model the graph is of, with a note at each of the layers
    whose values take the most (`heaviest_layers`)."""

    def notes() -> list:
        return [
            (f"layer {name}: {share:.0%} of the values the step computes", place)
            for name, place, share in heaviest_layers(graph, sizes, model)
        ]

    require(
        what,
        lambda s: resident | step_parts(s),
        sizes,
        held=sum(resident.values()),
        batch=batch_symbol(graph),
        span=model and model.span,
        notes=notes,
    )


HEAVIEST = 3  # the layers a refusal names


def heaviest_layers(graph, sizes: dict, model=None) -> list:
    """(name, place, share) of the HEAVIEST layers of the model (the bindings of its
    statements, graph.layer_of's first name) whose values in `graph` take the most bytes at
    `sizes`, a gradient's counted with its layer, the most first; the share is of the bytes
    of every value the graph computes (the engines' inputs and parameters aside), which the
    reference interpreter holds at most (interpreter_parts) and the native engine's arena
    holds a part of: a ranking, not the bytes either engine allocates. The place is the
    layer's binding in `model`, else the user's line of its first node."""
    nbytes, places, total = {}, {name: span for name, _, span in model.bindings} if model is not None else {}, 0
    for n in graph.nx.nodes:
        if PRIMITIVES[graph.op(n)].given:
            continue
        made = sum(tensor_bytes(t, sizes) for t in graph.types(n))
        total += made
        layer = layer_of(graph, n).removeprefix(GRADIENTS).removeprefix(".").partition(".")[0]
        if layer:
            nbytes[layer] = nbytes.get(layer, 0) + made
            span = graph.nx.nodes[n]["span"]
            places.setdefault(layer, span and (span.caller or span))
    heaviest = sorted(nbytes, key=lambda name: -nbytes[name])[:HEAVIEST]
    return [(name, places[name], nbytes[name] / total) for name in heaviest]


def interpreter_parts(graph, sizes: dict) -> dict:
    """The reference interpreter's rough need for one run of `graph`, an upper bound: every
    value it computes (of a scan's body, one step's), the gradients it outputs among them
    (it drops each value that is not an output after its last reader)."""
    grads = {t.key() for name, t in graph.outputs.items() if name.startswith("grad:")}
    parts = {"gradients": 0, "activations": 0}
    for n in graph.nx.nodes:
        op = graph.op(n)
        if PRIMITIVES[op].given:  # the caller's arrays
            continue
        for j, typ in enumerate(graph.types(n)):
            parts["gradients" if (n, j) in grads else "activations"] += tensor_bytes(typ, sizes)
        if op == "scan":
            parts["activations"] += sum(interpreter_parts(graph.attrs(n)["body"], sizes).values())
    return parts


# ---- work before running ------------------------------------------------------------------------
WORK_BUDGET_S = 60.0
# Deliberately low rates, per thread, of what dlc's kernels reach on an AVX2 core (measured:
# the packed GEMM 40-50 GFLOP/s, a fused map or reduction 6·10⁹ elements/s), so that the
# estimate errs long: contractions (matmul, convolution, attention) and everything else.
CONTRACTION_RATE = 20e9
ELEMENT_RATE = 4e9
CONTRACTIONS = (Pattern.CONTRACTION, Pattern.WINDOW, Pattern.OPAQUE)


def work_limit() -> float | None:
    """DLC_WORK_BUDGET in seconds (WORK_BUDGET_S when unset); None when it is `none`."""
    text = os.environ.get("DLC_WORK_BUDGET", "").strip().lower()
    if not text:
        return WORK_BUDGET_S
    if text == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DlcError(f"DLC_WORK_BUDGET must be a number of seconds or 'none', got '{text}'")
    return seconds


def work_seconds(graph, sizes: dict, threads: int) -> list:
    """(estimated seconds, node) of each node of `graph` that computes, at `sizes` on `threads`
    threads; a scan's is its body's times its length."""
    out = []
    for n in graph.nx.nodes:
        op = graph.op(n)
        if op == "scan":
            attrs = graph.attrs(n)
            body = sum(s for s, _ in work_seconds(attrs["body"], sizes, threads))
            out.append((float(concrete(attrs["length"], sizes)) * body, n))
            continue
        count = graph.node_flops(n)
        if count:
            rate = CONTRACTION_RATE if PRIMITIVES[op].pattern in CONTRACTIONS else ELEMENT_RATE
            out.append((float(concrete(count, sizes)) / (rate * threads), n))
    return out


def require_work(what: str, graph, sizes: dict, threads: int):
    """Refuse a call of `graph` at these sizes whose estimated time is beyond the work
    budget, at the line of the node that takes most of it."""
    cap = work_limit()
    if cap is None:
        return
    parts = work_seconds(graph, sizes, threads)
    total = sum(s for s, _ in parts)
    if total <= cap:
        return
    seconds, node = max(parts, key=lambda p: p[0])
    operands = graph.inputs(node)
    heaviest = graph.op(node) + (f" of {operands[0].type}" if operands and graph.op(node) != "scan" else "")
    raise DlcError(
        f"{what} would take about {duration_text(total)} at the rates dlc's kernels reach on "
        f"{threads} thread{'s' if threads > 1 else ''} ({duration_text(seconds)} of it in this "
        f"{heaviest}); the work budget is {duration_text(cap)} a call: set DLC_WORK_BUDGET "
        "(seconds, or none) or pass --no-budget to run it anyway",
        graph.nx.nodes[node].get("span"),
    )


def duration_text(seconds: float) -> str:
    """12.3 s, 4.5 min, 7.8 h, 1.2e+03 days."""
    for unit, scale in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


# ---- a step's activations --------------------------------------------------------------------------
def own_buffers(program, fixed) -> list:
    """The buffers a layout of a kernel program allocates besides its arena: neither
    temporaries nor the engine's own arrays (`fixed`, buffer ids: parameters, gradients):
    inputs, outputs, constants."""
    return [b for b in program.buffers if b.role != "temp" and b.id not in fixed]


def buffer_bytes(b, sizes: dict) -> int:
    return max(1, int(concrete(b.size, sizes))) * BUFFER_ITEMSIZE[b.dtype]


# ---- the peak of training, before running (dlc summary --memory) -------------------------------------
def memory_sizes(model, batch: int, given: dict) -> dict:
    """The sizes the peak of training is located at: the batch symbol at `batch`, the other
    dims of the inputs at 32, unless `given` sizes them (dlc summary --memory, the language
    server's hover)."""
    lead = batch_symbol(model.graph)
    dims = sorted({s for i in model.inputs for s in symbols(i.type.shape)} - {lead})
    return ({lead: batch} if lead else {}) | {s: 32 for s in dims} | given


def training_memory(model, trainable: list, slots: int, sizes: dict) -> dict:
    """What the native engine holds to train `model`, at its peak, by layer (graph.layer_of; a
    gradient's with its forward layer, "" for none) and part (PARTS): the parameters, gradients
    and optimizer state as model_parts counts them, and the activations as polynomials in the
    dims: the buffers outside the arena (own_buffers) and the temporaries live at the train
    step's kernel where, at `sizes`, the most bytes are live. That is the arena's lower
    bound; memory.py packs the arena a little above it (docs/native.md, "Memory planning")."""
    graph = optimize(train_step(model.graph))
    program = lower(graph)
    fixed = set(program.params.values()) | {
        program.outputs[f"grad:{n}"] for n in trainable if f"grad:{n}" in program.outputs
    }
    live = intervals(program)
    sizes = derive(
        {s: 0 for s in program.symbols if s.startswith("$")} | sizes, program.symbols
    )  # the steps of scans; ceil(T/k)
    kept = own_buffers(program, fixed) + [program.buffers[bid] for bid in _peak(program, live, sizes)]
    # a buffer belongs to the layer of the top-level kernel that first writes it (else reads it)
    made, read = {}, {}
    steps = linearize(program.kernels)
    for _, k, (top, _) in steps:
        reads, writes = k.accesses()
        for bid in writes:
            made.setdefault(bid, steps[top][1])
        for bid in reads:
            read.setdefault(bid, steps[top][1])

    def layer(bid) -> str:
        kernel = made.get(bid, read.get(bid)) if program.buffers[bid].role != "input" else None
        name = layer_of(graph, kernel.node) if kernel is not None and kernel.node in graph.nx else ""
        return "" if name == GRADIENTS else name.removeprefix(GRADIENTS + ".")

    layers: dict = {}
    for b in kept:
        part = layers.setdefault(layer(b.id), dict.fromkeys(PARTS, 0))
        part["activations"] = part["activations"] + b.size * BUFFER_ITEMSIZE[b.dtype]
    for p in model.params:
        part = layers.setdefault(p.name.rpartition(".")[0], dict.fromkeys(PARTS, 0))
        for name, n in param_parts(p, p.name in set(trainable), slots).items():
            part[name] += n
    return layers


def _peak(program, live: dict, sizes: dict) -> list:
    """The temporaries live at the position (memory.linearize) where the most of their bytes
    are, at `sizes`."""
    temps = [b.id for b in program.buffers if b.role == "temp" and b.id in live]
    if not temps:
        return []
    first, last = ([live[bid][i] for bid in temps] for i in (0, 1))
    # Python's integers: at a batch a summary is asked about, the bytes may pass 2**63
    change = [0] * (max(last) + 2)
    for bid, lo, hi in zip(temps, first, last):
        nbytes = buffer_bytes(program.buffers[bid], sizes)
        change[lo] += nbytes
        change[hi + 1] -= nbytes
    held = list(itertools.accumulate(change))
    at = held.index(max(held))
    return [bid for bid, lo, hi in zip(temps, first, last) if lo <= at <= hi]
