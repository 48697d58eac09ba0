"""`dlc lsp`: the language server, over standard input and output (runtime/lsp/, docs/editors.md)."""

from __future__ import annotations

from dlc.compiler.errors import optional_package

HELP = "the language server, over stdin and stdout, for editors (docs/editors.md)"


def arguments(p):
    pass


def run(args):
    optional_package("pygls", "lsp", "dlc lsp")
    optional_package("lsprotocol", "lsp", "dlc lsp")
    from dlc.runtime.lsp.server import serve

    serve()
