"""Compiled objects cached on disk, keyed by a hash of the LLVM IR and its optimization level
(runtime/engines/tiers.py compiles a module to quick code, then at O3), the target (triple, CPU and
features, whether the AMX tiles may be used: `amx.tiles_usable`, the GEMM's vector width,
which DLC_GEMM_VW may choose: `jit.vector_width`) and the dlc and llvmlite versions: the
second compile of the same model loads machine code instead of running LLVM.

An entry is machine code that will run as the user, so it is verified before LLVM sees it:
a header (magic, format, the key, SHA-256 of the object) must match, and after loading,
every function the module defines must be there. A bad entry (truncated, damaged, written
for another key) is recompiled and replaced, never run. Entries are written to a temporary
file and renamed over the old one, not synced: an entry a crash damaged fails its hash and is
recompiled. A directory other users can write to is refused.

Building the IR takes time too (a quarter of a second for a transformer's step), so the
step and GEMM modules are also found by what they are built from, before they are built
(`compile_built`): a `.step` entry, keyed by the pickled kernel program and a hash of dlc's
compiler source, names the object entry and holds the step's argument slots. It is
verified like an object, and the slots are checked against the pointer table they index.

Processes that miss the same entry at once compile it once: the others wait on a lock
(`_compiling`), then read the entry.

A module is compiled in parts on every core (compiler/native/codegen/parallel_compile.py), and its
entry holds the parts' objects. Kernel modules only declare the GEMM routines and the thread
pool's entry points: before a module is linked, those it declares are loaded (`provide`) and
their addresses given to LLVM as symbols. Each GEMM routine is a module of its own, compiled
the first time a program calls it, once per machine and dlc version (then read from the
cache): a small model waits for the few it calls, not for all of them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import io
import json
import os
import pickle
import re
import secrets
import struct
import sys
import time
from pathlib import Path

import dlc
from dlc.compiler.native.codegen.gemm.blocking import default_config
from dlc.compiler.native.codegen.gemm.buffers import buffer_function, buffers_module
from dlc.compiler.native.codegen.gemm.library import gemm_module, program_configs, routine_configs, routine_names
from dlc.compiler.errors import DlcError, json_document
from dlc.compiler.ir.graph import collector_paused
from dlc.compiler.native.codegen import jit, parallel_compile, threadpool
from dlc.compiler.native.codegen.amx import tiles_usable
from dlc.compiler.frontend.parse_cache import cache_dir, private

stats = {"compiles": 0, "hits": 0, "rejected": 0}
_pool_module = None
_gemm_loaded: dict = {}  # the GEMM routines and pack buffers loaded, by function name

MAGIC = b"dlc-obj\0"
FORMAT = 2  # 2: an object entry holds a module's parts
_HEADER = struct.Struct("<8sI32s32s")  # magic, format, key (hex), SHA-256 of the object


def _key(text: str) -> str:
    cpu, features = jit.host_cpu()
    # what the features do not say: the tile grant, and the GEMM's width, which DLC_GEMM_VW may choose
    tiles = "amx tiles" if tiles_usable() else "no amx tiles"
    width = f"{default_config().vw} lanes"
    h = hashlib.sha256()
    for part in (
        text,
        jit.target_triple(),
        cpu,
        features,
        tiles,
        width,
        dlc.__version__,
        jit.LLVMLITE_VERSION,
        " ".join(jit.LLVM_OPTIONS),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _pack(key: str, obj: bytes) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT, key.encode(), hashlib.sha256(obj).digest()) + obj


def _unpack(key: str, entry: bytes) -> bytes | None:
    """The object of an entry written for `key`, or None when the entry is not one."""
    if len(entry) < _HEADER.size:
        return None
    obj = entry[_HEADER.size :]
    expected = (MAGIC, FORMAT, key.encode(), hashlib.sha256(obj).digest())
    return obj if _HEADER.unpack_from(entry) == expected else None


class Loaded:
    """Machine code in memory (`key`: its cache entry; `size`: the bytes of its objects); keep
    this object alive while its functions are used."""

    def __init__(self, engine, seconds: float, cached: bool, key: str = "", size: int = 0):
        self.engine, self.seconds, self.cached, self.key, self.size = engine, seconds, cached, key, size

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(name)
        return addr


def compile_cached(module, level: int = jit.OPT_LEVEL) -> Loaded:
    """Machine code for an IR-builder module at O`level`, from the cache or from LLVM (then
    stored)."""
    return compile_text(parallel_compile.module_text(module), level)


def compile_text(unit: parallel_compile.ModuleText, level: int = jit.OPT_LEVEL) -> Loaded:
    """compile_cached of a module's ModuleText."""
    provide(unit.declared)
    key = _object_key(unit.text, level)
    t0 = time.perf_counter()
    with _open_dir() as dirfd:
        objects = None if dirfd is None else _objects(_read(dirfd, f"{key}.o", key))
        if objects is not None:
            loaded = _loaded(objects, unit.exported, t0, key)
            if loaded is not None:
                return loaded
        objects = parallel_compile.compile_objects(unit, level)
        stats["compiles"] += 1
        if dirfd is not None:
            _store(dirfd, f"{key}.o", key, _bundle(objects))
    return Loaded(jit.load_objects(objects), time.perf_counter() - t0, False, key, _size(objects))


def _object_key(text: str, level: int) -> str:
    return _key(f"O{level}\n{text}")


def object_cached(ref, level: int) -> bytes:
    """jit.object_code of a parsed module, from the cache or from LLVM (then stored): the
    objects `dlc build` links into a library (its GEMM routines, the same for every library
    of a name and target, and its step modules). Keyed by the module's text and `level`,
    as every entry by the target CPU and the versions; verified as every entry, and not
    loaded here (the linker takes it)."""
    return object_entry(f"object at O{level}\n{ref}", ".lib.o", lambda: jit.object_code(ref, level))


def built_object(parts: tuple, make) -> bytes:
    """The object `make()` returns for a module `dlc build` links, keyed as compile_built's
    entries by what the module is built from (`parts`) and dlc's compiler source, before
    building it: a warm build skips building the GEMM routines' IR (a second)."""
    return object_entry(_built_key(parts), ".lib.o", make)


def object_entry(text: str, suffix: str, make) -> bytes:
    """The object that `make()` returns for what `text` says it is compiled from (its whole
    input: source, compiler, flags), from the cache or made (then stored as KEY`suffix`)."""
    key = _key(text)
    with _open_dir() as dirfd:

        def found():
            obj = None if dirfd is None else _read(dirfd, f"{key}{suffix}", key)
            if obj is not None:
                stats["hits"] += 1
            return obj

        def made():
            obj = make()
            stats["compiles"] += 1
            if dirfd is not None:
                _store(dirfd, f"{key}{suffix}", key, obj)
            return obj

        return _found_or_made(dirfd, key, found, made)


# An object entry holds the objects of a module's parts (compiler/native/codegen/parallel_compile.py):
# their count, each one's length, then the objects.
_COUNT, _LENGTH = struct.Struct("<I"), struct.Struct("<Q")


def _size(objects: list) -> int:
    return sum(map(len, objects))


def _bundle(objects: list) -> bytes:
    return b"".join([_COUNT.pack(len(objects))] + [_LENGTH.pack(len(o)) for o in objects] + objects)


def _objects(payload: bytes | None) -> list | None:
    """The objects of an entry's payload, or None when it does not hold whole objects."""
    if payload is None or len(payload) < _COUNT.size:
        return None
    (count,) = _COUNT.unpack_from(payload)
    start = _COUNT.size + count * _LENGTH.size
    if count == 0 or start > len(payload):
        return None
    lengths = [_LENGTH.unpack_from(payload, _COUNT.size + i * _LENGTH.size)[0] for i in range(count)]
    if start + sum(lengths) != len(payload):
        return None
    ends = [start + sum(lengths[: i + 1]) for i in range(count)]
    return [payload[end - n : end] for end, n in zip(ends, lengths)]


def compile_built(parts: "tuple | BuiltParts", build, level: int = jit.OPT_LEVEL) -> tuple[Loaded, list]:
    """Machine code at O`level` for the module that `build()` makes, and the list it gives with
    it (`build` returns both: a step module, or its ModuleText, and its argument slots), keyed by what the module
    is built from (`parts`, pickled) and by dlc's compiler source, before building it: a
    warm start skips building the IR, a quarter of a second for a transformer's step. The
    entry (a `.step` file) names the object entry of the module and holds the list; parts
    whose pickles differ only miss the cache, and all of a module's inputs are in them."""
    key = _built_key(parts, level)
    t0 = time.perf_counter()
    with _open_dir() as dirfd:

        def made():
            with collector_paused():  # as the tiers' build (runtime/engines/tiers.py)
                module, extra = build()
                unit = module if isinstance(module, parallel_compile.ModuleText) else parallel_compile.taken(module)
                del module
            loaded = compile_text(unit, level)
            _store_step(dirfd, key, loaded.key, unit, extra)
            return loaded, extra

        return _found_or_made(dirfd, key, lambda: _built(dirfd, key, t0), made)


def compile_routine(parts: tuple, build) -> Loaded:
    """compile_built's machine code of one of dlc's own routines (the thread pool, a GEMM
    routine and its buffers), compiled once per machine at `jit.settled_level()`: O3, or quick
    or unoptimized code under DLC_QUICK_CODE=only or unoptimized unless the cache has the O3
    code."""
    level = jit.settled_level()
    found = find_built(parts, jit.OPT_LEVEL) if level != jit.OPT_LEVEL else None
    return (found or compile_built(parts, build, level))[0]


def find_built(parts: "tuple | BuiltParts", level: int) -> tuple[Loaded, list] | None:
    """compile_built's machine code and list when the cache has them; None, building nothing,
    when it does not."""
    with _open_dir() as dirfd:
        return _built(dirfd, _built_key(parts, level), time.perf_counter())


def store_built(
    parts: "tuple | BuiltParts", level: int, unit: parallel_compile.ModuleText, objects: list, extra: list
) -> Loaded:
    """The objects compiled at O`level` elsewhere (runtime/engines/tiers.py) of the module that
    compile_built's `build` makes for `parts` (`unit`: its ModuleText), loaded and stored as
    compile_built stores them."""
    key = _object_key(unit.text, level)
    stats["compiles"] += 1
    loaded = Loaded(jit.load_objects(objects), 0.0, False, key, _size(objects))
    with _open_dir() as dirfd:
        if dirfd is not None:
            _store(dirfd, f"{key}.o", key, _bundle(objects))
            _store_step(dirfd, _built_key(parts, level), key, unit, extra)
    return loaded


def _store_step(dirfd: int | None, key: str, object_key: str, unit: parallel_compile.ModuleText, extra: list):
    """The `.step` entry `key`: it names the object entry and holds the list."""
    if dirfd is not None:
        doc = {"object": object_key, "functions": list(unit.exported), "declared": list(unit.declared), "extra": extra}
        _store(dirfd, f"{key}.step", key, json.dumps(doc).encode())


def _built(dirfd: int | None, key: str, t0: float) -> tuple[Loaded, list] | None:
    """compile_built's entry `key` loaded, with its list; None when there is none or it is bad."""
    entry = None if dirfd is None else _read(dirfd, f"{key}.step", key)
    doc = None if entry is None else _step_entry(entry)
    if doc is None:
        return None
    provide(doc["declared"])
    objects = _objects(_read(dirfd, f"{doc['object']}.o", doc["object"]))
    loaded = None if objects is None else _loaded(objects, doc["functions"], t0, doc["object"])
    return None if loaded is None else (loaded, doc["extra"])


def _found_or_made(dirfd: int | None, key: str, found, made):
    """found() (the entry `key`, or None), else made() under the entry's lock, unless another
    process made it while this one waited for the lock."""
    result = found()
    if result is None:
        with _compiling(dirfd, key):
            result = found()
            if result is None:
                result = made()
    return result


@contextlib.contextmanager
def _compiling(dirfd: int | None, key: str):
    """While this process compiles the entry `key`, others that want it wait, then read it
    (two ranks of a run, or pytest's workers, starting together compile it once). The lock
    only saves work: entries are correct however processes interleave, so a lost lock (its
    file removed while another process waited on it) costs a second compile, nothing more."""
    fd = None
    if dirfd is not None:
        with contextlib.suppress(OSError):
            fd = os.open(f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600, dir_fd=dirfd)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(f"{key}.lock", dir_fd=dirfd)
            os.close(fd)


def _step_entry(entry: bytes) -> dict | None:
    """A `.step` entry's document, or None when it is not one (counted)."""
    try:
        doc = json_document(entry)
        if (
            re.fullmatch("[0-9a-f]{32}", doc["object"])
            and isinstance(doc["functions"], list)
            and isinstance(doc["declared"], list)
            and all(isinstance(name, str) for name in doc["declared"])
        ):
            return doc
    except (ValueError, KeyError, TypeError):
        pass
    stats["rejected"] += 1
    return None


def _loaded(objects: list, functions: list, t0: float, key: str) -> Loaded | None:
    engine = jit.load_objects(objects)
    if all(engine.get_function_address(name) for name in functions):
        stats["hits"] += 1
        return Loaded(engine, time.perf_counter() - t0, True, key, _size(objects))
    stats["rejected"] += 1  # a valid object, of another module
    return None


@functools.cache
def _compiler_source() -> bytes:
    """A hash of dlc's compiler, the code that turns a kernel program into IR."""
    h = hashlib.sha256()
    root = Path(dlc.__file__).resolve().parent / "compiler"
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()


class BuiltParts:
    """What a module is built from (compile_built's `parts`), hashed once: a tiered driver
    (runtime/engines/tiers.py) looks its module up at two levels, and pickling a large step's
    program took a tenth of a second each time."""

    def __init__(self, parts: tuple):
        self.parts = parts

    @functools.cached_property
    def digest(self) -> str:
        h = hashlib.sha256(_compiler_source())
        h.update(_pickled(self.parts))
        return h.hexdigest()


def _built_key(parts: "tuple | BuiltParts", level: int = jit.OPT_LEVEL) -> str:
    built = parts if isinstance(parts, BuiltParts) else BuiltParts(parts)
    return _key(f"built at O{level}\n{built.digest}")


def _pickled(obj) -> bytes:
    """obj pickled without the memo, so that equal programs give equal bytes whether or not
    they share objects (a model built twice in one process shares its spans the second
    time; spans read from the parse cache hold a file name each, a parse's share one:
    mobilenet_v2's warm start missed the cache and built its IR again, 3.7 s). CPython's
    fast pickler refuses some structures nested deeper than 50 levels (its check for cycles,
    by id, raised a KeyError on resnet18's train step), so a list's or a tuple's items are
    pickled one by one, and an object the fast pickler refuses field by field; only what it
    refuses alone, a true cycle, is pickled with the memo."""
    if isinstance(obj, (list, tuple)):
        return _joined(obj, obj)
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(obj)
        return out.getvalue()
    except (ValueError, KeyError):
        pass
    if not hasattr(obj, "__dict__"):
        return pickle.dumps(obj, protocol=5)
    return _joined(obj, (type(obj).__module__, type(obj).__qualname__, *vars(obj).items()))


def _joined(obj, items) -> bytes:
    """`_pickled` of each of `items` (the parts of `obj`), each after its length."""
    pieces = [_pickled(item) for item in items]
    head = type(obj).__name__.encode() + _COUNT.pack(len(pieces))
    return head + b"".join(_LENGTH.pack(len(p)) + p for p in pieces)


@contextlib.contextmanager
def _open_dir():
    """A descriptor of the cache directory (created 0700 if missing), or None when it cannot
    be created or opened (a read-only home: compile every time, still correct). Entries are
    opened relative to it, so the directory checked is the one read."""
    path = cache_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = None
    try:
        if fd is not None:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise DlcError(
                    f"the compile cache {path} belongs to another user, and code in it would run as "
                    f"you: set DLC_CACHE_DIR to a directory of your own"
                )
            if st.st_mode & 0o022:
                # even with the sticky bit: they could write an entry before this process does
                raise DlcError(
                    f"other users can write to the compile cache {path}, and code in it runs as you: "
                    f"run 'chmod go-w {path}', or set DLC_CACHE_DIR to a directory of your own"
                )
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _read(dirfd: int, filename: str, key: str) -> bytes | None:
    """The verified contents of an entry; None when there is none or it is bad (counted)."""
    try:
        fd = os.open(filename, os.O_RDONLY, dir_fd=dirfd)
    except OSError:
        return None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        # a file others can write to could hold anything, with a valid header
        obj = _unpack(key, f.read()) if private(st) else None
    if obj is None:
        stats["rejected"] += 1
    return obj


def _store(dirfd: int, filename: str, key: str, obj: bytes):
    """Replace the entry at once: a full disk leaves the old entry or none, never part of one.
    Not synced to disk: a crash that loses the write, or keeps the name without the data,
    leaves an entry that fails its hash when read (`_unpack`): a compile, never wrong code,
    and no two disk syncs for every entry stored. A failure only costs the next run a
    compile."""
    tmp = f"{key}.{secrets.token_hex(8)}.tmp"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dirfd), "wb") as f:
            f.write(_pack(key, obj))
        os.replace(tmp, filename, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)


def pool_symbols():
    """Load the thread pool (compiler/native/codegen/threadpool.py), compiled once per machine
    and dlc version, and tell LLVM where its entry points are. Its workers are ended and
    joined when Python exits, before the JIT's code is unmapped."""
    global _pool_module
    if _pool_module is None:
        _pool_module = compile_routine(("dlc_pool",), lambda: (threadpool.pool_module(), []))
        for name in (threadpool.RUN, threadpool.STOP):
            jit.add_symbol(name, _pool_module.address(name))
        atexit.register(ctypes.CFUNCTYPE(None)(_pool_module.address(threadpool.STOP)))
    return _pool_module


def provide(declared):
    """Tell LLVM where the functions of dlc's own that a module declares are, before it links
    the module: the thread pool's entry points, and the GEMM routines and their pack buffers,
    each loaded (compiled the first time on the machine) when a module first declares it."""
    declared = set(declared)
    if declared & {threadpool.RUN, threadpool.STOP}:
        pool_symbols()
    configs = routine_configs(program_configs())
    for name in sorted(declared & configs.keys()):
        _load_gemm(name, configs[name])


def gemm_symbols():
    """Load every GEMM routine of the host's paths (compiler/native/codegen/gemm/library.py
    `program_configs`, float32 and bf16): what a cold cache compiles while programs run,
    compiled at once (a benchmark's first step, then, is the model's own)."""
    provide(routine_names(program_configs()))


_announced = False


def _load_gemm(name: str, config):
    """Load the GEMM routine `name` of `config`, its module from the cache or compiled, with
    its pack buffers (`buffers_module`, shared by the config's routines) first, and tell
    LLVM where it is."""
    if name in _gemm_loaded:
        return
    buffers = buffer_function(config)
    if buffers not in _gemm_loaded:
        _gemm_loaded[buffers] = compile_routine(("dlc_gemm buffers", config), lambda: (buffers_module(config), []))
        jit.add_symbol(buffers, _gemm_loaded[buffers].address(buffers))

    def build():
        global _announced
        if not _announced:
            # a compile a program waits for, once per machine: say so, as a download would
            # (one line on an 80-column terminal: the cache's folder is in docs/native.md)
            print(
                f"dlc: compiling GEMM kernels for this CPU ({jit.host_cpu()[0]}), once per machine",
                file=sys.stderr,
                flush=True,
            )
            _announced = True
        with collector_paused():  # as building a step's module (codegen/driver.py)
            return gemm_module((config,), frozenset({name}), shared_buffers=True), []

    _gemm_loaded[name] = compile_routine(("dlc_gemm", config, name), build)
    jit.add_symbol(name, _gemm_loaded[name].address(name))
