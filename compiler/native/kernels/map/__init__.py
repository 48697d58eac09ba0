"""Map kernels: out[i] = expr(i) over an iteration space, alone (MapKernel) or several
sharing one loop (FusedMapKernel); the lowering rules of concat and pad, whose results
maps write in pieces. The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.program import (
    Affine,
    Const,
    Kernel,
    Load,
    Op,
    contiguous,
    expr_reads,
    expr_renamed,
    render,
    row_major,
)
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class MapKernel(Kernel):
    """out[i] = expr(i) for every i in shape; out is written contiguously at `out_at`."""

    shape: tuple
    out: int
    out_at: Affine
    expr: object

    registers = frozenset()  # alone in its loop, it stores its value

    @property
    def maps(self) -> list:
        """The maps its loop computes: itself."""
        return [self]

    def map_space(self) -> tuple | None:
        return self.shape or None  # a scalar map is not worth a shared loop

    def text(self) -> list:
        return [
            f"map {render.shape(self.shape)}: b{self.out}[{self.out_at.text()}] = "
            f"{self.expr.text()}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return expr_reads(self.expr), {self.out}

    def renamed(self, names: dict) -> "MapKernel":
        return replace(self, out=names[self.out], expr=expr_renamed(self.expr, names))

    def emit(self, f):
        return emit_loop(self, f)


@dataclass
class FusedMapKernel(Kernel):
    """Map kernels over one iteration space run as one loop: every iteration does each
    member's store in order. Legal when the members touch a buffer that one of them
    writes only at the index being written (see fusion.fuse_maps). `registers`: buffers of
    members whose value only later members read, in a register: they are not stored."""

    shape: tuple
    maps: list
    registers: frozenset = frozenset()

    family = "map"  # one map loop, in `--emit fused`

    def text(self) -> list:
        return [f"fused map {render.shape(self.shape)}:"] + [
            "  " + (line.replace(": b", ": (register) b", 1) if m.out in self.registers else line)
            for m in self.maps
            for line in m.text()
        ]

    def members(self) -> list:
        return [m.accesses() for m in self.maps]

    def renamed(self, names: dict) -> "FusedMapKernel":
        # its registers are none of its buffers (accesses): where a kernel holding it (an
        # epilogue, a weight transform) did not rename them, they keep their numbers
        names = {r: r for r in self.registers} | names
        return replace(
            self, maps=[m.renamed(names) for m in self.maps], registers=frozenset(names[b] for b in self.registers)
        )

    def accesses(self) -> tuple:
        parts = self.members()
        return (
            set().union(*(r for r, _ in parts)) - self.registers,
            set().union(*(w for _, w in parts)) - self.registers,
        )

    def emit(self, f):
        return emit_loop(self, f)


def read_once(m, buf: int) -> Load | None:
    """The one load by which the map (or fused map) m reads buffer buf, where it reads buf
    at one index only and writes it nowhere (an epilogue's reading of its kernel's result,
    Kernel.with_epilogue); else None."""
    if m is None or not hasattr(m, "maps") or any(x.out == buf for x in m.maps):
        return None
    reads = {x for x in m.maps for x in x.expr.leaves() if x.read_buffer == buf}
    read = next(iter(reads)) if len(reads) == 1 else None
    return read if isinstance(read, Load) else None


def in_place(m, buf: int, at: Affine) -> tuple:
    """(where the kernel computing buf, which the epilogue m reads at `at`, should store
    it, m reading it there): the map's own output where m is one map that writes each
    value at the index it reads it at (that kernel's stores and the map's then share one
    buffer's lines, written back to memory once); else (buf, m)."""
    if isinstance(m, MapKernel) and m.out_at == at and m.expr.dtype == "f32":
        return m.out, replace(m, expr=m.expr.renamed(buf, m.out))
    return buf, m


def image_epilogue(m, buf: int, shape: tuple) -> tuple | None:
    """(where a kernel writing the image buf [N, C, H, W] (`shape`) contiguously should
    store it, m as that kernel's epilogue over [N, C, H·W]) where m is a map (or fused
    map) over the image that reads buf at the index it is stored at, in place where it
    can be (`in_place`); else None. The kernel runs m on each of its (example, channel)
    planes, or rows, once stored (ConvKernel, Winograd's output transform)."""
    if not hasattr(m, "maps") or tuple(m.shape) != tuple(shape):
        return None
    m = merged(m, 2)
    read = read_once(m, buf)
    if read is None or read.at != Affine(0, row_major((shape[0], shape[1], shape[2] * shape[3]))):
        return None
    return in_place(m, buf, read.at)


def merged(k: MapKernel | FusedMapKernel, axis: int) -> MapKernel | FusedMapKernel | None:
    """k over its space with axes `axis` and `axis + 1` as one, (i, j) -> i·n + j (n the
    latter's extent), where every affine index of it allows (the coefficient of `axis`
    n times that of the next: an image's rows and columns as one run of pixels); else None."""
    extent = k.shape[axis + 1]

    class Apart(Exception):
        pass

    def one(a: Affine) -> Affine:
        c = a.coeffs
        if c[axis] != c[axis + 1] * extent:
            raise Apart
        return Affine(a.offset, c[:axis] + c[axis + 1 :])

    shape = k.shape[:axis] + (k.shape[axis] * extent,) + k.shape[axis + 2 :]
    try:
        maps = [
            MapKernel(shape, m.out, one(m.out_at), m.expr.remap(one), node=m.node, nodes=m.nodes, origin=m.origin)
            for m in k.maps
        ]
    except Apart:
        return None
    if isinstance(k, MapKernel):
        return maps[0]
    return FusedMapKernel(shape, maps, k.registers, node=k.node, nodes=k.nodes, origin=k.origin)


def rows_merged(k: MapKernel | FusedMapKernel) -> MapKernel | FusedMapKernel:
    """k with its axes from the third on as one where every index allows (`merged`): an
    image's rows and columns one run of pixels, so that its innermost loop is long (a 7 x 7
    image's 49 pixels are three whole steps of 16 lanes and one partial, not seven partial
    steps: codegen/lanes.py). The first two axes stay, which a thread team splits."""
    from dlc.compiler.native.kernels.map.loops import loop_order

    while len(k.shape) > 3 and loop_order(k) == tuple(range(len(k.shape))):
        m = merged(k, len(k.shape) - 2)
        if m is None:
            break
        k = m
    return k


def emit_loop(k: MapKernel | FusedMapKernel, f, guard=None):
    """The loop of a map or a fused map, split along its first two axes as one on a thread
    team (a batch of one splits over its channels; on one thread when it has no axis).
    `guard(kb)`: an i1 that each thread tests first, skipping its share where it is false
    (Winograd's filters, transformed while their flag is clear: kernels/winograd)."""
    from dlc.compiler.native.kernels.map.loops import loop_order, map_loop, outer_extent

    k = rows_merged(k)

    def run(kb, first=None):
        if guard is None:
            map_loop(kb, k, f.prog, first=first)
            return
        with kb.b.if_then(guard(kb)):
            map_loop(kb, k, f.prog, first=first)

    if not k.shape:
        kb = f.serial()
        run(kb)
        return kb
    return f.team(run, outer_extent(tuple(k.shape[a] for a in loop_order(k))), numel(k.shape) * _operations(k))


def _operations(k: MapKernel | FusedMapKernel) -> int:
    """Operations per element of a map (one for a copy): its work, with the element count."""
    count = lambda e: 1 + sum(count(a) for a in e.args) if isinstance(e, Op) else 0
    return sum(1 + count(m.expr) for m in k.maps)


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("concat")
def _concat(lw, n, ins, attrs, typ):
    out = lw.place(lw.graph.outputs_of(n)[0])
    strides = out.at.coeffs
    start = 0
    for x in ins:
        at = Affine(out.at.offset + start * strides[attrs["axis"]], strides)
        lw.emit(MapKernel(x.shape, out.buffer, at, lw.use(x), node=n))
        start = start + x.shape[attrs["axis"]]
    lw.set(n, out)


@register_lowering("pad")
def _pad(lw, n, ins, attrs, typ):
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    strides = row_major(typ.shape)
    lw.emit(MapKernel(typ.shape, buf.id, Affine(0, strides), Const(0, typ.dtype), node=n))
    offset = sum((lo * s for lo, s in zip(attrs["lo"], strides)), 0)
    inner = tuple(s * (i + 1) for s, i in zip(strides, attrs["interior"]))
    lw.emit(MapKernel(ins[0].shape, buf.id, Affine(offset, inner), lw.use(ins[0]), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))
