"""Work done once per test session, by whichever pytest-xdist worker asks for it first: a
folder of results (a library built, say) that the tests of every worker then read, so a
file's tests need not all run on one worker to share it. The session's folder is
$DLC_TEST_SHARED (tests/conftest.py); a lock per key makes the others wait for the first."""

import fcntl
import os
import shutil
from pathlib import Path


def session_folder(key: str, make) -> Path:
    """The folder `make(folder)` filled, made on the first call of the session with this key.
    A `make` that fails leaves no folder: the next call tries again (and fails the same way)."""
    root = Path(os.environ["DLC_TEST_SHARED"])
    folder, done = root / key, root / f"{key}.done"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder
