"""From AST to graph: name resolution, static evaluation, `def` expansion.

The evaluator walks a model's statements. Static values (ints, floats, bools, strings,
dims, tuples, functions) are computed on the spot; tensor expressions emit primitive
nodes into the current graph. Each call of a `def` gets its own parameter scope, named
after the binding it occurs in (`h1 = dense(x, 128)` gives `h1.W`, `h1.b`).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.syntax import NESTING_ADVICE
from dlc.compiler.ir.dims import Dim, is_dim
from dlc.compiler.errors import DlcError, Span, called_from_notes, did_you_mean
from dlc.compiler.ir.graph import FLOAT_DTYPES, Graph, NodeBudget, Tensor, TensorType
from dlc.compiler.frontend.indexing import Indexing, fans
from dlc.compiler.frontend.scans import Scans, checkpoint_every
from dlc.compiler.frontend.model import CallNodes, Model, ModelInput, ParamInfo, ParamScope
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.frontend.values import (
    FUNCTIONS,
    LITERALS,
    STATIC_OPS,
    Builtin,
    Env,
    Func,
    Layer,
    Partial,
    describe,
    literal,
    spelled,
    static_binary,
)

INT_DTYPES = ("i32", "i64")

# Limits that keep compiling bounded (docs/language.md, section 7): every step of every
# `repeat` of one model build, and the items of one static tuple or string.
MAX_REPEAT_STEPS = 100_000
MAX_ITEMS = 1_000_000


# ---- the evaluator ---------------------------------------------------------------------------
class Evaluator(Indexing, Scans):
    def __init__(
        self,
        globals_: Env,
        training: bool,
        replicas: int = 1,
        seconds: float | None = None,
        initial_values: bool = True,
    ):
        self.globals = globals_
        self.training = training
        self.reads_training = False  # whether the model looked `training` up: else both modes build the same
        # False for a check (`dlc check`, the language server), which never reads initial values:
        # each initializer is called once per parameter type, for its errors (the nodes of the
        # calls left out still count to the limit), and the model gets no init graph. Those
        # calls took a quarter of the time of building a transformer.
        self.initial_values = initial_values
        # (id of an initializer, parameter type) -> (it, kept so that its id stays its own; the nodes its call made)
        self.initializers_called: dict = {}
        self.replicas = replicas  # ranks whose batch statistics are one (sync_batchnorm), else 1
        self.budget = NodeBudget(seconds)  # the nodes (and seconds) this build may still take, in all its graphs
        self.remat = None  # the train block's `remat = k`: checkpoint the library's recurrences
        self.forward = Graph("forward", budget=self.budget)
        self.graph = self.forward  # the graph nodes go into: the forward graph, a scan body, the init graph
        self.init = Graph("init", budget=self.budget)
        self.root_scope = ParamScope("", None)
        self.scope = self.root_scope
        self.label = ""
        self.stack: list = []  # (Func, call span) of active calls
        self.param_nodes: list = []  # (node, scope, local name, trainable, span)
        self.state_of: dict = {}  # state param node -> name in scope
        self.inputs: list = []
        self.bindings: list = []
        self.def_values: list = []  # (name, value as written, its span, the call's span) in the user's defs
        self.updates: dict = {}  # state param node -> its new value
        self.init_values: list = []  # initial value (in self.init) of each param node
        self.repeat_index: tuple = ()  # indices of the enclosing repeat loops
        self.repeat_steps = 0  # steps of every repeat run so far
        self.captures: dict = {}  # (body graph id, outer key) -> body arg tensor
        self.sequences: dict = {}  # (body graph id, outer key, axis) -> body arg tensor
        self.rng_keys: dict = {}
        # which layer each forward node belongs to (named in build): the forward graph's nodes
        # [first, end) were made during a def call (innermost calls first) or a model statement
        self.call_nodes: list = []  # (first, end, ParamScope of the call, call span, its options)
        self.statement_nodes: list = []  # (first, end, binding name of the model statement, its span)

    # -- errors --------------------------------------------------------------------------------
    def fail(self, message: str, span: Span, notes=()):
        raise DlcError(message, span, list(notes))

    # -- graphs and captures -------------------------------------------------------------------
    def local(self, value):
        """Make an outer tensor usable in the current (scan body) graph."""
        if isinstance(value, tuple):
            return tuple(self.local(v) for v in value)
        if not isinstance(value, Tensor) or value.graph is self.graph:
            return value
        return self.capture(value, self.graph)

    def capture(self, t: Tensor, graph: Graph) -> Tensor:
        if t.graph is graph:
            return t
        if graph.parent is None:
            raise DlcError("a value from a finished scan body was used outside it", graph.span)
        outer = self.capture(t, graph.parent)
        key = (id(graph), outer.key())
        if key not in self.captures:
            self.captures[key] = self.new_arg(graph, outer.type, ("invariant", outer))
        return self.captures[key]

    def new_arg(self, graph: Graph, typ: TensorType, role) -> Tensor:
        with graph.at(graph.span):
            arg = graph.add1("arg", type=typ, index=len(graph.args))
        graph.args.append(arg)
        graph.nx.nodes[arg.node]["role"] = role
        return arg

    def rng_key(self) -> Tensor:
        root = self.graph
        while root.parent is not None:
            root = root.parent
        if id(root) not in self.rng_keys:
            with root.at(None):
                self.rng_keys[id(root)] = root.add1("input", type=TensorType("i32", (2,)), name="rng")
        return self.local(self.rng_keys[id(root)])

    def next_stream(self) -> int:
        root = self.graph
        while root.parent is not None:
            root = root.parent
        root.streams = getattr(root, "streams", 0) + 1
        return root.streams

    # -- conversions -----------------------------------------------------------------------------
    def tensor(self, v, span: Span, what: str = "value") -> Tensor:
        if isinstance(v, Tensor):
            return self.local(v)
        if isinstance(v, bool):
            return ops.constant(self.graph, v, "bool")
        if isinstance(v, int):
            return ops.constant(self.graph, v, "i32")
        if isinstance(v, float):
            return ops.constant(self.graph, v, "f32")
        if isinstance(v, Dim):
            return self.graph.add1("dim_size", dim=v)
        if isinstance(v, tuple) and v:
            array = _array_literal(v)
            if array is not None:
                return ops.constant(self.graph, array, "f32" if array.dtype.kind == "f" else "i32")
        self.fail(f"expected a tensor for {what}, got {describe(v)}", span)

    def static_int(self, v, span: Span, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, Dim)):
            self.fail(f"{what} must be a static integer, got {describe(v)}", span)
        return v

    # -- models ----------------------------------------------------------------------------------
    def build(self, model: syntax.ModelBlock, train: syntax.Train | None) -> Model:
        env = self.globals.child()
        for k in train.settings if train else ():
            if k.name == "remat":
                self.remat = checkpoint_every(self.expr(k.value, env), k.value.span, "remat")
        with self.graph.at(model.span):
            self.block(model.body, env, in_model=True)
        names: dict = {}
        self.root_scope.assign_names("", names)
        params = []
        for node, scope, _local, trainable, span in self.param_nodes:
            name = names[node]
            self.graph.attrs(node)["name"] = name
            params.append(ParamInfo(name, self.graph.types(node)[0], trainable, span, scope.calls()))
        for node, value in self.updates.items():
            self.graph.outputs[f"update:{names[node]}"] = value
        self.name_layers()
        if self.initial_values:
            self.init.outputs = {names[node]: value for (node, *_), value in zip(self.param_nodes, self.init_values)}
        seen = {}
        for p in params:
            if p.name in seen:
                self.fail(f"two parameters are both named '{p.name}'", p.span, [("the other one", seen[p.name])])
            seen[p.name] = p.span
        init = self.init if self.initial_values else None
        return Model(
            model.name,
            self.graph,
            init,
            self.inputs,
            params,
            self.training,
            train,
            model.span,
            self.bindings,
            self.layer_types(),
            self.calls(),
            self.def_values,
        )

    def name_layers(self):
        """Set `layer` on the forward graph's nodes (graph.layer_of): the name prefix of the
        parameters of the innermost call that made the node and names parameters (stage1.0.conv1),
        else the binding of the model statement that made it. Inputs belong to no layer."""
        layers: dict = {}
        for first, end, scope, *_ in self.call_nodes:
            path = scope.layer()
            for n in range(first, end) if path else ():
                layers.setdefault(n, path)
        for first, end, name, _ in self.statement_nodes:
            for n in range(first, end) if name else ():
                layers.setdefault(n, name)
        for n, layer in layers.items():
            if self.forward.op(n) != "input":
                self.forward.nx.nodes[n]["layer"] = layer

    def calls(self) -> list:
        """Every def call and named model statement (model.CallNodes), for the graph page."""
        return [
            CallNodes(first, end, scope.defn.name, scope.path, span, options)
            for first, end, scope, span, options in self.call_nodes
        ] + [CallNodes(first, end, "", name, span) for first, end, name, span in self.statement_nodes if name]

    def layer_types(self) -> dict:
        """Each layer name_layers sets -> what made it: the def whose call names its parameters
        (the outermost, when a call and the one it makes share a name), or for a model
        statement's layer the defs its own calls called ("conv2d, batchnorm, relu")."""
        types: dict = {}
        for _, _, scope, *_ in self.call_nodes:  # innermost calls first: an outer one overwrites
            if scope.path:
                types[scope.path] = scope.defn.name
        for first, end, name, _ in self.statement_nodes:
            if name and name not in types:
                made = [
                    scope.defn.name
                    for f, e, scope, *_ in self.call_nodes
                    if scope.parent is self.root_scope and first <= f and e <= end
                ]
                types[name] = ", ".join(dict.fromkeys(made))
        return types

    # -- statements ------------------------------------------------------------------------------
    def block(self, stmts: list, env: Env, in_model=False, in_def=False, in_scan=False):
        """Run statements; returns the values of a trailing `return` or `yield`."""
        for s in stmts[:-1]:
            if isinstance(s, (syntax.Return, syntax.Yield)):
                self.fail(f"nothing may follow a {type(s).__name__.lower()}", s.span)
        for s in stmts:
            first = self.forward._next
            with self.graph.at(s.span):
                result = self.statement(s, env, in_model, in_def, in_scan)
            if in_model:  # the binding name a statement sets, as the label of the calls in it
                named = isinstance(s, (syntax.Assign, syntax.Loss, syntax.Metric, syntax.Output))
                self.statement_nodes.append((first, self.forward._next, self.label if named else "", s.span))
            if result is not None:
                return result
        return None

    def statement(self, s, env: Env, in_model, in_def, in_scan):
        if isinstance(s, syntax.Assign):
            self.label = self.label_for(s.targets[0])
            calls = len(self.call_nodes)
            value = self.expr(s.value, env)
            self.bind_targets(s, value, env, in_model)
            env.layers[s.targets[0]] = self.layers_since(calls)  # for s.targets[0].W
        elif isinstance(s, syntax.ParamDecl):
            if in_scan:
                self.fail("declare parameters outside the scan; the body can use them", s.span)
            if s.name in env.vars:
                self.fail(f"'{s.name}' is already defined in this scope", s.span)
            env.vars[s.name] = self.declare_param(s, env)
        elif isinstance(s, syntax.StateUpdate):
            self.update_state(s, env)
        elif isinstance(s, syntax.Return):
            if not in_def:
                self.fail("return is only allowed at the end of a def", s.span)
            self.label = ""
            return self.values(s.values, env)
        elif isinstance(s, syntax.Yield):
            if not in_scan:
                self.fail("yield is only allowed at the end of a scan body", s.span)
            self.label = ""
            return ("yield", [self.tensor(self.expr(v, env), v.span, "yield") for v in s.values])
        elif isinstance(s, syntax.Repeat):
            start = self.static_int(self.expr(s.start, env), s.start.span, "the start of repeat")
            stop = self.static_int(self.expr(s.stop, env), s.stop.span, "the end of repeat")
            if not isinstance(start, int) or not isinstance(stop, int):
                self.fail("repeat needs concrete bounds", s.span)
            steps = max(stop - start, 0)
            if self.repeat_steps + steps > MAX_REPEAT_STEPS:
                self.fail(
                    f"too many repeat steps: this repeat runs {steps} steps after {self.repeat_steps} already "
                    f"run, and a model runs at most {MAX_REPEAT_STEPS:,} in all its repeats",
                    s.span,
                )
            self.repeat_steps += steps
            fewest = None  # the fewest graph nodes a step has made so far
            for i in range(start, stop):
                env.vars[s.var] = i
                self.repeat_index += (i,)
                left = self.budget.left
                try:
                    self.block(s.body, env, in_model, in_def, in_scan)
                finally:
                    self.repeat_index = self.repeat_index[:-1]
                made = left - self.budget.left
                fewest = made if fewest is None else min(fewest, made)
                if i > start and fewest * (stop - 1 - i) > self.budget.left:
                    # refused now, not after building nodes for seconds until the budget runs out
                    self.fail(
                        f"this repeat of {steps:,} steps makes at least {fewest:,} graph nodes a step, more "
                        f"than the {self.budget.total:,} a model may have; use scan for a long loop",
                        s.span,
                    )
        elif isinstance(s, syntax.If):
            cond = self.expr(s.cond, env)
            if not isinstance(cond, bool):
                self.fail(
                    f"if needs a static condition (true or false), got {describe(cond)}; "
                    "for tensors use select(cond, a, b)",
                    s.cond.span,
                )
            return self.block(s.then if cond else s.other, env, in_model, in_def, in_scan)
        elif isinstance(s, syntax.Def):
            if s.name in env.vars:
                self.fail(f"'{s.name}' is defined twice", s.span)
            check_def(s)
            env.vars[s.name] = Func(s, env)
        elif isinstance(s, (syntax.Input, syntax.Output, syntax.Loss, syntax.Metric)):
            if not in_model:
                self.fail(f"{type(s).__name__.lower()} is only allowed in a model block", s.span)
            self.model_statement(s, env)
        else:  # pragma: no cover - the grammar has no other statements
            self.fail(f"unexpected statement {type(s).__name__}", s.span)
        return None

    def label_for(self, name: str) -> str:
        return ".".join([name] + [str(i) for i in self.repeat_index])

    def bind_targets(self, s: syntax.Assign, value, env: Env, in_model):
        if len(s.targets) == 1:
            values = [value]
        else:
            if not isinstance(value, tuple):
                self.fail(f"cannot unpack {describe(value)} into {len(s.targets)} names", s.span)
            if len(value) != len(s.targets):
                self.fail(f"cannot unpack {len(value)} values into {len(s.targets)} names", s.span)
            values = list(value)
        for name, v in zip(s.targets, values):
            if name in ("training", "params"):
                self.fail(f"'{name}' is reserved", s.span)
            env.vars[name] = v
            env.layers.pop(name, None)
            if in_model and isinstance(v, Tensor):
                self.bindings.append((name, v.type, s.span))
            elif not in_model and self.stack:
                self.record_def_value(name, v, s.span, self.stack[-1][1])

    def record_def_value(self, name: str, value, span: Span, call: Span):
        """A binding or argument of a def in the user's files, as the call at `call` made it
        (the language server's hover: a def's locals have a type per call)."""
        if not span.in_stdlib():
            self.def_values.append((name, str(value.type) if isinstance(value, Tensor) else spelled(value), span, call))

    def values(self, exprs, env):
        vals = [self.expr(e, env) for e in exprs]
        return vals[0] if len(vals) == 1 else tuple(vals)

    # -- model statements --------------------------------------------------------------------------
    def model_statement(self, s, env: Env):
        g = self.graph
        if isinstance(s, syntax.Input):
            if s.name in env.vars:
                self.fail(f"'{s.name}' is defined twice", s.span)
            typ = self.tensor_type(s.type, env, new_symbols=True)
            t = g.add1("input", type=typ, name=s.name)
            env.vars[s.name] = t
            self.inputs.append(ModelInput(s.name, typ, s.span, s.is_target))
            return
        if isinstance(s, syntax.Loss):
            if "loss" in g.outputs:
                self.fail("a model has one loss; add the terms together", s.span)
            self.label = "loss"
            loss = self.tensor(self.expr(s.value, env), s.span, "loss")
            if loss.rank != 0:
                self.fail(
                    f"the loss must be a scalar, got {loss.type}; reduce it with mean(...) or sum(...)", s.value.span
                )
            if not loss.type.is_float:
                self.fail(f"the loss must be a float, got {loss.type}", s.value.span)
            g.outputs["loss"] = loss
            return
        key = ("metric:" if isinstance(s, syntax.Metric) else "output:") + s.name
        if key in g.outputs:
            self.fail(f"'{s.name}' is defined twice", s.span)
        self.label = s.name
        calls = len(self.call_nodes)
        if isinstance(s, syntax.Output) and s.value is None:
            value = self.lookup(s.name, env, s.span)
        else:
            value = self.expr(s.value, env)
        t = self.tensor(value, s.span, s.name)
        if isinstance(s, syntax.Metric):
            if t.rank != 0:
                self.fail(f"a metric must be a scalar, got {t.type}; reduce it with mean(...)", s.value.span)
            t = ops.cast(t, "f32")
        g.outputs[key] = t
        if isinstance(s, syntax.Output) and s.value is not None:
            env.vars[s.name] = t
            env.layers[s.name] = self.layers_since(calls)

    # -- parameters ------------------------------------------------------------------------------------
    def declare_param(self, s: syntax.ParamDecl, env: Env) -> Tensor:
        typ = self.tensor_type(s.type, env)
        for d in typ.shape:
            if not isinstance(d, int):
                self.fail(f"parameter shapes must be concrete, got {typ} ({d} is symbolic)", s.type.span)
            if d <= 0:
                self.fail(f"parameter '{s.name}' has a dimension of size {d}; sizes must be positive", s.type.span)
        root = self.graph
        while root.parent is not None:
            root = root.parent
        if root is self.init:
            self.fail(
                f"an initializer cannot declare a parameter ('{s.name}'); it makes one value from the "
                "shape it is given",
                s.span,
            )
        if self.scope.replay:  # a later call of a shared name reuses the first call's weights
            shared = self.scope.shared_call()
            first = [(f"the first call named '{shared.label}'", shared.first_call)]
            if s.name not in self.scope.params:
                self.fail(
                    f"the first call named '{shared.label}' has no parameter '{s.name}': "
                    "calls that share a name must declare the same parameters",
                    s.span,
                    first,
                )
            node = self.scope.params[s.name]
            have = root.types(node)[0]
            if have != typ:
                self.fail(f"shared parameter '{s.name}' is {have} in one call and {typ} in another", s.span, first)
            return self.local(Tensor(root, node))
        with root.at(s.span):
            t = root.add1("param", type=typ, name=f"%{len(self.param_nodes)}", trainable=s.trainable)
        self.scope.params[s.name] = t.node
        # a library layer's parameter remembers the user's call, where errors about it point (Span.caller)
        self.param_nodes.append((t.node, self.scope, s.name, s.trainable, s.span.called_from(root.span, root.calls)))
        self.init_values.append(self.initial_value(s, typ, env))
        return self.local(t)

    def initial_value(self, s: syntax.ParamDecl, typ: TensorType, env: Env) -> Tensor | None:
        """Evaluate the initializer into the init graph (None for a check that called it already
        for this type). Its calls are no layer: they join neither the model's parameter scopes,
        where they would shift the calls a shared name replays, nor its calls."""
        outer, scope, calls = self.graph, self.scope, self.call_nodes
        self.graph, self.scope, self.call_nodes = self.init, ParamScope("", None), []
        self.init.calls = outer.calls
        try:
            with self.init.at(outer.span), self.init.at(s.span):  # under the user's call, as in the model
                init = self.expr(s.init, env) if s.init is not None else self.globals.lookup("zeros")
                called = self.initializers_called.get((id(init), typ))
                if called is not None:
                    for _ in range(called[1]):  # the nodes a call would make count as made
                        self.budget.spend(self.init.span)
                    return None
                first, keyed = self.init._next, id(self.init) in self.rng_keys
                if isinstance(init, FUNCTIONS):
                    fan_in, fan_out = fans(typ.shape)
                    value = self.call(init, [(typ.shape, s.span), (fan_in, s.span), (fan_out, s.span)], {}, s.span)
                elif isinstance(init, (int, float)) and not isinstance(init, bool):
                    value = ops.full(self.init, typ.shape, float(init), typ.dtype)
                else:
                    self.fail(
                        f"unknown initializer: expected a function such as he_normal or a number, got {describe(init)}",
                        s.init.span,
                    )
                value = self.tensor(value, s.span, "initializer")
                if value.shape != typ.shape:
                    value = ops.broadcast_to(value, typ.shape) if value.rank == 0 else value
                if value.shape != typ.shape:
                    self.fail(f"the initializer made {value.type}, the parameter is {typ}", s.span)
                value = ops.cast(value, typ.dtype)
                if not self.initial_values:  # the random key, made once, not counted again
                    made = self.init._next - first - (not keyed and id(self.init) in self.rng_keys)
                    self.initializers_called[id(init), typ] = (init, made)
                return value
        finally:
            self.graph, self.scope, self.call_nodes = outer, scope, calls
            self.init.calls = ()

    def update_state(self, s: syntax.StateUpdate, env: Env):
        if self.graph.parent is not None:
            self.fail("state cannot be updated inside a scan", s.span)
        try:
            target = env.lookup(s.name)
        except KeyError:
            self.fail(f"unknown state '{s.name}'", s.span)
        root = self.graph
        if not isinstance(target, Tensor) or root.op(target.node) != "param" or root.attrs(target.node)["trainable"]:
            self.fail(f"'{s.name}' is not a state buffer; declare it with `state {s.name}: ...`", s.span)
        if root.parent is not None:
            self.fail("state cannot be updated inside a scan", s.span)
        value = ops.cast(self.tensor(self.expr(s.value, env), s.value.span), target.dtype)
        if value.shape != target.shape:
            self.fail(f"update of '{s.name}' must keep its shape {target.type}, got {value.type}", s.value.span)
        self.updates[target.node] = root.add1("stop_gradient", [value])

    # -- types -------------------------------------------------------------------------------------------
    def tensor_type(self, t: syntax.TensorTypeExpr, env: Env, new_symbols=False) -> TensorType:
        """With new_symbols (an input's type), a dim name without a value in scope becomes a
        symbolic dim, bound in env so the model can use it: causal_mask(T)."""
        dims = []
        for d in t.dims:
            if isinstance(d, syntax.AnyDims):
                self.fail("'...' is only allowed in argument types", d.span)
            if isinstance(d, syntax.Name) and new_symbols and not env.defines(d.id):
                v = env.vars[d.id] = Dim.sym(d.id)
            else:
                v = self.expr(d, env)
            dims.append(self.dim_value(v, d.span))
        return TensorType(t.dtype, tuple(dims))

    def dim_value(self, v, span):
        if isinstance(v, bool) or not isinstance(v, (int, Dim)):
            self.fail(f"a dimension must be an integer or a name, got {describe(v)}", span)
        if isinstance(v, int) and v <= 0:
            self.fail(f"dimension sizes must be positive, got {v}", span)
        return v

    def match_type(self, ann: syntax.TensorTypeExpr, value, env: Env, func: str, arg: str, span: Span):
        """Check an argument against its annotation, binding the annotation's dim names."""
        if not isinstance(value, Tensor):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not ann.dims:
                value = self.tensor(value, span)
            else:
                self.fail(f"{func}: argument '{arg}' must be a tensor {ann_str(ann)}, got {describe(value)}", span)
        want = ann.dtype
        ok = (
            value.type.is_float
            if want in FLOAT_DTYPES
            else value.dtype in INT_DTYPES
            if want in INT_DTYPES
            else value.dtype == want
        )
        if not ok:
            kind = {"f32": "a float", "f64": "a float", "i32": "an integer", "i64": "an integer"}.get(want, "a bool")
            self.fail(
                f"{func}: argument '{arg}' must be {kind} tensor {ann_str(ann)}, got {value.type}", span, origin(value)
            )
        has_rest = any(isinstance(d, syntax.AnyDims) for d in ann.dims)  # at most one: checked at the def
        fixed = [d for d in ann.dims if not isinstance(d, syntax.AnyDims)]
        if (value.rank < len(fixed)) if has_rest else (value.rank != len(fixed)):
            self.fail(
                f"{func}: argument '{arg}' must have rank {'at least ' if has_rest else ''}{len(fixed)} "
                f"{ann_str(ann)}, got {value.type}",
                span,
                origin(value),
            )
        split = next((i for i, d in enumerate(ann.dims) if isinstance(d, syntax.AnyDims)), len(ann.dims))
        after = len(ann.dims) - split - 1 if has_rest else 0
        pairs = list(zip(ann.dims[:split], value.shape[:split]))
        if has_rest and after:
            pairs += list(zip(ann.dims[split + 1 :], value.shape[value.rank - after :]))
        for d, actual in pairs:
            if isinstance(d, syntax.Name) and not env.defines(d.id):
                env.vars[d.id] = actual
                env.vars.setdefault("__dim_sites__", {})[d.id] = span
                continue
            expected = self.dim_value(self.expr(d, env), d.span)
            if expected != actual:
                site = env.vars.get("__dim_sites__", {}).get(getattr(d, "id", None))
                if site is not None:  # a dim name this call bound from an earlier argument
                    self.fail(
                        f"{func}: {d.id} is {actual} here but {expected} in an earlier argument "
                        f"('{arg}' is {value.type})",
                        span,
                        [(f"{d.id} became {expected} here", site)] + origin(value),
                    )
                self.fail(
                    f"{func}: argument '{arg}' must be {ann_str(ann)}, got {value.type} ({actual} vs {expected})",
                    span,
                    origin(value),
                )
        return value

    # -- expressions -----------------------------------------------------------------------------------------
    def expr(self, e, env: Env):
        # A literal, and a name of a value of this graph, make no node, so they enter no place
        # (Graph.at): half of all expressions; entering for them took some 6% of a build.
        if isinstance(e, LITERALS):
            return literal(e)
        if isinstance(e, syntax.Name) and e.id != "params":
            value = self.lookup(e.id, env, e.span)
            if not isinstance(value, (Tensor, tuple)) or isinstance(value, Tensor) and value.graph is self.graph:
                return value
            with self.graph.at(e.span):  # made usable here: captured into a scan body
                return self.local(value)
        try:
            with self.graph.at(e.span):
                return self._expr(e, env)
        except RecursionError:  # raised again by the frames too deep to make the error, until one can
            raise DlcError.at_user_line(
                f"expressions nest too deeply here to compile ({NESTING_ADVICE})", e.span
            ) from None

    def _expr(self, e, env: Env):
        if isinstance(e, syntax.Name):  # `params`, the trainable parameters, usable here
            return self.local(self.lookup(e.id, env, e.span))
        if isinstance(e, syntax.Tuple):
            return tuple(self.expr(x, env) for x in e.items)
        if isinstance(e, syntax.Unary):
            v = self.expr(e.operand, env)
            if e.op == "not":
                if isinstance(v, bool):
                    return not v
                return self.graph.add1("logical_not", [self.bool_tensor(v, e.span)])
            if isinstance(v, Tensor):
                return ops.neg(v)
            if isinstance(v, (int, float, Dim)) and not isinstance(v, bool):
                return -v
            self.fail(f"cannot negate {describe(v)}", e.span)
        if isinstance(e, syntax.Binary):
            return self.binary(e, env)
        if isinstance(e, syntax.Ternary):
            cond = self.expr(e.cond, env)
            if not isinstance(cond, bool):
                self.fail(
                    f"`if c then a else b` needs a static condition, got {describe(cond)}; "
                    "for tensors use select(c, a, b)",
                    e.cond.span,
                )
            return self.expr(e.then if cond else e.other, env)
        if isinstance(e, syntax.CallExpr):
            func = self.expr(e.func, env)
            args, kwargs = self.arguments(e.args, env)
            first = first_argument(func)
            if not args and kwargs and first is not None and first not in kwargs:
                return self.partial(func, kwargs, e.span)
            return self.call(func, args, kwargs, e.span, e.func)
        if isinstance(e, syntax.Pipe):
            value = self.expr(e.value, env)
            if isinstance(e.func, syntax.CallExpr):
                func = self.expr(e.func.func, env)
                args, kwargs = self.arguments(e.func.args, env)
                return self.call(func, [(value, e.value.span)] + args, kwargs, e.func.span, e.func.func)
            return self.call(self.expr(e.func, env), [(value, e.value.span)], {}, e.func.span, e.func)
        if isinstance(e, syntax.IndexExpr):
            return self.index(e, env)
        if isinstance(e, syntax.Attribute):
            return self.attribute(e, env)
        if isinstance(e, syntax.Scan):
            return self.scan(e, env)
        if isinstance(e, syntax.Slice):
            self.fail("a slice is only allowed inside [ ]", e.span)
        self.fail(f"unexpected {type(e).__name__}", e.span)  # pragma: no cover

    def lookup(self, name: str, env: Env, span: Span):
        if name == "training":
            if self.training is None:
                self.fail("'training' is only known inside a model (a const is the same in both modes)", span)
            self.reads_training = True
            return self.training
        if name == "params":
            return tuple(self.param_tensor(node) for node, _, _, trainable, _ in self.param_nodes if trainable)
        try:
            return env.lookup(name)
        except KeyError:
            pass
        self.fail(f"unknown name '{name}'{did_you_mean(name, env.visible_names())}", span)

    def param_tensor(self, node: int) -> Tensor:
        """A parameter (a node of the top-level graph), usable in the current graph."""
        root = self.graph
        while root.parent is not None:
            root = root.parent
        return self.local(Tensor(root, node))

    # -- attributes: a tensor's shape and rank, a layer's parameters -----------------------------------------
    def layers_since(self, calls: int) -> list:
        """The calls with parameters made right under the current one since call_nodes
        had `calls` entries: the layers of the statement's binding (`emb.W`)."""
        made = [scope for _, _, scope, *_ in self.call_nodes[calls:] if scope.parent is self.scope]
        return [scope for scope in dict.fromkeys(made) if scope.owns_params()]

    def attribute(self, e: syntax.Attribute, env: Env):
        v = self.expr(e.value, env)
        if e.name == "shape" and isinstance(v, Tensor):
            return v.shape
        if e.name == "rank" and isinstance(v, Tensor):
            return v.rank
        if e.name == "dtype" and isinstance(v, Tensor):
            return v.dtype
        what = e.value.span.text() or "this"
        if isinstance(v, Layer):
            scope = v.scope
        elif isinstance(v, Tensor) and isinstance(e.value, syntax.Name) and env.layers_of(e.value.id):
            scopes = env.layers_of(e.value.id)
            if len(scopes) > 1:
                self.fail(
                    f"'{what}' is made by {len(scopes)} calls with parameters; bind the one whose "
                    f"'{e.name}' you mean to a name of its own",
                    e.span,
                )
            scope = scopes[0]
        else:
            extra = (
                "; a layer's parameters are named through the binding of its call, as in emb.W"
                if isinstance(v, Tensor)
                else ""
            )
            self.fail(f"{describe(v)} has no attribute '{e.name}'{extra}", e.span)
        found = scope.member(e.name)
        if found is None:
            self.fail(
                f"the layer {what} has no parameter '{e.name}'{did_you_mean(e.name, scope.members())} "
                f"(it has: {', '.join(f'{what}.{m}' for m in scope.members())})",
                e.span,
            )
        return Layer(found, f"{what}.{e.name}") if isinstance(found, ParamScope) else self.param_tensor(found)

    def bool_tensor(self, v, span):
        t = self.tensor(v, span)
        return t if t.dtype == "bool" else ops.compare("ne", t, 0)

    # each binary operator's primitive (// is div on integers)
    _TENSOR_OPS = {p.operator: p.name for p in PRIMITIVES.values() if p.operator is not None and p.arity == 2}

    def binary(self, e: syntax.Binary, env: Env):
        """`a op b`, by what its operands are: `and`/`or` (short-circuit on bools), `@`,
        tensors (with numbers), tuples, dims, and the static numbers and strings."""
        a = self.expr(e.left, env)
        if e.op in ("and", "or") and isinstance(a, bool):
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.expr(e.right, env)
            return b if isinstance(b, bool) else self.bool_tensor(b, e.right.span)
        b = self.expr(e.right, env)
        if e.op in ("==", "!=") and (a is None or b is None):
            return (a is b) == (e.op == "==")
        if e.op in ("and", "or"):
            return self.logical_tensors(e, a, b)
        if e.op == "@":
            if not isinstance(a, Tensor) or not isinstance(b, Tensor):
                self.fail(f"@ needs two tensors, got {describe(a)} and {describe(b)}", e.span)
            return ops.matmul(a, b)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return self.tensor_arithmetic(e, a, b)
        if e.op in ("==", "!=") and (isinstance(a, (tuple, Dim)) or isinstance(b, (tuple, Dim))):
            return STATIC_OPS[e.op](a, b)
        if isinstance(a, tuple) or isinstance(b, tuple):
            return self.tuple_arithmetic(e, a, b)
        if not _static_operand(a) or not _static_operand(b):
            self.fail(f"cannot apply {e.op} to {describe(a)} and {describe(b)}", e.span)
        if isinstance(a, Dim) or isinstance(b, Dim):
            return self.dim_arithmetic(e, a, b)
        if isinstance(a, str) != isinstance(b, str) and e.op not in ("==", "!="):
            self.fail(f"cannot apply {e.op} to {describe(a)} and {describe(b)}", e.span)
        if isinstance(a, str) and e.op == "+":
            self.check_items("string", len(a) + len(b), e.span)
        return static_binary(e.op, a, b, e.span)

    def logical_tensors(self, e: syntax.Binary, a, b) -> Tensor:
        """`and`/`or` of two values of which one at least is a tensor: elementwise."""
        x, y = self.bool_tensor(a, e.left.span), self.bool_tensor(b, e.right.span)
        shape = ops.broadcast_shapes(self.graph, x.shape, y.shape)
        return self.graph.add1(self._TENSOR_OPS[e.op], [ops.broadcast_to(x, shape), ops.broadcast_to(y, shape)])

    def tensor_arithmetic(self, e: syntax.Binary, a, b) -> Tensor:
        """A tensor with a tensor, number, dim or array literal: an elementwise primitive."""
        for v, side in ((a, e.left), (b, e.right)):
            if not isinstance(v, (Tensor, int, float, Dim)) and not (
                isinstance(v, tuple) and _array_literal(v) is not None
            ):
                self.fail(f"cannot use {describe(v)} in arithmetic with a tensor", side.span)
        a = a if isinstance(a, (Tensor, int, float)) and not isinstance(a, bool) else self.tensor(a, e.left.span)
        b = b if isinstance(b, (Tensor, int, float)) and not isinstance(b, bool) else self.tensor(b, e.right.span)
        if e.op == "^" and isinstance(a, Tensor) and isinstance(b, (int, float)) and b in (1, 2, 3, 4):
            out = a  # small integer powers multiply: exact and cheap to differentiate
            for _ in range(int(b) - 1):
                out = ops.mul(out, a)
            return out
        if e.op == "/" and isinstance(a, Tensor) and not a.type.is_float:
            a = ops.cast(a, "f32")
        if e.op == "//" and any(isinstance(v, Tensor) and v.type.is_float for v in (a, b)):
            self.fail("// is integer division; use / for floats", e.span)
        return ops.binary(self._TENSOR_OPS["/" if e.op == "//" else e.op], a, b)

    def tuple_arithmetic(self, e: syntax.Binary, a, b) -> tuple:
        """Tuples joined (`+`) or repeated (`* n`)."""
        if e.op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
            self.check_items("tuple", len(a) + len(b), e.span)
            return a + b
        if e.op == "*" and isinstance(a, tuple) and isinstance(b, int) and not isinstance(b, bool):
            self.check_items("tuple", len(a) * b, e.span)
            return a * b
        self.fail(f"cannot apply {e.op} to {describe(a)} and {describe(b)}", e.span)

    def dim_arithmetic(self, e: syntax.Binary, a, b):
        """Dims with dims or integers: +, -, * and a division that leaves no remainder."""
        if not (is_dim(a) and is_dim(b)) or e.op not in ("+", "-", "*", "/", "//"):
            hint = (
                "; dims are integers: float(d) is a dim's value as a tensor"
                if isinstance(a, float) or isinstance(b, float)
                else ""
            )
            self.fail(f"cannot apply {e.op} to {describe(a)} and {describe(b)}{hint}", e.span)
        if e.op in ("+", "-", "*"):
            return STATIC_OPS[e.op](a, b)
        if b == 0:
            self.fail("division by zero", e.span)
        q = a // b if isinstance(a, Dim) else None
        if q is None:
            self.fail(f"cannot apply {e.op} to the symbolic dims {a} and {b}", e.span)
        return q

    def check_items(self, kind: str, items: int, span: Span):
        """Before a static tuple or string is made: it holds at most MAX_ITEMS items."""
        if items > MAX_ITEMS:
            self.fail(f"a {kind} of {items} items is too long (at most {MAX_ITEMS:,})", span)

    def arguments(self, items, env: Env):
        args, kwargs = [], {}
        for a in items:
            if isinstance(a, syntax.Keyword):
                if a.name in kwargs:
                    self.fail(f"argument '{a.name}' given twice", a.span)
                kwargs[a.name] = (self.expr(a.value, env), a.value.span)
            else:
                if kwargs:
                    self.fail("positional arguments must come before keyword arguments", a.span)
                args.append((self.expr(a, env), a.span))
        return args, kwargs

    # -- calls ---------------------------------------------------------------------------------------------------
    def call(self, func, args: list, kwargs: dict, span: Span, func_expr=None):
        """Call a function with (value, span) arguments."""
        if isinstance(func, Builtin):
            return self.call_builtin(func, args, kwargs, span)
        if isinstance(func, Func):
            return self.call_def(func, args, kwargs, span)
        if isinstance(func, Partial):
            try:
                return self.call(func.func, args, {**func.kwargs, **kwargs}, span)
            except DlcError as e:
                e.notes.append((f"{func.name} is partially applied here", func.span))
                raise
        name = func_expr.id if isinstance(func_expr, syntax.Name) else None
        message = f"{repr(name) if name else 'this'} is {describe(func)}, not a function"
        if isinstance(func, str) and self.globals.defines(func):  # act = "relu"
            message += f"; a function is passed by its name, without quotes: {f'{name} = ' if name else ''}{func}"
        self.fail(message, span)

    def partial(self, func, kwargs: dict, span: Span) -> Partial:
        """`f(k = v, ...)` without f's first argument; its keywords are checked now."""
        if isinstance(func, Partial):
            return Partial(func.func, {**func.kwargs, **kwargs}, span)
        if isinstance(func, Func):
            self.check_keywords(func.decl, kwargs)
        else:
            try:
                _signature(func.fn).bind_partial(self, None, **{k: v for k, (v, _) in kwargs.items()})
            except TypeError as e:
                self.fail(f"{func.name}: {str(e).replace('()', '')}", span)
        return Partial(func, kwargs, span)

    def call_builtin(self, func: Builtin, args, kwargs, span: Span):
        axis_at_end(func, args)
        values = [v for v, _ in args]
        kw = {k: v for k, (v, _) in kwargs.items()}
        try:
            _signature(func.fn).bind(self, *values, **kw)
        except TypeError as e:
            self.fail(f"{func.name}: {str(e).replace('()', '')}", span)
        with self.graph.at(span):
            return func.fn(self, *values, **kw)

    def call_def(self, func: Func, args, kwargs, span: Span):
        decl = func.decl
        if any(f is func.decl for f, _ in self.stack):
            self.fail(
                f"'{decl.name}' calls itself; definitions are expanded at compile time, so recursion "
                "is not allowed (use repeat or scan)",
                span,
                [(f"'{decl.name}' is defined here", decl.span)],
            )
        names = [a.name for a in decl.args]
        explicit = None
        if "name" in kwargs and "name" not in names:
            explicit, nspan = kwargs.pop("name")
            if not isinstance(explicit, str):
                self.fail("name= must be a string", nspan)
        if len(args) > len(names):
            self.fail(
                f"{decl.name} takes {len(names)} argument{'s' if len(names) != 1 else ''}, got {len(args)}",
                span,
                [(f"'{decl.name}' is defined here", decl.span)],
            )
        self.check_keywords(decl, kwargs)
        for k, (_, kspan) in kwargs.items():
            if names.index(k) < len(args):
                self.fail(f"{decl.name}: argument '{k}' given twice", kspan)
        env = func.env.child()
        given = dict(zip(names, args))
        given.update(kwargs)
        for a in decl.args:
            if a.name in given:
                value, vspan = given[a.name]
            elif a.default is not None:
                value, vspan = self.expr(a.default, env), a.default.span
            else:
                self.fail(
                    f"{decl.name}: missing argument '{a.name}'", span, [(f"'{decl.name}' is defined here", decl.span)]
                )
            if isinstance(a.type, syntax.TensorTypeExpr):
                try:
                    value = self.match_type(a.type, value, env, decl.name, a.name, vspan)
                except DlcError as e:
                    if a is not decl.args[0] or not args or isinstance(value, Tensor):
                        raise
                    raise DlcError(e.message + keyword_form(decl, args), e.span, e.notes) from None
            elif isinstance(a.type, syntax.StaticType):
                self.check_static(a.type.kind, value, decl.name, a.name, vspan)
            env.vars[a.name] = value
            self.record_def_value(a.name, value, a.span, span)
        options = tuple(
            (a.name, spelled(v)) for a, v in zip(decl.args, map(env.vars.get, names)) if not isinstance(v, Tensor)
        )
        saved_scope, saved_label = self.scope, self.label
        label = self.label if explicit is None else ".".join(p for p in (explicit, *map(str, self.repeat_index)) if p)
        self.scope = self.scope.child(label, explicit is not None, span, decl)
        saved_repeat, self.repeat_index = self.repeat_index, ()
        self.stack.append((decl, span))
        first = self.forward._next
        try:
            with self.graph.at(span, call=True):  # the library's nodes remember this call (Span.caller, calls)
                result = self.block(decl.body, env, in_def=True)
        except DlcError as e:
            self.repoint(e, decl, span)
            raise
        finally:
            self.stack.pop()
            self.call_nodes.append((first, self.forward._next, self.scope, span, options))
            self.scope, self.label, self.repeat_index = saved_scope, saved_label, saved_repeat
        if result is None:
            self.fail(f"'{decl.name}' has no return", decl.span)
        return result

    def made_by(self, t: Tensor) -> str | None:
        """The def whose call in the user's program made a forward tensor (its node lies in
        the call's nodes and the call is where the tensor was made), for notes: "by dense"."""
        for first, end, scope, call, _ in self.call_nodes:  # innermost calls end first
            if t.graph is self.forward and first <= t.node < end and call == t.made_at:
                return scope.defn.name
        return None

    def check_keywords(self, decl: syntax.Def, kwargs: dict):
        """Every keyword names an argument of decl (or is `name`, when decl has no argument so called)."""
        names = [a.name for a in decl.args]
        for k, (_, kspan) in kwargs.items():
            if k not in names and k != "name":
                self.fail(
                    f"{decl.name} has no argument named '{k}'{did_you_mean(k, names)}",
                    kspan,
                    [(f"'{decl.name}' is defined here", decl.span)],
                )

    def repoint(self, e: DlcError, decl: syntax.Def, call_span: Span):
        """An error inside the standard library is reported at the user's call, with notes
        the way back: where it lies (inside DEF), then each of the library's calls that led
        there (called from here), as a run-time error's are (DlcError.at_user_line)."""
        if e.span is not None and e.span.in_stdlib():
            inner_call = any(note.endswith(STDLIB_NOTE) for note, _ in e.notes)  # e.span: a call this repointed to
            e.notes += called_from_notes([e.span]) if inner_call else [(f"inside {decl.name}{STDLIB_NOTE}", e.span)]
            e.span = call_span
        elif e.span is not None and e.span != call_span and not any("called here" in n for n, _ in e.notes[-1:]):
            e.notes.append((f"in the call of {decl.name} here", call_span))

    def check_static(self, kind: str, value, func, arg, span):
        ok = {
            "int": lambda v: isinstance(v, (int, Dim)) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "fn": lambda v: isinstance(v, FUNCTIONS),
            "dim": lambda v: isinstance(v, (int, Dim)),
            "tuple": lambda v: isinstance(v, tuple),
        }[kind]
        if not ok(value):
            self.fail(f"{func}: argument '{arg}' must be {kind}, got {describe(value)}", span)


# ---- helpers ---------------------------------------------------------------------------------------------------------
STDLIB_NOTE = " (standard library)"  # the end of the note where an error inside the library lies
STATIC_KINDS = ("int", "float", "bool", "str", "fn", "dim", "tuple")


def check_def(decl: syntax.Def):
    """What can be checked of a def before it is called."""
    seen = set()
    for a in decl.args:
        if a.name in seen:
            raise DlcError(f"argument '{a.name}' appears twice in {decl.name}", a.span)
        seen.add(a.name)
        if isinstance(a.type, syntax.StaticType) and a.type.kind not in STATIC_KINDS:
            raise DlcError(
                f"unknown argument kind '{a.type.kind}' (use {', '.join(STATIC_KINDS)} or a tensor type "
                "such as f32[B, n])",
                a.type.span,
            )
        if isinstance(a.type, syntax.TensorTypeExpr):
            rest = [d for d in a.type.dims if isinstance(d, syntax.AnyDims)]
            if len(rest) > 1:
                raise DlcError("at most one '...' in a type", rest[1].span)


def first_argument(func) -> str | None:
    """The name of a function's first argument when it has no default: what a call with
    keywords only leaves out, making a partial application (None: no such argument)."""
    if isinstance(func, Partial):
        return first_argument(func.func)
    if isinstance(func, Func):
        first = func.decl.args[0] if func.decl.args else None
        return first.name if first is not None and first.default is None else None
    if isinstance(func, Builtin):
        params = list(_signature(func.fn).parameters.values())[1:]  # after the evaluator
        if params and params[0].kind is params[0].POSITIONAL_OR_KEYWORD and params[0].default is params[0].empty:
            return params[0].name
    return None


def axis_at_end(func: Builtin, args: list):
    """numpy's `concat(a, b, -1)`: a builtin that takes its tensors positionally and an axis
    by name (concat, stack) is given the axis as its last positional argument."""
    params = _signature(func.fn).parameters
    if "axis" not in params or not any(p.kind is p.VAR_POSITIONAL for p in params.values()) or len(args) < 2:
        return
    value, span = args[-1]
    if isinstance(value, int) and not isinstance(value, bool):
        raise DlcError(
            f"{func.name} takes its tensors positionally and the axis by name; "
            f"did you mean 'axis = {span.text() or value}'?",
            span,
        )


def keyword_form(decl: syntax.Def, args: list) -> str:
    """For a call whose first positional argument is not the tensor decl's first argument
    wants (`dense(64, relu)` where a function is meant): the partial application it may mean."""
    names = [a.name for a in decl.args[1:]]
    if len(args) > len(names):
        return ""
    given = ", ".join(f"{name} = {span.text() or '...'}" for name, (_, span) in zip(names, args))
    return (
        f"; to pass {decl.name} as a function with its first argument left out, give the others by name: "
        f"{decl.name}({given})"
    )


def ann_str(t: syntax.TensorTypeExpr) -> str:
    return f"{t.dtype}[{', '.join(expr_text(d) for d in t.dims)}]"


def expr_text(e) -> str:
    """Source-like text of a dim expression: n, 4 * units, T - 1."""
    if isinstance(e, syntax.AnyDims):
        return "..."
    if isinstance(e, syntax.Name):
        return e.id
    if isinstance(e, syntax.Number):
        return str(e.value)
    if isinstance(e, syntax.Binary):
        return f"{expr_text(e.left)} {e.op} {expr_text(e.right)}"
    if isinstance(e, syntax.Unary):
        return f"{e.op}{expr_text(e.operand)}"
    return "?"


def origin(t: Tensor) -> list:
    return [(f"it is {t.type}, from here", t.made_at)] if t.made_at is not None else []


def _array_literal(v: tuple):
    """A rectangular tuple of numbers, [1.0, 3.0] or [[1, 2], [3, 4]], as an array."""
    try:
        array = np.array(v)
    except ValueError:
        return None
    return array if array.dtype.kind in "if" else None


def _static_operand(v) -> bool:
    return isinstance(v, (int, float, Dim)) or isinstance(v, str)


_signature = functools.cache(inspect.signature)  # a builtin's, checked at every call
