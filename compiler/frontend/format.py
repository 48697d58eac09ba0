"""`dlc fmt`: the one canonical layout of a .dl file.

The layout is made from the grammar's tokens (comments included), not from the AST, so
every comment stays where it was written and the program's tokens are never changed: only
the whitespace between them. The author's line breaks are kept (at most one blank line in
a row); within a line the spacing is canonical; statements are indented four spaces per
block, a continuation line under the bracket it continues (or four more than its statement
when the bracket ends its line); trailing comments of consecutive lines and the `=` of a
train block's consecutive settings are aligned. The AST tells what the tokens alone cannot:
where each statement starts and which `-` is unary. The result is parsed again and must
give the same AST, or the file is left alone.
"""

from __future__ import annotations

import codecs
import difflib
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend import syntax

INDENT = 4
LINE_WIDTH = 120  # a longer line is broken (_wrap_at), its trailing comment aside
COMMENT_GAP = 2  # spaces between the longest line of a run and its aligned comments
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_STATEMENT_LISTS = ("items", "body", "then", "other", "settings")
_TIGHT = {".", "..", "^"}  # no space on either side
# the words after which an expression starts: `return (a, b)`, not a call `return(a, b)`
_BEFORE_EXPRESSION = {"return", "yield", "loss", "if", "then", "else", "and", "or", "not", "in"}
# a model's declarations line up: `input  x`, `target y`, `loss   l`, `metric m = ...`
_DECLARATIONS = (syntax.Input, syntax.ParamDecl, syntax.Loss, syntax.Metric, syntax.Output)
DECLARATION_WIDTH = 6


@dataclass
class _Line:
    """A source line's code tokens, its trailing or own-line comment, and the blank lines before it."""

    tokens: list = field(default_factory=list)
    comment: str = ""
    blanks_before: int = 0


@dataclass
class _Positions:
    """What the AST says about token positions (line, col)."""

    statements: set = field(default_factory=set)
    settings: dict = field(default_factory=dict)  # a train block's settings: the block's line
    declarations: set = field(default_factory=set)  # input, target, param, ... in a model's body
    unary: set = field(default_factory=set)  # unary minus signs
    callees: set = field(default_factory=set)  # names called: `f` in `f(x)`


def format_text(text: str, filename: str = "<input>", width: int = LINE_WIDTH) -> str:
    """`text` in the canonical layout, its lines broken at `width` characters where they can
    be. A syntax error is raised as the DlcError `dlc check` gives."""
    module = syntax.parse(text, filename)
    positions = _Positions()
    _collect(module, positions)
    out = _render(_lines(text), positions, width)
    if syntax.parse(out, filename + " (formatted)") != module:
        raise DlcError(
            "dlc fmt would change what this file means, so it is left as it is "
            "(a bug of dlc fmt: please report it with the file)",
            Span(filename, 1, 1),
        )
    return out


def format_source(text: str, filename: str = "<input>", width: int = LINE_WIDTH) -> str:
    """`text` as a file or an editor holds it (its lines ending in `\n`, `\r\n` or `\r`, a byte
    order mark maybe first) in the canonical layout, its lines ending as its first line does
    (as ruff's formatter keeps them), its byte order mark kept."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    line_end = re.search(r"\r\n?|\n", text)
    formatted = format_text(syntax.universal_newlines(text[len(bom) :]), filename, width)
    return bom + (formatted.replace("\n", line_end[0]) if line_end else formatted)


def format_files(paths: list[str], check: bool = False, out=None, width: int = LINE_WIDTH) -> int:
    """`dlc fmt`: rewrite each file (a folder: its .dl files) in the canonical layout; with
    `check`, change nothing and print a unified diff of each file that is not. A file that
    does not parse is reported on standard error and left alone, and the others are still
    formatted. The exit status: 1 when a file does not parse or `check` finds one to change, else 0."""
    out, unformatted, failed = out or sys.stdout, 0, 0
    for path in _dl_files(paths):
        try:
            text = syntax.read_source(path, newline="")
            formatted = format_source(text, str(path), width)
        except DlcError as e:
            print(e.render(), file=sys.stderr)
            failed += 1
            continue
        if formatted == text:
            continue
        unformatted += 1
        if check:
            out.writelines(
                difflib.unified_diff(
                    text.splitlines(True), formatted.splitlines(True), f"{path} (as written)", f"{path} (formatted)"
                )
            )
        else:
            try:
                with open(path, "rb") as f:
                    bom = f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8  # read_source drops it
                with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
                    f.write(formatted)
            except OSError as e:
                raise DlcError(f"cannot write {path}: {e.strerror}", Span.whole(path)) from None
            print(f"formatted {path}", file=out)
    if check and unformatted:
        print(
            f"{unformatted} file{'s' if unformatted > 1 else ''} would be formatted (run `dlc fmt` on "
            f"{'them' if unformatted > 1 else 'it'})",
            file=out,
        )
    return 1 if failed or (check and unformatted) else 0


def _dl_files(paths: list[str]) -> list[Path]:
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(path.rglob("*.dl"))
        elif path.exists():
            files.append(path)
        else:
            raise DlcError(f"no such file: {name}", Span.whole(name))
    return files


def _collect(node, positions: _Positions):
    for f in fields(node):
        value = getattr(node, f.name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, syntax.SyntaxNode):
                continue
            at = (item.span.line, item.span.col)
            if f.name in _STATEMENT_LISTS and not _is_expression_body(node, item):
                if isinstance(node, syntax.Train):
                    positions.settings[at] = node.span.line
                else:
                    positions.statements.add(at)
                if isinstance(node, syntax.ModelBlock) and isinstance(item, _DECLARATIONS):
                    positions.declarations.add(at)
            if isinstance(item, syntax.Unary) and item.op == "-":
                positions.unary.add(at)
            if isinstance(item, syntax.CallExpr):
                positions.callees.add((item.func.span.end_line, item.func.span.end_col))
            _collect(item, positions)


def _is_expression_body(node, item) -> bool:
    """The Return the parser makes of `def f(x) = expr`: its place is the expression's."""
    return isinstance(node, syntax.Def) and isinstance(item, syntax.Return) and item.span == item.values[0].span


def _lines(text: str) -> list[_Line]:
    """The source cut into lines of tokens by the grammar's own lexer."""
    parser = syntax._parser()
    lines, line = [], _Line()
    for tok in parser.lex(text, dont_ignore=True):
        if tok.type == "COMMENT":
            line.comment = str(tok).rstrip()
        elif tok.type in parser.lexer_conf.ignore:
            for _ in range(str(tok).count("\n")):
                if line.tokens or line.comment:
                    lines.append(line)
                    line = _Line()
                else:
                    line.blanks_before += 1
        else:
            line.tokens.append(tok)
    if line.tokens or line.comment:
        lines.append(line)
    return lines


@dataclass
class _Open:
    char: str
    close_indent: int  # the indent of a line that starts with the closing bracket
    inner: int  # the indent of a line inside: a block's statements, or a continuation


def _render(lines: list[_Line], positions: _Positions, width: int = LINE_WIDTH) -> str:
    out: list[tuple[str, str, int | None]] = []  # (indent + code, comment, train block of a setting)
    stack: list[_Open] = []
    statement_indent, prev, before_prev = 0, None, []
    lines = list(lines)
    k = 0
    while k < len(lines):
        line = lines[k]
        k += 1
        state = ([_Open(o.char, o.close_indent, o.inner) for o in stack], statement_indent, prev, list(before_prev))
        first = line.tokens[0] if line.tokens else None
        if first is None:
            indent = stack[-1].inner if stack else 0
        elif str(first) in ("}", ")", "]") and stack:
            indent = stack[-1].close_indent
        elif (
            (first.line, first.column) in positions.statements
            or (first.line, first.column) in positions.settings
            or str(first) == "else"
            and str(prev) == "}"
        ):  # an if statement's, not `a if c else b`
            indent = statement_indent = stack[-1].inner if stack else 0
        else:
            indent = stack[-1].inner if stack and stack[-1].char != "{" else statement_indent + INDENT
        code, ends, depths = " " * indent, [], []
        for i, tok in enumerate(line.tokens):
            text = str(tok)
            if i and _space(prev, tok, before_prev, stack, positions):
                code += " "
            depths.append((len(stack) - len(state[0]), stack[-1].char if stack else ""))
            code += (
                text.ljust(DECLARATION_WIDTH)
                if i == 0 and len(line.tokens) > 1 and (tok.line, tok.column) in positions.declarations
                else text
            )
            if text in _OPENERS:
                last = i == len(line.tokens) - 1
                if text == "{":
                    stack.append(_Open(text, statement_indent, statement_indent + INDENT))
                else:
                    stack.append(_Open(text, indent, indent + INDENT if last else len(code)))
            elif stack and text == _OPENERS[stack[-1].char]:
                closed = stack.pop()
                if closed.char == "{":
                    statement_indent = closed.close_indent
            before_prev = (before_prev + [prev])[-3:]
            prev = tok
            ends.append(len(code))
        cut = _wrap_at(line.tokens, ends, depths, width) if len(code) > width else None
        if cut is not None:  # rendered again as two lines, the second a continuation (wrapped again if need be)
            lines[k - 1 : k] = [
                _Line(line.tokens[:cut], "", line.blanks_before),
                _Line(line.tokens[cut:], line.comment),
            ]
            k -= 1
            stack, statement_indent, prev, before_prev = state
            continue
        after_open = out and out[-1][0].endswith("{") and not out[-1][1]
        if line.blanks_before and out and not after_open and not (first is not None and str(first) == "}"):
            out.append(("", "", None))
        setting = positions.settings.get((first.line, first.column)) if first is not None else None
        out.append((code, line.comment, setting))
    return _align(out)


def _wrap_at(tokens: list, ends: list, depths: list, width: int) -> int | None:
    """Where a line longer than `width` is broken (the index of the token that starts the
    next line), or None where it cannot be; `ends`: where each token ends in the line,
    `depths`: before each, the brackets the line has opened and not closed, and the innermost
    open bracket. A line is broken after a `,` or an opening `(` or `[` (one not
    closed at once), or before a `|>` outside brackets; the fewest brackets open first (the
    outermost call's arguments before an inner call's), and of those the last after which
    the line fits, else the first."""
    candidates = []  # (brackets opened on the line and open there, index)
    for i in range(1, len(tokens)):
        before, here, (opened, inner) = str(tokens[i - 1]), str(tokens[i]), depths[i]
        if here == "|>" and not opened:
            candidates.append((0, i))
        elif inner in ("(", "[") and (before == "," or before in "([" and here not in ")]"):
            candidates.append((opened, i))
    if not candidates:
        return None
    fewest = min(depth for depth, _ in candidates)
    cuts = [i for depth, i in candidates if depth == fewest]
    fitting = [i for i in cuts if ends[i - 1] <= width]
    return fitting[-1] if fitting else cuts[0]


def _space(prev, tok, before_prev: list, stack: list[_Open], positions: _Positions) -> bool:
    """Whether a space goes between two tokens of a line."""
    p, t = str(prev), str(tok)
    if p in ("(", "[") or t in (")", "]", ","):
        return False
    if p in _TIGHT or t in _TIGHT or (prev.line, prev.column) in positions.unary:
        return False
    if t == "}":
        return p != "{"
    if t == ":":
        return p == ","  # a slice after another: `x[:, :2]`
    if p == ":":
        return not (stack and stack[-1].char == "[")
    if t == "(":
        if p in (")", "]"):
            return False
        scan_options = len(before_prev) == 3 and str(before_prev[0]) == "scan" and str(before_prev[2]) == "in"
        if not p.isidentifier() or scan_options:
            return True
        return (
            p in _BEFORE_EXPRESSION
            and (prev.end_line, prev.end_column) not in positions.callees
            and not (before_prev and str(before_prev[-1]) == "def")
        )
    if t == "[":
        return not (p in (")", "]") or p.startswith('"') or p.isidentifier() and p not in _BEFORE_EXPRESSION)
    return True


def _align(out: list[tuple[str, str, int | None]]) -> str:
    """Align the `=` of each train block's settings, then the comments of consecutive lines."""
    codes = [code for code, _, _ in out]
    blocks: dict = {}
    for k, (_, _, block) in enumerate(out):
        if block is not None:
            blocks.setdefault(block, []).append(k)
    for rows in blocks.values():
        names = {k: codes[k].split("=", 1)[0].rstrip() for k in rows}
        width = max(len(n) for n in names.values())
        for k, name in names.items():
            codes[k] = name.ljust(width) + " = " + codes[k].split("=", 1)[1].lstrip()
    lines, i = [], 0
    while i < len(out):
        j = i
        while j < len(out) and out[j][1] and codes[j].strip():
            j += 1
        if j > i:
            column = max(len(codes[k]) for k in range(i, j)) + COMMENT_GAP
            lines += [codes[k].ljust(column) + out[k][1] for k in range(i, j)]
            i = j
        else:
            lines.append(codes[i] + out[i][1] if not codes[i].strip() else codes[i])
            i += 1
    return "\n".join(line.rstrip() for line in lines) + "\n" if lines else ""
