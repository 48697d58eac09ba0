"""ONNX ops that reduce along axes: the Reduce ops, ArgMax and ArgMin, Softmax, LogSoftmax
and Hardmax, TopK, the running CumSum and CumProd (scans), and Einsum (a sum of products)."""

from __future__ import annotations

from math import prod

from dlc.compiler.onnx.rule_api.node import Node, rule
from dlc.compiler.onnx.rule_api.values import FLOAT, INT, LARGEST, NUMBER, SMALL, Value
from dlc.compiler.onnx.rule_api.writing import axes_text, dims_args, reshaped, scan_along


REDUCTIONS = {
    "ReduceSum": "sum({x}{axes})",
    "ReduceMean": "mean({x}{axes})",
    "ReduceMax": "max({x}{axes})",
    "ReduceMin": "min({x}{axes})",
    "ReduceL1": "sum(abs({x}){axes})",
    "ReduceL2": "sqrt(sum({x} ^ 2{axes}))",
    "ReduceSumSquare": "sum({x} ^ 2{axes})",
    "ReduceLogSum": "log(sum({x}{axes}))",
    "ReduceLogSumExp": "max({x}{axes}) + log(sum(exp({x} - max({x}{all_kept})){axes}))",
}
# those that read their input's values as integers too
INT_REDUCTIONS = ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare")


@rule("ReduceProd", static=(1,), attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce_prod(n: Node):
    """The product over each axis in turn: a scan that multiplies its slices."""
    shape = list(n.shape(0))
    if n.dtype(0) not in NUMBER:
        n.refuse(f"{n.dtype(0)} inputs", "dtype")
    axes = n.setting("axes", 1, [])
    if not axes and n.attr("noop_with_empty_axes", 0):
        return n.value(0)
    axes = sorted({n.axis(a, len(shape)) for a in axes or range(len(shape))}, reverse=True)
    out = None
    for a in axes:  # the last axis first, so the others keep their places
        out = n.let(scan_along(n, shape, a, "*", steps=False, x=out), n.label + "_product")
        del shape[a]
    kept = [1 if k in axes else d for k, d in enumerate(n.shape(0))]
    return reshaped(out, kept) if n.attr("keepdims", 1) else Value(n.dtype(0), tuple(shape), expr=out)


@rule(*REDUCTIONS, static=(1,), attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce(n: Node):
    rank = n.rank(0)
    dtype = n.dtype(0)
    if dtype not in FLOAT and not (dtype in INT and n.op in INT_REDUCTIONS):
        n.refuse(f"{dtype} inputs", "dtype")
    axes = n.setting("axes", 1, [])
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return n.value(0)
        axes = list(range(rank))
    axes = sorted({n.axis(a, rank) for a in axes})
    keep = ", keepdims = true" if n.attr("keepdims", 1) else ""
    text = REDUCTIONS[n.op].format(
        x=n.x(0), axes=f", {axes_text(axes)}{keep}", all_kept=f", {axes_text(axes)}, keepdims = true"
    )
    if dtype in INT and n.op == "ReduceMin":  # min negates, which computes in f32
        text = f"cast({text}, \"{dtype}\")"
    return text


@rule("ArgMax", "ArgMin", attrs=("axis", "keepdims", "select_last_index"))
def _argmax(n: Node):
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", 0), rank)
    x = n.x(0)
    keep = ", keepdims = true" if n.attr("keepdims", 1) else ""
    if n.attr("select_last_index", 0):  # the largest position holding the extremum
        best = n.let(f"{'max' if n.op == 'ArgMax' else 'min'}({x}, {axis}, keepdims = true)", n.label + "_best")
        places = reshaped(f"arange({shape[axis]})", [d if k == axis else 1 for k, d in enumerate(shape)])
        return f"cast(max(select({x} == {best}, {places}, -1), {axis}{keep}), \"i64\")"
    if n.op == "ArgMin":
        x = f"-{x}" if n.dtype(0) in FLOAT else f"0 - {x}"
    out = f"cast(argmax({x}, {axis}), \"i64\")"
    return f"expand_dims({n.let(out, n.label + '_index')}, {axis})" if n.attr("keepdims", 1) else out


@rule("Softmax", "LogSoftmax", "Hardmax", attrs=("axis",))
def _softmax(n: Node):
    n.require_float()
    shape = n.shape(0)
    rank = len(shape)
    x = n.x(0)
    if n.version < 13:  # the input seen as a matrix: axes before `axis` are rows
        axis = n.axis(n.attr("axis", 1), rank)
        if axis != rank - 1:
            flat = n.let(reshaped(x, [prod(shape[:axis], start=1), prod(shape[axis:], start=1)]), n.label + "_rows")
            done = n.let(_softmax_text(n, flat, 1, 2, prod(shape[axis:], start=1)), n.label + "_rows")
            return reshaped(done, shape)
    axis = n.axis(n.attr("axis", -1), rank)
    return _softmax_text(n, x, axis, rank, shape[axis])


def _softmax_text(n: Node, x: str, axis: int, rank: int, size) -> str:
    if n.op == "Softmax":
        return f"softmax({x}, {axis})"
    if n.op == "LogSoftmax":
        return f"log_softmax({x}, {axis})"
    last = f"swapaxes({x}, {axis}, -1)" if axis != rank - 1 else x
    hot = f"one_hot(argmax({last}, -1), {size}, \"{n.dtype(0)}\")"
    return hot if last == x else f"swapaxes({n.let(hot, n.label + '_hot')}, {axis}, -1)"


@rule("CumSum", "CumProd", static=(1,), attrs=("exclusive", "reverse"))
def _cumulative(n: Node):
    """A scan along the axis whose carry is the running sum (product), yielded at every step."""
    shape = n.shape(0)
    if n.dtype(0) not in NUMBER:
        n.refuse(f"{n.dtype(0)} inputs", "dtype")
    axis = n.axis(int(n.static(1, "axis")), len(shape))
    if n.op == "CumSum" and not isinstance(shape[axis], int):
        return _running_sum(n, shape, axis)
    return scan_along(
        n,
        shape,
        axis,
        "+" if n.op == "CumSum" else "*",
        steps=True,
        exclusive=n.attr("exclusive", 0),
        reverse=n.attr("reverse", 0),
    )


def _running_sum(n: Node, shape, axis: int) -> str:
    """CumSum along a symbolic axis (positions counted from a padding mask), which a scan
    cannot step through: each entry the sum of the entries at or before it (after it,
    `reverse`; strictly, `exclusive`), chosen by a triangular mask."""
    size, rank = shape[axis], len(shape)
    x = n.x(0) if axis == rank - 1 else n.let(f"swapaxes({n.x(0)}, {axis}, -1)", n.label + "_moved")
    order = {(0, 0): "<=", (1, 0): "<", (0, 1): ">=", (1, 1): ">"}[n.attr("exclusive", 0), n.attr("reverse", 0)]
    before = n.let(
        f"reshape(arange({size}), 1, {size}) {order} reshape(arange({size}), {size}, 1)", n.label + "_before"
    )
    out = f"sum(select({before}, expand_dims({x}, -2), 0), -1)"
    return out if axis == rank - 1 else f"swapaxes({n.let(out, n.label + '_sums')}, {axis}, -1)"


@rule("TopK", static=(1,), attrs=("axis", "largest", "sorted"))
def _top_k(n: Node):
    """The k largest (smallest) entries along the axis, by k rounds of argmax that each put
    the entry found out of the running; ties go to the lower index, as in ONNX."""
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", -1), rank)
    k = int(n.static(1, "K").reshape(-1)[0])
    if k > SMALL * 4:
        n.refuse(f"K = {k} (dlc unrolls TopK, up to {SMALL * 4})")
    dtype = n.dtype(0)
    if dtype not in NUMBER:
        n.refuse(f"{dtype} inputs", "dtype")
    x = n.x(0) if axis == rank - 1 else n.let(f"swapaxes({n.x(0)}, {axis}, -1)", n.label + "_moved")
    if not n.attr("largest", 1):
        x = n.let(f"-{x}" if dtype in FLOAT else f"0 - {x}", n.label + "_negated")
    out = "-" + LARGEST[dtype] if dtype in FLOAT else str(-(2 ** (31 if dtype == "i32" else 63)) + 1)
    values, indices = [], []
    for i in range(k):
        indices.append(n.let(f"argmax({x}, -1)", f"{n.label}_index{i}"))
        values.append(n.let(f"max({x}, -1)", f"{n.label}_value{i}"))
        if i < k - 1:
            x = n.let(f"select(one_hot({indices[-1]}, {shape[axis]}, \"bool\"), {out}, {x})", f"{n.label}_rest{i}")
    stacked_values = f"stack({', '.join(values)}, axis = -1)"
    if not n.attr("largest", 1):
        stacked_values = (
            f"-{n.let(stacked_values, n.label + '_largest')}"
            if dtype in FLOAT
            else f"0 - {n.let(stacked_values, n.label + '_largest')}"
        )
    stacked_indices = f"cast(stack({', '.join(indices)}, axis = -1), \"i64\")"
    if axis == rank - 1:
        return [stacked_values, stacked_indices]
    return [f"swapaxes({n.let(v, n.label + '_found')}, {axis}, -1)" for v in (stacked_values, stacked_indices)]


@rule("Einsum", attrs=("equation",))
def _einsum(n: Node):
    """Each operand's repeated letters first taken on their diagonal; then, for f32
    operands of the same sizes, one matrix product per pair of operands (matmul, batched,
    bilinear forms: `_contract`), else the operands with their axes put in one order of all
    the letters, multiplied with broadcasting and summed over the letters not in the output."""
    xs = [i for i in range(len(n.proto.input)) if n.has(i)]
    if any(n.dtype(i) not in NUMBER for i in xs):
        n.refuse("bool operands", "dtype")
    equation = n.attr("equation").replace(" ", "")
    inputs, _, output = equation.partition("->")
    terms = inputs.split(",")
    spare = iter(sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") - set(equation)))
    ellipsis = ""
    operands, sizes, broadcast = [], {}, False
    for i, term in zip(xs, terms):
        shape = n.shape(i)
        if "..." in term:  # the same letters for every operand's ellipsis, aligned on the right
            width = len(shape) - (len(term) - 3)
            while len(ellipsis) < width:
                ellipsis = next(spare) + ellipsis
            term = term.replace("...", ellipsis[len(ellipsis) - width :])
        letters, x = list(term), n.x(i)
        for pos, letter in enumerate(letters):
            broadcast |= sizes.setdefault(letter, shape[pos]) != shape[pos]
        while len(set(letters)) < len(letters):  # a repeated letter: the diagonal of its two axes
            p = letters.index(next(c for c in letters if letters.count(c) > 1))
            q = letters.index(letters[p], p + 1)
            size = sizes[letters[p]]
            eye = reshaped(
                f"select(reshape(arange({size}), {size}, 1) == reshape(arange({size}), 1, {size}), 1, 0)",
                [size if a in (p, q) else 1 for a in range(len(letters))],
            )
            x = n.let(f"sum({x} * {eye}, {q})", n.label + "_diagonal")
            del letters[q]
        operands.append((x, letters))
    if "->" not in equation:  # implicit output: the letters seen once, in order
        seen = "".join(letters for _, letters in operands for letters in letters)
        output = "..." if ellipsis else ""
        output += "".join(sorted(c for c in set(seen) if seen.count(c) == 1 and c not in ellipsis))
    output = list(output.replace("...", ellipsis))
    if len(operands) > 1 and not broadcast and all(n.dtype(i) == "f32" for i in xs):  # native @ is f32
        return _contract(n, operands, output, sizes)
    order = output + sorted({c for _, letters in operands for c in letters} - set(output))
    parts = []
    for x, letters in operands:
        x, placed = _arranged(n, x, letters, [c for c in order if c in letters], sizes)
        dims = [sizes[c] if c in placed else 1 for c in order]
        parts.append(reshaped(x, dims) if len(dims) != len(placed) else x)
    out = " * ".join(parts)
    summed = list(range(len(output), len(order)))
    if summed:
        out = f"sum({n.let(out, n.label + '_products') if len(parts) > 1 else out}, {axes_text(summed)})"
    return out if out != n.x(xs[0]) else n.value(xs[0])


def _contract(n: Node, operands: list, output: list, sizes: dict) -> str:
    """The operands contracted left to right, two at a time, as one matrix product each:
    the letters both have and a later operand or the output needs are its batch axes, the
    letters both have that nothing needs later are multiplied away (a letter only one
    has and nothing needs is summed first), and the others are its rows and columns."""
    (x, letters), rest = operands[0], operands[1:]
    for k, (y, other) in enumerate(rest):
        needed = set(output).union(*(later for _, later in rest[k + 1 :]))
        x, letters = _summed_alone(n, x, letters, needed | set(other))
        y, other = _summed_alone(n, y, other, needed | set(letters))
        batch = [c for c in letters if c in other and c in needed]
        shared = [c for c in letters if c in other and c not in needed]
        rows = [c for c in letters if c not in other]
        cols = [c for c in other if c not in letters]
        x, _ = _arranged(n, x, letters, batch + rows + shared, sizes, [*([c] for c in batch), rows, shared])
        y, _ = _arranged(n, y, other, batch + shared + cols, sizes, [*([c] for c in batch), shared, cols])
        product = f"{x} @ {y}"
        letters = batch + rows + cols
        if len(rows) != 1 or len(cols) != 1:  # the rows' and the columns' letters apart again
            product = reshaped(n.let(product, n.label + "_product"), [sizes[c] for c in letters])
        if k == len(rest) - 1 and letters == output:
            return product
        x = n.let(product, n.label + "_product")
    return f"transpose({x}, {dims_args(letters.index(c) for c in output)})"


def _summed_alone(n: Node, x: str, letters: list, kept: set):
    """x with the axes of its letters outside `kept` summed away."""
    gone = [a for a, c in enumerate(letters) if c not in kept]
    if not gone:
        return x, letters
    return n.let(f"sum({x}, {axes_text(gone)})", n.label + "_summed"), [c for c in letters if c in kept]


def _arranged(n: Node, x: str, letters: list, order: list, sizes: dict, groups=None):
    """x (its axes named by `letters`) with its axes in `order`, then each of `groups`
    (lists of letters, in order) merged into one axis: the text and its letters."""
    perm = [letters.index(c) for c in order]
    if perm != list(range(len(letters))):
        x = n.let(f"transpose({x}, {dims_args(perm)})", n.label + "_ordered")
    if groups is not None and any(len(g) != 1 for g in groups):
        x = n.let(reshaped(x, [prod((sizes[c] for c in g), start=1) for g in groups]), n.label + "_merged")
    return x, order
