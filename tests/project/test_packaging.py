"""What an install carries: pyproject.toml lists every package of the tree (setuptools takes
only those it names), so that `pip install .` and a strict editable install hold every module;
a wheel carries the parse cache's entries setup.py makes (a fresh install's first `dlc check`
builds no grammar tables)."""
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
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


def test_a_wheel_carries_the_parse_cache_and_a_check_from_it_builds_none(tmp_path):
    """setup.py's build step puts the grammar's and the library's entries in the wheel, by
    the keys the installed code asks for, in a second build in the same tree too: `dlc check`
    run from the unpacked wheel with an empty cache reads them, and writes no entry of its own."""
    source = tmp_path / "source"        # a copy: the build writes build/ and dlc.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIPPED, "__pycache__", ".*"))
    for _ in range(2):      # the second build reuses the first's build/ folder, as a second `pip install .` does
        shutil.rmtree(tmp_path / "wheel", ignore_errors=True)
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                                str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("dlc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "installed")
    shipped = sorted(n.split("/")[-1].split("-")[0] for n in names if n.startswith("dlc/grammar/") and n.endswith(".json"))
    assert shipped == ["grammar", "syntax"] and "dlc/setup.py" not in names
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "installed"), DLC_CACHE_DIR=str(cache))
    check = subprocess.run([sys.executable, "-m", "dlc.runtime.cli", "check", str(ROOT / "examples" / "digits_cnn.dl")],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert not list(cache.glob("*.json")), "the installed check built what the wheel ships"
