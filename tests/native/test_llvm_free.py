"""Lowering never loads LLVM (docs/native.md): importing the lowering and lowering the train
step, the evaluation graph and the prediction of every example, in f32 and bf16, leaves
llvmlite unimported; code generation alone imports it (compiler/native/kernels/*/loops.py)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LOWER_EVERY_EXAMPLE = """
import glob, sys
from dlc.compiler.frontend.loader import load
from dlc.compiler.native.lower import lower
from dlc.compiler.native.update import lower_update
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.compiler.ir.update import update_graph
from dlc.compiler.ir import ops
lowered = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.dl")):
    program = load(path)
    for name in program.models:
        train, ev = program.build(name, training=True), program.build(name, training=False)
        graphs = [ev.graph] + ([train_step(train.graph)] if "loss" in train.graph.outputs else [])
        for graph in graphs:
            for precision in ("f32", "bf16"):
                lower(optimize(graph), precision)
                lowered += 1
sgd = lambda u: (ops.fma(u.grad, -u.scalar("lr"), u.param), {})
lower_update(update_graph(sgd, (), 100, 0.0, 0.0, None, False, "f32"))
assert "llvmlite" not in sys.modules, "lowering loaded LLVM"
print(lowered)
"""


def test_lowering_every_example_never_imports_llvmlite():
    out = subprocess.run([sys.executable, "-c", LOWER_EVERY_EXAMPLE, str(EXAMPLES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 2 * len(list(EXAMPLES.glob("*.dl")))  # every example lowered, twice at least


def test_code_generation_does_import_llvmlite():
    """The guard above can fail: building the module of a lowered graph imports llvmlite."""
    code = (
        "import sys; from dlc.compiler.frontend.loader import load_text; from dlc.compiler.native.lower import lower; "
        "m = load_text('model m {\\n input x: f32[B, 4]\\n output y = exp(x) * 2\\n}', 'm.dl').build(training=False); "
        "p = lower(m.graph); assert 'llvmlite' not in sys.modules; "
        "from dlc.compiler.native.codegen.driver import build_module; build_module(p); assert 'llvmlite' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
