"""The test session's set-up (pytest hooks; helpers that several test files share are modules of
tests/helpers/, docs/architecture.md "Where the tests live")."""
import os
import shutil
import tempfile

from dlc.tools.real_models import without_torchvision_ops


def pytest_configure(config):
    # compiled native code goes to a cache of this test session, not the user's; removed at its end
    if "DLC_CACHE_DIR" not in os.environ:
        os.environ["DLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlc-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ["DLC_CACHE_DIR"], ignore_errors=True))
    # the torchvision that CI installs may be a CUDA build that does not load: the tests (and
    # transformers, which imports it) take its model definitions without its compiled ops
    without_torchvision_ops()
