"""Compiling one module on every core (compiler/native/codegen/parallel_compile.py): the parts of a
split module hold each of its functions once, link, and train to the same bits as the
whole module compiled in one process."""

from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.frontend.loader import load
from dlc.compiler.native.codegen import jit, parallel_compile
from dlc.runtime.engines.native import NativeEngine
from dlc.compiler.frontend.settings import Call

from helpers.engine_parity import five_steps

EXAMPLES = Path(__file__).parents[2] / "examples"


def step_module(tmp_path, monkeypatch, name: str) -> ir.Module:
    """The train step's LLVM module of an example, as the native engine builds it."""
    built = []
    module_text = parallel_compile.module_text
    monkeypatch.setattr(parallel_compile, "module_text", lambda module: built.append(module) or module_text(module))
    monkeypatch.setattr(parallel_compile, "dismantle", lambda module: None)  # kept whole for the test
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    five_steps(load(str(EXAMPLES / name)), NativeEngine, Call("sgd", [], {"lr": 0.1}), {"B": 2, "T": 3})
    return next(m for m in built if any(f.name == "dlc_step" for f in m.functions))


def defined(text: str) -> list:
    return sorted(f.name for f in jit.parse(text).functions if not f.is_declaration)


@pytest.mark.parametrize("name", ["digits_cnn.dl", "char_lstm.dl"])
def test_the_text_is_the_modules(tmp_path, monkeypatch, name):
    # most of it the text its kernels were compared by as the module was built (a scan's
    # body in char_lstm), taken again, not printed again
    module = step_module(tmp_path, monkeypatch, name)
    kept = parallel_compile._printed_before[module]
    assert sum(map(len, kept.values())) > len(str(module)) / 2
    assert parallel_compile.module_text(module).text == str(module)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_each_function_is_defined_in_one_part(tmp_path, monkeypatch, parts):
    module = step_module(tmp_path, monkeypatch, "char_lstm.dl")
    text = parallel_compile.module_text(module).text
    split = parallel_compile.split(module, parallel_compile.printed(module), parts)
    assert len(split) == parts
    every = [name for part in split for name in defined(part)]  # jit.parse verifies each part
    assert sorted(every) == defined(text)
    # a kernel's helpers (its .part and .worker) stay with it; the step and its table in one part
    home = {name: i for i, part in enumerate(split) for name in defined(part)}
    for name in home:
        assert home[name] == home[name.split(".")[0]], name
    assert "dlc_step" in home


def trained(tmp_path, monkeypatch, name: str, jobs: str) -> tuple:
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / f"cache-{jobs}"))
    monkeypatch.setenv("DLC_COMPILE_JOBS", jobs)
    monkeypatch.setattr(parallel_compile, "MIN_SPLIT_CHARS", 0)
    compiled, here = [], []  # the objects of each module; the parts compiled in this process
    compile_objects, compile_here = parallel_compile.compile_objects, parallel_compile._compile
    monkeypatch.setattr(
        parallel_compile, "compile_objects", lambda *a: compiled.append(compile_objects(*a)) or compiled[-1]
    )
    monkeypatch.setattr(parallel_compile, "_compile", lambda *a: here.append(1) or compile_here(*a))
    params, losses, _, _ = five_steps(
        load(str(EXAMPLES / name)), NativeEngine, Call("adam", [], {"lr": 1e-3}), {"B": 2, "T": 3}
    )
    return params, losses, [len(objects) for objects in compiled], len(here)


@pytest.mark.parametrize("name", ["digits_cnn.dl", "char_lstm.dl"])
def test_a_split_module_trains_to_the_same_bits(tmp_path, monkeypatch, name):
    whole, whole_losses, counts, _ = trained(tmp_path, monkeypatch, name, "1")
    assert set(counts) == {1}
    split, split_losses, counts, here = trained(tmp_path, monkeypatch, name, "3")
    assert max(counts) == 3, "no module was compiled in three parts"
    assert here == len(counts), "a part meant for a child process was compiled here"
    assert split_losses == whole_losses
    for k in whole:
        np.testing.assert_array_equal(split[k], whole[k], err_msg=k)


def test_a_part_whose_child_fails_is_compiled_here(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.executable", "/bin/false")
    whole, whole_losses, _, _ = trained(tmp_path, monkeypatch, "digits_cnn.dl", "1")
    split, split_losses, counts, here = trained(tmp_path, monkeypatch, "digits_cnn.dl", "2")
    assert max(counts) == 2 and here == sum(counts)
    assert split_losses == whole_losses


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_job_count_is_refused(monkeypatch, value):
    from dlc.compiler.errors import DlcError

    monkeypatch.setenv("DLC_COMPILE_JOBS", value)
    with pytest.raises(DlcError, match="DLC_COMPILE_JOBS"):
        parallel_compile.jobs()
