"""Memory before allocation: what training a model, or one step on a batch, needs, computed
from the shapes and checked against the memory available, so that a model or a batch that
cannot fit is refused with the numbers (and the largest batch that fits) rather than
ending in a MemoryError, or in swapping, halfway.

The memory available is DLC_MEMORY_LIMIT when it is set (bytes, or a number with a
binary unit: 512K, 800M, 1.5G, 20GiB), the most a step may need; else the kernel's
MemAvailable (/proc/meminfo), else the free pages os.sysconf reports, plus what the
step holds already (its parameters and optimizer state, allocated before its first batch).
Training is checked before the initializer makes the parameters (require_model: the
parameters, their gradients and the optimizer state), and both engines check each new
batch shape before its buffers are allocated (require_step: those and the step's
activations). docs/native.md, "Memory".
"""
from __future__ import annotations

import os
import re

from dlc.compiler.ir.dims import Dim, concrete, numel
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.summary import size_text
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.memory import ITEMSIZE

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
PARTS = ("parameters", "gradients", "optimizer state", "activations")


def limit() -> int | None:
    """DLC_MEMORY_LIMIT in bytes, or None when it is not set."""
    text = os.environ.get("DLC_MEMORY_LIMIT", "").strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if m is None:
        raise DlcError(f"DLC_MEMORY_LIMIT must be a size such as 512M or 20G, got '{text}'")
    return int(float(m[1]) * UNITS[m[2].upper()])


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


def require(what: str, parts_at, sizes: dict, held: int = 0, batch: str | None = None, when: str = "",
            span=None, note: str = ""):
    """Refuse with a DlcError when the parts `parts_at(sizes)` gives (bytes by name: parameters,
    gradients, optimizer state, activations) add up to more than is available; `held` of
    those bytes are allocated already. With `batch`, the symbol of the batch size, the error
    names the largest batch that fits; `when` says when they are needed otherwise."""
    cap = limit()
    if cap is None:
        avail = free()
        if avail is None:
            return
        cap = avail + held
    parts = parts_at(sizes)
    need = sum(parts.values())
    if need <= cap:
        return
    at = f" for batch {sizes[batch]}" if batch else when
    detail = ", ".join(f"{name} {size_text(parts[name])}" for name in PARTS if parts.get(name))
    message = f"{what} needs {size_text(need)}{at} ({detail}); {size_text(cap)} is available"
    if batch:
        fits = _largest_batch(parts_at, sizes, batch, cap)
        message += f": try batch <= {fits}" if fits else ": not even batch 1 fits"
    raise DlcError(message + note, span)


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


def model_parts(model, trainable: list, slots: int) -> dict:
    """Bytes of a model's parameters, the gradients of the trained ones (`trainable`) and
    the optimizer state (`slots` values per trained parameter)."""
    trained = sum(tensor_bytes(p.type) for p in model.params if p.name in set(trainable))
    return {"parameters": sum(tensor_bytes(p.type) for p in model.params), "gradients": trained,
            "optimizer state": slots * trained}


def require_model(model, trainable: list, slots: int):
    """Refuse to train a model whose parameters, gradients and optimizer state cannot fit,
    at its largest parameter's declaration: before the initializer allocates them."""
    if not model.params:
        return
    largest = max(model.params, key=lambda p: tensor_bytes(p.type))
    note = f": its largest parameter, {largest.name}: {largest.type}, alone takes {size_text(tensor_bytes(largest.type))}"
    require(f"training model {model.name}", lambda _: model_parts(model, trainable, slots), {},
            when=" before its first batch", span=largest.span, note=note)


def require_step(what: str, graph, sizes: dict, resident: dict, step_parts):
    """Refuse a step of `graph` at these sizes that cannot fit: `resident` (bytes by part)
    is allocated already, `step_parts(sizes)` the step's own (activations)."""
    require(what, lambda s: resident | step_parts(s), sizes, held=sum(resident.values()),
            batch=batch_symbol(graph))


def interpreter_parts(graph, sizes: dict) -> dict:
    """The reference interpreter's rough need for one run of `graph`: it keeps every value
    it computes (of a scan's body, one step's), the gradients it outputs among them."""
    grads = {t.key() for name, t in graph.outputs.items() if name.startswith("grad:")}
    parts = {"gradients": 0, "activations": 0}
    for n in graph.g.nodes:
        op = graph.op(n)
        if PRIMITIVES[op].given:         # the caller's arrays
            continue
        for j, typ in enumerate(graph.types(n)):
            parts["gradients" if (n, j) in grads else "activations"] += tensor_bytes(typ, sizes)
        if op == "scan":
            parts["activations"] += sum(interpreter_parts(graph.attrs(n)["body"], sizes).values())
    return parts
