"""The tests' own layout (docs/architecture.md, "Where the tests live"): every test file sits in
an area folder, none flat in tests/, and the docs' row of its folder names it; no test file
imports another test module, not even in a script it runs in a subprocess (what several files
share is a module of tests/helpers/); and every test file that the docs, the README, .ci/run
and the code name by path exists."""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TEST_FILES = sorted(TESTS.rglob("test_*.py"))
AREAS = ["frontend", "ir", "native", "training", "data", "cli", "deploy", "editors", "onnx", "huggingface", "project"]
IMPORT = re.compile(r"\b(?:from|import)\s+(test_\w+|conftest)\b")
NAMED = re.compile(r"(?<![\w/.-])tests/[\w/]+\.(?:py|c)\b")


def test_every_test_file_sits_in_an_area_folder_that_the_docs_name_it_in():
    assert TEST_FILES
    outside = [str(p.relative_to(TESTS)) for p in TEST_FILES if p.parent.parent != TESTS or p.parent.name not in AREAS]
    assert not outside, f"test files outside the area folders {AREAS}: {outside}"
    # and architecture.md's row of its folder names it
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = architecture.split("## Where the tests live")[1].split("\n## ")[0]
    rows = {
        area: next((line for line in table.splitlines() if line.startswith(f"| `tests/{area}/` |")), "")
        for area in AREAS
    }
    unnamed = [str(p.relative_to(TESTS)) for p in TEST_FILES if f"`{p.name}`" not in rows[p.parent.name]]
    assert not unnamed, f"docs/architecture.md's table of the tests does not name {unnamed}"


def test_no_test_file_imports_another_test_module():
    found = []
    for path in TEST_FILES + sorted((TESTS / "helpers").glob("*.py")) + [TESTS / "conftest.py"]:
        for name in IMPORT.findall(path.read_text(encoding="utf-8")):
            if name != path.stem:  # a test's subprocess may import the test's own module
                found.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not found, found


def named_paths(text: str) -> set:
    return set(NAMED.findall(text))


def test_every_test_path_named_exists():
    sources = [ROOT / "README.md", ROOT / ".ci" / "run", ROOT / "pyproject.toml", *(ROOT / "docs").glob("*.md")]
    for folder in ("compiler", "runtime", "tools", "benchmarks", "editors", "examples", "tests"):
        sources += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.suffix in (".py", ".md", ".json", ".ts") and "node_modules" not in p.parts
        ]
    missing = sorted(
        f"{p.relative_to(ROOT)} names {name}"
        for p in sources
        for name in named_paths(p.read_text(encoding="utf-8"))
        if not (ROOT / name).exists()
    )
    assert not missing, missing
