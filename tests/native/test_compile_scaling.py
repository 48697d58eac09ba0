"""Native compile time grows linearly with a model's depth: kernels are functions of their own
that the driver calls, kernels alike are compiled once (and those that differ only in their buffers
built once), the Python stages and the packing of the
arena are linear, a built module is freed with its last reference (one whose text was taken
without the cyclic collector), and
benchmarks/compile_scaling.py runs."""

import gc
import json
import re
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.graph import collector_paused
from dlc.compiler.native import memory
from dlc.compiler.native.codegen import driver, jit, parallel_compile
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call


# ---- native compile time: linear in the number of layers ----------------------------------------------
def mlp(layers: int) -> str:
    body = "\n".join(f"    h{i} = dense(h{i - 1}, 16, relu)" for i in range(1, layers))
    return (
        f"model deep {{\n    input x: f32[B, 16]\n    target y: i32[B]\n    h0 = x\n{body}\n"
        f"    loss sparse_cross_entropy(dense(h{layers - 1}, 4), y)\n}}\n"
    )


def _compiled(layers: int):
    program = lower(optimize(train_step(load_text(mlp(layers)).build(None, training=True).graph)))
    return program, jit.optimized_ir(build_module(program, "dlc_step").module)


def test_a_built_module_is_freed_with_its_last_reference():
    """The IR of a step (every kernel's instructions) dies with the module: nothing the code
    generator keeps per module (its alias scopes) holds it, so a process that compiles model
    after model (a notebook, the language server, the tests) does not grow with each."""
    program = lower(optimize(train_step(load_text(mlp(3)).build(None, training=True).graph)))
    module = weakref.ref(build_module(program, "dlc_step").module)
    gc.collect()
    assert module() is None


def test_a_taken_module_frees_its_code_without_the_collector():
    """parallel_compile.taken prints a module, then breaks its cycles (a loop's phi and the
    value it carries, a block and its terminator, a function and its arguments): its blocks
    and instructions go with its last reference, not at the collector's next pass."""
    program = lower(optimize(train_step(load_text(mlp(3)).build(None, training=True).graph)))
    module = build_module(program, "dlc_step").module
    code = [b for f in module.functions for b in f.blocks]
    code += [i for b in code for i in b.instructions if isinstance(i, ir.PhiInstr)]
    assert any(isinstance(c, ir.PhiInstr) for c in code)
    code = [weakref.ref(c) for c in code]
    with collector_paused():
        unit = parallel_compile.taken(module)
        del module
        assert not [c for c in code if c() is not None]
    assert " phi " in unit.text  # printed before it was dismantled


def test_kernels_are_not_inlined_into_the_driver():
    # inlined, every kernel of a model lands in one function that grows with the model,
    # and LLVM's O3 on it grows with the square of its size (300 dense layers: 89 s, not 8)
    program, text = _compiled(4)
    driver = text[text.index('@dlc_step(') :]
    driver = driver[: driver.index("\n}")]
    defined = set(re.findall(r'^define [^@]*@"?(kernel\d+)"?\(', text, re.M))
    called = re.findall(r'call [^@]*@"?(kernel\d+)"?\(', driver)
    assert len(called) == len(program.kernels) and set(called) == defined


def test_kernels_alike_are_compiled_once():
    # the middle layers of a deep MLP differ only in their buffers: one function each
    # for their forward and backward kernels, however deep the model
    functions = lambda text: len(re.findall(r'^define [^@]*@"?kernel\d+"?\(', text, re.M))
    (small, shallow), (large, deep) = _compiled(4), _compiled(12)
    assert len(large.kernels) > len(small.kernels) and functions(deep) == functions(shallow)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _built(program, monkeypatch, by_fields: bool):
    """build_module's module of `program` and how many kernel functions it built; by_fields
    False builds every kernel, kept once where its code is alike to the letter."""
    built = []

    class Counted(driver.KernelFunction):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    with monkeypatch.context() as m:
        m.setattr(driver, "KernelFunction", Counted)
        if not by_fields:
            m.setattr(driver, "canonical", lambda k, prog: (None, None))
        return driver.build_module(program, "dlc_step"), len(built)


@pytest.mark.parametrize("example", ["resnet.dl", "transformer_classifier.dl"])
def test_kernels_that_differ_in_their_buffers_are_built_once(example, monkeypatch):
    # a kernel whose fields are another's but for its buffers (a map, a sum, a GEMM, a convolution
    # or Winograd transform of a repeated layer) is not built again: the module is the one built
    # kernel by kernel, byte for byte, with the same argument slots (resnet: 138 kernels built of
    # 334; the transformer: 83 of 177)
    program = lower(optimize(train_step(load_text((EXAMPLES / example).read_text()).build(None, training=True).graph)))
    (fast, built), (slow, every) = _built(program, monkeypatch, True), _built(program, monkeypatch, False)
    assert every == len(program.kernels) and built < 0.5 * every, (built, every)
    assert str(fast.module) == str(slow.module)
    assert (fast.arguments, fast.functions) == (slow.arguments, slow.functions)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("example", ["resnet.dl", "inception_cnn.dl"])
def test_a_predictions_kernels_that_differ_in_their_buffers_are_built_once(example, precision, monkeypatch):
    # the same of a prediction whose weights are packed and transformed once (WeightTransformKernel,
    # PackKernel, GEMMs of packed filters), in float32 and bf16
    graph = load_text((EXAMPLES / example).read_text()).build(None, training=False).graph
    program = lower(optimize(graph), precision, pack_weights="once")
    (fast, built), (slow, every) = _built(program, monkeypatch, True), _built(program, monkeypatch, False)
    assert built < every, (built, every)
    assert str(fast.module) == str(slow.module)
    assert (fast.arguments, fast.functions) == (slow.arguments, slow.functions)


@pytest.mark.parametrize("optimizer", [Call("adam", [], {"lr": 1e-2}), Call("sgd", [], {"lr": 0.1})])
def test_a_deep_model_of_shared_kernels_trains_as_the_reference(optimizer):
    from dlc.runtime.engines.reference import ReferenceEngine
    from dlc.runtime.training.gradcheck import init_params, sample_inputs

    model = load_text(mlp(8))
    train, evaluation = model.build(None, training=True), model.build(None, training=False)
    names = [p.name for p in train.params]
    results = []
    for engine_class in (ReferenceEngine, NativeEngine):
        opt = make_optimizer(optimizer)
        engine = engine_class(train, evaluation, opt, names)
        params = {k: v.astype(np.float32) for k, v in init_params(train, seed=3).items()}
        state = opt.init(dict(params))
        for step in (1, 2, 3):
            feeds = sample_inputs(train, {"B": 5}, seed=step)
            feeds["x"] = feeds["x"].astype(np.float32)
            engine.train_step(params, state, feeds, 0.01, step, np.array([0, step], np.int32))
        results.append(params)
    for name in names:
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-4, atol=1e-6, err_msg=name)


def _front_and_middle_seconds(layers: int) -> float:
    """CPU seconds of the Python stages before codegen: autodiff, graph passes, lowering,
    liveness and the arena plan (the front end parses the source before the clock starts).
    Without the cycle collector, whose full collections walk the whole heap however the
    compiler's own work grows. The best of three: beside another test worker the small
    model's 0.08 s can come out at half its speed (the ratio 15.5 once in a CI run)."""
    model = load_text(mlp(layers)).build(None, training=True)
    best = float("inf")
    for _ in range(3):
        gc.collect()
        gc.disable()
        try:
            start = time.thread_time()
            program = lower(optimize(train_step(model.graph)))
            memory.plan(program, {s: 32 for s in program.symbols})
            best = min(best, time.thread_time() - start)
        finally:
            gc.enable()
    return best


def test_the_python_compile_stages_grow_linearly_with_depth():
    small, large = _front_and_middle_seconds(40), _front_and_middle_seconds(320)
    # 8x the layers: 9x here; with a union of ancestors per output (prune, backward), 25x
    assert large / small < 15, (small, large)


def test_packing_time_grows_linearly_with_the_buffers_live_at_once():
    # every buffer live at once (as every activation of a deep model is at its loss)
    def seconds(n: int) -> float:
        live = {b: (0, 1) for b in range(n)}
        nbytes = {b: 256 + 64 * (b % 7) for b in range(n)}
        start = time.thread_time()
        memory.pack(nbytes, live)
        return time.thread_time() - start

    # the calling thread's CPU time: a background compile of an earlier test's program, in
    # another thread of the process, counted in the process's (one run: 141x)
    small, large = min(seconds(300) for _ in range(3)), min(seconds(3000) for _ in range(2))
    # 10x the buffers: 23x here (numpy's comparisons with every placed one show at 3000);
    # one Python comparison per placed buffer: 96x
    assert large / small < 50, (small, large)


def test_the_compile_scaling_benchmark_runs():
    # it drives the compiler's stages one by one, so it breaks when an interface moves; in the
    # session's compile cache, which holds the GEMM routines it compiles first (not timed)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "compile_scaling.py"
    out = subprocess.run([sys.executable, str(script), "--one", "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["kernels"] > 0
