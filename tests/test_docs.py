"""The docs agree with the code: docs/architecture.md's module map names every module of
the package, by its path or, in a row of its folder, by its file name."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "runtime", "grammar", "tools")


def named_modules() -> set:
    """The module paths the map's rows name: `a/b/c.py`; `c.py` after `a/b/x.py` in the same
    cell; and `c.py` in the role of a folder's row (`a/b/`)."""
    named = set()
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (`[^|]*`[^|]*) \| (.*) \|$", line)
        if not m:
            continue
        folder = None
        for name in re.findall(r"`([^`]+)`", m.group(1)):
            if name.endswith("/"):
                folder = name.rstrip("/")
                named |= {f"{folder}/{n}" for n in re.findall(r"`([a-z_]+\.py)`", m.group(2))}
            elif "/" in name:
                folder = name.rsplit("/", 1)[0]
                named.add(name)
            elif folder:
                named.add(f"{folder}/{name}")
    return named


def test_the_module_map_names_every_module():
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if p.name != "__init__.py"}
    missing = sorted(modules - named_modules())
    assert not missing, f"docs/architecture.md's module map does not name: {', '.join(missing)}"
