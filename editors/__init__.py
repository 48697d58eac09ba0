"""Support for editors and renderers of .dl files: the Pygments lexer (pygments_lexer.py),
and the VS Code extension with its TextMate grammar (vscode/). Nothing in dlc's compiler
or runtime imports this package."""
