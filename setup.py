"""What pyproject.toml cannot say: the package list, found by setuptools under the
repository's root, which is the package `dlc` (its subpackages are named dlc.<folder>); and
a build step: the wheel carries the parse cache's entries of its grammar and standard library
(compiler/frontend/parse_cache.py), made here once, so that a fresh install's first
`dlc check` reads them instead of building them."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Every folder with an __init__.py under the root, but those of the project around the package
# (tests/helpers/ is the tests'), a folder of data files too (compiler/stdlib/): setuptools
# installs only the packages it is given, in a wheel and a strict editable install alike.
PACKAGES = ["dlc", *(f"dlc.{p}" for p in find_packages(Path(__file__).parent, exclude=("tests", "tests.*")))]

# what a cold process makes: the grammar's tables (syntax._parser) and the library's trees
MAKE_ENTRIES = "from dlc.compiler.frontend import loader, syntax; syntax._parser(); loader.stdlib_env()"


class BuildPyWithParseCache(build_py):
    """build_py, then the built package parses its grammar and standard library once in a
    fresh cache directory, and the two entries that makes go into its grammar folder (where
    parse_cache.cached looks first). The build fails if they are not made."""

    def find_package_modules(self, package, package_dir):
        """The package's modules, not this file (the repository's root is the package `dlc`)."""
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("dlc", "setup")]

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the source tree: no built package to add to
            return
        grammar = Path(self.build_lib, "dlc", "grammar")
        for stale in [*grammar.glob("grammar-*.json"), *grammar.glob("syntax-*.json")]:
            stale.unlink()  # an earlier build's (pip reuses build/): read first, they would leave nothing to make
        with tempfile.TemporaryDirectory() as cache:
            path = os.pathsep.join(filter(None, [self.build_lib, os.environ.get("PYTHONPATH")]))  # pip's build env too
            env = dict(os.environ, PYTHONPATH=path, DLC_CACHE_DIR=cache, PYTHONDONTWRITEBYTECODE="1")
            subprocess.run([sys.executable, "-c", MAKE_ENTRIES], env=env, check=True)
            made = sorted(Path(cache).glob("*.json"))
            if [p.name.split("-")[0] for p in made] != ["grammar", "syntax"]:
                raise RuntimeError(
                    f"parsing the grammar and the standard library made {[p.name for p in made]}, "
                    f"not one grammar and one syntax entry"
                )
            for entry in made:
                shutil.copyfile(entry, grammar / entry.name)


if __name__ == "__main__":  # as setuptools runs it; tests/project/test_packaging.py reads PACKAGES
    setup(packages=PACKAGES, cmdclass={"build_py": BuildPyWithParseCache})
