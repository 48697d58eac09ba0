"""The standard library of the language, in .dl files (docs/language.md): package data that
the loader reads by path (compiler/frontend/loader.py); no Python."""
