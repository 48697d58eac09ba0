"""Names say one thing: a class name is defined by one module of the package, and no module
is imported under a one-letter alias."""

import ast
from collections import defaultdict
from pathlib import Path

import dlc

ROOT = Path(dlc.__file__).resolve().parent
SOURCES = sorted(p for folder in ("compiler", "runtime", "tools") for p in (ROOT / folder).rglob("*.py"))


def test_a_class_name_is_defined_once():
    where = defaultdict(list)
    for path in SOURCES:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, f"class names defined in more than one module: {twice}"


def test_no_one_letter_module_alias():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {a.name} as {a.asname}"
                    for a in node.names
                    if a.asname and len(a.asname) == 1
                ]
    assert not found, "one-letter aliases:\n" + "\n".join(found)
