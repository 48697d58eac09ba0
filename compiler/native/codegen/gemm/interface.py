"""What a caller of the GEMM routines needs: their names (`gemm_name`, `pack_name`) and C
signatures (`gemm_type`, PACK_TYPE, the epilogue's EPILOGUE_TYPE, the order of a `windows`
routine's geometry), which the kernels that call them (kernels/gemm, kernels/attention,
kernels/conv) and the routines themselves (routine.py) share."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.types import i8, i32, i64
from dlc.compiler.native.codegen.gemm.ir_helpers import fptr


def gemm_name(
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    packed: bool = False,
    bf16: bool = False,
    epilogue: bool = False,
    windows: bool = False,
    packed_a: bool = False,
) -> str:
    return (
        f"dlc_{'b' if bf16 else 's'}gemm_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"
        f"{'_acc' if accumulate else ''}{'_packed' if packed else ''}{'_packed_a' if packed_a else ''}"
        f"{'_windows' if windows else ''}{'_epi' if epilogue else ''}"
    )


def pack_name(trans: bool, bf16: bool = False, which: str = "b") -> str:
    return f"dlc_{'b' if bf16 else 's'}gemm_pack_{'a_' if which == 'a' else ''}{'t' if trans else 'n'}"


def gemm_type(packed: bool = False, epilogue: bool = False, windows: bool = False) -> ir.FunctionType:
    """The C signature of a GEMM routine (module docstring); a `packed` one takes op(B)
    packed by `add_pack` as one more pointer (a `packed_a` one op(A), the same way); a
    `windows` one the geometry of the image its B is (WINDOW_GEOMETRY); an `epilogue` one
    then its epilogue (EPILOGUE_TYPE) and the two pointers the routine passes it."""
    return ir.FunctionType(
        i32,
        [i64] * 3
        + [fptr, i64, i64] * 3
        + [i64, i64]
        + [fptr] * packed
        + [i64.as_pointer()] * windows
        + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES] * epilogue,
    )


# once the block C[b][r0:r1, c0:c1] holds its final sums (each element once, from the thread
# that computed it), to compute what is made of them in place (a step module's kernel:
# kernels/gemm); slots and sizes are the routine's last two arguments, passed on.
SLOTS, SIZES = i8.as_pointer().as_pointer(), i64.as_pointer()
EPILOGUE_TYPE = ir.FunctionType(ir.VoidType(), [SLOTS, SIZES] + [i64] * 5)


PACK_TYPE = ir.FunctionType(ir.VoidType(), [i64, i64, fptr, i64, fptr])

# The geometry a `windows` routine reads its op(B) by (window_packs.py), an i64 array in
# this order: the output's rows and columns, the filter's, the image's; X's strides
# along n, c, h and w; the convolution's stride, padding and dilation along h and w.
WINDOW_GEOMETRY = (
    "Ho",
    "Wo",
    "kh",
    "kw",
    "H",
    "W",
    "sn",
    "sc",
    "sh",
    "sw",
    "stride_h",
    "stride_w",
    "pad_h",
    "pad_w",
    "dil_h",
    "dil_w",
)
