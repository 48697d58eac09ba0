"""The test session's set-up (pytest hooks; helpers that several test files share are modules of
tests/helpers/, docs/architecture.md "Where the tests live")."""

import compileall
import fcntl
import functools
import gc
import os
import shutil
import tempfile

import pytest

import dlc
from dlc.tools.real_models import without_torchvision_ops


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    # pytest-xdist (the test extra), when installed and not told otherwise (-n N, -p no:xdist):
    # a worker per core, tests distributed one by one but those of an xdist_group on one worker.
    # Before xdist's own hook, which reads these; without xdist the tests run in this process. A
    # worker's hook runs too, with numprocesses None: it would start workers of its own. A worker
    # parses the command line again, which does not say loadgroup: it is told (below). A worker
    # is known by its workerinput, not by the environment, which a pytest it starts inherits
    if hasattr(config, "workerinput"):
        config.option.loadgroup = config.workerinput.get("loadgroup", config.option.loadgroup)
        return
    if getattr(config.option, "numprocesses", 0) is None:
        config.option.numprocesses = "auto"
    if getattr(config.option, "dist", None) == "no":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    # xdist's hook, before its workers start (they inherit the environment): with a worker per
    # core every core is compiling already, and a module's parts compiled in child processes
    # (compiler/native/codegen/parallel_compile.py) would only add their start-up beside them.
    # tests/native/test_parallel_compile.py sets its own
    # The same holds for numpy's BLAS (the reference engine's products) and torch's OpenMP pool:
    # their threads beside the other workers only wait for a core, which made a product of a
    # millisecond take tens of them
    if len(specs) > 1:
        for variable in ("DLC_COMPILE_JOBS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(variable, "1")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    # xdist's hook, before a worker starts: whether it names its tests by their xdist_group
    node.workerinput["loadgroup"] = node.config.getvalue("dist") == "loadgroup"


def pytest_configure(config):
    # compiled native code goes to a cache of this test session, not the user's; removed at its end.
    # pytest-xdist's workers start after this and inherit it: the cache replaces an entry by a
    # rename, so they share it safely (runtime/engines/cache.py)
    if "DLC_CACHE_DIR" not in os.environ:
        os.environ["DLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlc-test-cache-")
        config.add_cleanup(functools.partial(shutil.rmtree, os.environ["DLC_CACHE_DIR"], ignore_errors=True))
    # Where bytecode is not written (PYTHONDONTWRITEBYTECODE, as on some CI hosts), every process
    # reads the .pyc files pip compiled at install, but a strict editable install has none of
    # dlc's own: each `dlc` the tests start (hundreds) compiled dlc's modules from source, 8 % of
    # the session's time. So the session compiles them once, where the import system looks for
    # them (a no-op for a regular install, whose files pip compiled). A bytecode cache of the
    # session's own (PYTHONPYCACHEPREFIX) would hide the installed ones: each worker compiled
    # torch, transformers and onnx from source, which tripled the collection's time. A folder the
    # session may not write to (a system-wide install) is left as it is, silently: it only costs time
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(os.path.dirname(dlc.__file__), quiet=2, workers=0)
    # the locks by which a test marked `alone` waits for the other workers' tests (below), and
    # the results that the session makes once for all workers (tests/helpers/session_once.py)
    for variable, prefix in (("DLC_TEST_LOCKS", "dlc-test-locks-"), ("DLC_TEST_SHARED", "dlc-test-shared-")):
        if variable not in os.environ:
            folder = os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
            config.add_cleanup(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    # unoptimized code only (runtime/engines/tiers.py), as `cargo test` runs unoptimized code:
    # the tests check what code computes, which every level computes to the same bits
    # (tests/native/test_tiers.py, which sets dlc's default, checks it), and most of their time
    # is compiles, about 40 % shorter at LLVM's O0 code generator than quick code's; an O3
    # compile that a test's run starts once it is hot would take a core from the other worker.
    # The speed benchmarks the tests run (their smallest configurations, for what they print
    # and check, not their speed) run it too, unless they say otherwise (benchmarks/rounds.py
    # time_o3_code)
    os.environ.setdefault("DLC_QUICK_CODE", "unoptimized")
    # no history.png (matplotlib's half second at the end of each run of two epochs or more:
    # 5 % of the session); the tests of the plot itself set DLC_PLOT=1
    os.environ.setdefault("DLC_PLOT", "0")
    # the torchvision that CI installs may be a CUDA build that does not load: the tests (and
    # transformers, which imports it) take its model definitions without its compiled ops
    without_torchvision_ops()


def pytest_collection_finish(session):
    # what collection imported (torch, onnx, the test modules) lives as long as the session: out
    # of the collector's generations, so that a full collection need not walk it again
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, a test marked `alone` (one that measures how busy the machine is)
    runs, set-up to teardown, while the other workers wait between their tests; the others
    run side by side. A readers-writer lock of two flocks: every test passes the turnstile,
    which an `alone` test holds while it waits for the room and runs, so it is not starved."""
    if not hasattr(item.config, "workerinput"):
        return (yield)
    folder = os.environ["DLC_TEST_LOCKS"]
    turnstile = os.open(os.path.join(folder, "turnstile"), os.O_RDWR | os.O_CREAT, 0o600)
    room = os.open(os.path.join(folder, "room"), os.O_RDWR | os.O_CREAT, 0o600)
    alone = item.get_closest_marker("alone") is not None
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)
    finally:
        os.close(room)  # closing a descriptor releases its lock
        os.close(turnstile)
