"""What an install carries: setup.py finds every package of the tree (setuptools takes only
the packages it is given), so that `pip install .` and a strict editable install hold every
module, and every folder of the package's modules or data is a package; a wheel carries the
parse cache's entries setup.py makes (a fresh install's first `dlc check` builds no grammar
tables)."""

import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from helpers.wheel import NOT_PACKAGED, built_wheel

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {*NOT_PACKAGED, ".git"}
INSTALLED = ("compiler", "runtime", "grammar", "tools", "editors")  # the folders of the package's code
NOT_INSTALLED = {"editors/vscode"}  # the VS Code extension: its own package, for its marketplace


def setup_packages() -> list:
    """setup.py's PACKAGES, as setuptools is given them."""
    spec = importlib.util.spec_from_file_location("dlc_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # not as __main__: setup() does not run
    return setup.PACKAGES


def test_every_package_of_the_tree_is_installed():
    found = {"dlc"}
    for init in ROOT.rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts and not SKIPPED & set(parts) and not any(part.startswith(".") for part in parts):  # .venv
            found.add(".".join(("dlc",) + parts))
    packages = setup_packages()
    assert "dlc.compiler.native.kernels.map" in packages and len(packages) == len(set(packages))
    assert set(packages) == found, (
        f"setup.py's PACKAGES differ from the tree's packages: {sorted(set(packages) ^ found)}"
    )


def test_every_folder_of_the_package_is_a_package():
    """A folder without an __init__.py is not found, and its files are not installed."""
    folders = {
        f
        for top in INSTALLED
        for f in [ROOT / top, *(ROOT / top).rglob("*")]
        if f.is_dir()
        and f.name != "__pycache__"
        and not any(f.relative_to(ROOT).as_posix().startswith(n) for n in NOT_INSTALLED)
    }
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders without an __init__.py, which an install leaves out: {missing}"


def test_every_data_file_of_a_package_is_in_its_package_data():
    """A file beside a package's modules (a grammar, a stdlib file, the C run-time of a built
    library) is installed only if a package-data pattern takes it."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for package in set(setup_packages()) - {"dlc"}:  # the root's files are the project's
        folder = ROOT.joinpath(*package.split(".")[1:])
        for f in folder.iterdir():
            if (
                f.is_file()
                and f.suffix not in (".py", ".pyc")
                and not f.name.startswith(".")
                and not any(f.match(p) for p in patterns.get(package, []))
            ):
                missing.append(str(f.relative_to(ROOT)))
    assert not missing, f"no package-data pattern takes: {', '.join(missing)}"


def test_a_wheel_carries_the_parse_cache_and_a_check_from_it_builds_none(tmp_path):
    """setup.py's build step puts the grammar's and the library's entries in the wheel, by
    the keys the installed code asks for, in a second build in the same tree too: `dlc check`
    run from the unpacked wheel with an empty cache reads them, and writes no entry of its own."""
    with zipfile.ZipFile(built_wheel()) as z:  # the second build of one tree (helpers/wheel.py)
        names = z.namelist()
        z.extractall(tmp_path / "installed")
    shipped = sorted(
        n.split("/")[-1].split("-")[0] for n in names if n.startswith("dlc/grammar/") and n.endswith(".json")
    )
    assert shipped == ["grammar", "syntax"] and "dlc/setup.py" not in names
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "installed"), DLC_CACHE_DIR=str(cache))
    check = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "check", str(ROOT / "examples" / "digits_cnn.dl")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert not list(cache.glob("*.json")), "the installed check built what the wheel ships"
