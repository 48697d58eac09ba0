"""ONNX -> .dl: `dlc import model.onnx -o model.dl`.

An ONNX graph becomes one readable model: every node a binding (`y = relu(x)`), and the
patterns a person writes as library calls (Gemm or MatMul + Add [+ activation] -> `dense`,
Conv [+ Add] [+ Relu] -> `conv2d`, LSTM -> `lstm`, ...) those calls, whose parameters take
the initializers' values, transposed and reordered into dlc's layouts, in a checkpoint.
Values known when importing (initializers, Constant nodes, shapes and what is computed
from them) are folded here, since .dl needs shapes and axes to be static. The rule of each
op type is in compiler/onnx/rules/ (through the rule API, rule_api/node.py); this module reads the
model, names things, folds constants and writes the program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.loader import GrowingModel, stdlib_env
from dlc.compiler.frontend.syntax import keywords
from dlc.compiler.ir.dims import Dim
from dlc.compiler.ir.graph import DTYPES, ONNX_ELEM_TYPES
from dlc.compiler.onnx.rule_api.folding import too_large_to_propagate
from dlc.compiler.onnx.rule_api.node import Expand, Node, Unsupported
from dlc.compiler.onnx.rules import RULES
from dlc.compiler.onnx.rule_api.values import (
    DL_DTYPES,
    FLOAT,
    SMALL,
    Value,
    dtype_of,
    literal,
    onnx_package,
    shape_tuple,
    too_large,
    tuple_literal,
    type_name,
)

# opset 7 brought numpy broadcasting to the arithmetic ops; 28 is the newest the rules know
MIN_OPSET, MAX_OPSET = 7, 28

# names a binding may not take beside the language's words: the evaluator's `training` and
# `params`, and `rng`, the engines' feed of the random key
RESERVED_NAMES = {"training", "params", "rng"}


def read_model(path):
    """The ModelProto in `path`; a file that is not a valid ONNX model is a clear error."""
    onnx = onnx_package()
    path = Path(path)
    if path.is_dir():
        raise DlcError(f"{path} is a directory, not an ONNX model")
    if not path.is_file():
        raise DlcError(f"no such file: {path}", Span.whole(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
        _check_external_data(onnx, model, path)
        onnx.load_external_data_for_model(model, str(path.parent))
    except DlcError:
        raise
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not a ModelProto
        raise DlcError(
            f"{path} is not an ONNX model: it cannot be decoded ({_first_line(e) or 'no detail'}); "
            "the file is truncated or in another format"
        ) from None
    if not model.HasField("graph") or not model.opset_import:
        raise DlcError(f"{path} is not an ONNX model: it has no graph or no opset (a truncated file or another format)")
    return model


def _check_external_data(onnx, model, path: Path):
    """Refuse a tensor that keeps its data in a file outside the model's folder (onnx refuses
    it too, in words that blame the model file)."""
    folder = path.resolve().parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not (folder / location).resolve().is_relative_to(folder):
                raise DlcError(
                    f"{path}: the tensor '{tensor.name}' keeps its data in '{location}', outside the "
                    "model's folder; dlc reads external data only from that folder"
                )


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


@dataclass
class Imported:
    """The result of an import: the .dl text, the checkpoint's arrays by parameter name,
    and the names the ONNX inputs and outputs have in it."""

    name: str
    text: str
    weights: dict
    inputs: dict  # ONNX input name -> .dl input name
    outputs: dict  # ONNX output name -> .dl output name
    dtypes: dict = field(default_factory=dict)  # .dl output name -> ONNX numpy dtype


def import_model(
    model, name: str | None = None, static: dict | None = None, source: str = "model", as_def: bool = False
) -> Imported:
    """The .dl program of an ONNX ModelProto. `static` gives values for graph inputs that
    the program needs as constants (shapes, axes, recurrent weights; see static_inputs).
    An op that ONNX defines as a function of other ops is imported as that function's body
    when dlc has no rule for it, or when its rule refuses the node. `as_def`: the program is
    a `def` that another file imports, and a model that calls it (see `_Importer.def_text`)."""
    check_model(model, source)
    model = expand_functions(model)
    for _ in range(MAX_EXPANSIONS):
        try:
            return _Importer(model, name, static or {}, source, as_def).run()
        except Expand as e:
            expanded = expand_functions(model, {e.index})
            if expanded is model:  # no body for this node after all
                raise e.refusal from None
            model = expanded
    raise DlcError(f"{source}: more than {MAX_EXPANSIONS} ops had to be expanded into their ONNX functions")


def check_model(model, source: str) -> int:
    """The model's opset of the standard operators, once the model is known to be one dlc
    reads: an opset it knows, and a model onnx's checker accepts."""
    onnx = onnx_package()
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    v = versions.get("ai.onnx")
    if v is None:
        raise Unsupported(
            f"{source}: the model uses no version of the standard ONNX operators (its "
            f"opsets: {', '.join(f'{d} {v}' for d, v in versions.items())})",
            "opset",
        )
    if not MIN_OPSET <= v <= MAX_OPSET:
        raise Unsupported(
            f"{source}: the model uses ONNX opset {v}; dlc imports opsets {MIN_OPSET} to "
            f"{MAX_OPSET}" + (" (convert it with onnx.version_converter)" if v < MIN_OPSET else ""),
            "opset",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # ValidationError, or a C++ checker error
        raise DlcError(f"{source} is not a valid ONNX model: {_first_line(e)}") from None
    return v


MAX_EXPANSIONS = 64


def op_schema(node, opset: int):
    """The ONNX schema of a node's op at `opset`; None outside the standard domain or opset."""
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx_package().defs.get_schema(node.op_type, opset, "")
    except Exception:  # SchemaError: no such op in this opset
        return None


def function_body(node, opset: int, types: dict):
    """The FunctionProto that defines `node`'s op at `opset` (for this node's attributes and
    input types, for the ops whose body depends on them), or None. A body written for an
    older opset is taken when the ops it uses are the same at `opset`."""
    onnx = onnx_package()
    schema = op_schema(node, opset)
    if schema is None:
        return None
    node = onnx.NodeProto.FromString(node.SerializeToString())
    given = {a.name for a in node.attribute}
    node.attribute.extend(
        a.default_value for name, a in schema.attributes.items() if name not in given and a.default_value.name
    )  # the body may read defaults
    body = None
    if schema.has_function:
        version = max((v for v in schema.function_opset_versions if v <= opset), default=None)
        if version is not None:
            body = onnx.FunctionProto.FromString(schema.get_function_with_opset_version(version))
    elif schema.has_context_dependent_function and all(i in types for i in node.input if i):
        version = max((v for v in schema.context_dependent_function_opset_versions if v <= opset), default=None)
        if version is not None:
            text = schema.get_context_dependent_function_with_opset_version(
                version, node.SerializeToString(), [types[i].SerializeToString() for i in node.input if i]
            )
            body = onnx.FunctionProto.FromString(text) if text else None
    if body is None:
        return None
    for o in body.opset_import:
        if o.domain in ("", "ai.onnx") and o.version != opset:
            if any(
                op_schema(n, o.version) is None
                or op_schema(n, opset) is None
                or op_schema(n, o.version).since_version != op_schema(n, opset).since_version
                for n in body.node
            ):
                return None
            o.version = opset
    body.name = node.op_type
    return body, node


def expand_functions(model, indices: set | None = None):
    """`model` with these nodes (by default: those of ops dlc has no rule for) replaced by the
    bodies of the ONNX functions that define their ops, repeatedly for functions that use
    such ops; onnx.inliner does the renaming."""
    onnx = onnx_package()
    from onnx import inliner

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        return model
    for _ in range(MAX_EXPANSIONS):
        picked = [
            k
            for k, node in enumerate(model.graph.node)
            if (k in indices if indices is not None else node.op_type not in RULES)
        ]
        if not picked:
            return model
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:
            inferred = model
        types = {v.name: v.type for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
        expanded = onnx.ModelProto.FromString(model.SerializeToString())
        found = False
        for k in picked:
            node = expanded.graph.node[k]
            found_body = function_body(node, opset, types)
            if found_body is None:
                continue
            body, completed = found_body
            found = True
            domain = f"dlc.expand.{k}"  # one function per node: their bodies differ with attributes and types
            node.CopyFrom(completed)
            node.domain = body.domain = domain
            expanded.functions.append(body)
            expanded.opset_import.append(onnx.helper.make_opsetid(domain, 1))
        if not found:
            return model
        model = inliner.inline_local_functions(expanded)
        if any(n.domain.startswith("dlc.expand.") for n in model.graph.node):
            raise DlcError("onnx's inliner left a function call in the model")  # never seen; say so if it is
        del model.opset_import[:]
        model.opset_import.extend(o for o in expanded.opset_import if not o.domain.startswith("dlc.expand."))
        indices = None  # then the ops without rules that the bodies use
    return model


def static_inputs(model) -> list:
    """The graph inputs whose values the program needs when importing: those that reach an
    input a rule needs static (a Reshape's shape, an LSTM's weights), through nodes that
    would then be folded. A backend binds them from the values it is given."""
    graph = expand_functions(model).graph
    needed: set = set()
    for node in reversed(graph.node):
        rule = RULES.get(node.op_type)
        if rule is None:
            continue
        needed.update(node.input[i] for i in rule.static if i < len(node.input) and node.input[i])
        if not rule.shape_only and any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    known = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name in needed and i.name not in known]


# ---- names -----------------------------------------------------------------------------------------
class Namer:
    """Readable, unique .dl names from ONNX names: '/fc1/Gemm_output_0' -> fc1_Gemm,
    'onnx::Relu_5' -> Relu_5; never a keyword, a library function or a name given before."""

    def __init__(self, reserved):
        self.used = set(reserved)

    @staticmethod
    def clean(hint: str, fallback: str = "v") -> str:
        """An ONNX name as an identifier (before making it unique)."""
        text = re.sub(r"_output_\d+$|:\d+$", "", hint or "")
        text = re.sub(r"^onnx::", "", text)
        text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or fallback
        return f"{fallback}{text}" if text[0].isdigit() else text

    def __call__(self, hint: str, fallback: str = "v") -> str:
        text = self.clean(hint, fallback)
        name, k = text, 2
        while name in self.used:
            name, k = f"{text}_{k}", k + 1
        self.used.add(name)
        return name


def dims_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def dims_tensor(a: np.ndarray, dtype: str) -> str:
    """A shape holding dims (a sequence length) as a tensor of their run-time values."""
    items = [f"cast({d}, \"{dtype}\")" for d in a.ravel()]
    if a.ndim == 0:
        return items[0]
    flat = (
        "concat(" + ", ".join(f"reshape({i}, 1)" for i in items) + ", axis = 0)"
        if len(items) > 1
        else f"reshape({items[0]}, 1)"
    )
    return flat if a.ndim == 1 else f"reshape({flat}, {', '.join(map(str, a.shape))})"


# ---- the importer ------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, model, name, static: dict, source: str, as_def: bool):
        self.onnx = onnx_package()
        self.source = source
        self.as_def = as_def
        self.static = static
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.model = self._prepared(model)
        graph = self.model.graph
        self.graph = graph
        self.names = Namer(keywords() | RESERVED_NAMES | stdlib_env().visible_names())
        self.name = Namer.clean(name or graph.name or "imported", "model")  # models have names of their own
        if self.name in keywords() | RESERVED_NAMES or as_def and self.name in self.names.used:
            self.name += "_model"  # a def may not hide the library functions its body calls
        if as_def:
            self.names.used.add(self.name)
        self.values: dict[str, Value] = {}
        self.decls: list[str] = []  # param and state declarations
        self.body: list[str] = []  # bindings
        self.bound: set = set()  # the names they bind
        self.built = None  # the program so far, built (a GrowingModel), once type_now asks
        self.built_lines = [0, 0, 0]  # ... of the header, decls and body
        self.scopes: list = []  # the enclosing programs' bindings, inside a scan body
        self.weights: dict = {}
        self.inputs: dict = {}
        self.consumers: dict = {}
        for node in graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.producers = {o: node for g in self._graphs(graph) for node in g.node for o in node.output}
        # what a node or a graph's outputs read, in the graph or a scan body (nested too)
        self.read = {
            name
            for g in self._graphs(graph)
            for name in [*(i for node in g.node for i in node.input), *(o.name for o in g.output)]
        }
        self.dim_texts: dict = {}  # a Dim's text -> the Dim, for the shapes given to ONNX's inference
        self.graph_outputs = {o.name for o in graph.output}
        self.absorbed: set = set()
        self.index = {id(node): k for k, node in enumerate(graph.node)}
        self.types = self._inferred_types()

    # -- reading --
    def _prepared(self, model):
        """The model with its local functions inlined and its static inputs bound."""
        onnx = self.onnx
        if model.functions:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        if self.static:
            model = onnx.ModelProto.FromString(model.SerializeToString())
            names = {t.name for t in model.graph.initializer}
            for name, value in self.static.items():
                if name not in names:
                    model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return model

    def _inferred_types(self) -> dict:
        data_prop = not too_large_to_propagate(self.onnx, self._graphs(self.model.graph))
        try:
            inferred = self.onnx.shape_inference.infer_shapes(self.model, data_prop=data_prop)
        except Exception as e:
            raise DlcError(f"{self.source}: ONNX shape inference fails on this model: {_first_line(e)}") from None
        types = {}
        for g in self._graphs(inferred.graph):
            for vi in (*g.value_info, *g.output, *g.input):
                if vi.type.HasField("tensor_type"):
                    types[vi.name] = vi.type.tensor_type
        return types

    @staticmethod
    def _graphs(graph) -> list:
        """The graph and the bodies of its Scans (their values' names are the model's too)."""
        graphs, found = [graph], []
        while graphs:
            g = graphs.pop()
            found.append(g)
            graphs += [a.g for node in g.node for a in node.attribute if a.HasField("g")]
        return found

    def infer_body(self, body):
        """Type a scan body's values with ONNX's shape inference, its inputs and the outer
        values it reads typed as the importer knows them (the model's inference does not
        reach into bodies whose inputs have no shapes)."""
        self._infer(list(body.node), list(body.output))

    def reinfer(self, name: str):
        """Type a value of a scan body again, by ONNX's inference of the nodes that make it
        back to values the importer knows the shapes of (a reshape to computed dims, whose
        shape ONNX could not tell before)."""
        nodes, seen = [], set()

        def visit(value):
            node = self.producers.get(value)
            if node is None or id(node) in seen:
                return
            seen.add(id(node))
            for i in node.input:
                v = self.values.get(i)
                if i and (v is None or v.const is None and (v.shape is None or None in v.shape)):
                    visit(i)
            nodes.append(node)

        visit(name)
        self._infer(nodes, [self.onnx.ValueInfoProto(name=name)])

    def _infer(self, nodes: list, outputs: list):
        """ONNX's shape inference on `nodes`, the values they read and do not make typed as
        the importer knows them; the types it finds replace those that lack dims."""
        h = self.onnx.helper
        made = {o for node in nodes for o in node.output}
        read = ({i for node in nodes for i in node.input if i} | {o.name for o in outputs}) - made
        inputs, initializers = [], []
        for name in sorted(read):
            v = self.values.get(name)
            if v is None or v.dtype is None:
                continue
            if v.const is not None and v.const.dtype != object:
                initializers.append(self.onnx.numpy_helper.from_array(v.const, name))
            else:
                inputs.append(h.make_tensor_value_info(name, ONNX_ELEM_TYPES[v.dtype], self._dim_params(v.shape)))
        graph = h.make_graph(nodes, "body", inputs, outputs, initializers)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", self.opset)])
        try:
            inferred = self.onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # leave the values as they are typed
            return
        for vi in (*inferred.graph.value_info, *inferred.graph.output):
            known = self.types.get(vi.name)
            if vi.type.HasField("tensor_type") and (
                known is None
                or not known.HasField("shape")
                or any(not d.HasField("dim_value") for d in known.shape.dim)
            ):
                self.types[vi.name] = vi.type.tensor_type

    def _dim_params(self, shape):
        """A shape for ONNX: Dims as dim_params named by their text, which `_value_type`
        reads back (B*S stays B*S through a MatMul)."""
        if shape is None:
            return None
        for d in shape:
            if isinstance(d, Dim):
                self.dim_texts[str(d)] = d
        return [str(d) if isinstance(d, Dim) else d for d in shape]

    def schema(self, node):
        return op_schema(node, self.opset)

    def has_function(self, node) -> bool:
        schema = self.schema(node)
        return schema is not None and (schema.has_function or schema.has_context_dependent_function)

    # -- values --
    def _value_type(self, tensor_type, symbols: dict):
        """(.dl dtype, shape) of an ONNX tensor type; dims named by dim_param become Dims of
        the input symbols (`symbols`), unknown dims None."""
        dtype = DL_DTYPES.get(tensor_type.elem_type)
        if not tensor_type.HasField("shape"):
            return dtype, None
        shape = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif d.dim_param in symbols:
                shape.append(symbols[d.dim_param])
            elif d.dim_param in self.dim_texts:
                shape.append(self.dim_texts[d.dim_param])
            else:
                shape.append(None)
        return dtype, tuple(shape)

    def _add_inputs(self):
        initializers = {t.name for t in self.graph.initializer}
        symbols: dict = {}
        lines = []
        for inp in self.graph.input:
            if inp.name in initializers:
                continue
            tt = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
            where = f"the input '{inp.name}'"
            if tt is None:
                raise Unsupported(f"{self.source}: {where} is not a tensor (a sequence, map or optional)", "dtype")
            dtype = DL_DTYPES.get(tt.elem_type)
            if dtype is None:
                raise Unsupported(
                    f"{self.source}: {where} holds {type_name(tt.elem_type)} values; dlc has "
                    "float32, float64, int32, int64 and bool",
                    "dtype",
                )
            if not tt.HasField("shape"):
                raise Unsupported(f"{self.source}: {where} has no shape; dlc needs at least its rank", "shape")
            dims = []
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    if d.dim_value == 0:
                        raise Unsupported(f"{self.source}: {where} is empty (axis {axis} has size 0)", "shape")
                    dims.append(d.dim_value)
                    continue
                key = d.dim_param or f"{inp.name}:{axis}"  # a dim without a name is a dim of its own
                if key not in symbols:
                    symbols[key] = Dim.sym(self.names(d.dim_param or f"D{len(symbols)}", "D"))
                dims.append(symbols[key])
            if too_large(dims):
                raise Unsupported(
                    f"{self.source}: {where} has the shape {list(dims)}, too large for any machine's memory", "shape"
                )
            name = self.names(inp.name, "x")
            self.inputs[inp.name] = name
            self.values[inp.name] = Value(dtype, tuple(dims), expr=name, onnx_type=tt.elem_type)
            lines.append(f"input {name}: {dtype}{dims_text(dims)}")
        self.symbols = symbols
        return lines

    def _add_initializers(self):
        numpy_helper = self.onnx.numpy_helper
        for t in self.graph.initializer:
            array = numpy_helper.to_array(t)
            dtype = DL_DTYPES.get(t.data_type)
            self.values[t.name] = Value(
                dtype, tuple(array.shape), const=array, weight=dtype in FLOAT, onnx_type=t.data_type
            )

    def inferred(self, name: str) -> Value:
        """A fresh Value for a node output, typed by shape inference."""
        tt = self.types.get(name)
        if tt is None:
            return Value(None, None)
        dtype, shape = self._value_type(tt, self.symbols)
        return Value(dtype, shape, onnx_type=tt.elem_type)

    def operand(self, name: str) -> str:
        """The .dl expression of a value as a tensor operand: its binding, or for a constant a
        literal, a `full(...)`, a small tuple, or a parameter (an initializer) or state buffer
        (anything else) holding it."""
        v = self.values[name]
        if v.expr is None:
            v.expr = self._materialize(v, name)
        return v.expr

    def constant(self, array: np.ndarray, hint: str, weight: bool = False) -> str:
        """A constant the importer computed, as an operand (a trainable parameter with `weight`);
        an array of dims (a shape with symbolic dims) is their i64 run-time values."""
        dtype = "i64" if array.dtype == object else dtype_of(array)
        return self._materialize(Value(dtype, tuple(array.shape), const=array, weight=weight), hint)

    def _materialize(self, v: Value, hint: str, alone: bool = False) -> str:
        """`alone`: the constant is not an operand, whose type a literal would take, but a
        value of its own (an output): a scalar keeps its dtype."""
        a = v.const
        if v.dtype is None:
            raise Unsupported(
                f"{self.source}: the constant '{hint}' holds {type_name(v.onnx_type)} values; dlc "
                "cannot use it as a tensor",
                "dtype",
            )
        if a.dtype == object:
            return dims_tensor(a, v.dtype)
        if a.size == 0:
            raise Unsupported(f"{self.source}: the constant '{hint}' is empty (shape {list(a.shape)})", "shape")
        if not v.weight:
            flat = a.reshape(-1)
            if (flat == flat[0]).all() and literal(flat[0], v.dtype) is not None:
                if a.ndim == 0 and not alone:
                    return literal(flat[0], v.dtype)
                fill = int(flat[0]) if v.dtype == "bool" else literal(flat[0], v.dtype)  # full takes a number
                return f"full({shape_tuple(a.shape)}, {fill}, \"{v.dtype}\")"
            if a.size <= SMALL and v.dtype != "bool" and tuple_literal(a, v.dtype) is not None:
                return f"cast({tuple_literal(a, v.dtype)}, \"{v.dtype}\")"
        kind = "param" if v.weight else "state"
        ident = self.names(hint, "c")
        self.decls.append(f"{kind} {ident}: {v.dtype}{dims_text(a.shape)}")
        self.weights[ident] = np.array(a, DTYPES[v.dtype], order="C")
        return ident

    def evaluate(self, proto, consts: list) -> dict | None:
        """A node's outputs by name, computed from known inputs by ONNX's reference
        evaluator; None when it cannot."""
        from onnx.reference import ReferenceEvaluator

        h = self.onnx.helper
        feeds = {name: c for name, c in zip(proto.input, consts) if name}
        inputs = [h.make_tensor_value_info(k, h.np_dtype_to_tensor_dtype(a.dtype), a.shape) for k, a in feeds.items()]
        outputs = [self.onnx.ValueInfoProto(name=o) for o in proto.output if o]
        model = h.make_model(
            h.make_graph([proto], "fold", inputs, outputs), opset_imports=[h.make_opsetid("", self.opset)]
        )
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception:  # an op the reference evaluator lacks, or values it refuses: emit the node
            return None
        return dict(zip([o.name for o in outputs], results))

    def type_now(self, name: str):
        """The type of a value that ONNX's shape inference could not tell, found now: as
        dlc builds the program written so far (each line built once: GrowingModel), or inside
        a scan body, where that program does not build, as ONNX infers it
        from its node's inputs as the importer knows them now. None when neither tells."""
        if self.scopes:
            self.reinfer(name)
            v = self.inferred(name)
            return None if v.dtype is None or v.shape is None or None in v.shape else v
        expr = self.operand(name)
        if self.built is None:
            self.built = GrowingModel(self.name, f"<{self.name}.dl>")
        if self.built.type_of(expr) is None:  # build the lines written since the last build
            parts = (self.header, self.decls, self.body)  # each only grows while nodes are emitted
            self.built.add([line for part, n in zip(parts, self.built_lines) for line in part[n:]])
            self.built_lines = [len(part) for part in parts]
        return self.built.type_of(expr)

    # -- writing --
    def bind(self, hint: str, expr: str) -> str:
        name = self.names(hint, "v")
        self.assign([name], expr)
        return name

    def assign(self, names: list, expr: str):
        self.body.append(f"{', '.join(names)} = {expr}")
        self.bound.update(names)

    def enter(self):
        """Write the bindings of a scan body from here on (`leave` gives them back)."""
        self.scopes.append(self.body)
        self.body = []

    def leave(self) -> list:
        lines, self.body = self.body, self.scopes.pop()
        return lines

    def emit_nodes(self, nodes):
        """Each node through its rule (Constants first: a fused pattern may read them early)."""
        constants = [node for node in nodes if node.op_type == "Constant" and not node.input]
        for node in constants + [node for node in nodes if node not in constants]:
            if id(node) not in self.absorbed:
                Node(self, node).emit(RULES)

    def run(self) -> Imported:
        self.header = self._add_inputs()
        self.output_names = {}  # ONNX output -> its .dl name, reserved before any binding
        for out in self.graph.output:
            self.output_names.setdefault(out.name, self.names(out.name, "y"))
        self._add_initializers()
        self.emit_nodes(self.graph.node)
        outputs, dtypes, results = {}, {}, []  # results: (the .dl output name, its expression)
        for out in self.graph.output:
            v = self.values[out.name]
            if v.dtype is None:
                raise Unsupported(
                    f"{self.source}: the output '{out.name}' holds {type_name(v.onnx_type)} values; "
                    "dlc has float32, float64, int32, int64 and bool",
                    "dtype",
                )
            if v.shape is not None and 0 in v.shape:
                raise Unsupported(f"{self.source}: the output '{out.name}' is empty (shape {list(v.shape)})", "shape")
            if v.expr is None and v.const is not None:  # an output known at import
                v.expr = self._materialize(v, out.name, alone=True)
            expr = self.operand(out.name)
            name = self.output_names[out.name]
            if name in outputs.values():  # the same value listed twice
                name = self.names(out.name, "y")
            results.append((name, expr))
            outputs[out.name] = name
            dtypes[name] = DTYPES[v.dtype]
        lines = [f"output {name}" if expr == name else f"output {name} = {expr}" for name, expr in results]
        self._prune(lines)
        text = self.def_text(results) if self.as_def else self.text(lines)
        return Imported(self.name, text, self.weights, self.inputs, outputs, dtypes)

    def _prune(self, outputs: list):
        """Drop the bindings and constants nothing reads (what a fused pattern left behind);
        a binding that names a layer's parameters stays."""

        def reads(lines):
            return {w for line in lines for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", line.split(" = ", 1)[-1])}

        while True:
            used = reads(self.body + outputs)
            dead = [
                line
                for line in self.body
                if not any(
                    t in used or any(k.startswith(t + ".") for k in self.weights)
                    for t in line.split(" = ", 1)[0].split(", ")
                )
            ]
            dead_decls = [line for line in self.decls if line.split()[1].rstrip(":") not in used]
            if not dead and not dead_decls:
                return
            self.body = [line for line in self.body if line not in dead]
            self.decls = [line for line in self.decls if line not in dead_decls]
            for line in dead_decls:
                del self.weights[line.split()[1].rstrip(":")]

    def text(self, outputs: list) -> str:
        """The program: the model's inputs, parameters and state, bindings and `outputs`."""
        return "\n".join(
            [self.comment(), *self.block(f"model {self.name}", self.header + self.decls + self.body + outputs), ""]
        )

    def def_text(self, results: list) -> str:
        """The program as `def NAME(inputs) { ...; return outputs }`, which a model of another
        file calls after `import`, and `model NAME`, which calls it. A call with `name = ""`
        gives its parameters the names of the checkpoint, so `init_from` finds them."""
        arguments = ", ".join(line.removeprefix("input ") for line in self.header)
        names = [name for name, _ in results]
        call = f"{', '.join(names)} = {self.name}({', '.join(self.inputs.values())}, name = \"\")"
        return "\n".join(
            [
                self.comment(),
                *self.block(
                    f"def {self.name}({arguments})",
                    self.decls + self.body + ["return " + ", ".join(expr for _, expr in results)],
                ),
                "",
                *self.block(f"model {self.name}", self.header + [call] + [f"output {name}" for name in names]),
                "",
            ]
        )

    def comment(self) -> str:
        producer = " ".join(p for p in (self.model.producer_name, self.model.producer_version) if p)
        return f"# imported from {self.source} by dlc import (ONNX opset {self.opset}" + (
            f", produced by {producer})" if producer else ")"
        )

    @staticmethod
    def block(head: str, lines: list) -> list:
        return [head + " {", *("    " + line.replace("\n", "\n    ") for line in lines), "}"]
