"""A built model: its graphs, inputs and parameters, and how its parameters are named."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlc.compiler.frontend import syntax
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.ir.graph import Graph, TensorType


class ParamScope:
    """A node of the parameter-name tree; one per call of a def, except that the calls with
    one explicit name share a node: a later call replays the first, walking its nodes again,
    so every parameter under it is the first call's (shared weights)."""

    def __init__(
        self,
        label: str,
        parent: "ParamScope | None",
        first_call: Span | None = None,
        replay: bool = False,
        defn: syntax.Def | None = None,
    ):
        self.label, self.parent = label, parent
        self.defn = defn  # the def whose call opened this node (None at the root)
        self.path = ""  # the prefix of its parameters' names, once they are assigned
        self.children: list[ParamScope] = []
        self.params: dict[str, int] = {}  # local name -> param node
        self.named: dict[str, ParamScope] = {}  # explicit name= children
        self.unnamed: dict[str, list] = {}  # label -> the other children with that label, in call order
        self.entered: dict[str, int] = {}  # label -> how many of those the current visit has entered
        self.first_call = first_call  # the call that made an explicit name's node
        self.replay = replay  # walked by a later call of a shared name

    def child(self, label: str, explicit: bool, call: Span, defn: syntax.Def) -> "ParamScope":
        """The node of a call made in this one. The k-th call with a label in one visit
        gets the k-th child with that label, so a replay finds the first call's nodes."""
        if explicit:
            scope = self.named.get(label)
        else:
            same = self.unnamed.setdefault(label, [])
            k = self.entered.get(label, 0)
            self.entered[label] = k + 1
            scope = same[k] if k < len(same) else None
        if scope is None:
            scope = ParamScope(label, self, call if explicit else None, self.replay, defn)
            self.children.append(scope)
            if explicit:
                self.named[label] = scope
            else:
                same.append(scope)
        else:
            scope.replay = True
        scope.entered = {}
        return scope

    def shared_call(self) -> "ParamScope":
        """In a replay: the node of the explicit name that a later call repeats (the
        outermost replayed node; only an explicit name's node is replayed first)."""
        scope, found = self, None
        while scope is not None:
            found = scope if scope.replay else found
            scope = scope.parent
        return found

    def owns_params(self) -> bool:
        return bool(self.params) or any(c.owns_params() for c in self.children)

    def named_children(self) -> dict[str, "ParamScope"]:
        """The children that own parameters, by the segment of their names: the label, or,
        for siblings sharing one, the label numbered (`h.0`, or `0` for the calls of a
        return, whose label is ""); a lone child labelled "" adds no segment."""
        groups: dict[str, list] = {}
        for c in self.children:
            if c.owns_params():
                groups.setdefault(c.label, []).append(c)
        return {
            label if len(members) == 1 else (f"{label}.{k}" if label else str(k)): c
            for label, members in groups.items()
            for k, c in enumerate(members)
        }

    def assign_names(self, prefix: str, out: dict):
        """Number same-label siblings that own parameters; collect full names."""
        self.path = prefix
        for name, node in self.params.items():
            out[node] = f"{prefix}.{name}" if prefix else name
        for seg, c in self.named_children().items():
            c.assign_names(".".join(p for p in (prefix, seg) if p), out)

    def member(self, name: str) -> "int | ParamScope | None":
        """What `name` names right under this node, as the full names read: a parameter
        (its node) or a call's node (`h3.h`); a lone child labelled "" is looked through."""
        children = self.named_children()
        if name in self.params or name in children:
            return self.params.get(name, children.get(name))
        return children[""].member(name) if "" in children else None

    def members(self) -> list[str]:
        """The names `member` knows, for an error that lists them."""
        children = self.named_children()
        return list(self.params) + [seg for seg in children if seg] + (children[""].members() if "" in children else [])

    def layer(self) -> str:
        """The layer of the nodes a call makes: the name prefix of its parameters, or of the
        nearest enclosing call's ("" when none of them names parameters)."""
        scope = self
        while scope is not None and not scope.path:
            scope = scope.parent
        return scope.path if scope is not None else ""

    def calls(self) -> tuple:
        """The calls from the model down to this node, outermost first."""
        chain, scope = [], self
        while scope.defn is not None:
            chain.append(DefCall(scope.defn.name, scope.defn.span.in_stdlib(), scope.path))
            scope = scope.parent
        return tuple(reversed(chain))


@dataclass(frozen=True)
class DefCall:
    """A call of a def on the way to a parameter's declaration: the def's name, whether it
    is the standard library's, and the name prefix of the parameters under the call."""

    name: str
    stdlib: bool
    path: str


@dataclass(frozen=True)
class CallNodes:
    """A call of a def, or a model statement (`defn` ""), and the forward graph's nodes
    [first, end) made during it: the graph page draws each as a box. `layer`: the name
    prefix of the call's own parameters or the statement's binding ("" for a call that
    declares none); `options`: (argument, value in .dl spelling) of each argument that is
    not a tensor, defaults included."""

    first: int
    end: int
    defn: str
    layer: str
    span: Span
    options: tuple = ()


@dataclass
class ParamInfo:
    name: str
    type: TensorType
    trainable: bool
    span: Span
    calls: tuple = ()  # the DefCalls that led to its declaration, outermost first (none: the model's own)


@dataclass
class ModelInput:
    name: str
    type: TensorType
    span: Span
    is_target: bool


@dataclass
class Model:
    """A model built for one mode: its forward graph, initializer graph and metadata."""

    name: str
    graph: Graph  # outputs: loss, metric:<m>, output:<o>, update:<state>
    init: Graph  # outputs: one per parameter and state, by name
    inputs: list
    params: list
    training: bool
    train: syntax.Train | None
    span: Span
    bindings: list = field(default_factory=list)  # (name, type, span) of every model-level binding
    layer_types: dict = field(default_factory=dict)  # layer (graph.layer_of) -> the def(s) whose calls made it
    calls: list = field(default_factory=list)  # every CallNodes, an inner one before the one around it
    def_values: list = field(default_factory=list)  # (name, value as written, span, call's span) in the user's defs
    # what the runtime derives from the graph once rather than at every call (an index
    # input's bounds, runtime/training/inputs.py): a prediction of one example is µs
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def input_names(self):
        return [i.name for i in self.inputs]

    def require_loss(self, because: str):
        """An error at the model unless it has a loss; `because` is what needs one."""
        if "loss" not in self.graph.outputs:
            raise DlcError(f"model {self.name} has no loss, so {because}: add a `loss ...` statement", self.span)

    def require_outputs(self, purpose: str):
        """An error at the model unless it declares outputs; `purpose` is what needs them ("to export")."""
        if not any(k.startswith("output:") for k in self.graph.outputs):
            raise DlcError(f"model {self.name} declares no outputs {purpose}: add `output name = ...`", self.span)
