"""Horizontal fusion of map kernels and of sums (compiler/native/fusion.py: fuse_maps,
fuse_sums) fuses only what is legal."""

from dlc.compiler.native.fusion import fuse_maps, fuse_sums
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.program import Affine, Load, Op

SHAPE = (4, 8)
ROWS = Affine(0, (8, 1))  # element (i, j) of a [4, 8] buffer
SHIFTED = Affine(1, (8, 1))  # its right neighbour
CONCAT = ("concat", None)


def load(buffer, at=ROWS):
    return Load(buffer, at, "f32")


def map_(out, expr, at=ROWS, node=0, origin=(("add", None),)):
    return MapKernel(SHAPE, out, at, expr, node=node, origin=origin)


def test_a_chain_at_one_index_is_one_loop():
    kernels = [
        map_(1, Op("exp", (load(0),), "f32")),
        map_(2, Op("add", (load(1), load(0)), "f32")),
        map_(0, load(2)),
    ]  # writes back what the first member read: same index
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
    other = map_(5, load(1), Affine(4, (16, 1)), node=8)  # overlaps the piece's columns 4..7
    assert fuse_maps([piece, other]) == [piece, other]
    second = map_(5, load(1), Affine(8, (16, 1)), node=7, origin=(CONCAT,))
    read = map_(6, load(5, Affine(0, (16, 1))))  # no member may read a buffer several pieces write
    assert fuse_maps([piece, second, read]) == [FusedMapKernel(SHAPE, [piece, second], node=7, origin=(CONCAT,)), read]


def sum_(out, expr, shape=SHAPE, axes=(1,), op="sum"):
    return ReduceKernel(shape, axes, op, out, expr)


def test_sums_over_one_space_are_one_pass_unless_one_reads_another():
    product = Op("mul", (load(0), load(1)), "f32")
    kernels = [sum_(5, load(0)), sum_(6, product), sum_(7, Load(5, Affine(0, (1, 0)), "f32"))]
    fused = fuse_sums(kernels)
    assert len(fused) == 2 and fused[0].sums() == [(5, load(0)), (6, product)] and fused[1] is kernels[2]
    assert fused[0].accesses() == ({0, 1}, {5, 6})
    assert fused[0].text()[1] == "  and b6 <- mul(b0[8*i0 + i1], b1[8*i0 + i1])"


def test_a_sum_into_what_an_earlier_one_reads_or_writes_keeps_its_pass():
    """The fused pass starts every output first: a later sum writing b0 would clear what the
    earlier one has yet to read."""
    kernels = [sum_(5, load(0)), sum_(0, load(1))]
    assert fuse_sums(kernels) == kernels
    assert fuse_sums([sum_(5, load(0)), sum_(5, load(1))]) == [sum_(5, load(0)), sum_(5, load(1))]


def test_other_spaces_dtypes_maxima_and_sums_into_memory_keep_their_passes():
    kernels = [
        sum_(5, load(0)),
        sum_(6, load(1), axes=(0,)),  # [4, 8] over its rows: not a trailing run
        sum_(7, load(0)),
        sum_(8, load(1), op="max"),
        sum_(9, load(0), shape=(4, 9)),
        sum_(10, Load(1, ROWS, "f64"), shape=(4, 9)),
    ]  # another dtype
    assert fuse_sums(kernels) == kernels
