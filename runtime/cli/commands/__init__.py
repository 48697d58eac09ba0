"""The `dlc` commands, a module each: HELP, arguments(p) and run(args) (runtime/cli/__init__.py lists them)."""
