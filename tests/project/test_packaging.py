"""What an install carries: pyproject.toml lists every package of the tree (setuptools takes
only those it names), so that `pip install .` and a strict editable install hold every module."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {"tests", "build", "benchmarks", "examples", "docs", ".git", "node_modules"}


def test_every_package_of_the_tree_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"dlc"}
    for init in ROOT.rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts and not SKIPPED & set(parts) and not any(part.startswith(".") for part in parts):   # .venv
            found.add(".".join(("dlc",) + parts))
    assert not found - listed, f"pyproject.toml does not list: {', '.join(sorted(found - listed))}"


def test_every_data_file_of_a_package_is_in_its_package_data():
    """A file beside a package's modules (a grammar, a stdlib file, the C run-time of a built
    library) is installed only if a package-data pattern takes it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]
    missing = []
    for package in set(setuptools["packages"]) - {"dlc"}:    # the root's files are the project's
        folder = ROOT.joinpath(*package.split(".")[1:])
        for f in folder.iterdir():
            if f.is_file() and f.suffix not in (".py", ".pyc") and not f.name.startswith(".") \
                    and not any(f.match(p) for p in patterns.get(package, [])):
                missing.append(str(f.relative_to(ROOT)))
    assert not missing, f"no package-data pattern takes: {', '.join(missing)}"
