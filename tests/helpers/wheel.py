"""dlc's wheel, built once per test session (tests/helpers/session_once.py) from a copy of the
checkout's package files, as `pip wheel` builds it: twice in the same tree, as a second
`pip install .` reuses the first's build/ folder, so the wheel is the second build's."""

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.session_once import session_folder

ROOT = Path(__file__).resolve().parents[2]
# the checkout's folders a wheel does not carry (the package's are setup.py's PACKAGES)
NOT_PACKAGED = ("tests", "build", "benchmarks", "examples", "docs", "node_modules")


def _build(folder: Path) -> None:
    source = folder / "source"  # a copy: the build writes build/ and dlc.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_PACKAGED, "__pycache__", ".*"))
    for _ in range(2):
        shutil.rmtree(folder / "wheel", ignore_errors=True)
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(folder / "wheel"),
                str(source),
            ],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise AssertionError(f"pip wheel failed:\n{built.stderr}")


def built_wheel() -> Path:
    """The path of the session's dlc wheel (dlc-*.whl)."""
    [wheel] = (session_folder("wheel", _build) / "wheel").glob("dlc-*.whl")
    return wheel
