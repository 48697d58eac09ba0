"""Which loops run on vectors, and along which axis: the maps and sums dlc writes in vectors
itself at every level (compiler/native/codegen/lanes.py), and the loops LLVM vectorizes
(builder.py's loop hints): a loop whose accesses are contiguous along it runs on vector
registers, never on gathers and scatters across the loop around it."""

import re

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.codegen.jit import vector_width
from dlc.runtime.cli import main
from dlc.runtime.engines.native import Executable
from helpers.native_cases import run_native


def kernel_code(path, kernel: str, capsys, precision: str = "f32") -> str:
    """The host assembly of the loop of the first kernel of `path`'s train step whose line in
    `dlc compile --emit kernels` starts with a match of the pattern `kernel`."""
    assert main(["compile", str(path), "--emit", "kernels", "--precision", precision]) == 0
    kernels = [line for line in capsys.readouterr().out.splitlines() if line and line[0] not in "# "]
    number = next(i for i, line in enumerate(kernels) if re.match(kernel, line))
    assert main(["compile", str(path), "--emit", "asm", "--precision", precision]) == 0
    asm = capsys.readouterr().out
    # the kernel's loop (its function's part a thread runs, or the worker function LLVM inlined
    # that part into), up to the next function's label (block labels start with a dot)
    for function in (f"kernel{number}.part", f"kernel{number}.worker"):
        found = re.search(rf"^{re.escape(function)}:\n(.*?)^[^.\s]\S*:\n", asm, re.S | re.M)
        if found:
            return found.group(1)
    raise AssertionError(f"no function of kernel {number} in the assembly")


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
    """A stride-2 grouped convolution's input gradient (two channels a group: not a
    depthwise one's upsampling) adds each tap into every other element of a row: LLVM
    vectorized that read-modify-write with gathers and scatters, slower than scalar code
    (3.7 times on AMD Zen 4), so no loop of it is vectorized (builder.py, `scattered`)."""
    path = tmp_path / "strided.dl"
    path.write_text(
        "model strided {\n    input  x: f32[B, 96, 32, 32]\n    target y: f32[B, 96, 16, 16]\n"
        "    h = conv2d(x, 96, 1, bias = false)\n"
        "    loss   mse(conv2d(h, 96, 3, stride = 2, padding = 1, groups = 48, bias = false), y)\n}\n"
    )
    body = kernel_code(path, re.escape("accumulate [B, 48, 2, 2, 3, 3, 16, 16]"), capsys)
    assert "vgather" not in body and "vscatter" not in body, body[:2000]


def kernel_ir(exe: Executable, pattern: str) -> str:
    """The LLVM IR dlc builds (before any of LLVM's passes) of the first kernel of `exe` whose
    text starts with a match of `pattern`, and of the functions it calls."""
    number = next(i for i, k in enumerate(exe.program.kernels) if re.match(pattern, k.text()[0]))
    built = build_module(exe.program)
    name = built.functions[number]
    return "\n".join(str(g) for n, g in built.module.globals.items() if n == name or n.startswith(name + "."))


def test_maps_and_sums_are_vector_code_before_llvm_optimizes_them():
    """Quick code runs no loop vectorizer (docs/native.md, "Quick code first"), so the maps
    and a sum's chunks are written in vectors of the target's lanes by dlc: a map's last
    partial step under a mask, a sum's chunks of 16 as whole vectors."""
    src = (
        "model m {\n    input  x: f32[B, 6, 7, 7]\n    target y: f32[B, 6, 7, 7]\n"
        "    loss   mse(relu(x * 2.0 + 1.0) |> batchnorm, y)\n}\n"
    )
    exe = Executable(load_text(src, "m.dl").build(training=True).graph)
    lanes = f"<{vector_width()} x float>"
    fused = kernel_ir(exe, r"(fused )?map \[B, 6, 7, 7\]")
    assert f"fmul {lanes}" in fused and "llvm.masked.store" in fused, fused[:3000]
    total = kernel_ir(exe, re.escape("reduce sum over axes [0, 2, 3] of [B, 6, 7, 7]"))
    assert f"fadd {lanes}" in total, total[:3000]


@pytest.mark.parametrize("width", [1, 3, 7, 8, 9, 15, 16, 17, 31, 33])
def test_a_maps_last_partial_step_writes_only_its_elements(width):
    """A concatenation writes each piece with a map into a slice of each row: the last step
    of a piece's row, with fewer elements than lanes, stores under a mask, so the piece
    written first keeps its values beside it (and the last row's step writes nothing past
    the buffer). Exact: each element is one float operation, as numpy does it."""
    src = (
        f"model m {{\n    input  a: f32[B, {width}]\n    input  b: f32[B, 5]\n"
        "    output y = concat(a * 2.0 + 1.0, b - 3.0, axis = 1)\n}\n"
    )
    exe = Executable(load_text(src, "m.dl").build(training=False).graph)
    r = np.random.default_rng(width)
    a, b = r.standard_normal((3, width), np.float32), r.standard_normal((3, 5), np.float32)
    y = run_native(exe, {"a": a, "b": b}, {})["output:y"]
    expected = np.concatenate([a * np.float32(2.0) + np.float32(1.0), b - np.float32(3.0)], axis=1)
    assert np.array_equal(y, expected)
