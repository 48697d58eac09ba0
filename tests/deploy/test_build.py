"""`dlc build` (docs/deploy.md): libraries of the digits CNN, the char LSTM and the
transformer classifier, called from C programs, from the static library, and from a
Python without dlc through ctypes, against `dlc predict --backend native`'s numbers; the
CPU check of another target; bad input through the C API; threads on instances of their
own; `--train` libraries trained from C and ctypes against `dlc train --backend native`,
their checkpoints in `dlc eval`, and their train API's bad input."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.runtime.api import DlcModel
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import initial_parameters
from helpers.c_api import MODELS, STATUS, Api, inputs, train_steps, trainer_batches
from helpers.session_once import session_folder

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "tests" / "deploy" / "predict_main.c"
CALLS = ROOT / "tests" / "deploy" / "calls_main.c"  # a script of calls on stdin, their answers on stdout
pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


def dlc(*args, check=True, env=None):
    r = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", *map(str, args)], capture_output=True, text=True, env=env
    )
    assert not check or r.returncode == 0, r.stderr
    return r


def bare_python(script: str, *args, timeout: float = 60, cwd=None):
    """`script` run by a Python that cannot import dlc or numpy (an empty environment,
    isolated, no site-packages), given `args`: a caller of a library that has only ctypes."""
    return subprocess.run(
        ["env", "-i", sys.executable, "-I", "-S", "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def build_program(path: Path, folder: Path):
    """A library of the program (`folder`/lib) and a checkpoint of its initial parameters (seed
    7, `folder`/weights.npz)."""
    params = initial_parameters(load(path).build(None, training=False), 7)
    checkpoint.save(folder / "weights.npz", params, {}, {})
    dlc("build", path, "-o", folder / "lib")


@pytest.fixture(scope="session")
def built():
    """model -> (library folder, checkpoint), built once for the test session, whichever
    pytest-xdist worker asks first; the tests only read them."""

    def get(model: str):
        folder = session_folder(
            f"build-{model}", lambda folder: build_program(ROOT / "examples" / f"{model}.dl", folder)
        )
        return folder / "lib", folder / "weights.npz"

    return get


def compile_main(lib: Path, name: str, out: Path, static=False, main: Path = MAIN) -> Path:
    link = [str(lib / f"lib{name}.a"), "-lm", "-lpthread"] if static else [f"-L{lib}", f"-l{name}", f"-Wl,-rpath,{lib}"]
    subprocess.run(
        ["cc", "-O2", f"-I{lib}", "-include", f"{name}.h", f"-DMODEL={name}", str(main), *link, "-o", str(out)],
        check=True,
    )
    return out


def c_predict(program: Path, ckpt, x: np.ndarray, out_rank: int, tmp: Path, threads=2) -> np.ndarray:
    """The C program's prediction, run with an empty environment (no Python, no PYTHONPATH)."""
    x.tofile(tmp / "x.bin")
    r = subprocess.run(
        [
            "env",
            "-i",
            str(program),
            str(ckpt),
            str(tmp / "x.bin"),
            str(tmp / "y.bin"),
            str(out_rank),
            str(threads),
            *map(str, x.shape),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return np.fromfile(tmp / "y.bin", np.float32)


@pytest.mark.parametrize("model", list(MODELS))
def test_c_prediction_is_dlc_predict_bit_for_bit(built, model, tmp_path):
    lib, ckpt = built(model)
    program = compile_main(lib, model, tmp_path / "main")
    engine = DlcModel(str(ROOT / "examples" / f"{model}.dl"), backend="native").load_weights(ckpt)
    for batch in (1, 64):
        x = inputs(model, batch, seed=batch)
        want = next(iter(engine.predict({engine.eval_model.inputs[0].name: x}, batch).values()))
        got = c_predict(program, ckpt, x, want.ndim, tmp_path)
        assert got.tobytes() == np.ascontiguousarray(want, np.float32).tobytes(), (model, batch)


def test_a_library_of_quick_code_says_so(built, tmp_path):
    """The test session builds unoptimized code (DLC_QUICK_CODE=unoptimized), and `dlc build`
    says it; the page's build (below) is at O3, as a user's."""
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "-o", tmp_path / "lib")
    assert r.stdout.splitlines()[2:] == [
        "its code is unoptimized code, not O3 (DLC_QUICK_CODE=unoptimized): it computes the same bits, more slowly"
    ]


def digits_as_read(count: int) -> np.ndarray:
    """The first `count` images of the digits data set as it holds them (pixels 0 to 16)."""
    from dlc.runtime.data.images import digits

    return digits(ROOT, scale=1).columns["x"][:count]


def test_the_pages_build_and_programs_as_written(built, tmp_path):
    """docs/deploy.md's `dlc build` and what it says, its C and C++ programs compiled with
    its own lines (shared, static; c++), and their runs from another folder: the C
    program, written from the page alone (the header's constants, output_shapes, the
    training data's scale), prints what dlc predict gives for the same digits, bit for bit."""
    page = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    said = next(b for _, b in blocks if b.startswith("$ dlc train examples/digits_cnn.dl")).splitlines()
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    shutil.copy(built("digits_cnn")[1], tmp_path / "runs" / "digits" / "best.npz")
    # as a user runs it: O3 code (the session's builds are quick code), so the programs below
    # also show that a library at O3 computes the bits of the JIT's quick code
    r = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", *said[1][2:].split()[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "DLC_QUICK_CODE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert re.sub(r"\(/[^)]*\)", "(CC)", r.stdout).splitlines() == [
        re.sub(r"\(/[^)]*\)", "(CC)", line) for line in said[2:]
    ]
    (tmp_path / "main.c").write_text(next(b for k, b in blocks if k == "c" and "int main(" in b))
    raw = digits_as_read(5)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(built("digits_cnn")[1])
    want = engine.predict({"x": raw * np.float32(1 / 16)}, 5)["probs"]
    lines_in = "".join(" ".join(str(int(v)) for v in image.ravel()) + "\n" for image in raw)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cpp = next(b for k, b in blocks if k == "cpp")
    (tmp_path / "main.cpp").write_text(
        cpp + "#include <cstdio>\nint main(int, char **argv) {\n    Model m(argv[1]);\n"
        "    std::printf(\"%g\\n\", m.predict(std::vector<float>(64 * 3), 3)[0]);\n}\n"
    )
    lines = [b.splitlines() for k, b in blocks if not k and b.startswith("cc -O2 main.c")][0]
    lines += [b.strip() for k, b in blocks if not k and b.startswith("c++ -O2 main.cpp")]
    assert len(lines) == 3
    for line in lines:
        subprocess.run(line.split("#")[0], shell=True, cwd=tmp_path, check=True)
        c = line.startswith("cc")
        run = subprocess.run(
            ["../main", "../runs/digits/best.npz"],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            input=lines_in if c else None,
        )
        assert run.returncode == 0 and run.stdout.strip(), (line, run.stderr)
        if c:
            got = np.array([[float(v) for v in row.split()] for row in run.stdout.splitlines()], np.float32)
            assert got.tobytes() == np.ascontiguousarray(want, np.float32).tobytes(), line


@pytest.mark.parametrize("threads", [2, 8])
def test_one_instance_per_thread(built, tmp_path, threads):
    """Threads, each with its own instance and batch, predicting at once (no lock between
    instances): every result is the bits of the same prediction made alone, every call
    succeeds."""
    lib, ckpt = built("digits_cnn")
    program = tmp_path / "threads"
    subprocess.run(
        [
            "cc",
            "-O2",
            f"-I{lib}",
            "-include",
            "digits_cnn.h",
            "-DMODEL=digits_cnn",
            str(ROOT / "tests" / "deploy" / "threads_main.c"),
            f"-L{lib}",
            "-ldigits_cnn",
            f"-Wl,-rpath,{lib}",
            "-lpthread",
            "-o",
            str(program),
        ],
        check=True,
    )
    r = subprocess.run(["env", "-i", str(program), str(ckpt), str(threads), "50"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# what a library may need at run time: libc, libm, libpthread
RUN_TIME = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libpthread.so.0", "/lib64/ld-linux-x86-64.so.2"}
PREDICT_API = (
    "create",
    "create_from_memory",
    "describe",
    "destroy",
    "error",
    "output_shapes",
    "predict",
    "predict_arrays",
    "set_threads",
)


def needs_and_exports(so: Path) -> tuple:
    """(the libraries `so` needs, the symbols it exports of digits_cnn)."""
    needed = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    exported = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout.split()
    return {line.split()[0] for line in needed.splitlines() if line.strip()}, sorted(
        s for s in exported if s.startswith("digits")
    )


def test_the_library_needs_no_python_nor_llvm(built):
    lib, _ = built("digits_cnn")
    needs, exports = needs_and_exports(lib / "libdigits_cnn.so")
    assert needs <= RUN_TIME, needs
    assert exports == [f"digits_cnn_{f}" for f in PREDICT_API]
    # every global of the static library is named after the model: its GEMM routines and pool
    # too (`dlc_sgemm_*` as `digits_cnn__dlc_sgemm_*`), so two models' libraries link together;
    # of the GEMM routines, those its step calls (its products' weights packed once: `_packed`)
    listed = subprocess.run(
        ["nm", "-g", "--defined-only", str(lib / "libdigits_cnn.a")], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[2] for line in listed.splitlines() if len(line.split()) == 3]
    assert "digits_cnn__dlc_sgemm_nn_packed" in names and "digits_cnn__dlc_pool_run" in names
    assert "digits_cnn__dlc_sgemm_tt" not in names and "digits_cnn__dlc_bgemm_nn" not in names
    assert [n for n in names if not n.startswith("digits_cnn_")] == []


def test_the_library_links_no_openmp_runtime(built):
    """Its threads are dlc's own pool over pthreads: no OpenMP library is needed, by the
    shared library or by a program linking the static one."""
    lib, _ = built("digits_cnn")
    dynamic = subprocess.run(
        ["readelf", "-d", str(lib / "libdigits_cnn.so")], capture_output=True, text=True, check=True
    ).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", dynamic)
    assert needed and not [n for n in needed if "omp" in n], needed
    undefined = subprocess.run(
        ["nm", "-u", str(lib / "libdigits_cnn.a")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pthread_create" in undefined and not [u for u in undefined if "omp" in u.lower()]


UNLOADER = r"""
import ctypes, _ctypes, os, sys
path, ckpt, cycles = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
def tasks():
    return len(os.listdir("/proc/self/task"))
before = tasks()
x = (ctypes.c_float * (512 * 64))(*[(i % 17) / 16 for i in range(512 * 64)])
shape, y, out_shape = (ctypes.c_int64 * 4)(512, 1, 8, 8), (ctypes.c_float * 5120)(), (ctypes.c_int64 * 2)()
most, first = 0, None
for cycle in range(cycles):
    lib = ctypes.CDLL(path)
    for _ in range(5):
        model = ctypes.c_void_p()
        assert lib.digits_cnn_create(ctypes.byref(model), ckpt) == 0
        assert lib.digits_cnn_set_threads(model, 3) == 0
        assert lib.digits_cnn_predict(model, x, shape, y, ctypes.c_int64(5120), out_shape) == 0
        first = first or bytes(y)
        assert bytes(y) == first, cycle
        most = max(most, tasks())
        lib.digits_cnn_destroy(model)
    _ctypes.dlclose(lib._handle)
    del lib
    assert path not in open("/proc/self/maps").read(), cycle
    assert tasks() == before, (cycle, tasks(), before)
print(before, most)
"""


def test_loading_and_unloading_the_library_leaves_no_thread_behind(built):
    """A library loaded, its instances made and dropped, each predicting on 3 threads, and
    unloaded, again and again: the pool's two workers start once per load, are joined at
    each unload (the code they run unmapped after), and the bits are the same every time."""
    lib, ckpt = built("digits_cnn")
    r = bare_python(UNLOADER, lib / "libdigits_cnn.so", ckpt, 15, timeout=300)
    assert r.returncode == 0, r.stderr
    before, most = map(int, r.stdout.split())
    assert most == before + 2


FORKER = r"""
import ctypes, os, sys
lib, ckpt = ctypes.CDLL(sys.argv[1]), sys.argv[2].encode()
def tasks():
    return len(os.listdir("/proc/self/task"))
x = (ctypes.c_float * (512 * 64))(*[(i % 17) / 16 for i in range(512 * 64)])
shape, y, out_shape = (ctypes.c_int64 * 4)(512, 1, 8, 8), (ctypes.c_float * 5120)(), (ctypes.c_int64 * 2)()
model = ctypes.c_void_p()
assert lib.digits_cnn_create(ctypes.byref(model), ckpt) == 0
assert lib.digits_cnn_set_threads(model, 2) == 0
def predict():
    assert lib.digits_cnn_predict(model, x, shape, y, ctypes.c_int64(5120), out_shape) == 0
    return bytes(y)
want = predict()                  # the pool's worker started
pid = os.fork()
if pid == 0:
    before = tasks()
    os._exit(0 if predict() == want and tasks() == before + 1 else 1)
print(os.waitpid(pid, 0)[1], predict() == want, tasks())
"""


def test_a_forked_child_of_a_library_user_starts_workers_of_its_own(built):
    """A process that predicted on 2 threads forks: the child's prediction starts a worker of
    its own and gives the same bits; the parent's pool still works. A hang fails by the timeout."""
    lib, ckpt = built("digits_cnn")
    r = bare_python(FORKER, lib / "libdigits_cnn.so", ckpt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "True", "2"], r.stdout


ADVISED = r"""
import ctypes, sys
lib, ckpt = ctypes.CDLL(sys.argv[1]), sys.argv[2].encode()
model = ctypes.c_void_p()
assert lib.wide_create(ctypes.byref(model), ckpt) == 0
x = (ctypes.c_float * 1024)(*[(i % 7) / 8 for i in range(1024)])
shape, y, out_shape = (ctypes.c_int64 * 2)(1, 1024), (ctypes.c_float * 1100)(), (ctypes.c_int64 * 2)()
assert lib.wide_predict(model, x, shape, y, ctypes.c_int64(1100), out_shape) == 0
for line in open("/proc/self/smaps"):
    head = line.split()[0]
    if "-" in head and not head.endswith(":"):
        lo, hi = (int(v, 16) for v in head.split("-"))
    elif head == "VmFlags:" and "hg" in line.split()[1:]:
        print(hi - lo)
"""


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").exists(),
    reason="needs Linux with transparent huge pages (/proc/self/smaps, madvise's MADV_HUGEPAGE)",
)
def test_packed_weights_of_4_mb_or_more_are_advised_into_huge_pages(tmp_path):
    """A library's packed weights, which every call streams again, ask Linux for huge pages
    from 4 MB on (MADV_HUGEPAGE), as the JIT's numpy arrays do; a process of plain Python
    (no numpy, whose arrays ask too) holds no other advised mapping."""
    (tmp_path / "wide.dl").write_text("model wide {\n    input  x: f32[B, 1024]\n    output y = dense(x, 1100)\n}\n")
    build_program(tmp_path / "wide.dl", tmp_path)
    r = bare_python(ADVISED, tmp_path / "lib" / "libwide.so", tmp_path / "weights.npz")
    assert r.returncode == 0, r.stderr
    # the 1024 x 1100 weight's panels: 4.5 MB, advised from their first whole huge page on
    assert [int(v) for v in r.stdout.split()] == [4 << 20], r.stdout


def test_a_program_linked_against_the_static_library(built, tmp_path):
    lib, ckpt = built("digits_cnn")
    program = compile_main(lib, "digits_cnn", tmp_path / "main", static=True)
    assert "libdigits_cnn" not in subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
    x = inputs("digits_cnn", 5)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    want = engine.predict({"x": x})["probs"]
    assert c_predict(program, ckpt, x, 2, tmp_path, threads=1).tobytes() == want.tobytes()


CTYPES_CALLER = r"""
import ctypes, sys
try:
    import dlc
    sys.exit("dlc is importable")
except ImportError:
    pass
lib = ctypes.CDLL(sys.argv[1])
model = ctypes.c_void_p()
assert lib.digits_cnn_create(ctypes.byref(model), sys.argv[2].encode()) == 0
lib.digits_cnn_error.restype = ctypes.c_char_p
x = (ctypes.c_float * 64).from_buffer_copy(open(sys.argv[3], "rb").read())
shape = (ctypes.c_int64 * 4)(1, 1, 8, 8)
y, out_shape = (ctypes.c_float * 10)(), (ctypes.c_int64 * 2)()
status = lib.digits_cnn_predict(model, x, shape, y, ctypes.c_int64(10), out_shape)
assert status == 0, lib.digits_cnn_error(model)
assert list(out_shape) == [1, 10]
sys.stdout.write(bytes(y).hex())
lib.digits_cnn_destroy(model)
"""


def test_a_python_caller_without_dlc(built, tmp_path):
    """ctypes in a Python that cannot import dlc (isolated, no site-packages, no PYTHONPATH)."""
    lib, ckpt = built("digits_cnn")
    x = inputs("digits_cnn", 1)
    x.tofile(tmp_path / "x.bin")
    r = bare_python(CTYPES_CALLER, lib / "libdigits_cnn.so", ckpt, tmp_path / "x.bin", timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    assert bytes.fromhex(r.stdout) == engine.predict({"x": x})["probs"].tobytes()


def test_embedded_weights(built, tmp_path):
    _, ckpt = built("digits_cnn")
    dlc("build", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "--embed-weights", "-o", tmp_path / "lib")
    program = compile_main(tmp_path / "lib", "digits_cnn", tmp_path / "main")
    x = inputs("digits_cnn", 3)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    assert c_predict(program, "-", x, 2, tmp_path).tobytes() == engine.predict({"x": x})["probs"].tobytes()


def test_without_a_system_compiler_zig_cc_builds_and_links(built, tmp_path):
    """--toolchain zig (the `ziglang` package, dlc[build]): the library and a program built
    with zig cc alone give the same bits."""
    pytest.importorskip("ziglang", reason="needs the ziglang package: pip install 'dlc[build]'")
    _, ckpt = built("digits_cnn")
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "--toolchain", "zig", "-o", tmp_path / "lib")
    assert "linked with zig cc (ziglang" in r.stdout
    lib = tmp_path / "lib"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            "x86_64-linux-gnu",
            "-O2",
            f"-I{lib}",
            "-include",
            "digits_cnn.h",
            "-DMODEL=digits_cnn",
            str(MAIN),
            f"-L{lib}",
            "-ldigits_cnn",
            f"-Wl,-rpath,{lib}",
            "-o",
            str(tmp_path / "main"),
        ],
        check=True,
    )
    x = inputs("digits_cnn", 4)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    assert c_predict(tmp_path / "main", ckpt, x, 2, tmp_path).tobytes() == engine.predict({"x": x})["probs"].tobytes()


def test_a_second_build_takes_its_code_from_the_compile_cache(tmp_path, monkeypatch):
    """The objects a build compiles (the GEMM routines, the thread pool, the prediction's
    and the train step's modules, and the two units' C) go to the compile cache: a second
    build of the model runs neither LLVM nor the C compiler, and its library is the first's,
    byte for byte."""
    from dlc.runtime.deploy.build import build
    from dlc.runtime.deploy.toolchain import Toolchain
    from dlc.runtime.engines import cache

    dl = ROOT / "examples" / "xor_mlp.dl"
    build(str(dl), tmp_path / "first", train=True)
    before = dict(cache.stats)
    monkeypatch.setattr(Toolchain, "compile", lambda *a: pytest.fail("the C compiler ran again"))
    build(str(dl), tmp_path / "second", train=True)
    assert (cache.stats["compiles"], cache.stats["hits"]) == (before["compiles"], before["hits"] + 6)
    assert (tmp_path / "first" / "libxor_mlp.so").read_bytes() == (tmp_path / "second" / "libxor_mlp.so").read_bytes()


def test_build_refuses_weights_of_another_model(built, tmp_path):
    _, ckpt = built("digits_cnn")
    r = dlc(
        "build",
        ROOT / "examples" / "xor_mlp.dl",
        "--weights",
        ckpt,
        "--embed-weights",
        "-o",
        tmp_path / "lib",
        check=False,
    )
    assert r.returncode == 1 and "does not match the model: missing h.W [2, 4]" in r.stderr
    assert not (tmp_path / "lib").exists()


def test_embedding_needs_weights(tmp_path):
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "--embed-weights", "-o", tmp_path / "lib", check=False)
    assert r.returncode == 2 and r.stderr.startswith("--embed-weights: error: --embed-weights needs the weights")


def test_train_settings_need_train(tmp_path):
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "--seed", 3, "-o", tmp_path / "lib", check=False)
    assert (
        r.returncode == 2
        and r.stderr.strip() == "--seed: error: --seed is a setting of the train step: it goes with --train"
    )


# ---- the C API from ctypes: bad input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(built):
    lib, ckpt = built("digits_cnn")
    api = Api(lib, "digits_cnn")
    status, model = api.create(ckpt)
    assert status == 0
    yield api, model, ckpt
    api.f("destroy")(model)


def test_wrong_shapes_name_the_input_and_both_shapes(digits):
    api, model, _ = digits
    x = np.zeros((2, 1, 8, 9), np.float32)
    status, _, _ = api.predict(model, x, x.shape, 100)
    assert status == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "input 'x' expects f32[B, 1, 8, 8], got shape [2, 1, 8, 9]"
    for shape in ([0, 1, 8, 8], [-3, 1, 8, 8]):
        assert api.predict(model, x, shape, 100)[0] == STATUS["DLC_ERROR_SHAPE"]
    status, _, _ = api.predict(model, np.zeros((2, 1, 8, 8), np.float32), [2, 1, 8, 8], 19)
    assert status == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "output 'probs' has shape [2, 10], 20 elements; its buffer holds 19"
    huge = [1 << 61, 1, 8, 8]  # elements overflow int64: refused before anything is read
    assert api.predict(model, x, huge, 100)[0] == STATUS["DLC_ERROR_SHAPE"]
    status, y, shape = api.predict(model, np.zeros((2, 1, 8, 8), np.float32), [2, 1, 8, 8], 20)
    assert status == 0 and api.error(model) == "" and list(shape) == [2, 10]


def test_null_pointers_are_errors(digits):
    api, model, _ = digits
    x = np.zeros((1, 1, 8, 8), np.float32)
    for nulls in (("x",), ("shape",), ("y",), ("inputs",)):
        status, _, _ = api.predict(model, x, x.shape, 10, nulls=nulls)
        assert status == STATUS["DLC_ERROR_ARGUMENT"], nulls
        assert "null pointer" in api.error(model)
    assert api.f("set_threads")(model, 0) == STATUS["DLC_ERROR_ARGUMENT"]
    assert api.f("set_threads")(None, 2) == STATUS["DLC_ERROR_ARGUMENT"]
    assert api.predict(None, x, x.shape, 10)[0] == STATUS["DLC_ERROR_ARGUMENT"]
    assert api.error(None) == "no model instance (a null pointer)"


@pytest.fixture(scope="module")
def digits_train(built):
    """(the Api of a --train library of the digits CNN, a checkpoint), built once for the session."""
    lib = session_folder(
        "build-digits_cnn-train",
        lambda folder: dlc("build", ROOT / "examples" / "digits_cnn.dl", "--train", "-o", folder),
    )
    return Api(lib, "digits_cnn"), built("digits_cnn")[1]


@pytest.mark.parametrize("train", [False, True])
def test_a_failed_create_fails_every_call_with_its_message(digits, digits_train, tmp_path, train):
    """A failed create's instance keeps its status and message through every call,
    set_threads too (which a --train library's made a null pointer's write of)."""
    api = digits_train[0] if train else digits[0]
    status, model = api.create(tmp_path / "missing.npz")
    assert status == STATUS["DLC_ERROR_WEIGHTS"]
    said = api.error(model)
    for threads in (2, 0):
        assert api.f("set_threads")(model, threads) == STATUS["DLC_ERROR_WEIGHTS"]
        assert api.error(model) == said
    x = np.zeros((1, 1, 8, 8), np.float32)
    assert api.predict(model, x, x.shape, 10)[0] == STATUS["DLC_ERROR_WEIGHTS"] and api.error(model) == said
    api.f("destroy")(model)


def test_create_from_memory_of_a_null_pointer_gives_an_instance_that_says_so(digits):
    api = digits[0]
    model = ctypes.c_void_p()
    assert api.f("create_from_memory")(ctypes.byref(model), None, 10) == STATUS["DLC_ERROR_ARGUMENT"]
    assert model.value and api.error(model) == "create_from_memory: the checkpoint is a null pointer"
    api.f("destroy")(model)


def test_set_threads_takes_1_to_1024_and_a_success_clears_the_message(digits):
    """The thread pool holds at most 1024 threads (the caller and 1023 workers): more are
    refused; a success says "" as every other call's."""
    api, model, _ = digits
    for threads in (0, 1025, 10**6):
        assert api.f("set_threads")(model, threads) == STATUS["DLC_ERROR_ARGUMENT"]
        assert api.error(model) == f"set_threads: {threads} threads; give 1 to 1024"
    assert api.f("set_threads")(model, 1024) == 0 and api.error(model) == ""
    assert api.f("set_threads")(model, 1) == 0


def test_nan_inputs_give_the_engines_outputs(digits):
    """NaN in, no crash: what dlc's native engine gives (the ReLUs take NaN to 0 here; dlc's
    Python API refuses such data before the engine sees it)."""
    api, model, ckpt = digits
    x = np.full((3, 1, 8, 8), np.nan, np.float32)
    x[1, 0, 2] = np.inf
    status, y, _ = api.predict(model, x, x.shape, 30)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    assert status == 0 and y[:30].tobytes() == engine.engine.predict(engine.params, {"x": x})["probs"].tobytes()


def test_an_index_out_of_range_is_an_error_at_the_line(built):
    lib, ckpt = built("transformer_classifier")
    api = Api(lib, "transformer_classifier")
    status, model = api.create(ckpt)
    assert status == 0
    x = np.full((2, 10), 5000, np.int32)
    status, _, _ = api.predict(model, x, x.shape, 20)
    assert status == STATUS["DLC_ERROR_INDEX"]
    assert api.error(model) == "input 'tokens' holds 5000 (element 0), but the model takes 0 to 999 there"
    x = np.zeros((1, 100), np.int32)  # longer than its 64 learned positions (P[0:T])
    status, _, _ = api.predict(model, x, x.shape, 10)
    assert status == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model).endswith("error: the inputs are too large for this slice: it needs T <= 64")
    api.f("destroy")(model)


def test_the_crc32_of_both_paths_is_zlibs(tmp_path):
    """create checks every checkpoint member's CRC-32: by carry-less multiplication where
    the CPU has it (folded 64 bytes at a time, then the tables for a tail) and by the
    tables alone, and in pieces (a .npy header, then the data read into its array). Each
    must be zlib's, at every start (alignment) and many lengths."""
    import zlib

    data = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "data").write_bytes(data)
    exe = tmp_path / "crc32_main"
    subprocess.run(
        [
            "cc",
            "-O2",
            f"-I{ROOT / 'runtime' / 'deploy'}",
            str(ROOT / "tests" / "deploy" / "crc32_main.c"),
            "-pthread",
            "-o",
            str(exe),
        ],
        check=True,
    )
    lines = subprocess.run([str(exe), str(tmp_path / "data")], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    rows = [line.split() for line in lines if line]
    clmul = 0
    for start, length, tables, folded, split in rows:
        want = f"{zlib.crc32(data[int(start) : int(start) + int(length)]):08x}"
        assert tables == want and split == want, (start, length)
        if folded != "-":
            assert folded == want, (start, length)
            clmul += 1
    assert len(rows) > 16 * 300
    flags = Path("/proc/cpuinfo").read_text()
    assert (clmul > 0) == (" pclmulqdq" in flags and " sse4_1" in flags), "the folding path runs where the CPU has it"


def test_hostile_checkpoints_are_refused(built, tmp_path):
    lib, ckpt = built("digits_cnn")
    api = Api(lib, "digits_cnn")
    good = ckpt.read_bytes()
    status, model = api.create(tmp_path / "missing.npz")
    assert status == STATUS["DLC_ERROR_WEIGHTS"] and "cannot open the checkpoint" in api.error(model)
    api.f("destroy")(model)
    other = initial_parameters(load(ROOT / "examples" / "digits_mlp.dl").build(None, training=False), 1)
    checkpoint.save(tmp_path / "other.npz", other, {}, {})
    status, model = api.create(tmp_path / "other.npz")
    assert status == STATUS["DLC_ERROR_WEIGHTS"] and "no parameter" in api.error(model)
    api.f("destroy")(model)
    params, _, _ = checkpoint.load(ckpt)
    checkpoint.save(tmp_path / "f64.npz", {k: v.astype(np.float64) for k, v in params.items()}, {}, {})
    status, model = api.create(tmp_path / "f64.npz")
    assert status == STATUS["DLC_ERROR_WEIGHTS"] and "is <f8, the model's is <f4" in api.error(model)
    api.f("destroy")(model)
    wrong = dict(params, **{"c1.W": np.zeros((16, 1, 3, 2), np.float32)})
    checkpoint.save(tmp_path / "shape.npz", wrong, {}, {})
    status, model = api.create(tmp_path / "shape.npz")
    assert api.error(model) == "checkpoint: parameter c1.W has shape [16, 1, 3, 2], the model's is [16, 1, 3, 3]"
    api.f("destroy")(model)
    for cut in range(0, len(good), max(1, len(good) // 300)):
        status, model = api.create(data=good[:cut])
        assert status == STATUS["DLC_ERROR_WEIGHTS"], cut
        api.f("destroy")(model)
    for cut in range(0, len(good), max(1, len(good) // 60)):  # a file is read piece by piece: the same
        (tmp_path / "cut.npz").write_bytes(good[:cut])
        status, model = api.create(tmp_path / "cut.npz")
        assert status == STATUS["DLC_ERROR_WEIGHTS"], cut
        api.f("destroy")(model)
    import zipfile

    with zipfile.ZipFile(ckpt) as z:
        member = z.getinfo("param:c1.W.npy")
    damaged = bytearray(good)  # a bit of c1.W's data flipped: read into its array, then its CRC checked
    local = member.header_offset  # its local header: 30 bytes, the name, the extra field, then the .npy
    damaged[
        local
        + 30
        + int.from_bytes(good[local + 26 : local + 28], "little")
        + int.from_bytes(good[local + 28 : local + 30], "little")
        + 128
        + 10
    ] ^= 1
    (tmp_path / "damaged.npz").write_bytes(damaged)
    status, model = api.create(tmp_path / "damaged.npz")
    assert api.error(model) == "checkpoint: parameter c1.W is damaged (CRC mismatch)"
    api.f("destroy")(model)
    status, model = api.create(tmp_path)
    assert status == STATUS["DLC_ERROR_WEIGHTS"] and "cannot read the checkpoint" in api.error(model)
    api.f("destroy")(model)
    dlc("export", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "-o", tmp_path / "w.safetensors")
    tensors = (tmp_path / "w.safetensors").read_bytes()
    for cut in range(0, len(tensors), max(1, len(tensors) // 300)):
        status, model = api.create(data=tensors[:cut])
        assert status == STATUS["DLC_ERROR_WEIGHTS"], cut
        api.f("destroy")(model)
    dlc(
        "export",
        ROOT / "examples" / "digits_cnn.dl",
        "--weights",
        ckpt,
        "--format",
        "torch",
        "-o",
        tmp_path / "t.safetensors",
    )
    status, model = api.create(tmp_path / "t.safetensors")  # torch.nn's names: not the model's
    assert status == STATUS["DLC_ERROR_WEIGHTS"] and api.error(model) == "checkpoint: no parameter c1.W"
    api.f("destroy")(model)


def test_a_safetensors_file_read_at_run_time(built, tmp_path):
    lib, ckpt = built("digits_cnn")
    dlc("export", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "-o", tmp_path / "w.safetensors")
    api = Api(lib, "digits_cnn")
    x = inputs("digits_cnn", 6)
    outputs = []
    for path in (ckpt, tmp_path / "w.safetensors"):
        status, model = api.create(path)
        assert status == 0, api.error(model)
        status, y, _ = api.predict(model, x, x.shape, 60)
        assert status == 0
        outputs.append(y[:60].tobytes())
        api.f("destroy")(model)
    assert outputs[0] == outputs[1]


FUZZ = r"""
import ctypes, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from helpers.c_api import Api, STATUS
from pathlib import Path
api = Api(Path(sys.argv[1]), "digits_cnn")
files = [Path(sys.argv[2]).read_bytes(), Path(sys.argv[6]).read_bytes()]      # .npz and .safetensors
rng = np.random.default_rng(int(sys.argv[4]))
codes = set(STATUS.values())
calls = 0
for good in files:
    status, model = api.create(data=good)
    assert status == 0, api.error(model)
    api.f("destroy")(model)
status, model = api.create(data=files[0])
room = np.zeros(64 * 64, np.float32)          # the most any valid shape below reads
p = lambda a: ctypes.c_void_p(a.ctypes.data)
pointers = lambda *arrays: ctypes.cast((ctypes.c_void_p * 1)(*arrays), ctypes.c_void_p)
for i in range(int(sys.argv[5])):
    what = rng.integers(0, 4)
    if what == 3:       # output_shapes of random shapes; an array or an entry null at times
        shape = np.array([rng.integers(-2, 70), *([1, 8, 8] if rng.random() < 0.8 else rng.integers(-1, 10, 3))],
                         np.int64)
        if rng.random() < 0.1:
            shape[rng.integers(0, 4)] = rng.integers(-2**62, 2**62)
        out, count = np.full(2, -1, np.int64), np.full(1, -1, np.int64)
        shapes = None if rng.random() < 0.05 else pointers(None if rng.random() < 0.05 else p(shape))
        outs = None if rng.random() < 0.05 else pointers(None if rng.random() < 0.05 else p(out))
        s = api.f("output_shapes")(model, shapes, outs, None if rng.random() < 0.2 else p(count))
        assert s in codes, s
        if s == 0:
            assert out.tolist() == [shape[0], 10] and count[0] in (-1, shape[0] * 10), (shape, out, count)
        else:
            assert api.error(model) and out.tolist() == [-1, -1] and count[0] == -1
        calls += 1
    elif what == 0:     # a damaged checkpoint: bytes changed, cut or repeated
        data = bytearray(files[rng.integers(0, 2)])
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[:rng.integers(0, len(data))]
        s, m = api.create(data=bytes(data))
        assert s in codes, s
        if s:
            assert api.error(m), "a failure without a message"
        api.f("destroy")(m)
    else:               # a prediction of random sizes: valid shapes read at most `room`
        rank_ok = rng.random() < 0.8
        b = int(rng.integers(-2, 65))
        shape = [b, 1, 8, 8] if rank_ok else list(rng.integers(-1, 10, 4))
        if rng.random() < 0.1:
            shape[rng.integers(0, 4)] = int(rng.integers(-2**62, 2**62))
        count = int(np.prod(shape, dtype=object)) if all(d > 0 for d in shape) else 0
        if count > room.size and all(d > 0 for d in shape) and shape[1:] == [1, 8, 8] and count < 2**46:
            continue        # a valid shape that says more than the buffer holds: the caller's error, not tried
        cap = int(rng.integers(-5, 700))
        nulls = tuple(n for n in ("x", "shape", "y") if rng.random() < 0.05)
        s, y, _ = api.predict(model, room, shape, cap, nulls=nulls)
        assert s in codes, s
        if s:
            assert api.error(model)
        calls += 1
    calls += what == 0
api.f("destroy")(model)
print(calls)
"""


def test_fuzz_the_c_api(built, tmp_path):
    """10^4 calls of random sizes, null pointers and damaged checkpoints (.npz and
    .safetensors), in a process of
    their own: each returns a known status with a message, and nothing crashes."""
    lib, ckpt = built("digits_cnn")
    dlc("export", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "-o", tmp_path / "w.safetensors")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            FUZZ,
            str(lib),
            str(ckpt),
            str(Path(__file__).parents[1]),
            "1",
            "10500",
            str(tmp_path / "w.safetensors"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout) >= 10_000


@pytest.mark.sets_target
def test_a_library_for_another_cpu_refuses_to_run(tmp_path, built, monkeypatch, request):
    """Built for a target whose features this CPU lacks, create says so; never SIGILL. The
    CPU's own features, which a DLC_TARGET would take some of away."""
    from dlc.compiler.native.codegen import jit

    monkeypatch.delenv("DLC_TARGET", raising=False)
    jit.host_cpu.cache_clear()
    request.addfinalizer(jit.host_cpu.cache_clear)  # before monkeypatch gives DLC_TARGET back
    missing = next(
        (
            t
            for t, f in (("avx512", "avx512f"), ("avx512bf16", "avx512bf16"), ("amx", "amx-tile"))
            if not jit.host_has(f)
        ),
        None,
    )
    if missing is None:
        pytest.skip("this CPU has every feature of every target")
    _, ckpt = built("digits_cnn")
    dlc("build", ROOT / "examples" / "digits_cnn.dl", "--target", missing, "-o", tmp_path / "lib")
    if missing == "avx512" and shutil.which("objdump"):  # compiled for it indeed: 512-bit registers
        code = subprocess.run(
            ["objdump", "-d", str(tmp_path / "lib" / "libdigits_cnn.so")], capture_output=True, text=True
        ).stdout
        assert "%zmm" in code
    api = Api(tmp_path / "lib", "digits_cnn")
    status, model = api.create(ckpt)
    assert status == STATUS["DLC_ERROR_CPU"]
    from dlc.runtime.deploy.build import CHECKED, TARGETS

    runs = next(  # the most capable x86-64 target whose every feature this CPU has: what create names
        t
        for t in ("amx", "avx512bf16", "avx512", "avx2")
        if all(jit.host_has(f[1:]) for f in TARGETS[t][2].split(",") if f[1:] in CHECKED)
    )
    assert api.error(model).startswith(f"this library was built for {missing} (dlc build --target {missing}), ")
    assert api.error(model).endswith(f": build it for --target {runs}, which this CPU runs"), api.error(model)
    x = np.zeros((1, 1, 8, 8), np.float32)
    assert api.predict(model, x, x.shape, 10)[0] == STATUS["DLC_ERROR_CPU"]
    api.f("destroy")(model)


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64 (apt install qemu-user)")
def test_an_emulated_cpu_is_told_the_target_that_runs_on_it(built, tmp_path):
    """An avx512 library on an emulated Haswell (AVX2, no AVX-512) names avx2, whose library
    runs there; on qemu64 (no SSSE3) it says that no target does, the least (avx2) lacking it too."""
    _, ckpt = built("digits_cnn")
    programs = {}
    for target in ("avx512", "avx2"):
        dlc("build", ROOT / "examples" / "digits_cnn.dl", "--target", target, "-o", tmp_path / target)
        programs[target] = compile_main(tmp_path / target, "digits_cnn", tmp_path / target / "calls", main=CALLS)

    def create(target: str, cpu: str) -> str:
        r = subprocess.run(
            ["qemu-x86_64", "-cpu", cpu, str(programs[target])],
            input=f"create {ckpt}\n",
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    lead = "4 this library was built for avx512 (dlc build --target avx512), and this CPU lacks "
    assert create("avx512", "Haswell") == lead + "avx512f: build it for --target avx2, which this CPU runs"
    assert create("avx2", "Haswell") == "0"
    assert create("avx512", "qemu64") == lead + (
        "ssse3: none of dlc build's targets runs on it (the least, avx2, needs ssse3); a build on this machine "
        "(--target host) compiles for what it has"
    )


def test_a_host_call_cannot_go_in_a_library():
    """A kernel that calls back into Python (a data-parallel step's allreduce; a prediction
    has none today) is refused, naming the operation and the line."""
    from dlc.compiler.errors import DlcError, Span
    from dlc.compiler.native.kernels.host_call import HostCallKernel
    from dlc.compiler.native.program import KernelProgram
    from dlc.runtime.deploy.build import _refuse_host_calls

    p = KernelProgram()
    buffer = p.buffer("f32", 3, "temp")
    p.kernels.append(
        HostCallKernel(p.host("replica_mean").id, buffer.id, origin=(("replica_mean", Span("m.dl", 4, 9)),))
    )
    with pytest.raises(DlcError) as e:
        _refuse_host_calls(p)
    assert e.value.render().startswith("m.dl:4:9: error: `replica_mean` calls back into Python")
    assert "cannot go in a library" in e.value.message


# ---- --train: a C training loop against dlc train --------------------------------------------------------------
def test_a_c_training_loop_is_dlc_train_bit_for_bit(tmp_path):
    seed, epochs = 3, 3
    dl = ROOT / "examples" / "digits_cnn.dl"
    dlc("build", dl, "--train", "--seed", seed, "-o", tmp_path / "lib")
    needs, exports = needs_and_exports(tmp_path / "lib" / "libdigits_cnn.so")
    assert needs <= RUN_TIME, needs
    assert exports == sorted(
        f"digits_cnn_{f}"
        for f in PREDICT_API + ("get_parameter", "save", "set_parameter", "set_schedule", "train_step")
    )
    model = load(dl).build(None, training=True)
    checkpoint.save(tmp_path / "init.npz", initial_parameters(model, seed), {}, {})
    fed = trainer_batches(dl, {"epochs": epochs, "seed": seed}, tmp_path / "recorded")
    per_epoch = len(fed) // epochs
    for name, batches in (("batches", fed), ("first", fed[:per_epoch]), ("rest", fed[per_epoch:])):
        with open(tmp_path / f"{name}.bin", "wb") as f:
            for batch in batches:
                np.array([len(batch["y"])], np.int64).tofile(f)
                np.ascontiguousarray(batch["x"], np.float32).tofile(f)
                np.ascontiguousarray(batch["y"], np.int32).tofile(f)
    lib = tmp_path / "lib"
    subprocess.run(
        [
            "cc",
            "-O2",
            f"-I{lib}",
            str(ROOT / "tests" / "deploy" / "train_main.c"),
            f"-L{lib}",
            "-ldigits_cnn",
            f"-Wl,-rpath,{lib}",
            "-o",
            str(tmp_path / "train"),
        ],
        check=True,
    )
    # the first epoch, saved; the others continue from that checkpoint (its optimizer state and step count)
    for start, batches, end in (("init", "first", "epoch1"), ("epoch1", "rest", "c")):
        r = subprocess.run(
            [
                "env",
                "-i",
                str(tmp_path / "train"),
                str(tmp_path / f"{start}.npz"),
                str(tmp_path / f"{batches}.bin"),
                str(per_epoch),
                str(per_epoch * epochs),
                str(tmp_path / f"{end}.npz"),
                str(tmp_path / "params.bin"),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{len(fed) - per_epoch} steps")
    # the whole loop at once, linked against the static library
    subprocess.run(
        [
            "cc",
            "-O2",
            f"-I{lib}",
            str(ROOT / "tests" / "deploy" / "train_main.c"),
            str(lib / "libdigits_cnn.a"),
            "-lm",
            "-lpthread",
            "-o",
            str(tmp_path / "train_static"),
        ],
        check=True,
    )
    r = subprocess.run(
        [
            "env",
            "-i",
            str(tmp_path / "train_static"),
            str(tmp_path / "init.npz"),
            str(tmp_path / "batches.bin"),
            str(per_epoch),
            str(per_epoch * epochs),
            str(tmp_path / "s.npz"),
            str(tmp_path / "params_static.bin"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    dlc("train", dl, "--backend", "native", "--epochs", epochs, "--seed", seed, "--out", tmp_path / "run", "-q")
    want, want_opt, _ = checkpoint.load(tmp_path / "run" / "last.npz")
    got, got_opt, meta = checkpoint.load(tmp_path / "c.npz")
    assert meta["step"] == len(fed) and meta["model"] == "digits_cnn" and meta["seed"] == seed
    flat = np.fromfile(tmp_path / "params.bin", np.float32)
    at = 0
    for name in ["c1.W", "c1.b", "c3.W", "c3.b", "f5.W", "f5.b", "logits.W", "logits.b"]:
        assert got[name].tobytes() == want[name].tobytes(), name
        assert flat[at : at + want[name].size].tobytes() == want[name].tobytes(), name  # get_parameter's
        at += want[name].size
        for slot in ("m", "v"):
            assert got_opt[name][slot].tobytes() == want_opt[name][slot].tobytes(), (name, slot)
    assert not np.array_equal(want["c1.W"], checkpoint.load(tmp_path / "init.npz")[0]["c1.W"])  # it trained
    assert (tmp_path / "params_static.bin").read_bytes() == (tmp_path / "params.bin").read_bytes()
    scored = dlc("eval", dl, "--weights", tmp_path / "c.npz").stdout
    assert scored == dlc("eval", dl, "--weights", tmp_path / "run" / "last.npz").stdout
    assert "accuracy" in scored


def test_the_train_api_refuses_bad_input_and_shares_its_parameters_with_predict(digits_train, tmp_path):
    """set/get parameters by name with shape checks, train_step's shapes and buffers,
    set_schedule, save: each bad call is a status and a message and changes nothing; what
    set_parameter writes, predict uses (one copy of the parameters)."""
    api, ckpt = digits_train
    c = ctypes
    f = api.f
    status, model = api.create(ckpt)
    assert status == 0, api.error(model)
    p = lambda a: c.c_void_p(a.ctypes.data)
    w = np.full((16, 1, 3, 3), 0.5, np.float32)

    def get(name, capacity=10000):
        out, shape, rank = np.zeros(capacity, np.float32), np.zeros(8, np.int64), np.zeros(1, np.int32)
        status = f("get_parameter")(model, name.encode(), p(out), capacity, p(shape), p(rank))
        return status, out, tuple(shape[: rank[0]])

    before = get("c1.W")[1].copy()
    assert (
        f("set_parameter")(model, b"nope", p(w), p(np.array([16, 1, 3, 3], np.int64)), 4)
        == STATUS["DLC_ERROR_ARGUMENT"]
    )
    assert api.error(model) == "set_parameter: the model has no parameter 'nope'"
    assert (
        f("set_parameter")(model, b"c1.W", p(w), p(np.array([16, 1, 3, 2], np.int64)), 4) == STATUS["DLC_ERROR_SHAPE"]
    )
    assert api.error(model) == "set_parameter: c1.W has shape [16, 1, 3, 3], got [16, 1, 3, 2]"
    assert f("set_parameter")(model, None, p(w), None, 0) == STATUS["DLC_ERROR_ARGUMENT"]
    for rank in (5, -1, 1 << 30):  # refused before a dim is read: the shape holds at most the largest rank
        assert f("set_parameter")(model, b"c1.W", p(w), p(np.array([16], np.int64)), rank) == STATUS["DLC_ERROR_SHAPE"]
        assert api.error(model) == f"set_parameter: rank {rank}; c1.W has rank 4 (give 0 to 4)"
    assert get("c1.W", 143)[0] == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "get_parameter: c1.W has 144 elements; the buffer holds 143"
    assert get("c1.W")[1].tobytes() == before.tobytes()  # nothing changed
    x, y, values = inputs("digits_cnn", 2), np.zeros(3, np.int32), np.zeros(2, np.float64)
    step = lambda xs, ys, capacity=2: f("train_step")(
        model, p(x), p(np.array(xs, np.int64)), p(y), p(np.array(ys, np.int64)), p(values), capacity
    )
    assert step([2, 1, 8, 8], [3]) == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "input 'y' expects i32[B] with B = 2, got shape [3]"
    assert step([2, 1, 8, 8], [2], capacity=1) == STATUS["DLC_ERROR_SHAPE"]
    assert f("set_schedule")(model, 0, 5) == STATUS["DLC_ERROR_ARGUMENT"]
    assert get("c1.W")[1].tobytes() == before.tobytes()  # no failed step updated anything
    assert f("save")(model, str(tmp_path / "no" / "such" / "folder.npz").encode()) == STATUS["DLC_ERROR_ARGUMENT"]
    assert api.error(model).startswith("save: cannot write") and "No such file or directory" in api.error(model)
    assert step([2, 1, 8, 8], [2]) == 0 and np.isfinite(values).all() and get("c1.W")[1].tobytes() != before.tobytes()
    # predict reads the parameters train_step and set_parameter write
    probs = lambda: api.predict(model, x, x.shape, 20)[1]
    b = np.zeros(10, np.float32)
    b[7] = 100.0
    assert f("set_parameter")(model, b"logits.b", p(b), p(np.array([10], np.int64)), 1) == 0
    assert get("logits.b")[1][:10].tobytes() == b.tobytes() and get("logits.b")[2] == (10,)
    assert probs().reshape(2, 10).argmax(1).tolist() == [7, 7]
    api.f("destroy")(model)
    # a checkpoint with the optimizer state of one trained parameter and not the others
    params = checkpoint.load(ckpt)[0]
    checkpoint.save(
        tmp_path / "partial.npz", params, {"c1.W": {"m": params["c1.W"], "v": params["c1.W"]}}, {"optimizer": "adam"}
    )
    status, model = api.create(tmp_path / "partial.npz")
    assert status == STATUS["DLC_ERROR_WEIGHTS"]
    assert api.error(model) == (
        "checkpoint: it holds the optimizer state of some trained parameters, not of all (opt:NAME:SLOT arrays)"
    )
    api.f("destroy")(model)


def test_a_class_out_of_range_fails_the_step(digits_train):
    """A target outside [0, classes) is refused as dlc train refuses such data, not counted
    as no class: DLC_ERROR_INDEX, and the step changes nothing."""
    api, ckpt = digits_train
    status, model = api.create(ckpt)
    assert status == 0, api.error(model)
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    x, values = inputs("digits_cnn", 3), np.zeros(2, np.float64)
    w = np.zeros(144, np.float32)
    assert api.f("get_parameter")(model, b"c1.W", p(w), w.size, None, None) == 0
    for bad in (10, -1):
        y = np.array([1, bad, 2], np.int32)
        status = api.f("train_step")(
            model, p(x), p(np.array(x.shape, np.int64)), p(y), p(np.array([3], np.int64)), p(values), 2
        )
        assert status == STATUS["DLC_ERROR_INDEX"]
        assert api.error(model) == f"input 'y' holds {bad} (element 1), but the model takes 0 to 9 there"
    after = np.zeros(144, np.float32)
    assert api.f("get_parameter")(model, b"c1.W", p(after), after.size, None, None) == 0
    assert after.tobytes() == w.tobytes()
    api.f("destroy")(model)


def test_a_changed_weight_is_packed_again(digits_train):
    """predict's GEMMs multiply with the weights packed once (docs/deploy.md, "Weights
    packed once"): after set_parameter and after train_step, the library predicts what the
    engine predicts on the new weights, bit for bit, not from the packed copy of the old
    ones. A GEMM of one or two rows reads its weight unpacked: batch 1 packs nothing, batch
    8 packs the dense layers' weights."""
    api, ckpt = digits_train
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    status, model = api.create(ckpt)
    assert status == 0, api.error(model)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    x = inputs("digits_cnn", 8)

    def same_as_engine(x=x):
        status, got, _ = api.predict(model, x, x.shape, 80)
        assert status == 0, api.error(model)
        want = engine.predict({"x": x})["probs"]
        assert got[: want.size].tobytes() == want.tobytes()
        return want

    same_as_engine(x[:1])
    first = same_as_engine()  # packs the weights
    for name in ("f5.W", "logits.W"):  # the dense layers' GEMMs take them as B
        w = np.random.default_rng(len(name)).normal(0, 0.3, engine.params[name].shape).astype(np.float32)
        shape = np.array(w.shape, np.int64)
        assert api.f("set_parameter")(model, name.encode(), p(w), p(shape), w.ndim) == 0, api.error(model)
        engine.params[name] = w  # a new version of the weights: the engine packs them again
    assert not np.array_equal(same_as_engine(), first)
    y, values = np.zeros(8, np.int32), np.zeros(2, np.float64)
    step = api.f("train_step")(
        model, p(x), p(np.array(x.shape, np.int64)), p(y), p(np.array([8], np.int64)), p(values), 2
    )
    assert step == 0, api.error(model)
    for name, value in list(engine.params.items()):
        out, shape, rank = np.zeros(value.size, np.float32), np.zeros(8, np.int64), np.zeros(1, np.int32)
        assert api.f("get_parameter")(model, name.encode(), p(out), value.size, p(shape), p(rank)) == 0
        engine.params[name] = out.reshape(value.shape)
    same_as_engine()
    api.f("destroy")(model)


def test_two_threads_train_two_instances_at_once(digits_train):
    """Two instances trained at once on two threads (ctypes lets go of the GIL in a call),
    each on batches of its own: each ends with the parameters of the same steps taken alone."""
    import threading

    api, ckpt = digits_train
    c = ctypes
    p = lambda a: c.c_void_p(a.ctypes.data)
    batches = [
        [(inputs("digits_cnn", 64, seed=10 * k + j), np.arange(64, dtype=np.int32) % 10) for j in range(20)]
        for k in range(2)
    ]

    def train(k: int, out: dict):
        status, model = api.create(ckpt)
        assert status == 0
        for x, y in batches[k]:
            assert (
                api.f("train_step")(
                    model, p(x), p(np.array(x.shape, np.int64)), p(y), p(np.array(y.shape, np.int64)), None, 0
                )
                == 0
            )
        w = np.zeros(128 * 64, np.float32)
        assert api.f("get_parameter")(model, b"f5.W", p(w), w.size, None, None) == 0
        out[k] = w
        api.f("destroy")(model)

    alone, together = {}, {}
    for k in range(2):
        train(k, alone)
    threads = [threading.Thread(target=train, args=(k, together)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alone[0].tobytes() != alone[1].tobytes()
    for k in range(2):
        assert together[k].tobytes() == alone[k].tobytes(), k


# inception_cnn (a minute of CPU) with -m slow: the library runs the JIT's step object, whose
# 1x1 convolutions tests/native/test_conv_gemms.py checks; transformer_classifier (15 s) with -m
# slow too: AdamW's decay, a cosine schedule after a warmup and an embedding's gather through a
# library's train_step are tests/deploy/test_train_settings.py's, on a small model
@pytest.mark.parametrize(
    "model",
    [
        "char_lstm",
        pytest.param("transformer_classifier", marks=pytest.mark.slow),
        pytest.param("inception_cnn", marks=pytest.mark.slow),
    ],
)
def test_training_through_the_c_api_is_dlc_train(model, tmp_path):
    """One epoch of the char LSTM (on its text's start; Adam, gradient clipping: the update's norm), of the
    transformer classifier (AdamW's decay, a cosine schedule after a warmup of an epoch,
    gathers' index checks) and of the Inception CNN (pointwise convolutions' GEMMs over the
    batch, a value stored channels first) through the library's train_step, called by
    ctypes with the batches dlc train feeds its engine: the parameters and optimizer state
    are its bits."""
    seed, dl = 5, ROOT / "examples" / f"{model}.dl"
    if model == "char_lstm":  # its text's first 24,000 characters: an epoch of 11 steps, not 92 (19 s)
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "genesis.txt").write_text((ROOT / "examples" / "data" / "genesis.txt").read_text()[:24000])
        dl = Path(shutil.copy(dl, tmp_path))
    lib = tmp_path / "lib"
    dlc("build", dl, "--train", "--seed", seed, "--epochs", 1, "-o", lib)
    checkpoint.save(tmp_path / "init.npz", initial_parameters(load(dl).build(None, training=True), seed), {}, {})
    fed = trainer_batches(dl, {"epochs": 1, "seed": seed}, tmp_path / "recorded")
    api = Api(lib, model)
    status, instance = api.create(tmp_path / "init.npz")
    assert status == 0, api.error(instance)
    train_steps(api, instance, fed)
    assert api.f("save")(instance, str(tmp_path / "c.npz").encode()) == 0, api.error(instance)
    api.f("destroy")(instance)
    dlc("train", dl, "--backend", "native", "--epochs", 1, "--seed", seed, "--out", tmp_path / "run", "-q")
    want, want_opt, _ = checkpoint.load(tmp_path / "run" / "last.npz")
    got, got_opt, _ = checkpoint.load(tmp_path / "c.npz")
    assert set(got) == set(want)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    for name in want_opt:
        for slot in want_opt[name]:
            assert got_opt[name][slot].tobytes() == want_opt[name][slot].tobytes(), (name, slot)


FUZZ_TRAIN = r"""
import ctypes, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from helpers.c_api import Api, STATUS
c = ctypes
api = Api(__import__("pathlib").Path(sys.argv[1]), "digits_cnn")
f = api.f
codes, rng = set(STATUS.values()), np.random.default_rng(int(sys.argv[4]))
status, model = api.create(sys.argv[2])
assert status == 0, api.error(model)
p = lambda a: None if a is None else c.c_void_p(a.ctypes.data)
x, y, data = rng.standard_normal(64 * 64).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32), \
    rng.standard_normal(128 * 64).astype(np.float32) * 0.01
names = [b"c1.W", b"c1.b", b"c3.W", b"f5.W", b"logits.b", b"nope", b"", b"c1.W.x"]
shapes = {b"c1.W": [16, 1, 3, 3], b"c1.b": [16], b"c3.W": [32, 16, 3, 3], b"f5.W": [128, 64], b"logits.b": [10]}
calls = 0
for i in range(int(sys.argv[5])):
    what = rng.integers(0, 4)
    if what == 0:       # train_step of random shapes: a valid one reads at most the buffers
        b, b2 = int(rng.integers(-2, 65)), int(rng.integers(-2, 65)) if rng.random() < 0.3 else None
        xs = [b, 1, 8, 8] if rng.random() < 0.8 else list(rng.integers(-1, 10, 4))
        ys = [b if b2 is None else b2]
        if rng.random() < 0.1:
            xs[rng.integers(0, 4)] = int(rng.integers(-2**62, 2**62))
        if xs[1:] == [1, 8, 8] and 64 < xs[0] < 2**40 and ys[0] == xs[0]:
            continue        # a valid shape larger than the buffers: the caller's error, not tried
        values = np.zeros(4)
        s = f("train_step")(model, None if rng.random() < 0.05 else p(x), p(np.array(xs, np.int64)),
                            None if rng.random() < 0.05 else p(y), p(np.array(ys, np.int64)),
                            None if rng.random() < 0.1 else p(values), int(rng.integers(-3, 4)))
    elif what == 1:     # set_parameter: names, shapes and ranks of every kind
        name = names[rng.integers(0, len(names))]
        shape = shapes.get(name, [3])
        if rng.random() < 0.5:
            shape = list(rng.integers(-3, 200, rng.integers(0, 6)))
        valid = name in shapes and shape == shapes[name]
        rank = len(shape) if rng.random() < 0.9 else int(rng.integers(-3, 8))
        if rank > len(shape) or (valid and rank != len(shape)):
            rank = len(shape)
        s = f("set_parameter")(model, None if rng.random() < 0.05 else name, p(data),
                               p(np.array(shape or [0], np.int64)), rank)
    elif what == 2:     # get_parameter with a capacity too small or enough
        out, shape, rank = np.zeros(128 * 64, np.float32), np.zeros(8, np.int64), np.zeros(1, np.int32)
        s = f("get_parameter")(model, names[rng.integers(0, len(names))], p(out), int(rng.integers(-5, 128 * 64 + 1)),
                               p(shape), p(rank))
    else:
        s = f("set_schedule")(model, int(rng.integers(-5, 100)), int(rng.integers(-5, 10**6)))
    assert s in codes, s
    if s:
        assert api.error(model), "a failure without a message"
    calls += 1
values = np.zeros(2)
assert f("train_step")(model, p(x), p(np.array([8, 1, 8, 8], np.int64)), p(y), p(np.array([8], np.int64)),
                       p(values), 2) == 0, api.error(model)
f("destroy")(model)
print(calls)
"""


def test_fuzz_the_train_api(digits_train):
    """10^4 calls of train_step, set/get_parameter and set_schedule with random shapes,
    ranks, names, capacities and null pointers, in a process of their own: each returns a
    known status with a message, nothing crashes, and the instance still trains."""
    api, ckpt = digits_train
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            FUZZ_TRAIN,
            str(api.folder),
            str(ckpt),
            str(Path(__file__).parents[1]),
            "2",
            "10500",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout) >= 10_000


WINOGRAD = """
model wino {
    input  x: f32[B, 32, 9, 11]
    target y: i32[B]
    h = conv2d(x, 32, 3, padding = 1, act = relu)
    logits = dense(global_avg_pool(h), 4)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}

train wino {
    data      = npz("wino.npz")
    batch     = 2
    optimizer = sgd(lr = 0.1)
}
"""


def test_a_changed_filter_is_transformed_again(tmp_path):
    """A prediction's Winograd convolution transforms its filters once (docs/native.md,
    "Winograd's convolution"), under the weights' flags: after set_parameter the library
    predicts what the engine predicts on the new weights, bit for bit."""
    source = tmp_path / "wino.dl"
    source.write_text(WINOGRAD)
    rng = np.random.default_rng(2)
    np.savez(
        tmp_path / "wino.npz",
        x=rng.standard_normal((6, 32, 9, 11)).astype(np.float32),
        y=rng.integers(0, 4, 6).astype(np.int32),
    )
    params = initial_parameters(load(source).build(None, training=False), 7)
    checkpoint.save(tmp_path / "weights.npz", params, {}, {})
    dlc("build", source, "--train", "-o", tmp_path / "lib")
    api = Api(tmp_path / "lib", "wino")
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    status, model = api.create(tmp_path / "weights.npz")
    assert status == 0, api.error(model)
    engine = DlcModel(str(source), backend="native").load_weights(tmp_path / "weights.npz")
    x = np.random.default_rng(3).standard_normal((2, 32, 9, 11)).astype(np.float32)

    def same_as_engine():
        status, got, _ = api.predict(model, x, x.shape, 8)
        assert status == 0, api.error(model)
        want = engine.predict({"x": x})["probs"]
        assert got[: want.size].tobytes() == want.tobytes()
        return want

    first = same_as_engine()
    assert np.array_equal(same_as_engine(), first)  # from the filters transformed by the first call
    w = np.random.default_rng(4).normal(0, 0.2, engine.params["h.W"].shape).astype(np.float32)
    assert api.f("set_parameter")(model, b"h.W", p(w), p(np.array(w.shape, np.int64)), w.ndim) == 0, api.error(model)
    engine.params["h.W"] = w
    assert not np.array_equal(same_as_engine(), first)
    api.f("destroy")(model)


def test_filters_kept_packed_give_the_engines_bits(tmp_path):
    """A float32 library keeps its convolutions' filters packed as their GEMMs' A (docs/deploy.md,
    "Weights packed once"): in filters.dl a Winograd convolution's transform, a GEMM of
    windows' filters, a 1 x 1 convolution's and an im2col GEMM's of few columns (at batch 1
    the GEMM's few-columns path on A's panels), each GEMM reading only its pack; the engine,
    which packs inside each GEMM, gives the same bits, at batch 1 and 3, and again after
    their weights change."""
    from dlc.compiler.native.kernels.gemm import GemmKernel
    from dlc.compiler.native.lower import lower
    from dlc.compiler.passes.optimize import optimize
    from dlc.runtime.engines.native import predict_graph

    source = tmp_path / "filters.dl"
    shutil.copy(ROOT / "tests" / "deploy" / "filters.dl", source)
    engine = DlcModel(str(source), backend="native")
    program = lower(optimize(predict_graph(engine.eval_model)), pack_weights="once")
    assert len([k for k in program.kernels if isinstance(k, GemmKernel) and k.packed_a]) == 4
    rng = np.random.default_rng(6)
    np.savez(
        tmp_path / "filters.npz",
        x=rng.standard_normal((4, 32, 9, 11)).astype(np.float32),
        y=rng.integers(0, 4, 4).astype(np.int32),
    )
    params = initial_parameters(load(source).build(None, training=False), 5)
    checkpoint.save(tmp_path / "weights.npz", params, {}, {})
    engine.load_weights(tmp_path / "weights.npz")
    dlc("build", source, "--train", "-o", tmp_path / "lib")  # (set_parameter is a train library's)
    api = Api(tmp_path / "lib", "filters")
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    status, model = api.create(tmp_path / "weights.npz")
    assert status == 0, api.error(model)

    def same_as_engine():
        for batch in (1, 3):
            x = rng.standard_normal((batch, 32, 9, 11)).astype(np.float32)
            status, got, _ = api.predict(model, x, x.shape, 4 * batch)
            assert status == 0, api.error(model)
            assert got[: 4 * batch].tobytes() == engine.predict({"x": x})["logits"].tobytes(), batch

    same_as_engine()
    same_as_engine()  # from the packs the first call made
    for name in ("h.W", "s.W", "p.W", "q.W"):
        w = rng.normal(0, 0.2, engine.params[name].shape).astype(np.float32)
        assert api.f("set_parameter")(model, name.encode(), p(w), p(np.array(w.shape, np.int64)), w.ndim) == 0
        engine.params[name] = w
        same_as_engine()
    api.f("destroy")(model)


def test_a_train_library_with_its_weights_inside(built, tmp_path):
    """--train --embed-weights: create(NULL) starts from the embedded weights, which a step
    then changes in the instance (the library's stay as they are: a second instance starts
    from them again)."""
    _, ckpt = built("digits_cnn")
    lib = tmp_path / "lib"
    dlc("build", ROOT / "examples" / "digits_cnn.dl", "--train", "--weights", ckpt, "--embed-weights", "-o", lib)
    api = Api(lib, "digits_cnn")
    c = ctypes
    p = lambda a: c.c_void_p(a.ctypes.data)
    want = checkpoint.load(ckpt)[0]["f5.W"]

    def f5(model) -> np.ndarray:
        w = np.zeros(want.size, np.float32)
        assert api.f("get_parameter")(model, b"f5.W", p(w), w.size, None, None) == 0
        return w.reshape(want.shape)

    status, first = api.create()
    assert status == 0, api.error(first)
    assert f5(first).tobytes() == want.tobytes()
    x, y = inputs("digits_cnn", 8), np.arange(8, dtype=np.int32)
    assert (
        api.f("train_step")(first, p(x), p(np.array(x.shape, np.int64)), p(y), p(np.array([8], np.int64)), None, 0) == 0
    ), api.error(first)
    assert f5(first).tobytes() != want.tobytes()
    status, second = api.create()
    assert status == 0 and f5(second).tobytes() == want.tobytes()
    for model in (first, second):
        api.f("destroy")(model)


# ---- what a library says about its inputs and outputs; what it refuses -------------------------------


def test_a_checkpoint_with_an_extra_array_is_refused(built, tmp_path):
    """An array that is no parameter of the model, in an .npz (param:NAME or a plain name) or
    a .safetensors file, is refused at create as dlc predict refuses it; a checkpoint's
    metadata and optimizer state are not extras."""
    lib, ckpt = built("digits_cnn")
    api = Api(lib, "digits_cnn")
    params = checkpoint.load(ckpt)[0]
    checkpoint.save(tmp_path / "extra.npz", {**params, "bogus": np.zeros(3, np.float32)}, {}, {})
    np.savez(tmp_path / "plain.npz", **{f"param:{k}": v for k, v in params.items()}, bogus=np.zeros(2, np.float32))
    dlc("export", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "-o", tmp_path / "w.safetensors")
    from safetensors.numpy import load_file, save_file

    save_file(
        {**load_file(tmp_path / "w.safetensors"), "bogus": np.zeros(2, np.float32)}, str(tmp_path / "extra.safetensors")
    )
    for path, name in (("extra.npz", "param:bogus"), ("plain.npz", "bogus"), ("extra.safetensors", "bogus")):
        status, model = api.create(tmp_path / path)
        assert status == STATUS["DLC_ERROR_WEIGHTS"], path
        assert api.error(model) == f"checkpoint: does not match the model: unexpected extra {name}", path
        api.f("destroy")(model)
        r = dlc(
            "predict",
            ROOT / "examples" / "digits_cnn.dl",
            "--weights",
            tmp_path / path,
            "--input",
            "digits()",
            check=False,
        )
        assert r.returncode == 1 and "does not match the model: unexpected" in r.stderr, path
    checkpoint.save(tmp_path / "state.npz", params, {"c1.W": {"m": params["c1.W"]}}, {"epoch": 1})
    status, model = api.create(tmp_path / "state.npz")
    assert status == 0, api.error(model)
    api.f("destroy")(model)


def test_the_header_and_describe_say_every_input_and_output(built):
    """The header's constants (dims, fixed dims, scale, ids) and NAME_describe's JSON say what
    the .dl file says: the shapes, the training data with its scale, an integer input's ids."""
    import json

    lib, _ = built("digits_cnn")
    header = (lib / "digits_cnn.h").read_text()
    for line in (
        "#define DIGITS_CNN_INPUT_X_DIMS {-1, 1, 8, 8}",
        "#define DIGITS_CNN_INPUT_X_DIM_3 8",
        "#define DIGITS_CNN_INPUT_X_SCALE 0.0625",
        "#define DIGITS_CNN_OUTPUT_PROBS_DIMS {-1, 10}",
        "#define DIGITS_CNN_OUTPUT_PROBS_DIM_1 10",
        "#define DIGITS_CNN_TRANSFORM 0",
        " * trained on: digits(scale = 0.0625, image = true)",
    ):
        assert line in header, line
    assert "DIGITS_CNN_OUTPUT_PROBS_DIM_0" not in header  # B: given at each call
    api = Api(lib, "digits_cnn")
    api.f("describe").restype = ctypes.c_char_p
    assert json.loads(api.f("describe")()) == {
        "model": "digits_cnn",
        "target": "host",
        "weights": "checkpoint",
        "trains": False,
        "data": "digits(scale = 0.0625, image = true)",
        "transform": False,
        "inputs": [{"name": "x", "dtype": "f32", "shape": ["B", 1, 8, 8], "scale": 0.0625, "ids": None}],
        "outputs": [{"name": "probs", "dtype": "f32", "shape": ["B", 10]}],
    }
    lstm, _ = built("char_lstm")
    assert "#define CHAR_LSTM_INPUT_X_IDS 96   /* its values: 0 to 95 */" in (lstm / "char_lstm.h").read_text()


def test_output_shapes_sizes_every_output_before_the_call(digits):
    """NAME_output_shapes: each output's shape and count for inputs of given shapes, the
    shapes checked as predict checks them, null pointers refused, nothing written after a
    failure."""
    api, model, _ = digits
    f = api.f("output_shapes")
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    array = lambda *arrays: ctypes.cast((ctypes.c_void_p * len(arrays))(*[p(a) for a in arrays]), ctypes.c_void_p)
    shape, out, count = np.array([3, 1, 8, 8], np.int64), np.full(2, -7, np.int64), np.full(1, -7, np.int64)
    assert f(model, array(shape), array(out), p(count)) == 0 and api.error(model) == ""
    assert out.tolist() == [3, 10] and count.tolist() == [30]
    assert f(model, array(np.array([4, 1, 8, 8], np.int64)), array(out), None) == 0 and out.tolist() == [4, 10]
    bad = np.array([3, 1, 8, 9], np.int64)
    assert f(model, array(bad), array(out), p(count)) == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "input 'x' expects f32[B, 1, 8, 8], got shape [3, 1, 8, 9]"
    assert out.tolist() == [4, 10] and count.tolist() == [30]
    huge = np.array([1 << 60, 1, 8, 8], np.int64)
    assert f(model, array(huge), array(out), p(count)) == STATUS["DLC_ERROR_SHAPE"]
    for args in (
        (None, array(out)),
        (array(shape), None),
        (ctypes.cast((ctypes.c_void_p * 1)(None), ctypes.c_void_p), array(out)),
        (array(shape), ctypes.cast((ctypes.c_void_p * 1)(None), ctypes.c_void_p)),
    ):
        assert f(model, *args, p(count)) == STATUS["DLC_ERROR_ARGUMENT"]
        assert "null pointer" in api.error(model)
    assert f(None, array(shape), array(out), p(count)) == STATUS["DLC_ERROR_ARGUMENT"]
    assert out.tolist() == [4, 10] and count.tolist() == [30]


def test_an_integer_input_that_feeds_one_hot_is_range_checked(tmp_path):
    """An id beyond a one_hot's classes would be no class (a row of zeros): predict refuses
    it as dlc predict does, DLC_ERROR_INDEX, and writes nothing."""
    dl = tmp_path / "hot.dl"
    dl.write_text("model hot {\n    input t: i32[B]\n    output p = dense(one_hot(t, 5), 3)\n}\n")
    params = initial_parameters(load(dl).build(None, training=False), 3)
    checkpoint.save(tmp_path / "w.npz", params, {}, {})
    dlc("build", dl, "-o", tmp_path / "lib")
    assert "#define HOT_INPUT_T_IDS 5" in (tmp_path / "lib" / "hot.h").read_text()
    api = Api(tmp_path / "lib", "hot")
    status, model = api.create(tmp_path / "w.npz")
    assert status == 0, api.error(model)
    t = np.array([1, 5], np.int32)
    status, y, _ = api.predict(model, t, t.shape, 6)
    assert status == STATUS["DLC_ERROR_INDEX"] and not y.any()
    assert api.error(model) == "input 't' holds 5 (element 1), but the model takes 0 to 4 there"
    t = np.array([1, 4], np.int32)
    status, y, _ = api.predict(model, t, t.shape, 6)
    assert status == 0
    want = DlcModel(str(dl), backend="native").load_weights(tmp_path / "w.npz").predict({"t": t}, 2)["p"]
    assert y[:6].tobytes() == np.ascontiguousarray(want, np.float32).tobytes()
    api.f("destroy")(model)


def test_the_transform_compiled_in_takes_the_data_as_its_source_reads_it(built, tmp_path):
    """--transform: predict multiplies x by the training data's scale itself, so the digits
    as the data set holds them (0 to 16) give dlc predict's outputs on the scaled data, bit
    for bit. A model whose data scales nothing is refused."""
    _, ckpt = built("digits_cnn")
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "--transform", "-o", tmp_path / "lib")
    assert "scales its inputs itself" in r.stdout
    assert "#define DIGITS_CNN_TRANSFORM 1" in (tmp_path / "lib" / "digits_cnn.h").read_text()
    api = Api(tmp_path / "lib", "digits_cnn")
    status, model = api.create(ckpt)
    assert status == 0, api.error(model)
    raw = np.ascontiguousarray(digits_as_read(7), np.float32)
    status, y, _ = api.predict(model, raw, raw.shape, 70)
    assert status == 0, api.error(model)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    want = engine.predict({"x": raw * np.float32(1 / 16)}, 7)["probs"]
    assert y[:70].tobytes() == np.ascontiguousarray(want, np.float32).tobytes()
    assert raw.max() == 16.0  # the caller's array is not scaled in place
    api.f("destroy")(model)
    r = dlc("build", ROOT / "examples" / "xor_mlp.dl", "--transform", "-o", tmp_path / "xor", check=False)
    assert r.returncode == 1 and "scales no input: there is no transform to compile in" in r.stderr


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_the_pages_program_runs_clean_under_valgrind_with_an_avx2_library(built, tmp_path):
    """docs/deploy.md: under valgrind, a library built with --target avx2 (which valgrind
    runs on any x86-64-v3 machine, AVX-512 ones too): no invalid read or write, no use of
    an uninitialized value, and the outputs of the run without valgrind."""
    _, ckpt = built("digits_cnn")
    dlc("build", ROOT / "examples" / "digits_cnn.dl", "--target", "avx2", "-o", tmp_path / "lib")
    blocks = re.findall(r"```(\w*)\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    (tmp_path / "main.c").write_text(next(b for k, b in blocks if k == "c" and "int main(" in b))
    subprocess.run(
        ["cc", "-O2", "main.c", "-Ilib", "-Llib", "-ldigits_cnn", "-Wl,-rpath,$ORIGIN/lib", "-o", "main"],
        cwd=tmp_path,
        check=True,
    )
    lines = "".join(" ".join(str(int(v)) for v in image.ravel()) + "\n" for image in digits_as_read(3))
    plain = subprocess.run(["./main", str(ckpt)], input=lines, capture_output=True, text=True, cwd=tmp_path)
    checked = subprocess.run(
        ["valgrind", "--error-exitcode=9", "-q", "./main", str(ckpt)],
        input=lines,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert plain.returncode == 0 and checked.returncode == 0, checked.stderr
    assert checked.stdout == plain.stdout and len(plain.stdout.splitlines()) == 3
