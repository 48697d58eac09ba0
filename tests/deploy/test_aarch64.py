"""`dlc build --target aarch64` (docs/deploy.md, Platforms): the libraries of the digits CNN, the
char LSTM, the transformer classifier and filters.dl's convolutions (whose filters the library
keeps packed) cross-built with zig cc and run under qemu-aarch64 (Debian's qemu-user, with the
AArch64 C library of libc6-arm64-cross): their predictions are the x86-64 JIT's bit for bit at
batch 1 and 64;
a script of hostile calls and checkpoints gets the same answers, word for word, from the
x86-64 library and the AArch64 one; a CPU without the ARMv8.2-A baseline is refused at create,
told that no target runs on it, and one without i8mm is told the target that does; docs/deploy.md's
lines for a program of the user's, cross-built and run from another folder, as written;
the CRC-32 of the CRC32 instructions is zlib's; `--target macos-arm64` gives a Mach-O dylib (never run)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.compiler.ir.evaluate import round_bf16
from dlc.runtime.api import DlcModel
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import initial_parameters
from helpers.c_api import MODELS, inputs

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "deploy"
QEMU = shutil.which("qemu-aarch64")
SYSROOT = Path("/usr/aarch64-linux-gnu")  # the AArch64 glibc of Debian's cross package
pytestmark = [
    pytest.mark.skipif(QEMU is None, reason="needs qemu-aarch64 (apt install qemu-user)"),
    pytest.mark.skipif(not (SYSROOT / "lib" / "libc.so.6").exists(), reason="needs apt install libc6-arm64-cross"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)"),
    pytest.mark.xdist_group("test_aarch64"),
]
pytest.importorskip("ziglang", reason="needs the ziglang package: pip install 'dlc[build]'")


def source(model: str) -> Path:
    """The program of `model`: an example's, or this folder's (filters.dl)."""
    example = ROOT / "examples" / f"{model}.dl"
    return example if example.exists() else HERE / f"{model}.dl"


def model_inputs(model: str, batch: int, seed: int) -> np.ndarray:
    """Inputs of `model` for `batch` examples: helpers.c_api's, filters.dl's images."""
    if model in MODELS:
        return inputs(model, batch, seed)
    return np.random.default_rng(seed).standard_normal((batch, 32, 9, 11)).astype(np.float32)


def dlc(*args, cwd=None):
    r = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    assert r.returncode == 0, r.stderr
    return r


def run(program: Path, script: str, cpu: str | None = None) -> list:
    """The answers of a calls_main program to `script`: an AArch64 one under qemu (`cpu`: the
    CPU it emulates, default all of qemu's features), an x86-64 one here."""
    arm = "aarch64" in subprocess.run(["file", "-L", str(program)], capture_output=True, text=True).stdout
    command = [QEMU, "-L", str(SYSROOT), *(["-cpu", cpu] if cpu else []), str(program)] if arm else [str(program)]
    r = subprocess.run(command, input=script, capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(model, target, int8) -> (the calls_main program linked against the model's library
    built for target (`dlc build --target`: an AArch64 level, or host), a checkpoint: with
    int8, the quantized one the library is built --int8 from); one build of each, shared by
    the module's tests."""
    cache, checkpoints = {}, {}

    def get(model: str, target: str = "aarch64", int8: bool = False):
        if (model, False) not in checkpoints:
            path = tmp_path_factory.mktemp(f"{model}-weights") / "weights.npz"
            checkpoint.save(path, initial_parameters(load(source(model)).build(None, training=False), 7), {}, {})
            checkpoints[model, False] = path
        if int8 and (model, True) not in checkpoints:
            checkpoints[model, True] = checkpoints[model, False].with_name("q.npz")
            dlc(
                "quantize",
                source(model),
                "--weights",
                checkpoints[model, False],
                "--calibrate",
                "2",
                "-o",
                checkpoints[model, True],
            )
        if (model, target, int8) not in cache:
            lib = tmp_path_factory.mktemp(f"{model}-{target}")
            quantized = ["--weights", checkpoints[model, True], "--int8"] if int8 else []
            dlc("build", source(model), "-o", lib, "--target", target, *quantized)
            cc = ["cc"] if target == "host" else [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu"]
            subprocess.run(
                [
                    *cc,
                    "-O2",
                    f"-I{lib}",
                    "-include",
                    f"{model}.h",
                    f"-DMODEL={model}",
                    str(HERE / "calls_main.c"),
                    f"-L{lib}",
                    f"-l{model}",
                    f"-Wl,-rpath,{lib}",
                    "-o",
                    str(lib / "calls"),
                ],
                check=True,
            )
            cache[model, target, int8] = lib / "calls"
        return cache[model, target, int8], checkpoints[model, int8]

    return get


def predict_line(x: np.ndarray, tmp: Path, name: str, capacity: int, nulls: str = "-", shape=None) -> str:
    x.tofile(tmp / f"{name}.in")
    shape = x.shape if shape is None else shape
    return f"predict {tmp / name}.in {tmp / name}.out {capacity} {nulls} {len(shape)} {' '.join(map(str, shape))}"


@pytest.mark.parametrize("model", list(MODELS) + ["filters"])
def test_predictions_under_qemu_are_the_x86_jit_bit_for_bit(built, model, tmp_path):
    program, ckpt = built(model)
    engine = DlcModel(str(source(model)), backend="native").load_weights(ckpt)
    name = engine.eval_model.inputs[0].name
    wants, lines = {}, [f"create {ckpt}", "threads 2"]
    for batch in (1, 64):
        x = model_inputs(model, batch, seed=batch)
        wants[batch] = np.ascontiguousarray(next(iter(engine.predict({name: x}, batch).values())), np.float32)
        lines.append(predict_line(x, tmp_path, f"b{batch}", wants[batch].size))
    answers = run(program, "\n".join(lines + ["destroy"]) + "\n")
    assert answers[:2] == ["0 ", "0 "], answers
    for batch, answer in zip(wants, answers[2:]):
        assert answer.startswith("0  ["), answer
        got = np.fromfile(tmp_path / f"b{batch}.out", np.float32)
        assert got.tobytes() == wants[batch].tobytes(), (model, batch, np.abs(got - wants[batch].ravel()).max())


@pytest.mark.parametrize("target", ["aarch64", "aarch64-dotprod", "aarch64-i8mm"])
def test_int8_libraries_under_qemu_are_the_x86_jits_int8_bit_for_bit(built, target, tmp_path):
    """`dlc build --int8` at each AArch64 level (NEON's smull/smlal; sdot on the activations
    flipped to s8; usdot) on qemu's `max` CPU, which has dotprod and i8mm: the outputs are the
    x86-64 JIT's int8 prediction (vpdpbusd here) bit for bit, a saturating input among them."""
    program, quantized = built("digits_cnn", target, int8=True)
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(quantized)
    wants, lines = {}, ["create -", "threads 2"]
    for batch in (1, 64):
        x = inputs("digits_cnn", batch, seed=batch)
        x[0, 0, 0, :2] = [-1e30, 1e30]  # quantized as 0 and as 255
        wants[batch] = engine.engine_for(int8=True).predict(engine.params, {"x": x})["probs"]
        lines.append(predict_line(x, tmp_path, f"b{batch}", wants[batch].size))
    answers = run(program, "\n".join(lines + ["destroy"]) + "\n", cpu="max")
    assert answers[:2] == ["0 ", "0 "], answers
    for batch, answer in zip(wants, answers[2:]):
        assert answer.startswith("0  ["), answer
        got = np.fromfile(tmp_path / f"b{batch}.out", np.float32)
        assert got.tobytes() == wants[batch].tobytes(), (target, batch, np.abs(got - wants[batch].ravel()).max())


BF16_PRODUCT = "model mm {\n    input x: f32[B, 301]\n    output y = dense(x, 37, bias = false)\n}\n"
BUILD_BF16 = """
import sys
from pathlib import Path
from dlc.runtime.deploy.build import build
build(sys.argv[1], Path(sys.argv[2]), weights=sys.argv[3], target="aarch64-bf16", embed=True, precision="bf16")
"""


def test_a_bf16_library_sums_bfdot_pairs_within_the_float64_bound(tmp_path):
    """A bf16 prediction library built for aarch64-bf16 (the GEMM's bfloat16 pairs by BFDOT:
    the two products of a pair summed, then added to the lane, each rounded to odd) on
    qemu's `max` CPU: a [B, 301] @ [301, 37] product within the float64 product of the
    bfloat16 operands by (K + slices + 1) · 2^-23 of Σ |a| · |w|, a rounding to odd per sum
    (and where a sum would flush, 2^-126 each), at batch 64 (packed panels, edge tiles, an
    odd K) and 2 (a row or two: rounded as loaded, fma); never the unrounded operands'."""
    (tmp_path / "mm.dl").write_text(BF16_PRODUCT)
    model = load(tmp_path / "mm.dl").build(None, training=False)
    params = initial_parameters(model, 3)
    checkpoint.save(tmp_path / "w.npz", params, {}, {})
    subprocess.run(
        [sys.executable, "-c", BUILD_BF16, tmp_path / "mm.dl", tmp_path / "lib", tmp_path / "w.npz"], check=True
    )
    lib = tmp_path / "lib"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            "aarch64-linux-gnu",
            "-O2",
            f"-I{lib}",
            "-include",
            "mm.h",
            "-DMODEL=mm",
            str(HERE / "calls_main.c"),
            f"-L{lib}",
            "-lmm",
            f"-Wl,-rpath,{lib}",
            "-o",
            str(lib / "calls"),
        ],
        check=True,
    )
    xs = {batch: np.random.default_rng(batch).standard_normal((batch, 301)).astype(np.float32) for batch in (64, 2)}
    lines = ["create -", "threads 2"] + [predict_line(x, tmp_path, f"b{batch}", batch * 37) for batch, x in xs.items()]
    answers = run(lib / "calls", "\n".join(lines + ["destroy"]) + "\n", cpu="max")
    assert answers[:2] == ["0 ", "0 "] and all(a.startswith("0  [") for a in answers[2:]), answers
    w = params["y.W"].astype(np.float64)
    bf16 = lambda a: round_bf16(a).astype(np.float64)
    for batch, x in xs.items():
        got = np.fromfile(tmp_path / f"b{batch}.out", np.float32).reshape(batch, 37)
        want, size = bf16(x) @ bf16(params["y.W"]), np.abs(bf16(x)) @ np.abs(bf16(params["y.W"]))
        sums = 301 + -(-301 // 256) + 1
        bound = sums * 2.0**-23 / (1 - sums * 2.0**-23) * size + 2 * 301 * 2.0**-126
        assert (np.abs(got - want) <= bound).all(), (batch, np.abs(got - want).max())
        assert (np.abs(got - x.astype(np.float64) @ w) > bound).any(), batch


def test_the_pages_cross_build_runs_under_qemu_from_another_folder(built, tmp_path):
    """docs/deploy.md's lines for an ARM program, run as written (dlc build --target aarch64, zig
    cc through `python -m ziglang`, qemu-aarch64 with -L) on the page's C program, with the venv
    of this Python active: from another folder, the AArch64 program prints the x86-64 JIT's
    probabilities of the same digits bit for bit; without -L, qemu finds no AArch64 loader."""
    from dlc.runtime.data.images import digits

    page = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    lines = next(b for k, b in blocks if not k and b.startswith("dlc build examples/digits_cnn.dl --target aarch64"))
    lines = lines.splitlines()
    assert [line.split()[0] for line in lines] == ["dlc", "python", "cd"], lines
    (tmp_path / "main.c").write_text(next(b for k, b in blocks if k == "c" and "int main(" in b))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    ckpt = tmp_path / "runs" / "digits" / "best.npz"
    checkpoint.save(
        ckpt, initial_parameters(load(ROOT / "examples" / "digits_cnn.dl").build(None, training=False), 7), {}, {}
    )
    dlc(*shlex.split(lines[0])[1:], cwd=tmp_path)
    active = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", lines[1]], cwd=tmp_path, env=active, check=True)
    raw = digits(ROOT, scale=1).columns["x"][:5]
    stdin = "".join(" ".join(str(int(v)) for v in image.ravel()) + "\n" for image in raw)
    ran = subprocess.run(["bash", "-c", lines[2]], cwd=tmp_path, input=stdin, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    engine = DlcModel(str(ROOT / "examples" / "digits_cnn.dl"), backend="native").load_weights(ckpt)
    want = np.ascontiguousarray(engine.predict({"x": raw * np.float32(1 / 16)}, 5)["probs"], np.float32)
    got = np.array([[float(v) for v in row.split()] for row in ran.stdout.splitlines()], np.float32)
    assert got.tobytes() == want.tobytes()
    assert "aarch64" in subprocess.run(["file", str(tmp_path / "main-arm")], capture_output=True, text=True).stdout
    # the build folder's README.md: its compile lines (shared, static) and its qemu line, as written
    readme = (tmp_path / "build" / "digits-arm" / "README.md").read_text()
    *compiles, qemu = [line.strip() for line in readme.splitlines() if line.startswith("    ")]
    assert len(compiles) == 2 and qemu == "qemu-aarch64 -L /usr/aarch64-linux-gnu ./main", readme
    for line in compiles:
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
        r = subprocess.run(["bash", "-c", f"{qemu} {ckpt}"], cwd=tmp_path, input=stdin, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout == ran.stdout, (line, r.stderr)
    bare = subprocess.run(
        ["bash", "-c", lines[2].replace(" -L /usr/aarch64-linux-gnu", "")], cwd=tmp_path, capture_output=True, text=True
    )
    assert bare.returncode != 0 and "Could not open '/lib/ld-linux-aarch64.so.1'" in bare.stderr, bare.stderr


def test_a_cpu_without_i8mm_refuses_its_library_naming_the_dotprod_one_which_runs(built):
    """A Neoverse N1 (ARMv8.2-A with dotprod, no i8mm): create refuses the aarch64-i8mm
    library, saying what the CPU lacks and naming aarch64-dotprod, and runs that one."""
    refused = run(built("digits_cnn", "aarch64-i8mm", int8=True)[0], "create -\n", cpu="neoverse-n1")
    assert refused == [
        "4 this library was built for aarch64-i8mm (dlc build --target aarch64-i8mm), and this CPU lacks i8mm: "
        "build it for --target aarch64-dotprod, which this CPU runs"
    ], refused
    assert run(built("digits_cnn", "aarch64-dotprod", int8=True)[0], "create -\n", cpu="neoverse-n1") == ["0 "]


def hostile_digits_script(ckpt: Path, tmp: Path) -> str:
    """test_build.py's bad calls and hostile checkpoints of the digits CNN as one script: missing,
    another model's, float64, a wrong shape, cut (in memory and as files), a flipped bit, a folder,
    safetensors cut and in torch's names; then wrong shapes, null pointers, thread counts, NaN."""
    params, _, _ = checkpoint.load(ckpt)
    other = initial_parameters(load(ROOT / "examples" / "digits_mlp.dl").build(None, training=False), 1)
    checkpoint.save(tmp / "other.npz", other, {}, {})
    checkpoint.save(tmp / "f64.npz", {k: v.astype(np.float64) for k, v in params.items()}, {}, {})
    checkpoint.save(tmp / "shape.npz", dict(params, **{"c1.W": np.zeros((16, 1, 3, 2), np.float32)}), {}, {})
    good = ckpt.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 1
    (tmp / "damaged.npz").write_bytes(damaged)
    dlc("export", ROOT / "examples" / "digits_cnn.dl", "--weights", ckpt, "-o", tmp / "w.safetensors")
    dlc(
        "export",
        ROOT / "examples" / "digits_cnn.dl",
        "--weights",
        ckpt,
        "--format",
        "torch",
        "-o",
        tmp / "t.safetensors",
    )
    tensors = (tmp / "w.safetensors").read_bytes()
    lines = [
        f"create {tmp / f}"
        for f in ("missing.npz", "other.npz", "f64.npz", "shape.npz", "damaged.npz", "t.safetensors", "")
    ]
    lines += [f"memory {ckpt} {cut}" for cut in range(0, len(good), max(1, len(good) // 40))]
    lines += [f"memory {tmp / 'w.safetensors'} {cut}" for cut in range(0, len(tensors), max(1, len(tensors) // 40))]
    lines += ["memory - 10"]
    for cut in range(0, len(good), max(1, len(good) // 10)):
        (tmp / f"cut{cut}.npz").write_bytes(good[:cut])
        lines.append(f"create {tmp / f'cut{cut}.npz'}")
    lines += [f"create {ckpt}", "threads 0", "threads 1025", "threads 1024", "threads 2"]
    x = np.zeros((2, 1, 8, 9), np.float32)
    lines += [
        predict_line(x, tmp, "wide", 100),
        predict_line(x, tmp, "zero", 100, shape=(0, 1, 8, 8)),
        predict_line(x, tmp, "negative", 100, shape=(-3, 1, 8, 8)),
        predict_line(x, tmp, "huge", 100, shape=(1 << 61, 1, 8, 8)),
        predict_line(np.zeros((2, 1, 8, 8), np.float32), tmp, "small", 19),
    ]
    lines += [predict_line(np.zeros((1, 1, 8, 8), np.float32), tmp, f"null{n}", 10, nulls=n) for n in "xsyi"]
    nan = np.full((3, 1, 8, 8), np.nan, np.float32)
    nan[1, 0, 2] = np.inf
    return "\n".join(lines + [predict_line(nan, tmp, "nan", 30), "destroy"]) + "\n"


def test_hostile_calls_and_checkpoints_get_the_x86_answers(built, tmp_path):
    """The same script of bad calls and hostile checkpoints, through the x86-64 library here and
    the AArch64 one under qemu: every status and message alike, word for word, and what the
    x86-64 tests say they are (test_build.py); the NaN batch's outputs the same bits."""
    script = hostile_digits_script(built("digits_cnn")[1], tmp_path)
    arm = run(built("digits_cnn")[0], script)
    (tmp_path / "nan.x86").write_bytes((tmp_path / "nan.out").read_bytes())
    x86 = run(built("digits_cnn", "host")[0], script)
    assert arm == x86
    assert (tmp_path / "nan.out").read_bytes() == (tmp_path / "nan.x86").read_bytes()
    statuses = [int(a.split()[0]) for a in arm]
    assert statuses[:7] == [3] * 7 and "cannot open the checkpoint" in arm[0] and "no parameter" in arm[1]
    assert "is <f8, the model's is <f4" in arm[2]
    assert arm[3] == "3 checkpoint: parameter c1.W has shape [16, 1, 3, 2], the model's is [16, 1, 3, 3]"
    assert arm[5] == "3 checkpoint: no parameter c1.W" and "cannot read the checkpoint" in arm[6]
    create = arm.index("0 ")
    assert sorted(set(statuses[7:create])) == [1, 3] and statuses[7:create].count(1) == 1  # cuts refused; a null
    assert "1 create_from_memory: the checkpoint is a null pointer" in arm[7:create]
    assert statuses[create + 1 : create + 5] == [1, 1, 0, 0]
    assert arm[create + 1] == "1 set_threads: 0 threads; give 1 to 1024"
    assert arm[create + 5].startswith("2 input 'x' expects f32[B, 1, 8, 8], got shape [2, 1, 8, 9]")
    assert statuses[create + 5 : create + 10] == [2] * 5 and statuses[create + 10 : create + 14] == [1] * 4
    assert arm[create + 14] == "0  [3 10 0]"


def test_an_index_out_of_range_is_refused_as_on_x86(built, tmp_path):
    tokens = np.full((2, 10), 5000, np.int32)
    script = (
        "\n".join(
            [
                f"create {built('transformer_classifier')[1]}",
                predict_line(tokens, tmp_path, "ids", 20),
                predict_line(np.zeros((1, 100), np.int32), tmp_path, "long", 10),
                "destroy",
            ]
        )
        + "\n"
    )
    answers = run(built("transformer_classifier")[0], script)
    assert answers[1] == "6 input 'tokens' holds 5000 (element 0), but the model takes 0 to 999 there [0 0 0]"
    assert answers[2].startswith("2 ") and "it needs T <= 64" in answers[2]


def test_a_cpu_without_the_baseline_is_refused_at_create(built):
    """A Cortex-A53 (ARMv8.0-A: no LSE atomics) meets a library built for ARMv8.2-A: create
    says which feature it lacks and that no target of dlc build runs on it (an i8mm library
    likewise: the least target needs LSE too), and every call after returns that status; never SIGILL."""
    program, ckpt = built("digits_cnn")
    answers = run(program, f"create {ckpt}\nthreads 2\n", cpu="cortex-a53")
    assert answers[0] == (
        "4 this library was built for aarch64 (dlc build --target aarch64), and this CPU lacks lse: none of dlc "
        "build's targets runs on it (the least, aarch64, needs lse); a build on this machine (--target host) "
        "compiles for what it has"
    ), answers
    assert answers[1] == answers[0]
    i8mm = run(built("digits_cnn", "aarch64-i8mm", int8=True)[0], "create -\n", cpu="cortex-a53")
    assert (
        i8mm[0].startswith("4 this library was built for aarch64-i8mm") and "(the least, aarch64, needs lse)" in i8mm[0]
    )


def test_the_crc32_instructions_give_zlibs_crc(tmp_path):
    """A checkpoint's members are checked by the CRC32 instructions on AArch64 (HWCAP_CRC32):
    zlib's value at every start and many lengths, as the tables'."""
    data = np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "data").write_bytes(data)
    exe = tmp_path / "crc32_main"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            "aarch64-linux-gnu",
            "-O2",
            f"-I{ROOT / 'runtime' / 'deploy'}",
            str(HERE / "crc32_main.c"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    r = subprocess.run(
        [QEMU, "-L", str(SYSROOT), str(exe), str(tmp_path / "data")], capture_output=True, text=True, check=True
    )
    rows = [line.split() for line in r.stdout.splitlines()]
    fast = 0
    for start, length, tables, folded, split in rows:
        want = f"{zlib.crc32(data[int(start) : int(start) + int(length)]):08x}"
        assert tables == want and split == want and folded in (want, "-"), (start, length)
        fast += folded == want
    assert fast == sum(int(length) >= 64 for _, length, *_ in rows) > 1000


def test_a_macos_dylib_is_cross_built(tmp_path):
    """`--target macos-arm64`: a Mach-O dylib for arm64 (LLVM's Mach-O objects, zig cc's macOS
    target), exporting the C API. Nothing here runs it: docs/native.md says what stands between
    it and a Mac."""
    lib = tmp_path / "lib"
    r = dlc("build", ROOT / "examples" / "digits_cnn.dl", "-o", lib, "--target", "macos-arm64")
    assert "target macos-arm64" in r.stdout and "zig cc" in r.stdout
    head = (lib / "libdigits_cnn.dylib").read_bytes()[:16]
    magic, cpu, _, filetype = (int.from_bytes(head[i : i + 4], "little") for i in range(0, 16, 4))
    assert (magic, cpu, filetype) == (0xFEEDFACF, 0x0100000C, 6)  # Mach-O 64-bit, arm64, MH_DYLIB
    for function in ("create", "predict_arrays", "destroy", "error"):
        assert f"_digits_cnn_{function}\0".encode() in (lib / "libdigits_cnn.dylib").read_bytes()
