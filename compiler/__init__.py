"""The dlc compiler: .dl source -> graph IR -> gradient graph.

The primitive records are registered by compiler/ir/primitives.py; a module that needs the
complete registry imports it from there (graph.py holds the empty registry and the
record class, and imports none of the modules that fill it)."""
