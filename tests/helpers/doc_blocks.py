"""Running a page of the docs as written, shared by tests/project/test_docs.py (in the test's own
process) and tests/project/test_readme_commands.py (as a script, `python doc_blocks.py PAGE`, in a
fresh virtual environment with the `dlc` command installed). Needs nothing but the
standard library and dlc."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

FENCE = re.compile(r"([^\n]*)\n\n```(\w*)\n(.*?)```", re.S)  # (the line before, the kind, the body)


def run_page(text: str, name: str, run_dlc: Callable[[list], str]) -> dict:
    """Runs a page's blocks in the current folder, in order: a block after "Save this as
    `FILE`:" is written to FILE, `python` blocks run as one session, each `$ dlc ...` line of
    a `console` block is given to `run_dlc` (argv without `dlc`; it returns what was printed
    and fails on a non-zero exit); a `dl` block that is not saved would go untested, so it
    is an error. Other blocks (`sh` set-up, output) are not run. Returns each command's
    printed output by its name (the last one's)."""
    session, printed = {}, {}
    for before, kind, body in FENCE.findall(text):
        saved = re.search(r"Save this as `([^`]+)`:$", before)
        if saved:
            Path(saved.group(1)).write_text(body)
        elif kind == "python":
            exec(compile(body, name, "exec"), session)
        elif kind == "console":
            for line in body.splitlines():
                argv = shlex.split(line.removeprefix("$ dlc "))
                printed[argv[0]] = run_dlc(argv)
        else:
            assert kind != "dl", f"{name}: a dl block not saved to a file: {body[:60]}"
    return printed


def installed_dlc(argv: list) -> str:
    """Runs the `dlc` command on PATH (an installed dlc), failing with its output."""
    done = subprocess.run(["dlc", *argv], capture_output=True, text=True)
    assert done.returncode == 0, f"dlc {shlex.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


if __name__ == "__main__":
    page = Path(sys.argv[1])
    print(sorted(run_page(page.read_text(encoding="utf-8"), page.name, installed_dlc)))
