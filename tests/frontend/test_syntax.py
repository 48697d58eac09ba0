"""The AST the parser builds (compiler/frontend/syntax.py from grammar/dl.lark): every form of
the grammar becomes its node, each node's span is exactly the text it was made from, and the
errors of the transformer (a reserved word defined, an integer too large) are at their token."""

from __future__ import annotations

import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import syntax as A

EVERY_FORM = '''\
import "lib.dl"
const c = (1,)
const e = [1, 2, ]
def g() = 1
def h(a: int, b: f32[B, ...] = 2, d: fn,) {
    if a { return a, b } else if b { yield 1 } else { return () }
}
model m {
    input x: f32[B, ..., 3]
    target t: i32[]
    param W: f32[3, 4] = glorot
    state s: f32[3]
    update s = s * 0.9
    y, y2 = x[::, 1:, :2, ..., -1, 1:2:3]
    z = f() |> g(1, a = 2,) |> h
    w = if a then b else not c and d or e == f
    v = -a ^ -b ^ c + d - e * f / g // h @ i % j
    q = a.b(1)[2].d
    r = scan k in T (checkpoint = 4) carry hh = 0, cc = none {
        hh = hh + x[k]
        yield hh
    }
    p = 2GB + 1.5e-3 + 007 + true + false + "s"
    repeat i in 0..n { def inner(u) = u }
    output o
    output o2 = 1
    loss mean(x)
    metric acc = 1
}
train m {
    epochs = 3
}
'''
MODULE = A.parse(EVERY_FORM, "every.dl")
LINES = EVERY_FORM.splitlines()


def text_of(span) -> str:
    if span.line == span.end_line:
        return LINES[span.line - 1][span.col - 1 : span.end_col - 1]
    return "\n".join(
        [
            LINES[span.line - 1][span.col - 1 :],
            *LINES[span.line : span.end_line - 1],
            LINES[span.end_line - 1][: span.end_col - 1],
        ]
    )


EXPRESSIONS = (
    A.Number,
    A.String,
    A.Bool,
    A.NoneValue,
    A.Name,
    A.Tuple,
    A.Unary,
    A.Binary,
    A.Ternary,
    A.CallExpr,
    A.Pipe,
    A.IndexExpr,
    A.Attribute,
    A.Scan,
)


def test_every_node_class_is_made():
    made = {type(n) for n in A.walk(MODULE)}
    classes = {
        c for c in vars(A).values() if isinstance(c, type) and issubclass(c, A.SyntaxNode) and c is not A.SyntaxNode
    }
    assert classes - made == set()


def test_an_expressions_span_is_its_text_which_parses_to_it():
    nodes = [n for n in A.walk(MODULE) if isinstance(n, EXPRESSIONS)]
    assert len(nodes) > 100
    for n in nodes:
        again = A.parse(text_of(n.span), "again", start="expr")
        assert again == n, (text_of(n.span), n)
        assert (again.span.line, again.span.col) == (1, 1)


def test_a_statements_span_is_its_text_which_parses_to_it():
    model = next(item for item in MODULE.items if isinstance(item, A.ModelBlock))
    for s in model.body:
        (again,) = A.parse(f"model m {{\n{text_of(s.span)}\n}}", "again").items[0].body
        assert again == s, text_of(s.span)
    for item in MODULE.items:
        (again,) = A.parse(text_of(item.span), "again").items
        assert again == item, text_of(item.span)


@pytest.mark.parametrize(
    "node_type, nth, text",
    [
        (A.AnyDims, 0, "..."),
        (A.AnyDims, 2, "..."),
        (A.Slice, 0, "::"),
        (A.Slice, 3, "1:2:3"),
        (A.StaticType, 0, "int"),
        (A.StaticType, 1, "fn"),
        (A.TensorTypeExpr, 0, "f32[B, ...]"),
        (A.TensorTypeExpr, 2, "i32[]"),
        (A.ArgDecl, 1, "b: f32[B, ...] = 2"),
        (A.Keyword, 0, "a = 2"),
        (A.Keyword, 1, "checkpoint = 4"),
        (A.Keyword, 3, "cc = none"),
        (A.Keyword, 4, "epochs = 3"),
        (A.Number, 0, "1"),
        (A.Name, 0, "B"),
        (A.Module, 0, EVERY_FORM.rstrip("\n")),
    ],
)
def test_the_span_of_a_part(node_type, nth, text):
    nodes = [n for n in A.walk(MODULE) if type(n) is node_type]
    assert text_of(nodes[nth].span) == text


def test_what_the_transformer_makes():
    defs = {item.name: item for item in MODULE.items if isinstance(item, A.Def)}
    (ret,) = defs["g"].body  # the expression form: one return, at the expression
    assert isinstance(ret, A.Return) and ret.values[0].span == ret.span and text_of(ret.span) == "1"
    (if_,) = defs["h"].body
    assert isinstance(if_.other[0], A.If) and isinstance(if_.other[0].other[0], A.Return)  # else if
    assert [a.name for a in defs["h"].args] == ["a", "b", "d"]
    scan = next(n for n in A.walk(MODULE) if isinstance(n, A.Scan))
    assert (scan.var, scan.length, text_of(scan.length.span)) == ("k", A.Name(None, "T"), "T")
    assert [k.name for k in scan.options] == ["checkpoint"] and [k.name for k in scan.carries] == ["hh", "cc"]
    numbers = [n.value for n in A.walk(MODULE) if isinstance(n, A.Number)]
    assert 2 * 2**30 in numbers and 1.5e-3 in numbers and 7 in numbers
    assert type(numbers[numbers.index(7)]) is int
    assert [n for n in A.walk(MODULE) if isinstance(n, A.Import)][0].path == "lib.dl"
    words = [v for n in A.walk(MODULE) for v in vars(n).values() if isinstance(v, str)]
    assert all(type(v) is str for v in words)  # text, never a parser's token
    assert A.parse("model m { y = scan k in 12 { yield k } }").items[0].body[0].value.length == A.Number(None, 12)


@pytest.mark.parametrize(
    "program, col",
    [
        ("const scan = 1", 7),
        ("def f(a, if) = a", 10),
        ("model m { a, not = (1, 2) }", 14),
        ("model m { y = scan in in 3 { } }", 20),
        ("model m { input f32: f32[B] }", 17),
    ],
)
def test_a_reserved_word_defined_is_an_error_at_it(program, col):
    with pytest.raises(DlcError, match="is a reserved word and cannot be used as a name") as e:
        A.parse(program, "r.dl")
    assert (e.value.span.line, e.value.span.col) == (1, col)


def test_an_integer_too_large_is_an_error_at_it():
    with pytest.raises(DlcError, match="too large") as e:
        A.parse("model m {\n    y = scan k in 99999999999999999999 { yield k }\n}\n", "n.dl")
    s = e.value.span
    assert (s.line, s.col, s.end_line, s.end_col) == (2, 19, 2, 39)
