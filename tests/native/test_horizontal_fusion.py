"""Horizontal fusion of map kernels (compiler/native/fusion.py: fuse_maps) fuses only what is legal."""
from dlc.compiler.native.fusion import fuse_maps
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.program import Affine, Load, Op

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
