"""Malformed and hostile files end in one clear error line (exit 1) naming the file and what is
wrong, never an internal error, a traceback or a Python exception: ONNX models that would fold
huge constants, declare impossible shapes, read data outside their folder or are a folder, and
checkpoints whose parameters hold text, on every command that reads them. Nested ONNX Scans
import."""

import re
from pathlib import Path

import numpy as np
import pytest

from dlc.runtime.cli import main

from helpers.programs import XOR, write

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T, helper as h, numpy_helper as nh  # noqa: E402

EXCEPTION = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|std::|bad_alloc")


def clear_error(argv, capsys) -> str:
    """The one-line message of a clear error for argv."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert "internal error" not in err and "Traceback" not in err and not EXCEPTION.search(err), err
    return err


def _save(path: Path, nodes, inits=(), inputs=None, outputs=None) -> Path:
    inputs = inputs or [h.make_tensor_value_info("x", T.FLOAT, [2])]
    outputs = outputs or [h.make_tensor_value_info("y", T.FLOAT, [2])]
    model = h.make_model(
        h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)), opset_imports=[h.make_opsetid("", 17)]
    )
    onnx.save(model, str(path))
    return path


def _summed(op_node, inits) -> list:
    """`op_node` (making c), then y = x + sum(c): the model reads all of c."""
    return [
        op_node,
        h.make_node("Cast", ["c"], ["cf"], to=T.FLOAT),
        h.make_node("ReduceSum", ["cf"], ["r"], keepdims=0),
        h.make_node("Add", ["x", "r"], ["y"]),
    ], inits


def _import(path: Path, tmp_path: Path) -> list:
    return ["import", str(path), "-o", str(tmp_path / "out.dl")]


# ---- import-time folding never computes a huge value -----------------------------------------------
def test_a_huge_constant_of_shape_stays_a_run_time_value(tmp_path, capsys):
    fill = nh.from_array(np.array([1.0], np.float32))
    path = _save(
        tmp_path / "m.onnx",
        *_summed(
            h.make_node("ConstantOfShape", ["s"], ["c"], value=fill),
            [nh.from_array(np.array([10**6, 10**6], np.int64), "s")],
        ),
    )
    assert main(_import(path, tmp_path)) == 0
    assert "full((1000000, 1000000), 1.0" in (tmp_path / "out.dl").read_text()


def test_a_huge_range_stays_a_run_time_value(tmp_path, capsys):
    bounds = [nh.from_array(np.array(v, np.int64), name) for name, v in (("a", 0), ("b", 10**12), ("d", 1))]
    path = _save(tmp_path / "m.onnx", *_summed(h.make_node("Range", ["a", "b", "d"], ["c"]), bounds))
    assert main(_import(path, tmp_path)) == 0
    assert "arange(1000000000000)" in (tmp_path / "out.dl").read_text()


@pytest.mark.parametrize("limit", ["product", "shape"])
def test_a_huge_range_whose_limit_other_nodes_compute_stays_a_run_time_value(tmp_path, capsys, limit):
    """The limit 10^12 made by a Mul of constants, or from the input's shape: neither ONNX's
    shape inference (with data propagation) nor the folding computes the range."""
    if limit == "product":
        nodes = [h.make_node("Mul", ["m", "n"], ["b"])]
        inits = [nh.from_array(np.array(10**6, np.int64), k) for k in ("m", "n")]
    else:  # x: f32[2], so the limit is 2 * 5 * 10^11
        nodes = [
            h.make_node("Shape", ["x"], ["s"]),
            h.make_node("ReduceSum", ["s", "axis"], ["two"], keepdims=0),
            h.make_node("Mul", ["two", "n"], ["b"]),
        ]
        inits = [nh.from_array(np.array([0], np.int64), "axis"), nh.from_array(np.array(5 * 10**11, np.int64), "n")]
    bounds = [nh.from_array(np.array(v, np.int64), name) for name, v in (("a", 0), ("d", 1))]
    range_nodes, inits = _summed(h.make_node("Range", ["a", "b", "d"], ["c"]), bounds + inits)
    path = _save(tmp_path / "m.onnx", nodes + range_nodes, inits)
    assert main(_import(path, tmp_path)) == 0, capsys.readouterr().err
    assert "arange(1000000000000)" in (tmp_path / "out.dl").read_text()


def test_a_range_too_large_to_fold_and_not_counted_is_refused(tmp_path, capsys):
    bounds = [nh.from_array(np.array(v, np.float32), name) for name, v in (("a", 0), ("b", 1e12), ("d", 0.5))]
    path = _save(tmp_path / "m.onnx", *_summed(h.make_node("Range", ["a", "b", "d"], ["c"]), bounds))
    err = clear_error(_import(path, tmp_path), capsys)
    assert "m.onnx" in err and "a range from 0.0 to " in err and " by 0.5: too many numbers" in err


def test_a_constant_of_shape_beyond_any_memory_says_the_shape_is_too_large(tmp_path, capsys):
    fill = nh.from_array(np.array([1.0], np.float32))
    path = _save(
        tmp_path / "m.onnx",
        *_summed(
            h.make_node("ConstantOfShape", ["s"], ["c"], value=fill),
            [nh.from_array(np.array([2**31] * 3, np.int64), "s")],
        ),
    )
    err = clear_error(_import(path, tmp_path), capsys)
    assert "m.onnx" in err and "[2147483648, 2147483648, 2147483648], too large for any machine's memory" in err


def test_an_input_beyond_any_memory_says_the_shape_is_too_large(tmp_path, capsys):
    big = [2**31] * 3
    path = _save(
        tmp_path / "m.onnx",
        [h.make_node("Relu", ["x"], ["y"])],
        inputs=[h.make_tensor_value_info("x", T.FLOAT, big)],
        outputs=[h.make_tensor_value_info("y", T.FLOAT, big)],
    )
    err = clear_error(_import(path, tmp_path), capsys)
    assert "the input 'x' has the shape [2147483648, 2147483648, 2147483648], too large" in err


# ---- files that are not what they claim ------------------------------------------------------------
def test_external_data_outside_the_model_folder_is_refused_as_such(tmp_path, capsys):
    (tmp_path / "secret.bin").write_bytes(np.ones(2, np.float32).tobytes())
    w = nh.from_array(np.ones(2, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = T.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    (tmp_path / "model").mkdir()
    path = _save(tmp_path / "model" / "m.onnx", [h.make_node("Add", ["x", "w"], ["y"])], [w])
    err = clear_error(_import(path, tmp_path), capsys)
    assert "m.onnx: the tensor 'w' keeps its data in '../secret.bin', outside the model's folder" in err
    assert "truncated" not in err


def test_external_data_inside_the_model_folder_is_read(tmp_path, capsys):
    w = nh.from_array(np.arange(2, dtype=np.float32), "w")
    model = h.make_model(
        h.make_graph(
            [h.make_node("Add", ["x", "w"], ["y"])],
            "g",
            [h.make_tensor_value_info("x", T.FLOAT, [2])],
            [h.make_tensor_value_info("y", T.FLOAT, [2])],
            initializer=[w],
        ),
        opset_imports=[h.make_opsetid("", 17)],
    )
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.bin", size_threshold=0)
    assert main(_import(tmp_path / "m.onnx", tmp_path)) == 0
    assert np.load(tmp_path / "out.npz")["param:w"].tolist() == [0.0, 1.0]


def test_a_directory_named_like_a_model_is_said_to_be_a_directory(tmp_path, capsys):
    (tmp_path / "model.onnx").mkdir()
    err = clear_error(_import(tmp_path / "model.onnx", tmp_path), capsys)
    assert f"{tmp_path / 'model.onnx'} is a directory" in err


# ---- nested Scans ------------------------------------------------------------------------------------
def test_a_scan_inside_a_scan_body_imports_and_computes(tmp_path, capsys):
    from onnx.reference import ReferenceEvaluator
    from dlc.runtime.interop.onnx_backend import DlcBackend

    def info(name, shape):
        return h.make_tensor_value_info(name, T.FLOAT, shape)

    inner = h.make_graph(
        [h.make_node("Add", ["t1", "e"], ["t1o"]), h.make_node("Mul", ["t1o", "e"], ["ye"])],
        "inner",
        [info("t1", [2]), info("e", [2])],
        [info("t1o", [2]), info("ye", [2])],
    )
    outer = h.make_graph(
        [h.make_node("Scan", ["s", "rows"], ["s2", "ys"], body=inner, num_scan_inputs=1)],
        "outer",
        [info("s", [2]), info("rows", [3, 2])],
        [info("s2", [2]), info("ys", [3, 2])],
    )
    path = _save(
        tmp_path / "m.onnx",
        [h.make_node("Scan", ["x", "X"], ["y", "all"], body=outer, num_scan_inputs=1)],
        inputs=[info("x", [2]), info("X", [4, 3, 2])],
        outputs=[info("y", [2]), info("all", [4, 3, 2])],
    )
    assert main(_import(path, tmp_path)) == 0
    model = onnx.load(str(path))
    x, xs = np.random.default_rng(0).random((2,), np.float32), np.random.default_rng(1).random((4, 3, 2), np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x, "X": xs})
    got = DlcBackend.prepare(model, engine="reference").run([x, xs])
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5)


# ---- checkpoints whose parameters are not numbers -----------------------------------------------------
@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    """A model file, and a checkpoint of it whose first parameter holds text."""
    tmp = tmp_path_factory.mktemp("hostile")
    path = write(tmp, XOR)
    assert main(["train", path, "--epochs", "1", "--out", str(tmp / "run"), "--backend", "reference"]) == 0
    arrays = dict(np.load(tmp / "run" / "last.npz"))
    first = next(k for k in arrays if k.startswith("param:"))
    arrays[first] = np.full(arrays[first].shape, "abc")
    np.savez(tmp / "text.npz", **arrays)
    return path, tmp / "text.npz", first.partition(":")[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{model}", "--resume", "{ckpt}", "--out", "{tmp}/r", "--backend", "reference"],
        ["train", "{model}", "--resume", "{ckpt}", "--out", "{tmp}/r", "--backend", "native"],
        ["train", "{model}", "--init-from", "{ckpt}", "--out", "{tmp}/r", "--epochs", "1"],
        ["eval", "{model}", "--weights", "{ckpt}", "--backend", "reference"],
    ],
    ids=["resume-reference", "resume-native", "init-from", "eval"],
)
def test_a_checkpoint_of_text_is_one_clear_error_everywhere(tmp_path, capsys, text_checkpoint, argv):
    model, ckpt, name = text_checkpoint
    err = clear_error([a.format(model=model, ckpt=ckpt, tmp=tmp_path) for a in argv], capsys)
    assert f"{ckpt} is not a readable checkpoint: {name} holds text values, not numbers" in err


def test_a_checkpoint_array_claiming_a_huge_shape_is_one_clear_error(tmp_path, capsys, text_checkpoint):
    """An .npy header that claims 2^36 entries with none behind it."""
    import zipfile

    model, _, name = text_checkpoint
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (68719476736,), }"
    header = header.ljust(117) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(16)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr(f"param:{name}.npy", raw)
    err = clear_error(["eval", model, "--weights", str(tmp_path / "huge.npz"), "--backend", "reference"], capsys)
    assert f"{tmp_path / 'huge.npz'} is not a readable checkpoint" in err


# ---- run-time work -----------------------------------------------------------------------------------
def test_a_huge_constant_summed_is_refused_by_the_work_budget_on_the_native_engine(tmp_path, capsys):
    """The native engine fuses sum(full((10⁶, 10⁶))) into no memory at all: the memory budget
    cannot see it, the work budget refuses its 10¹² additions at the sum's line."""
    fill = nh.from_array(np.array([1.0], np.float32))
    path = _save(
        tmp_path / "m.onnx",
        *_summed(
            h.make_node("ConstantOfShape", ["s"], ["c"], value=fill),
            [nh.from_array(np.array([10**6, 10**6], np.int64), "s")],
        ),
    )
    assert main(_import(path, tmp_path)) == 0
    np.savez(tmp_path / "in.npz", x=np.ones(2, np.float32))
    assert (
        main(
            [
                "predict",
                str(tmp_path / "out.dl"),
                "--weights",
                str(tmp_path / "out.npz"),
                "--backend",
                "native",
                "--data",
                str(tmp_path / "in.npz"),
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    first, line, caret = err.splitlines()  # the message, the source line, the caret under the sum
    assert re.match(r".*out\.dl:\d+:\d+: error: a forward pass would take about .* min", first), err
    assert "sum(" in line and "^" in caret and not EXCEPTION.search(err)
    assert "reduce_sum of f32[1000000, 1000000]" in err and "--no-budget" in err
