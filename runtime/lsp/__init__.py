"""`dlc lsp`: the language server (docs/editors.md). A thin layer over the front end: it
loads and builds a document as `dlc check` does (analysis.py), indexes the names it binds
and uses (names.py), words what it knows of a name, a call or a function (describe.py),
and answers the editor's requests over stdio with pygls (server.py)."""
