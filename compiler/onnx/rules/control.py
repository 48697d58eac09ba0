"""ONNX's control flow: Scan and Loop with a trip count as dlc's scan, If with a condition
known when importing as the branch it takes."""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import Dim
from dlc.compiler.onnx.rule_api.node import Multi, Node, rule
from dlc.compiler.onnx.rule_api.values import DL_DTYPES, FLOAT, Value


@rule(
    "Scan",
    attrs=(
        "body",
        "num_scan_inputs",
        "scan_input_axes",
        "scan_input_directions",
        "scan_output_axes",
        "scan_output_directions",
    ),
)
def _scan(n: Node):
    """ONNX's Scan as dlc's scan: the states are the carries, each scan input a sequence
    sliced at step t along its axis, the body's nodes the scan's body, the scan outputs its
    yields (the final states, when they are read, are yielded too and taken at the last step)."""
    if n.version < 9:
        n.refuse("the Scan of opset 8 (its sequence_lens input)")
    body = n.attr("body")
    m = n.attr("num_scan_inputs")
    k = len(n.proto.input) - m
    outs = len(body.output) - k
    in_axes = [n.axis(a, n.rank(k + i)) for i, a in enumerate(n.attr("scan_input_axes", [0] * m))]
    directions = set(n.attr("scan_input_directions", [0] * m)) | set(n.attr("scan_output_directions", [0] * outs))
    out_axes = set(n.attr("scan_output_axes", [0] * outs))
    if len(directions) > 1 or len(out_axes) > 1:
        n.refuse("scan inputs or outputs in different directions, or outputs stacked along different axes")
    lengths = {n.shape(k + i)[a] for i, a in enumerate(in_axes)}
    length = lengths.pop() if len(lengths) == 1 else None
    if not isinstance(length, int) and not (isinstance(length, Dim) and str(length).isidentifier()):
        n.refuse("scan inputs of different or computed lengths", "shape")
    imp = n.imp
    carries = [imp.names(v.name, "c") for v in body.input[:k]]
    for j, (name, v) in enumerate(zip(carries, body.input[:k])):
        imp.values[v.name] = Value(n.dtype(j), n.shape(j), expr=name)
    sequences = [
        n.x(k + i)
        if n.x(k + i) in imp.bound or n.x(k + i) in imp.inputs.values()
        else n.let(n.x(k + i), n.proto.input[k + i])
        for i in range(m)
    ]  # a sequence is a name
    imp.enter()
    for i, (v, a) in enumerate(zip(body.input[k:], in_axes)):
        shape = n.shape(k + i)
        slice_name = imp.bind(v.name, f"{sequences[i]}[{', '.join([':'] * a + ['t'])}]")
        imp.values[v.name] = Value(n.dtype(k + i), shape[:a] + shape[a + 1 :], expr=slice_name)
    _body_constants(imp, body)
    imp.infer_body(body)
    imp.emit_nodes(body.node)
    finals = [imp.operand(o.name) for o in body.output[:k]]
    steps = [imp.operand(o.name) for o in body.output[k:]]
    wanted = [j for j in range(k) if n.used(j)] if outs else []  # final states read beside the yields
    lines = imp.leave() + [f"{c} = {f}" for c, f in zip(carries, finals) if c != f]
    if outs:
        lines.append(f"yield {', '.join(steps + [carries[j] for j in wanted])}")
    reverse = directions == {1}
    axis = out_axes.pop() if out_axes else 1
    options = ([f"axis = {axis}"] if outs and axis != 1 else []) + (["reverse = true"] if reverse else [])
    text = _scan_text(length, options, [(c, n.x(j)) for j, c in enumerate(carries)], lines)
    if not outs:
        return Multi(text) if k > 1 else text
    names = [n.binding(j=k + i) for i in range(outs)] + [imp.names(f"{carries[j]}_steps") for j in wanted]
    imp.assign(names, text)
    results = [None] * k + [Value(n.out_dtype(k + i), None, expr=names[i]) for i in range(outs)]
    for j, stacked in zip(wanted, names[outs:]):
        last = ", ".join([":"] * axis + ["0" if reverse else "-1"])
        results[j] = f"{stacked}[{last}]"
    return results


def _body_constants(imp, body):
    """The initializers of a body (a float one is a weight)."""
    for t in body.initializer:
        dtype = DL_DTYPES.get(t.data_type)
        imp.values[t.name] = Value(
            dtype, tuple(t.dims), const=imp.onnx.numpy_helper.to_array(t), weight=dtype in FLOAT, onnx_type=t.data_type
        )


def _scan_text(length, options: list, carries: list, lines: list) -> str:
    """`scan t in length (options) carry name = init, ... { lines }`."""
    return (
        f"scan t in {length}{' (' + ', '.join(options) + ')' if options else ''} carry "
        f"{', '.join(f'{c} = {init}' for c, init in carries)} {{\n    "
        + "\n    ".join(line.replace("\n", "\n    ") for line in lines)
        + "\n}"
    )


@rule("Loop", attrs=("body",))
def _loop(n: Node):
    """A Loop that runs a trip count known when importing (a number or a dim), its condition
    true throughout, as a scan: the loop-carried values are its carries, the iteration number
    a counter carried beside them, the scan outputs its yields stacked along axis 0."""
    body = n.attr("body")
    if not n.has(0):
        n.refuse("a Loop without a trip count (it runs while its condition holds)", "input")
    trips = n.static(0, "the trip count").reshape(())
    length = trips.item()
    if not isinstance(length, Dim) and int(length) < 1:
        n.refuse(f"a Loop of {length} iterations", "shape")
    if isinstance(length, Dim) and not str(length).isidentifier():
        n.refuse(f"a Loop of {length} iterations (a computed length)", "shape")
    if n.has(1) and not bool(n.static(1, "the condition")):
        n.refuse("a Loop whose condition is false from the start", "input")
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out != cond_in and not _always_true(n, body, cond_out, cond_in):
        n.refuse("a Loop whose condition is computed in its body (dlc's scan runs a known number of steps)", "input")
    k = len(n.proto.input) - 2
    outs = len(body.output) - 1 - k
    if k == 0:
        n.refuse("a Loop without loop-carried values")
    imp = n.imp
    carries = [imp.names(v.name, "c") for v in body.input[2:]]
    for j, (name, v) in enumerate(zip(carries, body.input[2:])):
        imp.values[v.name] = Value(n.dtype(2 + j), n.shape(2 + j), expr=name)
    counter = imp.names(body.input[0].name, "i") if body.input[0].name in imp.read else None
    if counter:
        imp.values[body.input[0].name] = Value("i64", (), expr=counter)
    imp.values[cond_in] = Value("bool", (), const=np.array(True))
    imp.enter()
    _body_constants(imp, body)
    imp.infer_body(body)
    imp.emit_nodes(body.node)
    finals = [imp.operand(o.name) for o in body.output[1 : 1 + k]]
    steps = [imp.operand(o.name) for o in body.output[1 + k :]]
    lines = imp.leave() + [f"{c} = {f}" for c, f in zip(carries, finals) if c != f]
    inits = [(c, n.x(2 + j)) for j, c in enumerate(carries)]
    if counter:
        lines.append(f"{counter} = {counter} + 1")
        inits.append((counter, 'cast(0, "i64")'))
    wanted = [j for j in range(k) if n.used(j)] if outs else []  # final values read beside the yields
    if outs:
        lines.append(f"yield {', '.join(steps + [carries[j] for j in wanted])}")
    text = _scan_text(length, ["axis = 0"] if outs else [], inits, lines)
    if not outs:
        if counter:  # the scan returns the counter too: drop it
            names = [n.binding(j=j) for j in range(k)] + [imp.names(counter + "_last")]
            imp.assign(names, text)
            return [Value(n.dtype(2 + j), n.shape(2 + j), expr=names[j]) for j in range(k)]
        return Multi(text) if k > 1 else text
    names = [n.binding(j=k + i) for i in range(outs)] + [imp.names(f"{carries[j]}_steps") for j in wanted]
    imp.assign(names, text)
    results = [None] * k + [Value(n.out_dtype(k + i), None, expr=names[i]) for i in range(outs)]
    for j, stacked in zip(wanted, names[outs:]):
        results[j] = f"{stacked}[-1]"
    return results


def _always_true(n: Node, body, cond_out: str, cond_in: str) -> bool:
    """Whether the body's condition output is its condition input passed on, or true."""
    node = next((node for node in body.node if cond_out in node.output), None)
    if node is None:
        return False
    if node.op_type == "Identity":
        return node.input[0] == cond_in
    if node.op_type == "Constant" and node.attribute:
        return bool(np.all(n.imp.onnx.numpy_helper.to_array(node.attribute[0].t)))
    return False


@rule("If", attrs=("then_branch", "else_branch"))
def _if(n: Node):
    """The branch a condition known when importing takes: its nodes, inline."""
    cond = n.const(0)
    if cond is None:
        n.refuse(
            "an If whose condition is computed at run time (dlc imports the branch a condition known "
            "when importing takes)",
            "input",
        )
    if cond.size != 1:
        n.refuse(f"an If whose condition has {cond.size} values")
    branch = n.attr("then_branch" if bool(cond.reshape(-1)[0]) else "else_branch")
    imp = n.imp
    _body_constants(imp, branch)
    imp.infer_body(branch)
    imp.emit_nodes(branch.node)
    return [imp.values[o.name] for o in branch.output]
