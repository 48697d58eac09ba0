"""A Pygments lexer for .dl files, registered as the `pygments.lexers` entry point `dl`, so
that `pygmentize -l dl` and Markdown and Sphinx renderers color ```dl blocks.

It imports only Pygments (dlc's optional extra `dlc[highlight]`), never dlc's compiler:
Pygments loads every registered lexer's module when it looks one up. Its word lists are
the grammar's (tests/editors/test_highlighting.py holds them to grammar/dl.lark)."""

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

DECLARATIONS = ("model", "train", "def", "const", "import")
STATEMENTS = (
    "input",
    "target",
    "param",
    "state",
    "update",
    "output",
    "loss",
    "metric",
    "return",
    "yield",
    "repeat",
    "if",
    "then",
    "else",
    "in",
    "scan",
    "carry",
)
OPERATOR_WORDS = ("and", "or", "not")
CONSTANTS = ("true", "false", "none")
DTYPES = ("f32", "f64", "i32", "i64", "bool")
NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class DlLexer(RegexLexer):
    name = "dl"
    aliases = ["dl", "dlc"]
    filenames = ["*.dl"]
    mimetypes = ["text/x-dl"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            (rf"(def)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (rf"(model|train)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (words(DECLARATIONS, suffix=r"\b"), Keyword.Declaration),
            (words(DTYPES, suffix=r"(?![A-Za-z0-9_])"), Keyword.Type),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(OPERATOR_WORDS, suffix=r"\b"), Operator.Word),
            (words(STATEMENTS, suffix=r"\b"), Keyword),
            (r"\d+(\.\d+)?[KMGT]i?B(?![A-Za-z0-9_])", Number),  # a size: 2GB
            (r"\d+\.\d+([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (rf"{NAME}(?=\s*\()", Name.Function),
            (NAME, Name),
            (r"\|>|\.\.\.|\.\.|==|!=|<=|>=|//|[-+*/@%^<>=]", Operator),
            (r"[()\[\]{},:.]", Punctuation),
            (r".", Text),
        ],
    }
