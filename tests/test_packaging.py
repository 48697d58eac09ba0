"""What an install carries: pyproject.toml lists every package of the tree (setuptools takes
only those it names), so that `pip install .` and a strict editable install hold every module."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {"tests", "build", "benchmarks", "examples", "docs", ".git", "node_modules"}


def test_every_package_of_the_tree_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"dlc"}
    for init in ROOT.rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts and not SKIPPED & set(parts) and not any(part.startswith(".") for part in parts):   # .venv
            found.add(".".join(("dlc",) + parts))
    assert not found - listed, f"pyproject.toml does not list: {', '.join(sorted(found - listed))}"
