"""ONNX's control flow: Scan, as dlc's scan."""
from __future__ import annotations

from dlc.compiler.ir.dims import Dim
from dlc.compiler.onnx.node import Multi, Node, rule
from dlc.compiler.onnx.values import DL_DTYPES, FLOAT, Value


@rule("Scan", attrs=("body", "num_scan_inputs", "scan_input_axes", "scan_input_directions", "scan_output_axes",
                     "scan_output_directions"))
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
    sequences = [n.x(k + i) if n.x(k + i) in imp.bound or n.x(k + i) in imp.inputs.values()
                 else n.let(n.x(k + i), n.proto.input[k + i]) for i in range(m)]       # a sequence is a name
    imp.enter()
    for i, (v, a) in enumerate(zip(body.input[k:], in_axes)):
        shape = n.shape(k + i)
        slice_name = imp.bind(v.name, f"{sequences[i]}[{', '.join([':'] * a + ['t'])}]")
        imp.values[v.name] = Value(n.dtype(k + i), shape[:a] + shape[a + 1:], expr=slice_name)
    for t in body.initializer:
        imp.values[t.name] = Value(DL_DTYPES.get(t.data_type), tuple(t.dims), const=imp.onnx.numpy_helper.to_array(t),
                                   weight=DL_DTYPES.get(t.data_type) in FLOAT, onnx_type=t.data_type)
    imp.infer_body(body)
    imp.emit_nodes(body.node)
    finals = [imp.operand(o.name) for o in body.output[:k]]
    steps = [imp.operand(o.name) for o in body.output[k:]]
    wanted = [j for j in range(k) if n.used(j)] if outs else []      # final states read beside the yields
    lines = imp.leave() + [f"{c} = {f}" for c, f in zip(carries, finals) if c != f]
    if outs:
        lines.append(f"yield {', '.join(steps + [carries[j] for j in wanted])}")
    reverse = directions == {1}
    axis = out_axes.pop() if out_axes else 1
    options = ([f"axis = {axis}"] if outs and axis != 1 else []) + (["reverse = true"] if reverse else [])
    text = (f"scan t in {length}{' (' + ', '.join(options) + ')' if options else ''} carry "
            f"{', '.join(f'{c} = {n.x(j)}' for j, c in enumerate(carries))} {{\n    " + "\n    ".join(
                line.replace("\n", "\n    ") for line in lines) + "\n}")
    if not outs:
        return Multi(text) if k > 1 else text
    names = [n.binding(j=k + i) for i in range(outs)] + [imp.names(f"{carries[j]}_steps") for j in wanted]
    imp.assign(names, text)
    results = [None] * k + [Value(n.out_dtype(k + i), None, expr=names[i]) for i in range(outs)]
    for j, stacked in zip(wanted, names[outs:]):
        last = ", ".join([":"] * axis + ["0" if reverse else "-1"])
        results[j] = f"{stacked}[{last}]"
    return results
