"""The .dl abstract syntax tree and the parser that builds it from grammar/dl.lark."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from functools import lru_cache

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken, VisitError

from dlc.compiler.errors import DlcError, Span, register_source
from dlc.compiler.frontend.parse_cache import grammar_text, lark_parser
from dlc.compiler.ir.graph import DTYPES, collector_paused


@dataclass
class SyntaxNode:
    span: Span = field(repr=False, compare=False)


# ---- expressions -------------------------------------------------------------
@dataclass
class Number(SyntaxNode):
    value: int | float


@dataclass
class String(SyntaxNode):
    value: str


@dataclass
class Bool(SyntaxNode):
    value: bool


@dataclass
class NoneValue(SyntaxNode):
    """`none`: an absent optional argument (a mask, an initial state)."""


@dataclass
class Name(SyntaxNode):
    id: str


@dataclass
class Tuple(SyntaxNode):
    items: list


@dataclass
class Unary(SyntaxNode):
    op: str  # '-', 'not'
    operand: SyntaxNode


@dataclass
class Binary(SyntaxNode):
    op: str  # + - * / % @ ^ == != < <= > >= and or
    left: SyntaxNode
    right: SyntaxNode


@dataclass
class Ternary(SyntaxNode):
    then: SyntaxNode
    cond: SyntaxNode
    other: SyntaxNode


@dataclass
class Keyword(SyntaxNode):
    name: str
    value: SyntaxNode


@dataclass
class CallExpr(SyntaxNode):
    func: SyntaxNode
    args: list  # SyntaxNode | Keyword


@dataclass
class Pipe(SyntaxNode):
    value: SyntaxNode
    func: SyntaxNode  # a CallExpr (value becomes its first argument) or a function


@dataclass
class Slice(SyntaxNode):
    start: SyntaxNode | None
    stop: SyntaxNode | None
    step: SyntaxNode | None


@dataclass
class AnyDims(SyntaxNode):
    """`...` in a type or a subscript."""


@dataclass
class IndexExpr(SyntaxNode):
    value: SyntaxNode
    subscripts: list  # SyntaxNode | Slice | AnyDims


@dataclass
class Attribute(SyntaxNode):
    value: SyntaxNode
    name: str


@dataclass
class Scan(SyntaxNode):
    var: str
    length: Name | Number
    options: list  # Keyword
    carries: list  # Keyword
    body: list  # statements


# ---- types -------------------------------------------------------------------
@dataclass
class TensorTypeExpr(SyntaxNode):
    dtype: str
    dims: list  # SyntaxNode | AnyDims


@dataclass
class StaticType(SyntaxNode):
    kind: str  # int, float, bool, str, fn, ...


# ---- statements ----------------------------------------------------------------
@dataclass
class Assign(SyntaxNode):
    targets: list[str]
    value: SyntaxNode


@dataclass
class ParamDecl(SyntaxNode):
    name: str
    type: TensorTypeExpr
    init: SyntaxNode | None
    trainable: bool  # `param` is trainable, `state` is a buffer


@dataclass
class StateUpdate(SyntaxNode):
    name: str
    value: SyntaxNode


@dataclass
class Return(SyntaxNode):
    values: list


@dataclass
class Yield(SyntaxNode):
    values: list


@dataclass
class Repeat(SyntaxNode):
    var: str
    start: SyntaxNode
    stop: SyntaxNode
    body: list


@dataclass
class If(SyntaxNode):
    cond: SyntaxNode
    then: list
    other: list


@dataclass
class ArgDecl(SyntaxNode):
    name: str
    type: TensorTypeExpr | StaticType | None
    default: SyntaxNode | None


@dataclass
class Def(SyntaxNode):
    name: str
    args: list[ArgDecl]
    body: list  # statements; an expression-form def is one Return


@dataclass
class Input(SyntaxNode):
    name: str
    type: TensorTypeExpr
    is_target: bool


@dataclass
class Output(SyntaxNode):
    name: str
    value: SyntaxNode | None


@dataclass
class Loss(SyntaxNode):
    value: SyntaxNode


@dataclass
class Metric(SyntaxNode):
    name: str
    value: SyntaxNode


# ---- top level ----------------------------------------------------------------
@dataclass
class Import(SyntaxNode):
    path: str


@dataclass
class ConstDecl(SyntaxNode):
    name: str
    value: SyntaxNode


@dataclass
class ModelBlock(SyntaxNode):
    name: str
    body: list


@dataclass
class Train(SyntaxNode):
    model: str
    settings: list  # Keyword


@dataclass
class Module(SyntaxNode):
    items: list


# Static numbers are 64-bit integers and finite floats, as in the widest dtypes: a literal
# or a static result outside them is an error, never a silent huge int, inf or nan.
INT_MAX = 2**63 - 1
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_bytes(text: str) -> int | None:
    """A size in bytes: a number with a binary unit, its B optional (2GB, 1.5G, 512MiB, 4096),
    as a size literal (2GB) and DLC_MEMORY_LIMIT read; None when the text is not one."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    return int(float(m[1]) * SIZE_UNITS[m[2].upper()]) if m else None


def in_range(v: int | float) -> bool:
    """Whether a static number is one of the language's: |v| <= INT_MAX, or a finite float."""
    return math.isfinite(v) if isinstance(v, float) else -INT_MAX <= v <= INT_MAX


def _span(filename: str, meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(filename, 0, 0)
    return Span(filename, meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(filename: str, tok: Token) -> Span:
    return Span(filename, tok.line, tok.column, tok.end_line, tok.end_column)


def _node(cls, *given, defines: bool = False, listed_from: int | None = None, **named):
    """The method of a rule (or alias) whose node is `cls(span, *given, *children, **named)`,
    each token child as its text. `listed_from`: the children from there on as one list (a
    block's statements, a call's arguments); `defines`: the first child is the name the node
    defines, which may not be a reserved word."""

    def build(self, meta, *children):
        if defines:
            children = (self._defined(children[0]), *children[1:])
        children = [str(c) if isinstance(c, Token) else c for c in children]
        if listed_from is not None:
            children[listed_from:] = [children[listed_from:]]
        return cls(_span(self.file, meta), *given, *children, **named)

    return build


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """grammar/dl.lark's tree to the AST, by Lark's conventions: a method per rule or alias,
    given the node's meta (its span) and its children as arguments (an absent `[...]` of the
    grammar as None), most of them declared by `_node`; a method per terminal that becomes a
    value (NUMBER, SIZE, STRING). Single children pass through by the grammar's `?`."""

    def __init__(self, filename: str):
        super().__init__()
        self.file = filename

    def __default__(self, data, children, meta):
        raise AssertionError(f"grammar/dl.lark's '{data}' has no method in _ToAst")

    def _defined(self, tok: Token) -> str:
        """A name being defined: keywords cannot be redefined."""
        if str(tok) in reserved_words():
            raise DlcError(f"'{tok}' is a reserved word and cannot be used as a name", _token_span(self.file, tok))
        return str(tok)

    # terminals
    def NUMBER(self, tok: Token) -> int | float:
        """A literal's value; a float too large is inf here and refused when evaluated, an
        integer too large is refused now (its digits may not even convert)."""
        if any(ch in tok for ch in ".eE"):
            return float(tok)
        digits = tok.lstrip("0")
        if len(digits) > len(str(INT_MAX)) or int(digits or "0") > INT_MAX:
            shown = tok if len(tok) <= 20 else f"{tok[:20]}... ({len(tok)} digits)"
            raise DlcError(
                f"the integer {shown} is too large (integers are at most 2^63 - 1)", _token_span(self.file, tok)
            )
        return int(tok)

    def SIZE(self, tok: Token) -> int:
        return size_bytes(tok)

    def STRING(self, tok: Token) -> str:
        return str(tok)[1:-1]

    # top level
    start = _node(Module, listed_from=0)
    import_stmt, model_def = _node(Import), _node(ModelBlock)
    const_stmt = _node(ConstDecl, defines=True)
    train_def = _node(Train, listed_from=1)
    setting = keyword = keyword_arg = _node(Keyword)

    def def_stmt(self, meta, name, *args_and_body):
        *args, body = args_and_body
        if not isinstance(body, list):  # the expression form
            body = [Return(body.span, [body])]
        return Def(_span(self.file, meta), self._defined(name), args, body)

    arg_decl = _node(ArgDecl, defines=True)
    static_type = _node(StaticType)

    def block(self, meta, *statements):
        return list(statements)

    scan_options = carries = block

    # statements
    def assign(self, meta, *targets_and_value):
        *targets, value = targets_and_value
        return Assign(_span(self.file, meta), [self._defined(t) for t in targets], value)

    param_stmt = _node(ParamDecl, defines=True, trainable=True)
    state_stmt = _node(ParamDecl, defines=True, trainable=False)
    update_stmt = _node(StateUpdate)
    return_stmt, yield_stmt = _node(Return, listed_from=0), _node(Yield, listed_from=0)
    repeat_stmt = _node(Repeat, defines=True)

    def if_stmt(self, meta, cond, then, other):
        return If(_span(self.file, meta), cond, then, [other] if isinstance(other, If) else other or [])

    input_stmt = _node(Input, defines=True, is_target=False)
    target_stmt = _node(Input, defines=True, is_target=True)
    output_stmt, metric_stmt = _node(Output, defines=True), _node(Metric, defines=True)
    loss_stmt = _node(Loss)

    # types
    tensor_type = _node(TensorTypeExpr, listed_from=1)
    any_dims = _node(AnyDims)

    # expressions
    def ternary(self, meta, cond, then, other):
        return Ternary(_span(self.file, meta), then, cond, other)

    def binary(self, meta, left, op, right):
        return Binary(_span(self.file, meta), str(op), left, right)

    logical_or, logical_and, power = _node(Binary, "or"), _node(Binary, "and"), _node(Binary, "^")
    logical_not, negate = _node(Unary, "not"), _node(Unary, "-")
    pipe, attribute, slice = _node(Pipe), _node(Attribute), _node(Slice)
    call, index = _node(CallExpr, listed_from=1), _node(IndexExpr, listed_from=1)
    number = size = _node(Number)
    string, name, tuple = _node(String), _node(Name), _node(Tuple, listed_from=0)
    true, false, none = _node(Bool, True), _node(Bool, False), _node(NoneValue)

    def scan(self, meta, var, length, options, carries, body):
        return Scan(_span(self.file, meta), self._defined(var), length, options or [], carries or [], body)


@lru_cache(maxsize=1)
@collector_paused()  # its tables last as long as the process
def _parser() -> Lark:
    return lark_parser(grammar_text(), propagate_positions=True, maybe_placeholders=True, start=["start", "expr"])


@lru_cache(maxsize=1)
def keywords() -> frozenset:
    """Every word of the language: those the grammar spells out (model, def, if, scan, ...)
    and the dtypes, which the lexer reads before a name."""
    return frozenset(_grammar_words("start")) | frozenset(DTYPES)


IDENTIFIER = re.compile(r"[A-Za-z_]\w*")  # the form of a name (reserved_words aside)


@lru_cache(maxsize=1)
def reserved_words() -> frozenset:
    """The words no name may be: those of expressions (if, not, scan, true, ...) and the
    dtypes. A statement's keyword (input, target, loss, ...) stays usable as an argument's
    name."""
    return frozenset(_grammar_words("expr", skip="block")) | frozenset(DTYPES)


def _grammar_words(start: str, skip: str = "") -> set:
    """The words the grammar's rules spell out, in those reachable from rule `start` (not
    entering rule `skip`: a scan's block of statements)."""
    parser = _parser()
    words = {
        t.name: t.pattern.value for t in parser.terminals if t.pattern.type == "str" and t.pattern.value.isidentifier()
    }
    expansions: dict = {}
    for r in parser.rules:
        expansions.setdefault(r.origin.name, []).append(r.expansion)
    seen, todo, found = {start}, [start], set()
    while todo:
        for expansion in expansions.get(todo.pop(), ()):
            for symbol in expansion:
                if symbol.is_term and symbol.name in words:
                    found.add(words[symbol.name])
                elif not symbol.is_term and symbol.name not in seen and symbol.name != skip:
                    seen.add(symbol.name)
                    todo.append(symbol.name)
    return found


_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "SIZE": "a size (2GB)",
    "DTYPE": "a dtype (f32, i32, ...)",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "CMP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//', '@' or '%'",
    "ELLIPSIS": "'...'",
    "$END": "end of file",
    "DOT": "'.'",
    "CIRCUMFLEX": "'^'",
    "MINUS": "'-'",
    "__ANON_0": "'|>'",
}


def _describe(expected) -> str:
    names = sorted({_TOKEN_NAMES.get(e, f"'{e.lower()}'" if e.isalpha() and e.isupper() else e) for e in expected})
    if len(names) > 6:
        names = names[:6] + ["..."]
    return ", ".join(names)


def read_source(path: Path, newline: str | None = None) -> str:
    """A .dl file's text, without the byte order mark an editor may have written first (it
    is no character of the program), its line ends as `\n` (`newline=""`: as written); a
    file that cannot be read or is not UTF-8 is a located DlcError."""
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError:
        raise _not_utf8(str(path), path.read_bytes()) from None
    except OSError as e:
        raise DlcError(f"cannot read {path}: {e.strerror}", Span.whole(path)) from None


def universal_newlines(text: str) -> str:
    """The text with its `\r\n` and `\r` line ends as `\n`, as read_source reads a file (Python's
    text mode): an editor's text, whose lines may end in any of the three (the LSP counts each
    as one line end), then parses as the file would. A byte order mark first, which read_source
    drops, is a space here: the editor counts it in the first line's columns."""
    return re.sub(r"\r\n?", "\n", text.replace("\ufeff", " ", 1) if text.startswith("\ufeff") else text)


def _not_utf8(name: str, data: bytes) -> DlcError:
    """The error at the first byte that is not UTF-8; its line is shown with the bad bytes replaced."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
    line, line_start = data.count(b"\n", 0, bad) + 1, data.rfind(b"\n", 0, bad) + 1
    col = len(data[line_start:bad].decode("utf-8", "replace")) + 1
    register_source(name, data.decode("utf-8", "replace"))
    return DlcError(f"the file is not UTF-8 text (byte 0x{data[bad]:02x})", Span(name, line, col))


def parse(text: str, filename: str = "<input>", start: str = "start") -> Module:
    """Parse .dl source into a Module (with start="expr", one expression: a flag's value,
    located in the flag's own text); syntax errors become located DlcErrors."""
    register_source(filename, text)
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedCharacters as e:
        raise DlcError(f"unexpected character {text[e.pos_in_stream]!r}", Span(filename, e.line, e.column)) from None
    except UnexpectedEOF as e:
        raise _unexpected(text, filename, None, e.expected) from None
    except UnexpectedToken as e:
        raise _unexpected(text, filename, None if e.token.type == "$END" else e.token, e.expected) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise DlcError(f"syntax error: {e}", Span(filename, e.line, e.column)) from None
    try:
        return _ToAst(filename).transform(tree)
    except VisitError as e:
        raise (_too_deep(tree, filename) if isinstance(e.orig_exc, RecursionError) else e.orig_exc) from None
    except RecursionError:
        raise _too_deep(tree, filename) from None


NESTING_ADVICE = "give parts of it names (h = ...), or use repeat"


def _too_deep(tree: Tree, filename: str) -> DlcError:
    """The error for a tree nested deeper than the transformer's recursion allows: at the
    outermost of the construct most repeated along the deepest path (the first of a thousand
    nested ifs), the innermost a note."""
    deepest, stack = [], [(tree, [])]
    while stack:  # iterative: the tree is too deep to walk by recursion
        node, path = stack.pop()
        path = path + [node]
        if len(path) > len(deepest):
            deepest = path
        stack.extend((c, path) for c in node.children if isinstance(c, Tree))
    located = [n for n in deepest if not n.meta.empty]
    rule = max({n.data for n in located}, key=lambda r: sum(n.data == r for n in located))
    chain = [n for n in located if n.data == rule]
    span = lambda n: Span(filename, n.meta.line, n.meta.column)
    return DlcError(
        f"the program nests too deeply to compile: {len(chain)} expressions inside one another ({NESTING_ADVICE})",
        span(chain[0]),
        [("the innermost here", span(chain[-1]))],
    )


# ---- syntax errors that say what to do ------------------------------------------------------------
# the statements a keyword starts, for `loss = ...` and the like (a keyword is not a name)
STATEMENT_FORMS = {
    "input": "input NAME: TYPE",
    "target": "target NAME: TYPE",
    "output": "output NAME = EXPR",
    "loss": "loss EXPR",
    "metric": "metric NAME = EXPR",
    "param": "param NAME: TYPE = INIT",
    "state": "state NAME: TYPE = INIT",
    "update": "update NAME = EXPR",
    "return": "return EXPR",
    "yield": "yield EXPR",
}
_CLOSERS = {"(": (")", "RPAR"), "[": ("]", "RSQB"), "{": ("}", "RBRACE")}


def _unexpected(text: str, filename: str, tok: Token | None, expected) -> DlcError:
    """The error for an unexpected token (None: the end of the file). An opening bracket the
    parser could have closed there, on an earlier line, is the mistake: the error is at it.
    A statement keyword followed by '=' (`loss = ...`) is told its statement's form."""
    where = "at the end of the file" if tok is None else f"before {tok.value!r} on line {tok.line}"
    opened = open_brackets(text, len(text) if tok is None else tok.start_pos)
    if opened:
        pos = opened[-1]
        closer, closer_token = _CLOSERS[text[pos]]
        line, col = _line_col(text, pos)
        starts_line = tok is None or not text[: tok.start_pos].rsplit("\n", 1)[-1].strip()
        if closer_token in expected and starts_line and (tok is None or line < tok.line):
            stop = [
                (f"expected {closer!r} here", _end_span(filename, text) if tok is None else _token_span(filename, tok))
            ]
            if text[pos] != "{":
                return DlcError(
                    f"{text[pos]!r} is never closed: a {closer!r} is missing {where}",
                    Span(filename, line, col, line, col + 1),
                    stop,
                )
            header = text[:pos].rsplit("\n", 1)[-1].rsplit("}", 1)[-1]
            first = col - len(header.lstrip())
            what = f"'{header.strip()}'" if header.strip() else "this '{'"
            return DlcError(
                f"{what} is never closed: a '}}' is missing {where}", Span(filename, line, first, line, col + 1), stop
            )
    if tok is None:
        return DlcError(f"unexpected end of file; expected {_describe(expected)}", _end_span(filename, text))
    keyword = re.search(r"([A-Za-z_]\w*)\s*$", text[: tok.start_pos])
    if tok.type == "EQUAL" and keyword and keyword.group(1) in STATEMENT_FORMS:
        word = keyword.group(1)
        if word == "loss":
            rest = text[tok.end_pos :].split("\n", 1)[0].split("#", 1)[0].strip()
            hint = f"the loss statement has no '=': write `loss {rest or 'EXPR'}`"
        else:
            hint = (
                f"'{word}' starts a statement, `{STATEMENT_FORMS[word]}`, and cannot be assigned: write that "
                "statement, or choose another name"
            )
        return DlcError(f"unexpected '='; {hint}", _token_span(filename, tok))
    return DlcError(f"unexpected {tok.value!r}; expected {_describe(expected)}", _token_span(filename, tok))


def open_brackets(text: str, end: int) -> list[int]:
    """The offsets of the brackets still open at `end`, outermost first (in comments and
    strings nothing counts)."""
    stack, i = [], 0
    while i < end:
        ch = text[i]
        if ch == "#":
            i = text.find("\n", i)
            i = end if i < 0 else i
        elif ch == '"':
            close = text.find('"', i + 1)
            i = end if close < 0 else close
        elif ch in _CLOSERS:
            stack.append(i)
        elif ch in ")]}" and stack and _CLOSERS[text[stack[-1]]][0] == ch:
            stack.pop()
        i += 1
    return stack


def _line_col(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _end_span(filename: str, text: str) -> Span:
    lines = text.splitlines() or [""]
    return Span(filename, len(lines), len(lines[-1]) + 1)


def walk(tree):
    """Every syntax node of a tree (a node or a list of them), each before its children, in
    the order they are written."""
    stack = [tree]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif isinstance(v, SyntaxNode):
            yield v
            stack.extend(reversed([getattr(v, f.name) for f in fields(v) if f.name != "span"]))


def dump(node, indent: int = 0) -> str:
    """An indented, readable rendering of the AST (`dlc compile --emit ast`)."""
    pad = "  " * indent
    if isinstance(node, list):
        return "\n".join(dump(n, indent) for n in node)
    if not isinstance(node, SyntaxNode):
        return pad + repr(node)
    scalars, children = [], []
    for f in fields(node):
        if f.name == "span":
            continue
        v = getattr(node, f.name)
        if isinstance(v, SyntaxNode) or (isinstance(v, list) and any(isinstance(x, SyntaxNode) for x in v)):
            children.append((f.name, v))
        elif v is not None and v != []:
            scalars.append(f"{f.name}={v!r}")
    head = f"{pad}{type(node).__name__}({', '.join(scalars)})  @{node.span.short()}"
    lines = [head]
    for name, v in children:
        lines.append(f"{pad}  {name}:")
        lines.append(dump(v, indent + 2))
    return "\n".join(lines)
