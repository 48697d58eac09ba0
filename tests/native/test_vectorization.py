"""Which loops LLVM vectorizes, and along which axis (compiler/native/codegen/builder.py's loop
hints, shared_loops.lane_sums): a loop whose accesses are contiguous along it runs on
vector registers, never on gathers and scatters across the loop around it."""

import re

import pytest

from dlc.runtime.cli import main


def kernel_code(path, kernel: str, capsys, precision: str = "f32") -> str:
    """The host assembly of the loop of the first kernel of `path`'s train step whose line in
    `dlc compile --emit kernels` starts with a match of the pattern `kernel`."""
    assert main(["compile", str(path), "--emit", "kernels", "--precision", precision]) == 0
    kernels = [line for line in capsys.readouterr().out.splitlines() if line and line[0] not in "# "]
    number = next(i for i, line in enumerate(kernels) if re.match(kernel, line))
    assert main(["compile", str(path), "--emit", "asm", "--precision", precision]) == 0
    asm = capsys.readouterr().out
    # the kernel's loop (its function's part a thread runs), up to the next function's label
    # (block labels start with a dot)
    return re.search(rf"^kernel{number}\.part:\n(.*?)^[^.\s]\S*:\n", asm, re.S | re.M).group(1)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_the_col2im_of_wide_rows_vectorizes_along_them(capsys, tmp_path, precision):
    """The input gradient of a 3 x 3 convolution padded 3 (past its reach: not a convolution
    of g, whose padding would be negative, so not a GEMM of g's windows, docs/native.md)
    sums its columns back into the image (an accumulation) row by row: its innermost loop,
    20 wide and contiguous, stays a loop that LLVM vectorizes along the row
    (builder.ROLLED_FROM). Fully unrolled, LLVM vectorized the loop around it across rows,
    with gathers and scatters (2.4 times as slow in ResNet-18's first stage)."""
    path = tmp_path / "col2im.dl"
    path.write_text(
        "model col2im {\n    input  x: f32[B, 32, 16, 16]\n    target y: f32[B, 32, 20, 20]\n"
        "    h = conv2d(x, 32, 3, padding = 1, bias = false) |> relu\n"
        "    loss   mse(conv2d(h, 32, 3, padding = 3, bias = false), y)\n}\n"
    )
    body = kernel_code(path, re.escape("accumulate [B, 32, 3, 3, 20, 20]"), capsys, precision)
    assert "vgather" not in body and "vscatter" not in body
    assert re.search(r"\bvaddps\s[^\n]*%[yz]mm", body), body[:2000]


def test_a_sum_of_an_expression_adds_its_lanes_as_vectors(capsys, tmp_path):
    """A reduction adds element i of a row into partial sum i mod 16 (docs/native.md, "The
    same bits on any machine"), its 16 partial sums an array that a loop over the lanes
    adds to: LLVM vectorizes that loop, the whole expression with it. Written out lane by
    lane, batchnorm's sum of squares ran its products 4 lanes at a time (half its speed)."""
    path = tmp_path / "bn.dl"
    path.write_text(
        "model bn {\n    input  x: f32[B, 32, 16, 16]\n    target y: f32[B, 32, 16, 16]\n"
        "    loss   mse(x |> batchnorm, y)\n}\n"
    )
    body = kernel_code(
        path, re.escape("reduce sum over axes [0, 2, 3] of [B, 32, 16, 16]: ") + r"b\d+ <- mul\(sub\(", capsys
    )
    assert re.search(r"\bvmulps\s[^\n]*%[yz]mm", body) and re.search(r"\bvsubps\s[^\n]*%[yz]mm", body), body[:2000]


def test_an_accumulation_into_strided_memory_never_scatters(capsys, tmp_path):
    """A stride-2 depthwise convolution's input gradient adds each tap into every other
    element of a row: LLVM vectorized that read-modify-write with gathers and scatters,
    slower than scalar code (3.7 times on AMD Zen 4), so no loop of it is vectorized
    (builder.py, `scattered`)."""
    path = tmp_path / "strided.dl"
    path.write_text(
        "model strided {\n    input  x: f32[B, 96, 32, 32]\n    target y: f32[B, 96, 16, 16]\n"
        "    h = conv2d(x, 96, 1, bias = false)\n"
        "    loss   mse(conv2d(h, 96, 3, stride = 2, padding = 1, groups = 96, bias = false), y)\n}\n"
    )
    body = kernel_code(path, re.escape("accumulate [B, 96, 1, 1, 3, 3, 16, 16]"), capsys)
    assert "vgather" not in body and "vscatter" not in body, body[:2000]
