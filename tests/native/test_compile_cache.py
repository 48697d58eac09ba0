"""The compile cache (runtime/engines/cache.py): a second compile of a model is a hit, and a bad
entry is never run: it is recompiled and replaced.

The runs that load a corrupted entry are subprocesses, so a crash in native code fails the
test instead of the test run.
"""

import ctypes
import errno
import io
import json
import os
import pickle
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.errors import DlcError
from dlc.compiler.native.codegen import amx, jit
from dlc.runtime.engines import cache
from dlc.compiler.frontend.loader import load

XOR = Path(__file__).parents[2] / "examples" / "xor_mlp.dl"
EXAMPLES = Path(__file__).parents[2] / "examples"


def train(cache_dir: Path, out: Path) -> subprocess.CompletedProcess:
    # into an empty cache, the GEMM routines it calls too
    env = dict(os.environ, DLC_CACHE_DIR=str(cache_dir))
    return subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "train", str(XOR), "--epochs", "1", "--out", str(out), "--overwrite"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cache filled by one run of xor_mlp (the thread pool, its GEMM routines and the train step), with
    that run's output and checkpoint directory."""
    root = tmp_path_factory.mktemp("cache")
    first = train(root / "cache", root / "run")
    assert first.returncode == 0, first.stderr
    return root / "cache", first.stdout, root / "run"


def flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


# each gets (this entry's bytes, another entry's bytes) and returns what is written in its place
CORRUPTIONS = {
    "truncated": lambda data, other: data[: len(data) // 2],
    "empty": lambda data, other: b"",
    "random bytes": lambda data, other: random.Random(0).randbytes(len(data)),
    "another module's entry": lambda data, other: other,
    "flipped byte": lambda data, other: flip(data),
}


@pytest.mark.xdist_group("test_compile_cache")  # on one pytest-xdist worker: `trained` once
@pytest.mark.parametrize("shift", [0, 1])
def test_a_bad_entry_is_recompiled_and_replaced(trained, tmp_path, shift):
    """Every entry corrupted at once, each in one of the ways, in two runs whose ways are
    rotated, so that each way meets an object (.o) and an entry naming one (.step): each run
    recompiles all of them, so two runs, not five."""
    good_dir, output, run = trained
    cache_dir = tmp_path / "cache"
    shutil.copytree(good_dir, cache_dir)
    # the objects of the thread pool, the GEMM routines the step calls, their pack buffers and the step, and
    # the entries naming them (cache.compile_built); the parser's tables and the standard library's trees
    # beside them are tests/frontend/test_parse_cache.py's
    compiled = lambda: {p.name: p.read_bytes() for p in cache_dir.iterdir() if p.suffix != ".json"}
    good = compiled()
    names = sorted(good, key=lambda n: Path(n).suffix)
    objects = len(names) // 2
    assert objects >= 4 and [Path(n).suffix for n in names] == [".o"] * objects + [".step"] * objects
    ways = list(CORRUPTIONS.values())
    for i, (name, other) in enumerate(zip(names, names[1:] + names[:1])):
        # the ways in turn over the .o entries then the .step ones, run 1 three ways on: each way
        # meets both kinds of entry in one run or the other
        (cache_dir / name).write_bytes(ways[(i + 3 * shift) % len(ways)](good[name], good[other]))
    again = train(cache_dir, run)
    assert again.returncode == 0, again.stderr
    assert again.stdout == output
    now = compiled()
    assert now == good, "the bad entries were not replaced by the same objects (or a temporary file was left)"


def constant_function(name: str, value: int) -> ir.Module:
    module = ir.Module(name)
    fn = ir.Function(module, ir.FunctionType(ir.IntType(32), []), name)
    ir.IRBuilder(fn.append_basic_block()).ret(ir.Constant(ir.IntType(32), value))
    return module


def call(loaded, name: str) -> int:
    return ctypes.CFUNCTYPE(ctypes.c_int32)(loaded.address(name))()


def test_an_entry_without_the_modules_functions_is_recompiled(tmp_path, monkeypatch):
    # b's object under a's key with a valid header: only the check of a's symbols can tell
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    a, b = constant_function("dlc_test_a", 7), constant_function("dlc_test_b", 8)
    cache.compile_cached(b)
    [entry] = tmp_path.glob("*.o")
    key = cache._object_key(str(a), jit.OPT_LEVEL)
    (tmp_path / f"{key}.o").write_bytes(cache._pack(key, cache._unpack(entry.stem, entry.read_bytes())))
    before = dict(cache.stats)
    loaded = cache.compile_cached(a)
    assert not loaded.cached and cache.stats["compiles"] == before["compiles"] + 1
    assert cache.stats["rejected"] == before["rejected"] + 1
    assert call(loaded, "dlc_test_a") == 7
    assert cache.compile_cached(a).cached, "the bad entry was not replaced"


def test_an_entry_others_can_write_to_is_recompiled(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    module = constant_function("dlc_test_g", 3)
    cache.compile_cached(module)
    [entry] = tmp_path.glob("*.o")
    entry.chmod(0o666)  # its bytes are intact, but anyone could have written them
    loaded = cache.compile_cached(module)
    assert not loaded.cached and call(loaded, "dlc_test_g") == 3
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_cache_dir_others_can_write_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    r = train(shared, tmp_path / "run")
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: other users can write to the compile cache {shared}, and code in it runs as you: "
        f"run 'chmod go-w {shared}', or set DLC_CACHE_DIR to a directory of your own"
    ), r.stderr
    assert list(shared.iterdir()) == []


def test_a_cache_dir_of_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid + 1)
    with pytest.raises(DlcError, match=f"the compile cache {tmp_path} belongs to another user"):
        cache.compile_cached(constant_function("dlc_test_c", 1))


def test_a_missing_cache_dir_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "a" / "b"))
    cache.compile_cached(constant_function("dlc_test_d", 1))
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert cache.compile_cached(constant_function("dlc_test_d", 1)).cached


def test_an_unusable_cache_dir_compiles_every_time(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "file" / "cache"))  # cannot be created
    compiles = cache.stats["compiles"]
    for _ in range(2):
        assert call(cache.compile_cached(constant_function("dlc_test_e", 5)), "dlc_test_e") == 5
    assert cache.stats["compiles"] == compiles + 2


def test_an_entry_is_renamed_into_place_whole(tmp_path, monkeypatch):
    """Written to a temporary file and renamed over its name once complete: a reader sees the
    old entry or the new one (a crash that loses the unsynced data leaves one that fails its
    hash: test_a_bad_entry_is_recompiled_and_replaced)."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    renamed = []
    replace = os.replace

    def spy(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        renamed.append((src, dst, os.stat(src, dir_fd=src_dir_fd).st_size))
        replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "replace", spy)
    cache.compile_cached(constant_function("dlc_test_f", 1))
    ((src, dst, size),) = renamed
    assert src.endswith(".tmp") and dst.endswith(".o") and size == (tmp_path / dst).stat().st_size
    assert [p.suffix for p in tmp_path.iterdir()] == [".o"]


def test_a_warm_start_loads_the_module_without_building_it(tmp_path, monkeypatch):
    """compile_built keys a module by what it is built from: the second time, `build` is not
    called; other parts, or a step entry whose object is gone, build again."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    built = []

    def build(value):
        def make():
            built.append(value)
            return constant_function(f"dlc_test_built{value}", value), [value, 1]

        return make

    loaded, extra = cache.compile_built(("parts", 1), build(1))
    assert call(loaded, "dlc_test_built1") == 1 and extra == [1, 1] and built == [1]
    loaded, extra = cache.compile_built(("parts", 1), build(1))
    assert loaded.cached and call(loaded, "dlc_test_built1") == 1 and extra == [1, 1] and built == [1]
    cache.compile_built(("parts", 2), build(2))
    assert built == [1, 2]
    for obj in tmp_path.glob("*.o"):
        obj.unlink()
    loaded, extra = cache.compile_built(("parts", 1), build(1))
    assert call(loaded, "dlc_test_built1") == 1 and built == [1, 2, 1]


def test_a_step_entry_with_argument_slots_outside_the_table_is_refused(tmp_path, monkeypatch):
    """The argument slots index the engine's pointer table: a step entry (written by this user,
    with a valid header: only a bug or a hand could make it) whose slots lie outside the table
    is an error, never a read outside it."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.engines.native import NativeEngine

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    src = "model m {\n input x: f32[B, 3]\n y = dense(x, 2)\n output y = y\n}\n"
    model = load_text(src, "m.dl").build(None, training=False)
    params = {p.name: np.zeros([int(d) for d in p.type.shape], np.float32) for p in model.params}
    NativeEngine(model, model).predict(params, {"x": np.ones((2, 3), np.float32)})
    [step] = [p for p in tmp_path.glob("*.step") if json.loads(cache._unpack(p.stem, p.read_bytes()))["extra"]]
    doc = json.loads(cache._unpack(step.stem, step.read_bytes()))
    doc["extra"] = [10**6] * len(doc["extra"])
    step.write_bytes(cache._pack(step.stem, json.dumps(doc).encode()))
    with pytest.raises(DlcError, match="holds a bad entry for a forward pass: delete the directory"):
        NativeEngine(model, model).predict(params, {"x": np.ones((2, 3), np.float32)})


def test_a_step_entry_nested_deeper_than_json_reads_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    built = []

    def build():
        built.append(1)
        return constant_function("dlc_test_deep", 5), []

    cache.compile_built(("deep", 1), build)
    [step] = tmp_path.glob("*.step")
    step.write_bytes(cache._pack(step.stem, b"[" * 10**5 + b"]" * 10**5))
    before = dict(cache.stats)
    loaded, _ = cache.compile_built(("deep", 1), build)
    assert cache.stats["rejected"] > before["rejected"] and len(built) == 2
    assert call(loaded, "dlc_test_deep") == 5


def test_a_second_compile_hits_the_cache(tmp_path, monkeypatch):
    from dlc.runtime.engines import cache
    from dlc.runtime.engines.native import Executable
    from dlc.compiler.passes.autodiff import train_step

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    graph = train_step(load(str(EXAMPLES / "xor_mlp.dl")).build().graph)
    first = Executable(graph)
    assert not first.compiled.cached
    before = dict(cache.stats)
    second = Executable(train_step(load(str(EXAMPLES / "xor_mlp.dl")).build().graph))
    assert cache.stats["compiles"] == before["compiles"], "LLVM ran again"
    assert second.compiled.cached and list(tmp_path.glob("*.o"))


def test_a_program_built_again_in_one_process_is_not_built_again(tmp_path, monkeypatch):
    """The step entry's key does not depend on which objects the program shares: a model
    built a second time (its spans then shared) finds the entry without building its IR."""
    from dlc.runtime.engines import native

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    path = tmp_path / "clip.dl"  # an imported ReLU6: its constants' spans are shared the second time
    path.write_text(
        "model m {\n    input x: f32[N, 3, 8, 8]\n    a = conv2d(x, 4, 3, padding = 1)\n"
        "    output y = minimum(maximum(a, 0.0), 6.0)\n}\n"
    )
    model = lambda: load(str(path)).build(training=False).graph
    native.Executable(model())
    monkeypatch.setattr(native, "build_module", lambda *a, **k: pytest.fail("the module was built again"))
    assert native.Executable(model()).compiled.cached


def test_entries_are_keyed_by_the_architecture(compile_for_aarch64):
    """The same IR compiled for another architecture (`dlc build --target aarch64`) is another
    entry: an object is keyed by the triple, the CPU and its features."""
    text = str(constant_function("dlc_test_k", 1))
    here = cache._key(text)
    compile_for_aarch64("aarch64")
    arm = cache._key(text)
    compile_for_aarch64("aarch64-dotprod")
    assert cache._key(text) not in (here, arm)


def test_entries_are_keyed_by_whether_linux_granted_the_amx_tiles(tmp_path, monkeypatch):
    """Whether Linux granted the AMX tile state is not in the target's features, and a module
    built where it was may hold tile instructions (SIGILL where it was refused): a process
    refused the grant builds its own module, never loads the other's; each finds its own
    entry the next time. The host's AMX-TILE is faked, so that any host tests it."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    host_has = jit.host_has
    monkeypatch.setattr(jit, "host_has", lambda feature: feature == "amx-tile" or host_has(feature))
    built = []

    def build():
        tiles = amx.tiles_usable()
        built.append(tiles)
        return constant_function(f"dlc_test_tiles{int(tiles)}", int(tiles)), [int(tiles)]

    keys = {}
    try:
        for error in (0, errno.EINVAL, 0, errno.EINVAL):  # granted, refused, and each again
            monkeypatch.setattr(amx, "request_tiles", lambda: error)
            amx.tiles_granted.cache_clear()
            loaded, extra = cache.compile_built(("parts",), build)
            assert extra == [int(not error)] and call(loaded, f"dlc_test_tiles{extra[0]}") == extra[0]
            assert keys.setdefault(error, loaded.key) == loaded.key
    finally:
        amx.tiles_granted.cache_clear()
    assert built == [True, False] and keys[0] != keys[errno.EINVAL]


def test_entries_are_keyed_by_the_vector_width(monkeypatch):
    """DLC_GEMM_VW=8 compiles the kernels with AVX2's width on an AVX-512 host (their IR is
    another), which the target's features do not say: it keys other entries."""
    if not jit.host_has("avx512f"):
        pytest.skip("the host has no AVX-512: its width is 8 either way")
    text = str(constant_function("dlc_test_w", 1))
    wide = cache._key(text)
    monkeypatch.setenv("DLC_GEMM_VW", "8")
    assert cache._key(text) != wide


ORC_PREDICTION = """
import sys
import numpy as np
from dlc.compiler.native.codegen import jit
jit.LOADER = "orc"
from dlc.runtime.api import DlcModel
model = DlcModel(sys.argv[1], backend="native").load_weights(sys.argv[2])
x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
sys.stdout.write(model.predict({"x": x})["probs"].tobytes().hex())
"""


def test_orcs_lljit_runs_what_mcjit_runs(tmp_path):
    """ORC's LLJIT, the loader on AArch64 (where MCJIT's relocations break, numba#8567), loads
    the compile cache's objects (the GEMM routines, a model's step) as MCJIT does: a prediction
    through it is MCJIT's, bit for bit."""
    from dlc.runtime.api import DlcModel
    from dlc.runtime.interop import checkpoint
    from dlc.runtime.training.trainer import initial_parameters

    dl = EXAMPLES / "digits_cnn.dl"
    checkpoint.save(tmp_path / "w.npz", initial_parameters(load(str(dl)).build(None, training=False), 3), {}, {})
    r = subprocess.run(
        [sys.executable, "-c", ORC_PREDICTION, str(dl), str(tmp_path / "w.npz")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    want = DlcModel(str(dl), backend="native").load_weights(tmp_path / "w.npz").predict({"x": x})["probs"]
    assert bytes.fromhex(r.stdout) == want.tobytes()


TOGETHER = r"""
import sys, time
from llvmlite import ir
from dlc.runtime.engines import cache
built = []
def build():
    built.append(1)
    time.sleep(1.0)         # long enough for the other process to miss the entry too
    module = ir.Module("dlc_test_together")
    fn = ir.Function(module, ir.FunctionType(ir.IntType(32), []), "dlc_test_together")
    ir.IRBuilder(fn.append_basic_block()).ret(ir.Constant(ir.IntType(32), 42))
    return module, []
sys.stdin.readline()        # both start compiling at once
loaded, _ = cache.compile_built(("dlc_test_together",), build)
import ctypes
assert ctypes.CFUNCTYPE(ctypes.c_int32)(loaded.address("dlc_test_together"))() == 42
print(len(built), cache.stats["compiles"])
"""


def test_processes_missing_the_same_entry_at_once_compile_it_once(tmp_path):
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TOGETHER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    # one built the module and compiled it; the other waited and loaded its entries
    assert sorted(out.split() for out, _ in outs) == [["0", "0"], ["1", "1"]]
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.tmp"))


def test_a_deep_programs_key_does_not_depend_on_what_it_shares():
    """resnet.dl's train step is nested deeper than CPython's fast pickler takes whole (its
    check for cycles fails): its key's bytes are still those of a copy that shares nothing.
    A run's spans share a file name when parsed, not when read from the parse cache: keyed
    by what they share, the benchmarks' ResNet-18 missed its step entry in every next run."""
    from dlc.compiler.native.lower import lower
    from dlc.compiler.passes.autodiff import train_step
    from dlc.compiler.passes.optimize import optimize

    program = lower(optimize(train_step(load(str(EXAMPLES / "resnet.dl")).build(None, training=True).graph)))
    with pytest.raises((KeyError, ValueError)):  # what the key is built around
        pickler = pickle.Pickler(io.BytesIO(), protocol=5)
        pickler.fast = True
        pickler.dump(program)
    unshared = io.BytesIO()
    copier = pickle._Pickler(unshared, protocol=5)  # Python's pickler: no memo, no check for cycles
    copier.fast = True
    copier.dump(program)
    assert cache._pickled(pickle.loads(unshared.getvalue())) == cache._pickled(program)
