"""Horizontal fusion of map kernels (compiler/native/lower.py: fuse_maps) fuses only what
is legal, and keeps in registers only what no one else reads (inline_internal)."""
from dlc.compiler.native.lower import fuse_maps, inline_internal
from dlc.compiler.native.program import Affine, Const, FusedMapKernel, KernelProgram, Load, MapKernel, Op, ScanKernel

SHAPE = (4, 8)
ROWS = Affine(0, (8, 1))                  # element (i, j) of a [4, 8] buffer
SHIFTED = Affine(1, (8, 1))               # its right neighbour
CONCAT = ("concat", None)


def load(buffer, at=ROWS):
    return Load(buffer, at, "f32")


def map_(out, expr, at=ROWS, node=0, origin=(("add", None),)):
    return MapKernel(SHAPE, out, at, expr, node=node, origin=origin)


def test_a_chain_at_one_index_is_one_loop():
    kernels = [map_(1, Op("exp", (load(0),), "f32")), map_(2, Op("add", (load(1), load(0)), "f32")),
               map_(0, load(2))]          # writes back what the first member read: same index
    fused = fuse_maps(kernels)
    assert len(fused) == 1 and isinstance(fused[0], FusedMapKernel) and fused[0].maps == kernels


def test_reading_a_written_buffer_elsewhere_splits_the_loop():
    kernels = [map_(1, load(0)), map_(2, load(1, SHIFTED))]
    assert fuse_maps(kernels) == kernels


def test_other_spaces_and_other_kernels_split_the_loop():
    scan = ScanKernel(3, False, "$t0", [])
    kernels = [map_(1, load(0)), scan, map_(2, load(0)), MapKernel((4, 9), 3, ROWS, load(0))]
    assert fuse_maps(kernels) == kernels


def test_the_pieces_of_one_concat_share_a_loop():
    pieces = [map_(5, load(b), Affine(8 * b, (16, 1)), node=7, origin=(CONCAT,)) for b in (0, 1)]
    assert len(fuse_maps(pieces)) == 1


def test_a_concat_piece_and_another_writer_of_its_buffer_do_not():
    piece = map_(5, load(0), Affine(0, (16, 1)), node=7, origin=(CONCAT,))
    other = map_(5, load(1), Affine(4, (16, 1)), node=8)       # overlaps the piece's columns 4..7
    assert fuse_maps([piece, other]) == [piece, other]
    second = map_(5, load(1), Affine(8, (16, 1)), node=7, origin=(CONCAT,))
    read = map_(6, load(5, Affine(0, (16, 1))))     # no member may read a buffer several pieces write
    assert fuse_maps([piece, second, read]) == [FusedMapKernel(SHAPE, [piece, second], node=7, origin=(CONCAT,)), read]


def program(kinds: str, kernels: list) -> KernelProgram:
    """Buffers 0, 1, ... of the kinds given by letter (t: temp, i: input, o: output)."""
    p = KernelProgram()
    for letter in kinds:
        p.buffer("f32", 32, {"t": "temp", "i": "input", "o": "output"}[letter])
    p.kernels = kernels
    return p


def relu_of_a_sum():
    """b1 = x + 1, b2 = b1 > 0, b3 = select(b2, b1, 0): a layer's pre-activation and ReLU."""
    pre = map_(1, Op("add", (load(0), Const(1.0, "f32")), "f32"))
    mask = map_(2, Op("gt", (load(1), Const(0.0, "f32")), "bool"))
    relu = map_(3, Op("select", (load(2), load(1), Const(0.0, "f32")), "f32"))
    return pre, mask, relu


def test_a_value_only_later_members_read_stays_in_a_register():
    pre, mask, relu = relu_of_a_sum()
    p = program("ittt", [FusedMapKernel(SHAPE, [pre, mask, relu])])
    reader = MapKernel((4, 9), 0, ROWS, load(3))                 # the ReLU is read elsewhere, the mask too
    p.kernels += [reader, MapKernel((4, 9), 0, ROWS, load(2))]
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [2, 3]
    assert p.kernels[0].maps[1].expr == Op("select", (load(2), pre.expr, Const(0.0, "f32")), "f32")


def test_a_value_read_by_another_kernel_or_an_output_is_stored():
    pre, mask, relu = relu_of_a_sum()
    p = program("itoo", [FusedMapKernel(SHAPE, [pre, mask, relu]), MapKernel((4, 9), 0, ROWS, load(1))])
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [1, 2, 3]
    pre, mask, relu = relu_of_a_sum()
    p = program("ioto", [FusedMapKernel(SHAPE, [pre, mask, relu])])
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [1, 3]       # the mask only the ReLU reads


def test_a_value_computed_before_a_later_member_overwrites_its_input_is_stored():
    # a scan's carries: the new hidden state reads the old one, which a later copy replaces
    new = map_(1, Op("add", (load(0), Const(1.0, "f32")), "f32"))
    copy = map_(0, load(2))
    use = map_(3, load(1))
    p = program("ttto", [FusedMapKernel(SHAPE, [new, copy, use]), MapKernel((4, 9), 2, ROWS, load(0))])
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [1, 0, 3]


def test_a_library_call_read_twice_is_stored_and_read_once_inlined():
    log = map_(1, Op("log", (load(0),), "f32"))
    twice = map_(2, Op("add", (load(1), load(1)), "f32"))
    p = program("itoo", [FusedMapKernel(SHAPE, [log, twice])])
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [1, 2]
    once = map_(2, Op("neg", (load(1),), "f32"))
    p = program("itoo", [FusedMapKernel(SHAPE, [map_(1, Op("log", (load(0),), "f32")), once])])
    inline_internal(p)
    assert [m.out for m in p.kernels[0].maps] == [2]
