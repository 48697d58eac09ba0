"""The .dl abstract syntax tree and the parser that builds it from grammar/dl.lark."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from functools import lru_cache

from lark import Lark, Transformer, v_args, Token
from lark.exceptions import UnexpectedInput, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken, VisitError

from dlc.compiler.errors import DlcError, Span, register_source
from dlc.compiler.frontend.parse_cache import lark_parser
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
    op: str            # '-', 'not'
    operand: SyntaxNode


@dataclass
class Binary(SyntaxNode):
    op: str            # + - * / % @ ^ == != < <= > >= and or
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
    args: list          # SyntaxNode | Keyword


@dataclass
class Pipe(SyntaxNode):
    value: SyntaxNode
    func: SyntaxNode          # a CallExpr (value becomes its first argument) or a function


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
    subscripts: list    # SyntaxNode | Slice | AnyDims


@dataclass
class Attribute(SyntaxNode):
    value: SyntaxNode
    name: str


@dataclass
class Scan(SyntaxNode):
    var: str
    length: Name | Number
    options: list       # Keyword
    carries: list       # Keyword
    body: list          # statements


# ---- types -------------------------------------------------------------------
@dataclass
class TensorTypeExpr(SyntaxNode):
    dtype: str
    dims: list          # SyntaxNode | AnyDims


@dataclass
class StaticType(SyntaxNode):
    kind: str           # int, float, bool, str, fn, ...


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
    trainable: bool     # `param` is trainable, `state` is a buffer


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
    body: list          # statements; an expression-form def is one Return


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
    settings: list      # Keyword


@dataclass
class Module(SyntaxNode):
    items: list


# Static numbers are 64-bit integers and finite floats, as in the widest dtypes: a literal
# or a static result outside them is an error, never a silent huge int, inf or nan.
INT_MAX = 2 ** 63 - 1
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


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, filename: str):
        super().__init__()
        self.file = filename

    def _s(self, meta):
        return _span(self.file, meta)

    def _name(self, tok) -> str:
        """A name being defined: keywords cannot be redefined."""
        if str(tok) in reserved_words():
            raise DlcError(f"'{tok}' is a reserved word and cannot be used as a name", _token_span(self.file, tok))
        return str(tok)

    # top level
    def start(self, meta, items):
        return Module(self._s(meta), items)

    def import_stmt(self, meta, c):
        return Import(self._s(meta), c[0][1:-1])

    def const_stmt(self, meta, c):
        return ConstDecl(self._s(meta), self._name(c[0]), c[1])

    def model_def(self, meta, c):
        return ModelBlock(self._s(meta), str(c[0]), c[1])

    def train_def(self, meta, c):
        return Train(self._s(meta), str(c[0]), c[1:])

    def setting(self, meta, c):
        return Keyword(self._s(meta), str(c[0]), c[1])

    keyword = setting

    def def_stmt(self, meta, c):
        name, *args, body = c
        args = [a for a in args if a is not None]
        if not isinstance(body, list):
            body = [Return(body.span, [body])]
        return Def(self._s(meta), self._name(name), args, body)

    def arg_decl(self, meta, c):
        name, typ, default = c
        if isinstance(typ, Token):
            typ = StaticType(_token_span(self.file, typ), str(typ))
        return ArgDecl(self._s(meta), self._name(name), typ, default)

    def block(self, meta, stmts):
        return list(stmts)

    # statements
    def assign(self, meta, c):
        return Assign(self._s(meta), [self._name(t) for t in c[:-1]], c[-1])

    def param_stmt(self, meta, c):
        return ParamDecl(self._s(meta), self._name(c[0]), c[1], c[2], True)

    def state_stmt(self, meta, c):
        return ParamDecl(self._s(meta), self._name(c[0]), c[1], c[2], False)

    def update_stmt(self, meta, c):
        return StateUpdate(self._s(meta), str(c[0]), c[1])

    def return_stmt(self, meta, c):
        return Return(self._s(meta), c)

    def yield_stmt(self, meta, c):
        return Yield(self._s(meta), c)

    def repeat_stmt(self, meta, c):
        return Repeat(self._s(meta), self._name(c[0]), c[1], c[2], c[3])

    def if_stmt(self, meta, c):
        cond, then, other = c
        if isinstance(other, If):
            other = [other]
        return If(self._s(meta), cond, then, other or [])

    def input_stmt(self, meta, c):
        return Input(self._s(meta), self._name(c[0]), c[1], False)

    def target_stmt(self, meta, c):
        return Input(self._s(meta), self._name(c[0]), c[1], True)

    def output_stmt(self, meta, c):
        return Output(self._s(meta), self._name(c[0]), c[1])

    def loss_stmt(self, meta, c):
        return Loss(self._s(meta), c[0])

    def metric_stmt(self, meta, c):
        return Metric(self._s(meta), self._name(c[0]), c[1])

    # types
    def tensor_type(self, meta, c):
        return TensorTypeExpr(self._s(meta), str(c[0]), [d for d in c[1:] if d is not None])

    def dim(self, meta, c):
        return c[0]

    def any_dims(self, meta, c):
        return AnyDims(self._s(meta))

    # expressions
    def ternary(self, meta, c):
        return Ternary(self._s(meta), c[1], c[0], c[2])

    def pipe(self, meta, c):
        return Pipe(self._s(meta), c[0], c[1])

    def logical_or(self, meta, c):
        return Binary(self._s(meta), "or", c[0], c[1])

    def logical_and(self, meta, c):
        return Binary(self._s(meta), "and", c[0], c[1])

    def logical_not(self, meta, c):
        return Unary(self._s(meta), "not", c[0])

    def binary(self, meta, c):
        return Binary(self._s(meta), str(c[1]), c[0], c[2])

    def negate(self, meta, c):
        return Unary(self._s(meta), "-", c[0])

    def power(self, meta, c):
        return Binary(self._s(meta), "^", c[0], c[1])

    def call(self, meta, c):
        return CallExpr(self._s(meta), c[0], [a for a in c[1:] if a is not None])

    def arg(self, meta, c):
        return c[0]

    def keyword_arg(self, meta, c):
        return Keyword(self._s(meta), str(c[0]), c[1])

    def index(self, meta, c):
        return IndexExpr(self._s(meta), c[0], c[1:])

    def subscript(self, meta, c):
        return c[0]

    def slice(self, meta, c):
        return Slice(self._s(meta), *c)

    def attribute(self, meta, c):
        return Attribute(self._s(meta), c[0], str(c[1]))

    def number(self, meta, c):
        return Number(self._s(meta), self._number(c[0]))

    def _number(self, tok: Token) -> int | float:
        """A literal's value; a float too large is inf here and refused when evaluated, an
        integer too large is refused now (its digits may not even convert)."""
        text = str(tok)
        if any(ch in text for ch in ".eE"):
            return float(text)
        digits = text.lstrip("0")
        if len(digits) > len(str(INT_MAX)) or int(digits or "0") > INT_MAX:
            shown = text if len(text) <= 20 else f"{text[:20]}... ({len(text)} digits)"
            raise DlcError(f"the integer {shown} is too large (integers are at most 2^63 - 1)",
                           _token_span(self.file, tok))
        return int(text)

    def size(self, meta, c):
        return Number(self._s(meta), size_bytes(str(c[0])))

    def string(self, meta, c):
        return String(self._s(meta), str(c[0])[1:-1])

    def name(self, meta, c):
        return Name(self._s(meta), str(c[0]))

    def true(self, meta, c):
        return Bool(self._s(meta), True)

    def false(self, meta, c):
        return Bool(self._s(meta), False)

    def none(self, meta, c):
        return NoneValue(self._s(meta))

    def tuple(self, meta, c):
        return Tuple(self._s(meta), [x for x in c if x is not None])

    def scan(self, meta, c):
        var, length, options, carries, body = c
        return Scan(self._s(meta), self._name(var), length, options or [], carries or [], body)

    def scan_length(self, meta, c):
        tok = c[0]
        span = _token_span(self.file, tok)
        return Name(span, str(tok)) if tok.type == "NAME" else Number(span, self._number(tok))

    def scan_options(self, meta, c):
        return [x for x in c if x is not None]

    carries = scan_options


@lru_cache(maxsize=1)
@collector_paused()       # its tables last as long as the process
def _parser() -> Lark:
    text = resources.files("dlc.grammar").joinpath("dl.lark").read_text()
    return lark_parser(text, propagate_positions=True, maybe_placeholders=True, start=["start", "expr"])


@lru_cache(maxsize=1)
def keywords() -> frozenset:
    """Every word of the language: those the grammar spells out (model, def, if, scan, ...)
    and the dtypes, which the lexer reads before a name."""
    return frozenset(_grammar_words("start")) | frozenset(DTYPES)


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
    words = {t.name: t.pattern.value for t in parser.terminals
             if t.pattern.type == "str" and t.pattern.value.isidentifier()}
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
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "SIZE": "a size (2GB)", "DTYPE": "a dtype (f32, i32, ...)",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "CMP": "a comparison", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//', '@' or '%'", "ELLIPSIS": "'...'", "$END": "end of file", "DOT": "'.'",
    "CIRCUMFLEX": "'^'", "MINUS": "'-'", "__ANON_0": "'|>'",
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
        raise DlcError(f"cannot read {path}: {e.strerror}") from None


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
        raise e.orig_exc from None


# ---- syntax errors that say what to do ------------------------------------------------------------
# the statements a keyword starts, for `loss = ...` and the like (a keyword is not a name)
STATEMENT_FORMS = {
    "input": "input NAME: TYPE", "target": "target NAME: TYPE", "output": "output NAME = EXPR",
    "loss": "loss EXPR", "metric": "metric NAME = EXPR", "param": "param NAME: TYPE = INIT",
    "state": "state NAME: TYPE = INIT", "update": "update NAME = EXPR", "return": "return EXPR",
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
        starts_line = tok is None or not text[:tok.start_pos].rsplit("\n", 1)[-1].strip()
        if closer_token in expected and starts_line and (tok is None or line < tok.line):
            stop = [(f"expected {closer!r} here", _end_span(filename, text) if tok is None else
                     _token_span(filename, tok))]
            if text[pos] != "{":
                return DlcError(f"{text[pos]!r} is never closed: a {closer!r} is missing {where}",
                                Span(filename, line, col, line, col + 1), stop)
            header = text[:pos].rsplit("\n", 1)[-1].rsplit("}", 1)[-1]
            first = col - len(header.lstrip())
            what = f"'{header.strip()}'" if header.strip() else "this '{'"
            return DlcError(f"{what} is never closed: a '}}' is missing {where}",
                            Span(filename, line, first, line, col + 1), stop)
    if tok is None:
        return DlcError(f"unexpected end of file; expected {_describe(expected)}", _end_span(filename, text))
    keyword = re.search(r"([A-Za-z_]\w*)\s*$", text[:tok.start_pos])
    if tok.type == "EQUAL" and keyword and keyword.group(1) in STATEMENT_FORMS:
        word = keyword.group(1)
        if word == "loss":
            rest = text[tok.end_pos:].split("\n", 1)[0].split("#", 1)[0].strip()
            hint = f"the loss statement has no '=': write `loss {rest or 'EXPR'}`"
        else:
            hint = (f"'{word}' starts a statement, `{STATEMENT_FORMS[word]}`, and cannot be assigned: write that "
                    "statement, or choose another name")
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
