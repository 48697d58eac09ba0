"""Every command block of README.md and docs/tutorial.md runs as written, in order, in a
fresh virtual environment made here, from a copy of this checkout (slow: the installs, the
main job and a character model's epoch; run by CI as its own step). Blocks left out, each
for its stated reason: the README's test set-up and test command (CI runs them itself, and
this test is part of that command) and a block marked `<!-- not run by
tests/project/test_readme_commands.py: REASON -->` (downloads). The tutorial's PyTorch, which it
says to install as pytorch.org says for one's machine, is installed here as the pinned CPU
build of the test extra."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(?:<!-- ([^\n]*?) -->\n)?```(\w*)\n(.*?)```", re.S)  # (marker, kind, body)
LEFT_OUT = ("ci: test-setup", "ci: test", "not run by tests/project/test_readme_commands.py")
COPY_IGNORES = shutil.ignore_patterns(
    ".git", ".venv", "runs", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache"
)


def command_blocks(page: Path) -> list:
    """The shell blocks of a page (```sh), but those marked as left out."""
    found = []
    for marker, kind, body in BLOCK.findall(page.read_text(encoding="utf-8")):
        if kind == "sh" and not (marker or "").startswith(LEFT_OUT):
            found.append(body)
    return found


def test_the_pages_have_the_blocks_this_test_runs():
    readme = command_blocks(ROOT / "README.md")
    assert readme[0].startswith("pip install . && dlc train examples/digits_cnn.dl")
    assert not any("pytest" in b or "data fetch" in b for b in readme)
    assert any("dlc eval examples/digits_cnn.dl --weights examples/runs/digits_cnn/best.npz" in b for b in readme)
    assert [b.strip() for b in command_blocks(ROOT / "docs" / "tutorial.md")] == ['pip install ".[onnx]" onnxruntime']


def run(line: str, cwd: Path, env: dict):
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_every_command_block_runs_in_a_fresh_venv(tmp_path):
    checkout = tmp_path / "dlc"
    shutil.copytree(ROOT, checkout, ignore=COPY_IGNORES)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        VIRTUAL_ENV=str(venv),
        DLC_CACHE_DIR=str(tmp_path / "cache"),
        HOME=str(tmp_path / "home"),
    )
    # the README, from the checkout's folder, block after block (the main job, then its use)
    for block in command_blocks(ROOT / "README.md"):
        for line in block.splitlines():
            run(line, checkout, env)
    assert (checkout / "examples" / "runs" / "digits_cnn" / "best.npz").exists()
    assert (checkout / "resnet.html").exists()
    # the tutorial: its install line in the checkout, then its page in an empty folder
    for block in command_blocks(ROOT / "docs" / "tutorial.md"):
        for line in block.splitlines():
            run(line, checkout, env)
    run("pip install -q torch==2.13.0", checkout, env)
    empty = tmp_path / "tutorial"
    empty.mkdir()
    printed = run(
        f"python {checkout / 'tests' / 'helpers' / 'doc_blocks.py'} {checkout / 'docs' / 'tutorial.md'}", empty, env
    )
    assert "'export'" in printed and "'predict'" in printed
    assert (empty / "predictions.csv").read_text().startswith("probs_0,probs_1,probs_2\n")
