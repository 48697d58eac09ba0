"""Error messages of `dlc`: every bad program must give a located, readable message.

Each bad program must make the command exit non-zero and print on stderr

    FILE:LINE:COL: error: MESSAGE
        the source line
        ^^^^

at the place in the *user's* file that is wrong (for a misused standard-library
function: the user's call, not the library's line), with a message that explains the
problem, and never a Python traceback or an "internal error". Errors about a whole
file or flag (a file that does not exist, `--dim`) start at it: `PATH: error: ...`.

Most cases run in-process through `dlc.runtime.cli.main`; a few run the real
command in a subprocess to prove that the command itself prints no traceback.

The last part holds the inputs found by fuzzing that crashed the front end (an "internal
error", exit 3) or ran away: files that are not UTF-8, static numbers out of range, axes,
dims, train settings, programs that never stop growing; each must be a located error,
reported in bounded time.

A case that fails here is a bug in dlc's diagnostics, not in the test: do not weaken
the expectation to make it pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dlc.runtime.cli import main
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.ir import graph as G
from dlc.runtime.optim.schedules import make_schedule

HEADER = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$")


def prog(text: str) -> str:
    """Programs are written indented in this file; line 1 is the first line after the quotes."""
    return textwrap.dedent(text).lstrip("\n")


def case(name, program, line, col, phrase, cmd="check", *, args=(), files=None, where="m.dl", note=None, absent=None):
    """One row of the table.

    line, col: where the error must point (col None: any column on that line).
    phrase:    a string (or compiled regex) the first line of the message must contain.
    cmd:       the dlc command, e.g. "check", "gradcheck", "compile --emit ast".
    files:     other files next to the program (for imports).
    where:     the file the error must point into (default: the program itself).
    note:      a string the whole output (error and notes) must also contain.
    absent:    a string the first line of the message must NOT contain.
    """
    extra = dict(args=tuple(args), files=files or {}, where=where, note=note, absent=absent)
    return pytest.param(name, prog(program), cmd, line, col, phrase, extra, id=name)


# ---- the table of bad programs ------------------------------------------------------------------
BAD = [
    # -- syntax ---------------------------------------------------------------------------------
    case(
        "syntax_missing_paren",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 3
            output h
        }
        """,
        3,
        14,
        "'(' is never closed: a ')' is missing before 'output' on line 4",
        "compile --emit ast",
    ),
    case(
        "syntax_bad_character",
        """
        model m {
            input x: f32[B, 4]
            h = x $ 2
            output h
        }
        """,
        3,
        11,
        "unexpected character '$'",
    ),
    case(
        "syntax_unclosed_brace",
        """
        model m {
            input x: f32[B, 4]
            output x
        """,
        1,
        1,
        "'model m' is never closed: a '}' is missing at the end of the file",
    ),
    case(
        "syntax_keyword_as_name",
        """
        model m {
            input x: f32[B, 4]
            loss = mean(x)
        }
        """,
        3,
        10,
        "unexpected '='",
    ),
    case(
        "syntax_unclosed_string",
        """
        import "lib.dl
        model m {
            input x: f32[B, 4]
            output x
        }
        """,
        1,
        8,
        "unexpected character '\"'",
    ),
    case(
        "syntax_error_in_imported_file",
        """
        import "lib.dl"
        model m {
            input x: f32[B, 4]
            output h = twice(x)
        }
        """,
        1,
        23,
        "unexpected end of file",
        files={"lib.dl": "def twice(x) = x * 2 +\n"},
        where="lib.dl",
    ),
    # -- names ------------------------------------------------------------------------------------
    case(
        "unknown_name_with_suggestion",
        """
        model m {
            input x: f32[B, 4]
            h = dens(x, 3)
            output h
        }
        """,
        3,
        9,
        "unknown name 'dens'; did you mean 'dense'?",
    ),
    case(
        "unknown_output_name",
        """
        model m {
            input x: f32[B, 4]
            output q
        }
        """,
        3,
        5,
        "unknown name 'q'",
    ),
    case(
        "scan_step_used_outside_scan",
        """
        model m {
            input xs: f32[B, T, 4]
            hs = scan t in T carry h = zeros[B, 4] {
                h = tanh(xs[:, t] + h)
                yield h
            }
            output h2 = hs * t
        }
        """,
        7,
        22,
        "unknown name 't'",
    ),
    case(
        "call_a_tensor",
        """
        model m {
            input x: f32[B, 4]
            output h = x(3)
        }
        """,
        3,
        16,
        "'x' is a tensor f32[B, 4], not a function",
    ),
    case(
        "reserved_name",
        """
        model m {
            input x: f32[B, 4]
            params = x
            output params
        }
        """,
        3,
        5,
        "'params' is reserved",
    ),
    # -- arity and arguments ------------------------------------------------------------------------
    case(
        "too_many_args_user_def",
        """
        def f(x, n: int) = x * n
        model m {
            input x: f32[B, 4]
            h = f(x, 2, 3)
            output h
        }
        """,
        4,
        9,
        "f takes 2 arguments, got 3",
    ),
    case(
        "too_many_args_stdlib_def",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 3, relu, glorot_uniform, true, 7)
            output h
        }
        """,
        3,
        9,
        "dense takes 5 arguments, got 6",
        "summary",
    ),
    case(
        "too_many_args_builtin",
        """
        model m {
            input x: f32[B, 4]
            output h = exp(x, 2)
        }
        """,
        3,
        16,
        "exp: too many positional arguments",
    ),
    case(
        "missing_argument",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x)
            output h
        }
        """,
        3,
        9,
        "dense: missing argument 'units'",
    ),
    case(
        "bad_keyword_argument",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 3, activation = relu)
            output h
        }
        """,
        3,
        34,
        "dense has no argument named 'activation'",
    ),
    case(
        "bad_keyword_argument_builtin",
        """
        model m {
            input x: f32[B, 4]
            h = sum(x, axs = 1)
            output h
        }
        """,
        3,
        9,
        "unexpected keyword argument 'axs'",
    ),
    case(
        "argument_given_twice",
        """
        model m {
            input x: f32[B, 4]
            output h = dense(x, 3, units = 4)
        }
        """,
        3,
        36,
        "argument 'units' given twice",
    ),
    case(
        "positional_after_keyword",
        """
        model m {
            input x: f32[B, 4]
            output h = dense(x, units = 3, relu)
        }
        """,
        3,
        36,
        "positional arguments must come before keyword arguments",
    ),
    case(
        "int_argument_given_a_float",
        """
        model m {
            input x: f32[B, 4]
            output h = dense(x, 2.5)
        }
        """,
        3,
        25,
        "argument 'units' must be int, got the float 2.5",
    ),
    case(
        "pipe_into_wrong_argument",
        """
        model m {
            input x: f32[B, 4]
            output h = x |> dense(relu)
        }
        """,
        3,
        27,
        "argument 'units' must be int, got the function relu",
    ),
    # -- shapes -----------------------------------------------------------------------------------------
    case(
        "matmul_inner_dims",
        """
        model m {
            input x: f32[B, 4]
            param W: f32[5, 3] = glorot_uniform
            h = x @ W
            output h
        }
        """,
        4,
        9,
        "matmul: inner dims differ",
        "graph",
    ),
    case(
        "add_does_not_broadcast",
        """
        model m {
            input x: f32[B, 4]
            input z: f32[B, 5]
            h = x + z
            output h
        }
        """,
        4,
        9,
        "do not broadcast (axis -1: 4 vs 5)",
    ),
    case(
        "concat_ranks_differ",
        """
        model m {
            input x: f32[B, 4]
            input z: f32[B, 5, 2]
            h = concat(x, z)
            output h
        }
        """,
        4,
        9,
        "cannot concat f32[B, 4] and f32[B, 5, 2]: ranks differ",
    ),
    case(
        "concat_other_axis_differs",
        """
        model m {
            input x: f32[3, 4]
            input z: f32[2, 5]
            h = concat(x, z, axis = -1)
            output h
        }
        """,
        4,
        9,
        "axis 0 differs",
    ),
    case(
        "conv_window_larger_than_input",
        """
        model m {
            input x: f32[B, 1, 4, 4]
            h = conv2d(x, 6, 5)
            output h
        }
        """,
        3,
        9,
        "does not fit in the input f32[B, 1, 4, 4]",
    ),
    case(
        "conv_channels_differ",
        """
        model m {
            input x: f32[B, 3, 28, 28]
            param W: f32[6, 1, 5, 5] = glorot_uniform
            output h = convolution(x, W)
        }
        """,
        4,
        16,
        "has 3 channels, the weights f32[6, 1, 5, 5] expect 1",
    ),
    case(
        "mse_shapes_differ_in_stdlib",
        """
        model m {
            input x: f32[B, 4]
            target y: f32[B, 4]
            p = dense(x, 3)
            loss mse(p, y)
        }
        """,
        5,
        10,
        "do not broadcast (axis -1: 3 vs 4)",
    ),
    case(
        "heads_do_not_divide_width",
        """
        model m {
            input x: f32[B, T, 8]
            output h = self_attention(x, 3)
        }
        """,
        3,
        16,
        "cannot reshape f32[B, T, 8] to [B, T, 3, 2]",
    ),
    case(
        "reshape_does_not_fit",
        """
        model m {
            input x: f32[B, 6]
            output h = reshape(x, B, 4)
        }
        """,
        3,
        16,
        "cannot reshape f32[B, 6] to [B, 4]",
    ),
    case(
        "reshape_minus_one_does_not_fit",
        """
        model m {
            input x: f32[2, 6]
            output h = reshape(x, 5, -1)
        }
        """,
        3,
        16,
        "cannot reshape f32[2, 6] to [5, -1]",
    ),
    case(
        "split_into_unequal_parts",
        """
        model m {
            input x: f32[B, 5]
            a, b = split(x, 2)
            output a
        }
        """,
        3,
        12,
        "cannot split f32[B, 5] into 2 equal parts",
    ),
    case(
        "split_into_zero_parts",
        """
        model m {
            input x: f32[B, 4]
            a = split(x, 0)
            output x
        }
        """,
        3,
        9,
        "cannot split",
    ),
    case(
        "squeeze_axis_not_one",
        """
        model m {
            input x: f32[B, 4]
            output h = squeeze(x, 1)
        }
        """,
        3,
        16,
        "cannot squeeze axis 1 of f32[B, 4]",
    ),
    case(
        "transpose_not_a_permutation",
        """
        model m {
            input x: f32[B, 4, 5]
            output h = transpose(x, 0, 1, 1)
        }
        """,
        3,
        16,
        "[0, 1, 1] is not a permutation",
    ),
    case(
        "scan_length_differs_from_sequence",
        """
        model m {
            input xs: f32[B, 5, 4]
            hs = scan t in 7 carry h = zeros[B, 4] {
                h = tanh(xs[:, t] + h)
                yield h
            }
            output hs
        }
        """,
        3,
        10,
        "has length 5 on axis 1, the scan runs 7 steps",
    ),
    # -- rank ---------------------------------------------------------------------------------------------
    case(
        "conv2d_on_rank3_input",
        """
        model m {
            input x: f32[B, 28, 28]
            h = conv2d(x, 6, 5)
            output h
        }
        """,
        3,
        16,
        "conv2d: argument 'x' must have rank 4",
    ),
    case(
        "conv2d_after_dense",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 8)
            output c = conv2d(h, 4, 3)
        }
        """,
        4,
        23,
        "must have rank 4 f32[N, C, height, width], got f32[B, 8]",
    ),
    case(
        "layernorm_of_a_scalar",
        """
        model m {
            input x: f32[B, 4]
            h = layernorm(sum(x))
            output h
        }
        """,
        3,
        19,
        "must have rank at least 1",
    ),
    case(
        "lstm_on_rank2_input",
        """
        model m {
            input x: f32[B, 16]
            output h = lstm(x, 32)
        }
        """,
        3,
        21,
        "lstm: argument 'xs' must have rank 3",
    ),
    case(
        "maxpool_on_rank3_input",
        """
        model m {
            input x: f32[B, 28, 28]
            output h = maxpool2d(x, 2)
        }
        """,
        3,
        16,
        "needs a [N, C, H, W] input, got f32[B, 28, 28]",
    ),
    case(
        "axis_out_of_range",
        """
        model m {
            input x: f32[B, 4]
            output h = sum(x, 3)
        }
        """,
        3,
        16,
        "axis 3 is out of range for f32[B, 4]",
    ),
    case(
        "softmax_axis_out_of_range",
        """
        model m {
            input x: f32[B, 4]
            output h = softmax(x, 5)
        }
        """,
        3,
        16,
        "axis 5 is out of range for f32[B, 4]",
    ),
    case(
        "concat_axis_is_a_string",
        """
        model m {
            input x: f32[B, 4]
            output h = concat(x, x, axis = "a")
        }
        """,
        3,
        16,
        "axis",
    ),
    case(
        "expand_dims_axis_is_a_string",
        """
        model m {
            input x: f32[B, 4]
            output h = expand_dims(x, "a")
        }
        """,
        3,
        16,
        "axis",
    ),
    # labels i32[B] for logits f32[B, T, 5] must not silently make T equal to B
    case(
        "sparse_ce_labels_of_wrong_rank",
        """
        model m {
            input x: f32[B, T, 4]
            target y: i32[B]
            logits = dense(x, 5)
            loss sparse_cross_entropy(logits, y)
        }
        """,
        5,
        None,
        re.compile(r"i32\[B\].*\[B, T, 5\]|\[B, T, 5\].*i32\[B\]"),
    ),
    # -- dtypes ---------------------------------------------------------------------------------------------
    case(
        "float_labels_for_sparse_ce",
        """
        model m {
            input x: f32[B, 4]
            target y: f32[B]
            logits = dense(x, 3)
            loss sparse_cross_entropy(logits, y)
        }
        """,
        5,
        39,
        "integer tensor i32[...], got f32[B]",
    ),
    case(
        "float_ids_for_embedding",
        """
        model m {
            input ids: f32[B, T]
            output h = embedding(ids, 100, 8)
        }
        """,
        3,
        26,
        "argument 'ids' must be a",
        note="it is f32[B, T], from here",
    ),
    case(
        "one_hot_of_floats",
        """
        model m {
            input x: f32[B, 4]
            output h = one_hot(x, 3)
        }
        """,
        3,
        16,
        "one_hot needs integer indices, got f32[B, 4]",
    ),
    case(
        "unknown_dtype_in_type",
        """
        model m {
            input x: f16[B, 4]
            output x
        }
        """,
        2,
        14,
        "unexpected 'f16'; expected a dtype",
    ),
    case(
        "unknown_dtype_in_cast",
        """
        model m {
            input x: f32[B, 4]
            output h = cast(x, "f16")
        }
        """,
        3,
        16,
        "unknown dtype \"f16\"",
    ),
    case(
        "floor_division_of_floats",
        """
        model m {
            input x: f32[B, 4]
            output h = x // 2
        }
        """,
        3,
        16,
        "// is integer division",
    ),
    case(
        "string_in_arithmetic",
        """
        model m {
            input x: f32[B, 4]
            output h = x + "a"
        }
        """,
        3,
        20,
        "cannot use the string \"a\" in arithmetic",
    ),
    case(
        "full_with_a_string_value",
        """
        model m {
            input x: f32[B, 4]
            output h = full(3, "a")
            loss mean(dense(x, 2))
        }
        """,
        3,
        16,
        "the string \"a\"",
        "gradcheck",
    ),
    # -- definitions ------------------------------------------------------------------------------------
    case(
        "recursive_def",
        """
        def f(x) = f(x) + 1
        model m {
            input x: f32[B, 4]
            h = f(x)
            output h
        }
        """,
        1,
        12,
        "'f' calls itself",
        note="in the call of f here",
    ),
    case(
        "mutually_recursive_defs",
        """
        def f(x) = g(x)
        def g(x) = f(x) * 2
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        2,
        12,
        "recursion is not allowed",
    ),
    case(
        "def_without_return",
        """
        def f(x) {
            y = x * 2
        }
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        1,
        1,
        "'f' has no return",
    ),
    case(
        "statement_after_return",
        """
        def f(x) {
            return x
            y = x
        }
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        2,
        5,
        "nothing may follow a return",
    ),
    case(
        "input_inside_def",
        """
        def f(x) {
            input z: f32[B, 4]
            return x + z
        }
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        2,
        5,
        "input is only allowed in a model block",
    ),
    case(
        "unknown_argument_kind",
        """
        def f(x: foo) = x
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        1,
        10,
        "unknown argument kind 'foo'",
    ),
    case(
        "two_ellipses_in_argument_type",
        """
        def f(x: f32[..., n, ...]) = x
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        1,
        22,
        "'...'",
    ),
    # -- duplicates -------------------------------------------------------------------------------------
    case(
        "duplicate_def",
        """
        def f(x) = x
        def f(x) = x * 2
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        2,
        1,
        "'f' is defined twice",
        note="first definition",
    ),
    case(
        "duplicate_const",
        """
        const N = 4
        const N = 5
        model m {
            input x: f32[B, 4]
            output h = x * N
        }
        """,
        2,
        1,
        "'N' is defined twice",
    ),
    case(
        "duplicate_input",
        """
        model m {
            input x: f32[B, 4]
            input x: f32[B, 5]
            output x
        }
        """,
        3,
        5,
        "'x' is defined twice",
    ),
    case(
        "input_and_target_same_name",
        """
        model m {
            input x: f32[B, 4]
            target x: i32[B]
            output x
        }
        """,
        3,
        5,
        "'x' is defined twice",
    ),
    case(
        "duplicate_output",
        """
        model m {
            input x: f32[B, 4]
            output h = x
            output h = x * 2
        }
        """,
        4,
        5,
        "'h' is defined twice",
    ),
    case(
        "duplicate_param",
        """
        def f(x: f32[B, n]) {
            param W: f32[n, 3] = glorot_uniform
            param W: f32[n, 3] = glorot_uniform
            return x @ W
        }
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        3,
        5,
        "'W' is already defined",
    ),
    case(
        "two_losses",
        """
        model m {
            input x: f32[B, 4]
            loss mean(x)
            loss sum(x)
        }
        """,
        4,
        5,
        "a model has one loss",
    ),
    case(
        "duplicate_argument_names",
        """
        def f(x, x) = x
        model m {
            input x: f32[B, 4]
            output h = f(x, x)
        }
        """,
        1,
        None,
        "'x'",
    ),
    case(
        "duplicate_model_names",
        """
        model m {
            input x: f32[B, 4]
            output x
        }
        model m {
            input x: f32[B, 5]
            output x
        }
        """,
        5,
        None,
        "'m'",
    ),
    case(
        "shared_weights_of_two_shapes",
        """
        model m {
            input x: f32[B, 4]
            a = dense(x, 4, name = "shared")
            b = dense(a, 5, name = "shared")
            output b
        }
        """,
        4,
        9,
        "shared parameter 'W' is f32[4, 4] in one call and f32[4, 5] in another",
    ),
    # -- parameters and initializers --------------------------------------------------------------------
    case(
        "unknown_initializer_name",
        """
        model m {
            input x: f32[B, 4]
            param W: f32[4, 3] = glorot_unifrom
            output h = x @ W
        }
        """,
        3,
        26,
        "unknown name 'glorot_unifrom'; did you mean 'glorot_uniform'?",
    ),
    case(
        "unknown_initializer_string",
        """
        model m {
            input x: f32[B, 4]
            param W: f32[4, 3] = "he"
            output h = x @ W
        }
        """,
        3,
        26,
        "unknown initializer",
    ),
    case(
        "unknown_initializer_in_layer",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 3, init = he_normall)
            output h
        }
        """,
        3,
        28,
        "unknown name 'he_normall'; did you mean 'he_normal'?",
    ),
    case(
        "orthogonal_init_of_a_vector",
        """
        model m {
            input x: f32[B, 4]
            param v: f32[4] = orthogonal
            output h = x * v
        }
        """,
        3,
        5,
        "an orthogonal matrix needs rank >= 2",
    ),
    case(
        "param_with_symbolic_shape",
        """
        model m {
            input x: f32[B, 4]
            output h = dense(x, B)
        }
        """,
        3,
        16,
        "parameter shapes must be concrete",
    ),
    case(
        "param_declared_in_scan",
        """
        model m {
            input xs: f32[B, T, 4]
            hs = scan t in T carry h = zeros[B, 4] {
                param W: f32[4, 4] = glorot_uniform
                h = tanh(xs[:, t] @ W + h)
                yield h
            }
            output hs
        }
        """,
        4,
        9,
        "declare parameters outside the scan",
    ),
    case(
        "update_of_a_param",
        """
        model m {
            input x: f32[B, 4]
            param W: f32[4, 4] = glorot_uniform
            update W = W * 2
            output h = x @ W
        }
        """,
        4,
        5,
        "'W' is not a state buffer",
    ),
    case(
        "update_changes_shape",
        """
        model m {
            input x: f32[B, 4]
            state s: f32[4] = zeros
            update s = x
            output x
        }
        """,
        4,
        16,
        "update of 's' must keep its shape f32[4], got f32[B, 4]",
    ),
    case(
        "update_state_inside_scan",
        """
        model m {
            input x: f32[B, 4]
            state s: f32[4] = zeros
            hs = scan t in 3 carry h = zeros[B, 4] {
                update s = s + 1
                h = h + s
                yield h
            }
            output hs
        }
        """,
        5,
        9,
        "state cannot be updated inside a scan",
    ),
    # -- sizes ----------------------------------------------------------------------------------------------
    case(
        "dense_of_zero_units",
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 0)
            output h
        }
        """,
        3,
        9,
        "dimension sizes must be positive, got 0",
    ),
    case(
        "dense_of_negative_units_in_user_def",
        """
        def block(x) {
            h = dense(x, -2)
            return h
        }
        model m {
            input x: f32[B, 4]
            output h = block(x)
        }
        """,
        2,
        9,
        "dimension sizes must be positive, got -2",
        note="in the call of block here",
    ),
    case(
        "negative_param_size",
        """
        model m {
            input x: f32[B, 4]
            param W: f32[4, -3] = glorot_uniform
            output h = x @ W
        }
        """,
        3,
        21,
        "dimension sizes must be positive, got -3",
    ),
    case(
        "zero_input_size",
        """
        model m {
            input x: f32[B, 0]
            output x
        }
        """,
        2,
        21,
        "dimension sizes must be positive, got 0",
    ),
    case(
        "negative_random_size",
        """
        model m {
            input x: f32[B, 4]
            output h = random_normal(B, -1)
        }
        """,
        3,
        16,
        re.compile(r"positive|-1"),
    ),
    case(
        "one_hot_of_zero_classes",
        """
        model m {
            input x: f32[B, 4]
            target y: i32[B]
            loss mean(dense(x, 2)) + mean(one_hot(y, 0))
        }
        """,
        4,
        35,
        re.compile(r"positive|0 classes|at least 1"),
    ),
    case(
        "maxpool_kernel_zero",
        """
        model m {
            input x: f32[B, 1, 8, 8]
            output h = max_pool(x, 0)
        }
        """,
        3,
        16,
        "kernel",
    ),
    case(
        "conv_stride_zero",
        """
        model m {
            input x: f32[B, 1, 8, 8]
            output h = conv2d(x, 4, 3, 0)
        }
        """,
        3,
        16,
        "stride",
    ),
    case(
        "stack_of_nothing",
        """
        model m {
            input x: f32[B, 4]
            output h = stack()
        }
        """,
        3,
        16,
        "stack",
    ),
    # -- statements in the wrong place ----------------------------------------------------------------
    case(
        "return_outside_def",
        """
        model m {
            input x: f32[B, 4]
            return x
        }
        """,
        3,
        5,
        "return is only allowed at the end of a def",
    ),
    case(
        "yield_outside_scan",
        """
        model m {
            input x: f32[B, 4]
            yield x
        }
        """,
        3,
        5,
        "yield is only allowed at the end of a scan body",
    ),
    case(
        "yield_in_a_def",
        """
        def f(x) {
            yield x
        }
        model m {
            input x: f32[B, 4]
            output h = f(x)
        }
        """,
        2,
        5,
        "yield is only allowed at the end of a scan body",
    ),
    # -- scans ------------------------------------------------------------------------------------------
    case(
        "carry_changes_shape",
        """
        model m {
            input xs: f32[B, T, 4]
            param W: f32[4, 8] = glorot_uniform
            hs = scan t in T carry h = zeros[B, 4] {
                h = tanh(xs[:, t] @ W)
                yield h
            }
            output hs
        }
        """,
        4,
        28,
        "carry 'h' starts as f32[B, 4] but the body makes it f32[B, 8]",
    ),
    case(
        "carry_changes_shape_in_def",
        """
        def cell(xs: f32[B, T, D], units: int) {
            param W: f32[D, units] = glorot_uniform
            hs = scan t in T carry h = zeros[B, D] {
                h = tanh(xs[:, t] @ W)
                yield h
            }
            return hs
        }
        model m {
            input xs: f32[B, T, 4]
            output hs = cell(xs, 8)
        }
        """,
        3,
        28,
        "carry 'h' starts as f32[B, 4] but the body makes it f32[B, 8]",
        "compile --emit grad",
        note="in the call of cell here",
    ),
    case(
        "unknown_scan_option",
        """
        model m {
            input xs: f32[B, T, 4]
            hs = scan t in T (backwards = true) carry h = zeros[B, 4] {
                h = tanh(xs[:, t] + h)
                yield h
            }
            output hs
        }
        """,
        3,
        23,
        "unknown scan option 'backwards'",
    ),
    case(
        "scan_checkpoint_not_positive",
        """
        model m {
            input xs: f32[B, T, 4]
            hs = scan t in T (checkpoint = 0) carry h = zeros[B, 4] {
                h = tanh(xs[:, t] + h)
                yield h
            }
            output hs
        }
        """,
        3,
        36,
        "checkpoint must be an integer >= 1 (keep every k-th carry), got the int 0",
    ),
    case(
        "train_remat_not_an_integer",
        """
        model m {
            input xs: f32[B, T, 4]
            target y: f32[B, T, 8]
            loss mse(lstm(xs, 8), y)
        }
        train m {
            remat = 2.5
        }
        """,
        7,
        13,
        "remat must be an integer >= 1 (keep every k-th carry), got the float 2.5",
    ),
    case(
        "scan_checkpoint_of_a_length_that_is_no_symbol",
        """
        model m {
            input xs: f32[B, T, 4]
            target y: f32[B, 2 * T, 4]
            param W: f32[4, 4] = glorot_uniform
            ys = concat(xs, xs, axis = 1)
            L = ys.shape[1]
            hs = scan t in L (checkpoint = 4) carry h = zeros[B, 4] {
                h = tanh(ys[:, t] @ W + h)
                yield h
            }
            loss mse(hs, y)
        }
        """,
        7,
        10,
        "checkpoint = 4 needs the scan's length to be a number or one symbol, not 2*T",
        "compile --emit grad",
    ),
    case(
        "scan_length_not_static",
        """
        model m {
            input x: f32[B, 4]
            hs = scan t in x carry h = zeros[B, 4] {
                h = h
                yield h
            }
            output hs
        }
        """,
        3,
        20,
        "the length of a scan must be a static integer",
    ),
    case(
        "step_indexes_a_local_value",
        """
        model m {
            input xs: f32[B, T, 4]
            hs = scan t in T carry h = zeros[B, 4] {
                z = xs * 2
                h = tanh(z[:, t] + h)
                yield h
            }
            output hs
        }
        """,
        5,
        18,
        "only a sequence from outside the scan can be indexed with 't'",
    ),
    # -- indexing and unpacking ----------------------------------------------------------------------------
    case(
        "tensor_index_out_of_range",
        """
        model m {
            input x: f32[B, 4]
            output h = x[:, 7]
        }
        """,
        3,
        16,
        "index 7 is out of range for a dim of size 4",
    ),
    case(
        "tuple_index_out_of_range",
        """
        model m {
            input x: f32[B, 4]
            parts = split(x, 2)
            output h = parts[2]
        }
        """,
        4,
        16,
        "index 2 is out of range for a tuple of 2",
    ),
    case(
        "too_many_indices",
        """
        model m {
            input x: f32[B, 4]
            output h = x[0, 1, 2]
        }
        """,
        3,
        16,
        "too many indices (3) for f32[B, 4]",
    ),
    case(
        "index_with_a_tensor",
        """
        model m {
            input x: f32[B, 4]
            target y: i32[B]
            output h = x[y]
        }
        """,
        4,
        16,
        "use gather(table, indices)",
    ),
    case(
        "slice_step_zero",
        """
        model m {
            input x: f32[B, 4]
            output h = x[:, ::0]
        }
        """,
        3,
        21,
        "slice steps must be positive",
    ),
    case(
        "empty_slice",
        """
        model m {
            input x: f32[B, 4]
            output h = x[:, 3:1]
        }
        """,
        3,
        16,
        "the index selects nothing",
    ),
    case(
        "unpack_count_mismatch",
        """
        model m {
            input x: f32[B, 4]
            a, b, c = split(x, 2)
            output a
        }
        """,
        3,
        5,
        "cannot unpack 2 values into 3 names",
    ),
    case(
        "unpack_a_tensor",
        """
        model m {
            input x: f32[B, 4]
            a, b = x
            output a
        }
        """,
        3,
        5,
        "cannot unpack a tensor f32[B, 4] into 2 names",
    ),
    case(
        "unknown_attribute",
        """
        model m {
            input x: f32[B, 4]
            output h = x.foo
        }
        """,
        3,
        16,
        "has no attribute 'foo'",
    ),
    # -- static control flow ---------------------------------------------------------------------------------
    # the message must show the .dl syntax (`if c then a else b`), not Python's
    case(
        "if_expression_not_static",
        """
        model m {
            input x: f32[B, 4]
            h = if mean(x) > 0 then x else -x
            output h
        }
        """,
        3,
        12,
        "needs a static condition",
        absent="a if c else b",
    ),
    case(
        "if_statement_not_static",
        """
        model m {
            input x: f32[B, 4]
            if sum(x) > 0 {
                h = x
            } else {
                h = -x
            }
            output h
        }
        """,
        3,
        8,
        "if needs a static condition",
    ),
    case(
        "repeat_bound_not_static",
        """
        model m {
            input x: f32[B, 4]
            h = x
            repeat i in 0..sum(x) {
                h = h * 2
            }
            output h
        }
        """,
        4,
        20,
        "the end of repeat must be a static integer",
    ),
    # -- static arithmetic ------------------------------------------------------------------------------------
    case(
        "division_by_zero_in_const",
        """
        const N = 4 / 0
        model m {
            input x: f32[B, 4]
            output h = x * N
        }
        """,
        1,
        11,
        "division by zero",
    ),
    case(
        "sqrt_of_negative_const",
        """
        const N = sqrt(-1)
        model m {
            input x: f32[B, 4]
            output h = x * N
        }
        """,
        1,
        11,
        "sqrt(-1) is undefined",
    ),
    # 10.0 ^ 400 is a float overflow; ^ itself is fine for a float and an int
    case(
        "static_power_overflows",
        """
        model m {
            input x: f32[B, 4]
            output h = x * (10.0 ^ 400)
        }
        """,
        3,
        21,
        "overflow",
    ),
    case(
        "const_dim_is_a_float",
        """
        const N = 2.5
        model m {
            input x: f32[B, N]
            output x
        }
        """,
        3,
        21,
        "a dimension must be an integer or a name, got the float 2.5",
    ),
    # the message must be about padding ("valid", "same" or an integer), not "the value"
    case(
        "conv_padding_typo",
        """
        model m {
            input x: f32[B, 1, 8, 8]
            output h = conv2d(x, 6, 3, padding = "sam")
        }
        """,
        3,
        16,
        "padding",
    ),
    # -- losses and metrics -------------------------------------------------------------------------------------
    case(
        "loss_not_a_scalar",
        """
        model m {
            input x: f32[B, 4]
            target y: f32[B, 3]
            p = dense(x, 3)
            loss (p - y)^2
        }
        """,
        5,
        10,
        "the loss must be a scalar, got f32[B, 3]",
    ),
    case(
        "loss_is_an_integer",
        """
        model m {
            input x: f32[B, 4]
            target y: i32[B]
            loss sum(y)
        }
        """,
        4,
        10,
        "the loss must be a float, got i32[]",
    ),
    case(
        "metric_not_a_scalar",
        """
        model m {
            input x: f32[B, 4]
            metric m1 = x * 2
        }
        """,
        3,
        17,
        "a metric must be a scalar, got f32[B, 4]",
    ),
    case(
        "gradcheck_without_loss",
        """
        model m {
            input x: f32[B, 4]
            output h = dense(x, 3)
        }
        """,
        1,
        1,
        "model m has no loss, so there is no gradient to check",
        "gradcheck",
    ),
    # -- symbolic dims ---------------------------------------------------------------------------------------------
    # symbolic dims are rigid: the model must work for every T, so T never becomes 3
    case(
        "symbolic_dim_against_constant_broadcast",
        """
        model m {
            input x: f32[B, T]
            a = x + zeros[B, 3]
            output b = a
        }
        """,
        3,
        9,
        "(axis -1: T vs 3)",
    ),
    case(
        "symbolic_dim_against_constant_matmul",
        """
        model m {
            input x: f32[B, T]
            param W: f32[5, 2] = glorot_uniform
            output b = x @ W
        }
        """,
        4,
        16,
        "inner dims differ: f32[B, T] @ f32[5, 2] (T vs 5)",
    ),
    case(
        "symbolic_dim_against_def_argument",
        """
        def f(a: f32[B, 3]) = a
        model m {
            input x: f32[B, T]
            output b = f(x)
        }
        """,
        4,
        18,
        "argument 'a' must be f32[B, 3], got f32[B, T] (T vs 3)",
    ),
    case(
        "pattern_dim_bound_twice_differently",
        """
        def f(a: f32[B, n], b: f32[B, n]) = a + b
        model m {
            input x: f32[B, 3]
            input y: f32[B, 5]
            output c = f(x, y)
        }
        """,
        5,
        21,
        "n is 5 here but 3",
        note="n became 3 here",
    ),
    # accuracy of one-hot float targets broadcasts [B] against [B, 3]: the declared
    # symbolic batch dim B must not silently become 3
    case(
        "batch_dim_forced_to_a_constant",
        """
        model m {
            input x: f32[B, 4]
            target y: f32[B, 3]
            logits = dense(x, 3)
            loss mean(logits)
            metric acc = accuracy(logits, y)
        }
        """,
        6,
        None,
        re.compile(r"\bB\b.*\b3\b|\b3\b.*\bB\b"),
    ),
    # -- files and models ----------------------------------------------------------------------------------------
    case(
        "missing_import",
        """
        import "nothere.dl"
        model m {
            input x: f32[B, 4]
            output x
        }
        """,
        1,
        1,
        "cannot import nothere.dl: no such file",
    ),
    case(
        "import_cycle",
        """
        import "lib.dl"
        model m {
            input x: f32[B, 4]
            output x
        }
        """,
        1,
        1,
        "imports itself",
        files={"lib.dl": 'import "m.dl"\n'},
        where="lib.dl",
    ),
    case(
        "file_without_a_model",
        """
        def f(x) = x
        """,
        1,
        1,
        "defines no model",
    ),
    # a misspelt model name in a train block must not be ignored silently
    case(
        "train_block_for_unknown_model",
        """
        model m {
            input x: f32[B, 4]
            loss mean(dense(x, 2))
        }
        train q { epochs = 3 }
        """,
        5,
        None,
        "'q'",
    ),
]


# ---- running dlc -------------------------------------------------------------------------------------------
def write_program(tmp_path: Path, program: str, files: dict) -> Path:
    path = tmp_path / "m.dl"
    path.write_text(program)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return path


def argv_for(cmd: str, path: Path, args=()) -> list:
    words = cmd.split()
    return [words[0], str(path), *words[1:], *args]


def run_inprocess(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_located(code, out, err, where: Path, line, col, phrase, note=None, absent=None):
    """The whole contract of a located error message."""
    shown = f"\n--- exit {code}; stderr:\n{err}\n--- stdout:\n{out}"
    assert "Traceback" not in err + out, "a Python traceback was printed" + shown
    assert "internal error" not in err + out, "dlc reported an internal error" + shown
    assert code != 0, "the command succeeded on a bad program" + shown
    lines = err.splitlines()
    assert lines, "nothing on stderr" + shown
    m = HEADER.match(lines[0])
    assert m, "the first line is not FILE:LINE:COL: error: ..." + shown
    assert Path(m["file"]).resolve() == where.resolve(), f"the error is in {m['file']}, not in {where}" + shown
    assert int(m["line"]) == line, f"the error is on line {m['line']}, expected line {line}" + shown
    if col is not None:
        assert int(m["col"]) == col, f"the error is at column {m['col']}, expected column {col}" + shown
    msg = m["msg"]
    if isinstance(phrase, re.Pattern):
        assert phrase.search(msg), f"the message does not match {phrase.pattern!r}" + shown
    else:
        assert phrase in msg, f"the message does not say {phrase!r}" + shown
    if absent is not None:
        assert absent not in msg, f"the message should not say {absent!r}" + shown
    if note is not None:
        assert note in err, f"the output does not say {note!r}" + shown
    # the source line and a caret under the reported column
    source = where.read_text().splitlines()
    assert len(lines) >= 3, "the source line and caret are missing" + shown
    assert lines[1] == "    " + source[int(m["line"]) - 1], "the second line is not the source line" + shown
    caret = lines[2]
    assert re.fullmatch(r" *\^+", caret) and caret.index("^") == 4 + int(m["col"]) - 1, (
        "the caret is not under the reported column" + shown
    )
    assert ": ok" not in out, "the command printed ok" + shown


@pytest.mark.parametrize("name, program, cmd, line, col, phrase, extra", BAD)
def test_bad_program(tmp_path, capsys, name, program, cmd, line, col, phrase, extra):
    path = write_program(tmp_path, program, extra["files"])
    code, out, err = run_inprocess(capsys, argv_for(cmd, path, extra["args"]))
    assert_located(code, out, err, tmp_path / extra["where"], line, col, phrase, extra["note"], extra["absent"])


def test_table_is_big_enough():
    names = [p.values[0] for p in BAD]
    assert len(names) == len(set(names)), "duplicate case names"
    assert len({p.values[1] for p in BAD}) >= 25


# ---- errors at a whole file or flag -------------------------------------------------------------------------
MODEL = prog("""
    model m {
        input x: f32[B, 4]
        loss mean(dense(x, 2))
    }
    """)

UNLOCATED = [
    # (name, argv builder from tmp_path, phrase): each error at the file or flag, without a line
    ("missing_file_check", lambda d: ["check", str(d / "nope.dl")], "no such file"),
    ("missing_file_summary", lambda d: ["summary", str(d / "nope.dl")], "no such file"),
    ("missing_file_gradcheck", lambda d: ["gradcheck", str(d / "nope.dl")], "no such file"),
    ("missing_file_compile", lambda d: ["compile", str(d / "nope.dl"), "--emit", "ast"], "no such file"),
    ("directory_as_file", lambda d: ["check", str(d)], "cannot read"),
    ("unknown_model_option", lambda d: ["check", str(d / "m.dl"), "--model", "other"], "no model named 'other'"),
    ("bad_dim_option", lambda d: ["gradcheck", str(d / "m.dl"), "--dim", "B=0"], "--dim takes NAME=SIZE"),
    (
        "output_into_missing_directory",
        lambda d: ["compile", str(d / "m.dl"), "--emit", "graph", "-o", str(d / "no" / "such" / "dir.txt")],
        "cannot write",
    ),
]


@pytest.mark.parametrize("name, make_argv, phrase", UNLOCATED, ids=[u[0] for u in UNLOCATED])
def test_error_without_location(tmp_path, capsys, name, make_argv, phrase):
    """`PATH: error: ...` or `--flag: error: ...`: the file or the flag named in argv (the model
    --model names is missing from the file), with the flag's status 2."""
    (tmp_path / "m.dl").write_text(MODEL)
    argv = make_argv(tmp_path)
    code, out, err = run_inprocess(capsys, argv)
    shown = f"\n--- exit {code}; stderr:\n{err}\n--- stdout:\n{out}"
    assert code == (2 if "--dim" in argv else 1), shown
    assert "Traceback" not in err + out and "internal error" not in err, shown
    place = err.partition(": error: ")[0]
    assert place in argv or place == "--dim", "the message does not start at the file or flag" + shown
    assert "\n\n" not in err.strip(), "the message is not one paragraph" + shown
    assert phrase in err, shown


# ---- the real command, in a subprocess ------------------------------------------------------------------------
def dlc_command() -> list:
    exe = shutil.which("dlc")
    return [exe] if exe else [sys.executable, "-m", "dlc.runtime.cli"]


SUBPROCESS = [
    (
        "syntax_error",
        "model m {\n    input x: f32[B, 4]\n    h = dense(x, 3\n    output h\n}\n",
        ["check"],
        3,
        14,
        "'(' is never closed",
    ),
    (
        "stdlib_misuse_points_at_user_line",
        "model m {\n    input x: f32[B, 4]\n    target y: f32[B, 4]\n    p = dense(x, 3)\n    loss mse(p, y)\n}\n",
        ["gradcheck"],
        5,
        10,
        "do not broadcast",
    ),
    (
        "matmul",
        "model m {\n    input x: f32[B, 4]\n    param W: f32[5, 3] = glorot_uniform\n    output h = x @ W\n}\n",
        ["compile", "--emit", "grad"],
        4,
        16,
        "inner dims differ",
    ),
    (
        "recursion",
        "def f(x) = f(x) + 1\nmodel m {\n    input x: f32[B, 4]\n    output h = f(x)\n}\n",
        ["summary"],
        1,
        12,
        "calls itself",
    ),
    (
        "split_into_zero_parts",
        "model m {\n    input x: f32[B, 4]\n    a = split(x, 0)\n    output x\n}\n",
        ["check"],
        3,
        9,
        "cannot split",
    ),
]


@pytest.mark.parametrize("name, program, cmd, line, col, phrase", SUBPROCESS, ids=[s[0] for s in SUBPROCESS])
def test_real_command_bad_program(tmp_path, name, program, cmd, line, col, phrase):
    path = tmp_path / "m.dl"
    path.write_text(program)
    argv = dlc_command() + [cmd[0], str(path), *cmd[1:]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert_located(r.returncode, r.stdout, r.stderr, path, line, col, phrase)
    assert r.returncode == 1, f"exit {r.returncode}, expected 1\n{r.stderr}"


def test_real_command_missing_file(tmp_path):
    r = subprocess.run(
        dlc_command() + ["check", str(tmp_path / "nope.dl")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"{tmp_path / 'nope.dl'}: error: ") and "no such file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def nested(n: int, inner: str, outer: str) -> str:
    """`outer` around itself n times around `inner` ({} marks where each goes)."""
    for _ in range(n):
        inner = outer.format(inner)
    return inner


@pytest.mark.parametrize(
    "expression, col, note",
    [
        ("x" + " + x" * 3000, 16, None),  # the parser's tree
        (nested(1000, "x", "if true then ({}) else x"), 16, "the innermost here"),  # the parser's tree
        (nested(400, "x", "relu({})"), None, None),  # the evaluator
    ],
)
def test_real_command_program_nested_too_deeply(tmp_path, expression, col, note):
    """Nesting deeper than Python's recursion allows is an error located in the nesting, not a bare message."""
    path = tmp_path / "m.dl"
    path.write_text("model m {\n    input x: f32[B, 4]\n    output h = " + expression + "\n}\n")
    r = subprocess.run(dlc_command() + ["check", str(path)], capture_output=True, text=True, timeout=300)
    assert_located(r.returncode, r.stdout, r.stderr, path, 3, col, "nest", note)
    assert r.returncode == 1, r.stderr


# ---- good programs: controls that must pass --------------------------------------------------------------------
GOOD = [
    (
        "mlp",
        """
        model mlp {
            input  x: f32[B, 784]
            target y: i32[B]
            h = x |> dense(512, relu) |> dropout(0.2) |> dense(256, relu)
            logits = dense(h, 10)
            loss   sparse_cross_entropy(logits, y) + 1e-4 * l2(params)
            metric accuracy = mean(argmax(logits, -1) == y)
            output probs = softmax(logits)
        }
        """,
        ["check", "summary", "compile --emit grad"],
    ),
    (
        "small_mlp_gradcheck",
        """
        const HIDDEN = 5
        def block(x: f32[..., n], units: int, act = tanh) {
            param W: f32[n, units] = glorot_uniform
            param b: f32[units] = zeros
            return act(x @ W + b)
        }
        def twice(x) = x * 2
        model small {
            input  x: f32[B, 3]
            target y: i32[B]
            h = x |> block(HIDDEN) |> twice
            repeat i in 0..2 {
                h = block(h, HIDDEN)
            }
            logits = if HIDDEN > 3 then dense(h, 4) else dense(h, 2)
            a, b = split(logits, 2)
            loss sparse_cross_entropy(concat(a, b), y)
            output probs = softmax(logits)
        }
        """,
        ["check", "gradcheck"],
    ),
    (
        "conv",
        """
        model lenet {
            input  x: f32[B, 1, 28, 28]
            target y: i32[B]
            c1 = conv2d(x, 6, 5, padding = "same", act = relu)
            s2 = maxpool2d(c1, 2)
            c3 = conv2d(s2, 16, 5, act = relu)
            s4 = maxpool2d(c3, 2)
            logits = dense(flatten(s4), 10)
            loss sparse_cross_entropy(logits, y)
            metric accuracy = accuracy(logits, y)
        }
        """,
        ["check", "graph"],
    ),
    (
        "scan_in_model",
        """
        model rnn {
            input  xs: f32[B, T, 4]
            target y: i32[B]
            param W: f32[4, 8] = glorot_uniform
            param U: f32[8, 8] = orthogonal
            hs = scan t in T (reverse = true) carry h = zeros[B, 8] {
                h = tanh(xs[:, t] @ W + h @ U)
                yield h
            }
            logits = dense(hs[:, 0], 3)
            loss sparse_cross_entropy(logits, y)
        }
        """,
        ["check", "gradcheck"],
    ),
    (
        "lstm_with_import",
        """
        import "lib.dl"
        model seq {
            input  x: f32[B, T, 6]
            target y: i32[B]
            hs = lstm(x, 4)
            logits = head(hs[:, -1])
            loss sparse_cross_entropy(logits, y)
        }
        """,
        ["check", "summary", "compile --emit ast"],
    ),
]

GOOD_FILES = {"lstm_with_import": {"lib.dl": "def head(h) = dense(h, 3)\n"}}


@pytest.mark.parametrize("name, program, commands", GOOD, ids=[g[0] for g in GOOD])
def test_good_program(tmp_path, capsys, name, program, commands):
    path = write_program(tmp_path, prog(program), GOOD_FILES.get(name, {}))
    for cmd in commands:
        code, out, err = run_inprocess(capsys, argv_for(cmd, path))
        assert code == 0, f"dlc {cmd} failed on a good program:\n{err}"
        assert "error" not in err, err


def test_good_program_real_command(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text(prog(GOOD[0][1]))
    r = subprocess.run(dlc_command() + ["check", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and r.stderr == ""


# ---- what fuzzing found: every input a located error, in bounded time -------------------------------------
def check_located(tmp_path, capsys, program, line, col, phrase, cmd=("check",), files=None, where="m.dl"):
    path = tmp_path / "m.dl"
    path.write_text(prog(program))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(prog(text))
    code = main([cmd[0], str(path), *cmd[1:]])
    out, err = capsys.readouterr()
    assert_located(code, out, err, tmp_path / where, line, col, phrase)
    assert code == 1, err


def check_expression(tmp_path, capsys, expr, col, phrase):
    """`a = expr` in a model with `x: f32[B, 4]` and its sum `s` fails at line 4, column `col`."""
    check_located(
        tmp_path,
        capsys,
        f"""
        model m {{
            input x: f32[B, 4]
            s = sum(x)
            a = {expr}
            output y = x
        }}
        """,
        4,
        col,
        phrase,
    )


def run_dlc(path: Path, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "check", str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- files that are not UTF-8 -----------------------------------------------------------------------------------
LATIN1 = "model m {\n    input x: f32[B, 4]\n    output y = x   # café\n}\n".encode("latin-1")


def test_file_not_utf8(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_bytes(LATIN1)
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 1, err
    assert lines[0] == f"{path}:3:25: error: the file is not UTF-8 text (byte 0xe9)", err
    assert lines[1] == "        output y = x   # caf\ufffd"  # the line, the bad byte replaced
    assert lines[2] == "    " + " " * 24 + "^"


def test_imported_file_not_utf8(tmp_path, capsys):
    (tmp_path / "lib.dl").write_bytes(b"const A = 1\n# \xff\n")
    path = tmp_path / "m.dl"
    path.write_text('import "lib.dl"\nmodel m {\n    input x: f32[B, 4]\n    output y = x\n}\n')
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert err.startswith(f"{tmp_path / 'lib.dl'}:2:3: error: the file is not UTF-8 text (byte 0xff)"), err


# ---- static numbers are 64-bit integers and finite floats ---------------------------------------------------------
@pytest.mark.parametrize(
    "expr, col, phrase",
    [
        # 5001 digits: more than Python converts from text
        pytest.param(
            "1" + "0" * 5000, 21, "the integer 10000000000000000000... (5001 digits) is too large", id="5001-digits"
        ),
        ("9223372036854775808", 21, "is too large"),  # 2^63
        ("1e309", 21, "the number is too large for a float"),
        ("int(-1e309)", 26, "the number is too large for a float"),
        ("int(1e308 * 10)", 25, "1e+308 * 10 overflows"),
        ("int(1e300)", 21, "int(1e+300) does not fit in 64 bits"),
        ("2 ^ 63", 21, "2 ^ 63 overflows"),
        ("(0 - 8) ^ 0.5", 21, "is not a real number"),  # Python makes a complex number
        ("3037000500 * 3037000500", 21, "overflows"),
        ("sum((2 ^ 62, 2 ^ 62))", 21, "overflows"),
    ],
)
def test_static_number_range(tmp_path, capsys, expr, col, phrase):
    check_located(
        tmp_path,
        capsys,
        f"""
        model m {{
            input x: f32[B, 4]
            output y = x * ({expr})
        }}
        """,
        3,
        col,
        phrase,
    )


@pytest.mark.parametrize(
    "length, phrase",
    [
        ("1e5", "the length of a scan must be a static integer, got the float 100000"),
        ("99999999999999999999", "the integer 99999999999999999999 is too large"),
        ("1e999", "the number is too large for a float"),
    ],
)
def test_scan_length_literal(tmp_path, capsys, length, phrase):
    check_located(
        tmp_path,
        capsys,
        f"""
        model m {{
            input x: f32[B, 4]
            s = scan t in {length} carry h = zeros[B, 4] {{ h = h + 1 }}
            output y = x
        }}
        """,
        3,
        19,
        phrase,
    )


def test_largest_integer_is_fine(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(
        "const BIG = 9223372036854775807\nconst HALF = BIG // 2\n"
        "model m {\n    input x: f32[B, 4]\n    output y = x * (HALF - 2 ^ 62 + 1)\n}\n"
    )
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


# ---- maximum / minimum of what is not a number or a tensor -----------------------------------------------------------
@pytest.mark.parametrize(
    "expr, phrase",
    [
        ("maximum(relu, relu)", "maximum needs numbers or tensors, got the function relu"),
        ('minimum("a", 1)', 'minimum needs numbers or tensors, got the string "a"'),
        ('maximum(x, "a")', 'maximum needs numbers or tensors, got the string "a"'),
        ("maximum(true, 1)", "maximum needs numbers or tensors, got the bool true"),
    ],
)
def test_maximum_of_non_numbers(tmp_path, capsys, expr, phrase):
    check_expression(tmp_path, capsys, expr, 9, phrase)


# ---- dim arithmetic with what is not an integer ------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr, col, phrase",
    [
        ("reshape(x, B * 0.0, 4)", 20, "cannot apply * to the dim B and the float 0"),
        ('B + "s"', 9, 'cannot apply + to the dim B and the string "s"'),
        ("2.5 - B", 9, "cannot apply - to the float 2.5 and the dim B"),
        ("B * true", 9, "cannot apply * to the dim B and the bool true"),
        ("B // 0", 9, "division by zero"),
    ],
)
def test_dim_arithmetic(tmp_path, capsys, expr, col, phrase):
    check_expression(tmp_path, capsys, expr, col, phrase)


# ---- axes are checked against the rank, by one helper -----------------------------------------------------------
@pytest.mark.parametrize(
    "expr, phrase",
    [
        ("size(x, ())", "an axis must be an integer, got a tuple of 0"),
        ("size(x, relu)", "an axis must be an integer, got the function relu"),
        ("sum(x, (0, 2.5))", "an axis must be an integer, got the float 2.5"),
        ("mean(s, 0)", "axis 0 is out of range for f32[]"),
        ("sum(s, 0)", "axis 0 is out of range for f32[]"),
        ("max(s, 0)", "axis 0 is out of range for f32[]"),
        ("min(s, 0)", "axis 0 is out of range for f32[]"),
        ("argmax(s)", "axis -1 is out of range for f32[]"),
        ("size(s, 0)", "axis 0 is out of range for f32[]"),
        ("squeeze(s, 0)", "axis 0 is out of range for f32[]"),
        ("concat(s, s, axis = 0)", "axis 0 is out of range for f32[]"),
        ("swapaxes(s, 0, 0)", "axis 0 is out of range for f32[]"),
        ("split(s, 1, 0)", "axis 0 is out of range for f32[]"),
        ("expand_dims(s, 1)", "axis 1 is out of range for f32[]"),
        ("stack(x, x, axis = 3)", "axis 3 is out of range for f32[B, 4]"),
        ("stack(x, x, axis = -4)", "axis -4 is out of range for f32[B, 4]"),
        ("softmax(s)", "axis -1 is out of range for f32[]"),
    ],
)
def test_axis_out_of_range(tmp_path, capsys, expr, phrase):
    check_expression(tmp_path, capsys, expr, 9, phrase)


def test_axes_in_range_still_work(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(
        prog("""
        model m {
            input x: f32[B, 4]
            s = sum(x)
            a = stack(s, s) + stack(x, x, axis = 2)[0, 0] + stack(x, x, axis = -1)[0, 0]
            b = expand_dims(s, 0) + expand_dims(s, -1) + size(x, -1) + mean(x, (0, -1))
            output y = a + b
        }
        """)
    )
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


# ---- what passed check and failed in lowering ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr, col, phrase",
    [
        ("gather(sum(x), i)", 16, "gather: the table must have rank >= 1, got f32[]"),
        ("arange(-1)", 16, "dimension sizes must be positive, got -1"),
        ("arange(0)", 16, "dimension sizes must be positive, got 0"),
        ("arange(2.5)", 16, "arange needs a size, got the float 2.5"),
    ],
)
def test_refused_at_check_time(tmp_path, capsys, expr, col, phrase):
    check_located(
        tmp_path,
        capsys,
        f"""
        model m {{
            input x: f32[B, 4]
            input i: i32[B]
            output y = {expr}
        }}
        """,
        4,
        col,
        phrase,
    )


def test_zero_sized_dims_never_reach_a_graph():
    """A type rule that would make a dim of size 0 or less is refused where the node is made."""
    g = G.Graph()
    g.span = Span("m.dl", 3, 5)
    with pytest.raises(DlcError) as e:
        g.add1("iota", shape=(4, -1), axis=0, dtype="i32")
    assert e.value.span == g.span
    assert "iota: dimension sizes must be positive, got i32[4, -1]" in e.value.message


# ---- train settings -----------------------------------------------------------------------------------------------
TRAIN = """
    model m {
        input x: f32[B, 4]
        output y = x
    }
    train m {
        SETTING
    }
    """


@pytest.mark.parametrize(
    "setting, col, phrase",
    [
        ("__class__ = 1", 5, "unknown train setting '__class__'"),
        ("__dict__ = 1", 5, "unknown train setting '__dict__'"),
        ("spans = 1", 5, "unknown train setting 'spans'"),
        ("epochs = 0 + -1", 5, "epochs must be an integer >= 0, got -1"),  # not "division by zero"
        ("epochs = 2 - 3", 5, "epochs must be an integer >= 0, got -1"),
        ("l2 = 10.0 ^ 400", 10, "10 ^ 400 overflows"),
        ("l2 = 1 / 0", 10, "division by zero"),
        ('schedule = "bogus"', 5, "unknown schedule 'bogus'"),
        ("schedule = 0", 5, "schedule must be a call such as cosine(warmup = 1), got 0"),
        ("schedule = false", 5, "schedule must be a call such as cosine(warmup = 1), got false"),
    ],
)
def test_bad_train_settings(tmp_path, capsys, setting, col, phrase):
    check_located(tmp_path, capsys, TRAIN.replace("SETTING", setting), 6, col, phrase)


def test_settings_arithmetic_evaluates_the_operator_written(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(prog(TRAIN.replace("SETTING", "l2 = 1e10 * 40.0\n        epochs = 2 ^ 3 - 7")))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


def test_unknown_schedule_is_located():
    span = Span("m.dl", 7, 5)
    with pytest.raises(DlcError) as e:
        make_schedule("cosine(warmup = 1)", 1.0, 1, 1, span)
    assert e.value.span == span
    assert e.value.message.startswith(
        "unknown schedule 'cosine(warmup = 1)'; did you mean 'cosine'? (known: constant, "
    )


# ---- limits: repeat steps, graph size, static values ----------------------------------------------------------
@pytest.mark.parametrize(
    "body, line, col, phrase",
    [
        ("repeat i in 0..1000000000000 { x = x + 1 }", 3, 5, "too many repeat steps: this repeat runs 1000000000000"),
        ("repeat i in 0..10000000 { j = i }", 3, 5, "too many repeat steps: this repeat runs 10000000"),
        ("repeat i in 0..1000 { repeat j in 0..1000 { k = j } }", 3, 27, "too many repeat steps"),
        ("repeat i in 0..100000 { x = x + 1.0 }", 3, 5, "this repeat of 100,000 steps makes at least 3 graph nodes"),
        ("k = 9 ^ 9 ^ 9", 3, 9, "9 ^ 387420489 overflows"),  # never computed
    ],
)
def test_runaway_programs_stop(tmp_path, body, line, col, phrase):
    path = tmp_path / "m.dl"
    path.write_text(f"model m {{\n    input x: f32[B, 4]\n    {body}\n    output h = x\n}}\n")
    started = time.perf_counter()
    r = run_dlc(path, timeout=60)
    assert time.perf_counter() - started < 30
    assert_located(r.returncode, r.stdout, r.stderr, path, line, col, phrase)
    assert r.returncode == 1, r.stderr


def test_graph_node_limit(tmp_path, capsys, monkeypatch):
    """A repeat whose steps cannot all fit is refused at the repeat once two steps have shown their size;
    one whose first steps make no node (a static if) at the node that goes past the limit."""
    monkeypatch.setattr(G, "MAX_NODES", 500)
    check_located(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 4]
            h = x
            repeat i in 0..100 {
                h = dense(h, 4, relu)
            }
            output h
        }
        """,
        4,
        5,
        "this repeat of 100 steps makes at least",
    )
    check_located(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 4]
            h = x
            repeat i in 0..100 {
                if i >= 50 { h = dense(h, 4, relu) }
            }
            output h
        }
        """,
        5,
        26,
        "the model needs more than 500 graph nodes",
    )


@pytest.mark.parametrize(
    "expr, col, phrase",
    [
        ("(x,) * 1000000000000", 9, "a tuple of 1000000000000 items is too long (at most 1,000,000)"),
        ("range(1000000000000)", 9, "a tuple of 1000000000000 items is too long"),
        ("(1, 2) + range(999999)", 9, "a tuple of 1000001 items is too long"),
    ],
)
def test_huge_static_values_are_refused(tmp_path, capsys, expr, col, phrase):
    check_expression(tmp_path, capsys, expr, col, phrase)


def test_doubling_a_string_stops(tmp_path, capsys):
    check_located(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 4]
            s = "ab"
            repeat i in 0..100 { s = s + s }
            output y = x
        }
        """,
        4,
        30,
        "a string of 1048576 items is too long",
    )


@pytest.mark.parametrize("perm", ["1.0, 0", '"a", 0', "true, 0", "0, 0", "2, 0"])
def test_transpose_takes_a_permutation_of_integer_axes(tmp_path, capsys, perm):
    """Found by the fuzzer: transpose(x, 1.0, 0) passed the permutation check (1.0 == 1)."""
    from dlc.runtime.cli import main

    path = tmp_path / "t.dl"
    path.write_text(f"model m {{\n input x: f32[B, 2]\n v = transpose(x, {perm})\n loss mean(x)\n}}\n")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "t.dl:3:" in err and "is not a permutation" in err


# ---- the way back from inside the standard library ---------------------------------------------------------------
def test_an_error_deep_inside_the_standard_library_has_a_note_at_each_call_back_to_the_users(tmp_path, capsys):
    """transformer_encoder calls transformer_encoder_block, which calls multi_head_attention, where
    the error lies: reported at the user's call, then the library's line, then each call that led there."""
    path = write_program(
        tmp_path,
        prog("""
        def block(x) = transformer_encoder(x, 1, 3, 8)
        model m {
            input x: f32[B, T, 16]
            output h = block(x)
        }
        """),
        {},
    )
    code, out, err = run_inprocess(capsys, ["check", str(path)])
    assert_located(code, out, err, path, 1, 16, "cannot reshape f32[B, T, 16]", None, None)
    notes = re.findall(r"^(\S+?):(\d+):\d+: note: (.*)$", err, re.M)
    stdlib = [(file, note) for file, _, note in notes if file.startswith("<stdlib>")]
    assert stdlib == [
        ("<stdlib>/attention.dl", "inside multi_head_attention (standard library)"),
        ("<stdlib>/attention.dl", "called from here"),  # in transformer_encoder_block
        ("<stdlib>/attention.dl", "called from here"),  # in transformer_encoder
    ], err
    lines = [int(line) for file, line, note in notes if note == "called from here"]
    source = (Path(__file__).parents[2] / "compiler/stdlib/attention.dl").read_text().splitlines()
    assert [source[n - 1].strip().split("(")[0] for n in lines] == [
        "attn = multi_head_attention",
        "x = transformer_encoder_block",
    ], err
    assert notes[-1][2] == "in the call of block here", err  # then the user's own calls
