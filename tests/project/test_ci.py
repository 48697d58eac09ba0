"""CI runs the README's set-up and test commands as written: .ci/run takes the README's
blocks marked `<!-- ci: NAME -->` (its readme_block function, run here on the README) and
installs nothing of its own but the system packages the README names."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
MARKED = ("quick-start", "test-setup", "test")


def readme_block_in_python(name: str) -> list:
    """The lines of the README's fenced block after `<!-- ci: NAME -->`, read as Markdown."""
    m = re.search(rf"^<!-- ci: {re.escape(name)} -->\n```\w*\n(.*?)^```", README, re.S | re.M)
    assert m, f"README.md has no block marked <!-- ci: {name} -->"
    return m.group(1).splitlines()


def readme_block_by_ci(name: str) -> list:
    """The same block as .ci/run's own readme_block function extracts it."""
    function = re.search(r"^readme_block\(\) \{\n.*?^\}\n", CI, re.S | re.M).group(0)
    done = subprocess.run(
        ["bash", "-c", f'{function}\nreadme_block "$1"', "bash", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_ci_runs_the_readme_s_marked_blocks_as_the_readme_has_them():
    for name in MARKED:
        assert readme_block_by_ci(name) == readme_block_in_python(name) != []
        assert f"run_readme_block {name}\n" in CI or f"run_readme_block {name})" in CI, name
    assert readme_block_in_python("test") == ["python -m pytest -q"]
    assert any("pip install -e \".[test]\"" in line for line in readme_block_in_python("test-setup"))


def test_ci_installs_nothing_the_readme_does_not():
    lines = [line.split("#")[0] for line in CI.splitlines()]
    installs = [line.strip() for line in lines if re.search(r"\b(pip|npm|apt-get|apt|uv|conda) +install\b", line)]
    # the only install of its own: the system packages, each of which the README names
    assert installs == ['$sudo apt-get update -q && $sudo apt-get install -y -q "${missing[@]}"'], installs
    system = re.findall(r"missing\+=\(([\w-]+)\)", CI)
    named = re.search(r"`apt-get install ([\w -]+)`", README).group(1).split()
    assert system and sorted(system) == sorted(named), (system, named)


def test_the_readme_says_how_long_the_tests_take_and_how_to_add_a_set_up_line():
    tests = README[README.index("\n## Tests\n") :]
    # a rough duration and the kind of machine, not a dated measurement (those are benchmarks/README.md's)
    assert re.search(r"takes about \d+ minutes in a CI run[\s\S]{0,80}? on\s+a \d-core ", tests), tests[:600]
    assert "as a line of the set-up block" in README
