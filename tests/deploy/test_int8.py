"""`dlc build --int8` (docs/quantization.md, docs/deploy.md): a library of the quantized digits
CNN (`--target amx` on a host with AMX-INT8) whose outputs are `predict(int8=True)`'s on the
native engine bit for bit, on any thread count; the float32 library's boundary checks; the
quantized checkpoints it refuses."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.compiler.native.codegen import amx
from dlc.runtime.api import DlcModel
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import initial_parameters
from helpers.c_api import STATUS, Api, inputs

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits_cnn.dl"
# built for the AMX tiles where this host runs them (the JIT then does too), else for the host
TARGET = "amx" if amx.has_tiles("tdpbusd") else "host"
pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


def dlc(*args):
    return subprocess.run([sys.executable, "-m", "dlc.runtime.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """(the library's folder, the quantized checkpoint): the digits CNN's initial parameters
    (seed 7) quantized on two batches of its data, built with --int8."""
    folder = tmp_path_factory.mktemp("int8")
    params = initial_parameters(load(DIGITS).build(None, training=False), 7)
    checkpoint.save(folder / "weights.npz", params, {}, {})
    r = dlc("quantize", DIGITS, "--weights", folder / "weights.npz", "--calibrate", "2", "-o", folder / "q.npz")
    assert r.returncode == 0, r.stderr
    r = dlc("build", DIGITS, "--weights", folder / "q.npz", "--int8", "--target", TARGET, "-o", folder / "lib")
    assert r.returncode == 0 and "weights embedded, predicts with 3 integer products" in r.stdout, r.stderr
    if TARGET == "amx" and shutil.which("objdump"):  # its products on the tiles indeed
        code = subprocess.run(
            ["objdump", "-d", str(folder / "lib" / "libdigits_cnn.so")], capture_output=True, text=True
        ).stdout
        assert "tdpbusd" in code
    return folder / "lib", folder / "q.npz"


@pytest.fixture(scope="module")
def instance(library):
    api = Api(library[0], "digits_cnn")
    status, model = api.create(None)
    assert status == 0, api.error(model)
    yield api, model
    api.f("destroy")(model)


def test_the_int8_library_is_the_jits_int8_prediction_bit_for_bit(library, instance):
    api, model = instance
    jit = DlcModel(str(DIGITS), backend="native").load_weights(library[1])
    assert np.array_equal(
        jit.predict(inputs("digits_cnn", 3), int8=True)["probs"],
        jit.engine_for(int8=True).predict(jit.params, {"x": inputs("digits_cnn", 3)})["probs"],
    )
    for batch in (1, 64):
        x = inputs("digits_cnn", batch, seed=batch)
        x[0, 0, 0, :2] = [np.nan, 1e30]  # quantized as 0.0 and as the largest value
        want = jit.engine_for(int8=True).predict(jit.params, {"x": x})["probs"]  # the API refuses NaN
        for threads in (1, 3):
            assert api.f("set_threads")(model, threads) == 0
            status, y, shape = api.predict(model, x, x.shape, want.size)
            assert status == 0 and list(shape) == list(want.shape), api.error(model)
            assert y[: want.size].tobytes() == want.tobytes(), (batch, threads)


def test_the_int8_library_checks_its_boundary_as_the_float32_one(instance):
    api, model = instance
    x = np.zeros((2, 1, 8, 9), np.float32)
    assert api.predict(model, x, x.shape, 100)[0] == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "input 'x' expects f32[B, 1, 8, 8], got shape [2, 1, 8, 9]"
    assert api.predict(model, np.zeros((2, 1, 8, 8), np.float32), [2, 1, 8, 8], 19)[0] == STATUS["DLC_ERROR_SHAPE"]
    assert api.error(model) == "output 'probs' has shape [2, 10], 20 elements; its buffer holds 19"
    assert api.predict(model, x, [1 << 61, 1, 8, 8], 100)[0] == STATUS["DLC_ERROR_SHAPE"]
    for nulls in (("x",), ("y",), ("inputs",)):
        assert api.predict(model, x, (1, 1, 8, 8), 10, nulls=nulls)[0] == STATUS["DLC_ERROR_ARGUMENT"]


def test_the_int8_library_takes_no_checkpoint(library):
    """Its quantization is compiled in: a checkpoint at create (whose float32 parameters
    would not be those the scales were calibrated with) is refused, saying why."""
    lib, ckpt = library
    api = Api(lib, "digits_cnn")
    status, model = api.create(ckpt)
    assert status == STATUS["DLC_ERROR_ARGUMENT"] and "it takes no checkpoint (create it with NULL)" in api.error(model)
    api.f("destroy")(model)
    # and its header says so, where a float32 library's offers a checkpoint instead of its embedded weights
    header = (lib / "digits_cnn.h").read_text()
    assert "give NULL (it takes no checkpoint" in header and "a checkpoint's path to use that instead" not in header


def test_build_int8_refuses_hostile_quantized_checkpoints_and_wrong_flags(library, tmp_path):
    _, ckpt = library
    arrays, meta = checkpoint.read(ckpt)
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param:")}
    more = {k: v for k, v in arrays.items() if k.startswith("int8:")}
    more["int8:c3.W:input_scale"] = np.float32(np.nan)
    checkpoint.save(
        tmp_path / "nan.npz", params, {}, {k: v for k, v in meta.items() if k not in ("format", "dlc_version")}, more
    )
    r = dlc("build", DIGITS, "--weights", tmp_path / "nan.npz", "--int8", "-o", tmp_path / "lib")
    assert r.returncode == 1 and "int8:c3.W:input_scale is nan" in r.stderr and "Traceback" not in r.stderr
    assert "digits_cnn.dl:10" in r.stderr  # the product's line
    for flags, said in (
        (["--int8"], "give it as --weights Q.npz"),
        (["--int8", "--weights", ckpt, "--train"], "it does not train"),
        (["--int8", "--weights", ckpt.parent / "weights.npz"], "holds no int8 quantization"),
    ):
        r = dlc("build", DIGITS, *flags, "-o", tmp_path / "lib")
        assert r.returncode != 0 and said in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_float32_build_of_a_quantized_checkpoint_reads_its_float32_parameters_as_predict_does(library, tmp_path):
    """Without --int8 a quantized checkpoint's float32 parameters are the weights: dlc build,
    the library's create and dlc predict and eval read them alike, the three commands saying so;
    the library's outputs are dlc predict's, and those are the float32 checkpoint's."""
    _, q = library
    note = f"note: {q} is a quantized checkpoint: without --int8 its float32 parameters are the weights"
    r = dlc("build", DIGITS, "--weights", q, "-o", tmp_path / "lib")
    assert r.returncode == 0 and note in r.stderr, r.stderr
    api = Api(tmp_path / "lib", "digits_cnn")
    status, model = api.create(q)
    assert status == 0, api.error(model)
    x = inputs("digits_cnn", 5)
    status, y, _ = api.predict(model, x, x.shape, 50)
    assert status == 0, api.error(model)
    api.f("destroy")(model)
    np.savez(tmp_path / "x.npz", x=x)
    r = dlc("predict", DIGITS, "--weights", q, "--data", tmp_path / "x.npz", "--output", tmp_path / "p.npz")
    assert r.returncode == 0 and note in r.stderr, r.stderr
    want = np.load(tmp_path / "p.npz")["probs"]
    assert y[:50].tobytes() == want.tobytes()
    float32 = DlcModel(str(DIGITS), backend="native").load_weights(q.parent / "weights.npz")
    assert want.tobytes() == float32.predict({"x": x})["probs"].tobytes()
    r = dlc("eval", DIGITS, "--weights", q)
    assert r.returncode == 0 and note in r.stderr, r.stderr
    r = dlc("eval", DIGITS, "--weights", q, "--int8")
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
