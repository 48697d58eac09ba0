"""The test session's own set-up (tests/conftest.py): under pytest-xdist, the tests of an
xdist_group run on one worker, which the scheduler knows by the group's name after an `@`
in each test's node id (a pytest whose node ids pytest-xdist cannot suffix spreads a group,
and its expensive module fixtures, over every worker: pyproject.toml's test extra); the
folders a session makes are gone at its end."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_test_session")


def test_a_grouped_test_is_named_by_its_group_under_xdist(request):
    if hasattr(request.config, "workerinput") and request.config.getvalue("loadgroup"):
        assert request.node.nodeid.endswith("@test_test_session")
    else:  # in one process, or not by groups: no worker to keep it on
        assert "@" not in request.node.nodeid


def test_a_session_leaves_none_of_its_folders_behind(tmp_path):
    """The compile cache, the locks and the shared results of a session with pytest-xdist's
    workers are removed at its end, and where bytecode is not written, none is."""
    tests = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DLC_CACHE_DIR", "DLC_TEST_LOCKS", "DLC_TEST_SHARED")}
    env.update(TMPDIR=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    started = time.time()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            str(tests / "frontend" / "test_growing_model.py"),
        ],
        env=env,
        cwd=tests.parent,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dlc-test-")] == []
    written = [p for p in tests.rglob("*.pyc") if p.stat().st_mtime >= started]
    assert written == [], written
