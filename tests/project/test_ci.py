"""CI runs the README's set-up and test commands as written: .ci/run takes the README's
blocks marked `<!-- ci: NAME -->` (its readme_block function, run here on the README) and
installs nothing of its own but the system packages the README names."""

import os
import re
import subprocess
import sys
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


# what dlc is told in each process of compiles_other_code (a sitecustomize module): it runs on an
# Emerald Rapids (a SLOW_PAIRS core) with AVX512_BF16 and its AMX tiles hidden
SLOW_PAIRS_HOST = """
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.gemm import blocking
jit.target_arch = lambda: "x86_64"
jit.host_cpu = lambda: ("emeraldrapids", "+avx2,+fma,+avx512f,+avx512bw,+avx512bf16,-amx-bf16,-amx-tile")
blocking.has_tiles = lambda instruction: False
"""


def test_ci_tests_the_bf16_pairs_where_a_target_changes_only_the_bf16_path(tmp_path):
    """On a SLOW_PAIRS core without AMX tiles, DLC_TARGET=avx512bf16 takes no feature away but
    forces the bf16 pairs, where the host's bf16 GEMMs take the conversion path: .ci/run's
    compiles_other_code, which asks dlc, says it compiles other code (so the bf16 tests run
    again), and the host target the same code."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_PAIRS_HOST, encoding="utf-8")
    function = re.search(r"^compiles_other_code\(\) \{\n.*?^\}\n", CI, re.S | re.M).group(0)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "DLC_GEMM_VW": "",
    }

    def compiles_other_code(target: str) -> bool:
        script = f'{function}\ncompiles_other_code "$1"'
        done = subprocess.run(["bash", "-c", script, "bash", target], env=env, capture_output=True, text=True)
        assert done.returncode in (0, 1) and not done.stderr, done.stderr
        return done.returncode == 0

    assert compiles_other_code("avx512bf16")
    assert not compiles_other_code("host")


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
