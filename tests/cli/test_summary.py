"""`dlc summary`: one table of the layers, nested as the program's calls are, with their types,
output shapes, parameters and FLOPs, and the totals."""

import re
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load, load_text
from dlc.compiler.frontend.summary import count_text, size_text
from dlc.compiler.ir.dims import Dim, subs
from dlc.runtime.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def summary_of(capsys, *argv) -> str:
    assert main(["summary", *map(str, argv)]) == 0
    return capsys.readouterr().out


def rows(text: str) -> dict:
    """The table's rows by layer name: (indent, the other columns as printed, split at 2+ spaces)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    out = {}
    for line in lines[rules[1] + 1 : rules[2]]:
        name = line.split()[0]
        out[name] = (len(line) - len(line.lstrip()), re.split(r"\s{2,}", line.strip())[1:])
    return out


def count(text: str) -> int:
    return int(text.replace(",", ""))


def total(text: str, what: str = "Total") -> int:
    return count(text.split(f"{what} parameters:")[1].split()[0])


def test_resnet_at_depth_2_fits_a_screen_and_its_totals_are_the_parameter_count(capsys):
    text = summary_of(capsys, EXAMPLES / "resnet.dl", "--depth", "2")
    assert len(text.splitlines()) <= 40
    model = load(EXAMPLES / "resnet.dl").build(None, training=True)
    params = sum(int(np.prod(p.type.shape)) for p in model.params)
    assert total(text) == params == 176_378
    assert f"({params * 4 / 1024:.1f} KiB)" in text
    table = rows(text)
    assert sum(count(cols[2]) for indent, cols in table.values() if indent == 0 and len(cols) == 4) == params
    # the layers are the calls: a residual block's parameters are its convolutions' and batchnorms'
    assert table["stage1"][1][:3] == ["residual_block", "f32[B, 16, 32, 32]", "9,472"]
    assert table["stage1.0"][0] == 2 and table["stage1.0"][1][0] == "residual_block"
    assert count(table["stage1.0"][1][2]) + count(table["stage1.1"][1][2]) == 9_472
    assert table["stem"][1][0] == "conv2d, batchnorm, relu"
    assert table["stem.1"][1][0] == "batchnorm" and "stage1.0.conv1" not in table
    assert table["stage3"][1][1] == "f32[B, 64, 8, 8]"


def test_every_parameter_is_a_row_under_its_layer_with_its_type_and_trainability(capsys):
    table = rows(summary_of(capsys, EXAMPLES / "resnet.dl"))
    assert table["stage2.0.conv1.W"] == (6, ["param", "f32[32, 16, 3, 3]", "4,608"])
    assert table["stage2.0.bn1.running_var"][1][0] == "state"
    table = rows(summary_of(capsys, EXAMPLES / "lenet5.dl", "--freeze", "c1"))
    assert table["c1.W"][1][0] == "frozen" and table["c3.W"][1][0] == "param"


def test_flops_are_counted_at_the_train_blocks_batch_or_the_one_given(capsys):
    model = load(EXAMPLES / "lenet5.dl").build(None, training=True)
    polynomial = model.graph.flops()
    assert isinstance(polynomial, Dim) and polynomial.symbols() == {"B"}
    text = summary_of(capsys, EXAMPLES / "lenet5.dl")  # train lenet5 { batch = 64 }
    assert f"Forward FLOPs:            {subs(polynomial, {'B': 64}):,} at B = 64" in text
    text = summary_of(capsys, EXAMPLES / "lenet5.dl", "--batch", "8")
    assert f"{subs(polynomial, {'B': 8}):,} at B = 8" in text
    # per layer, at that batch: the layers' FLOPs add up to the model's
    table = rows(text)
    assert sum(count(cols[-1]) for indent, cols in table.values() if indent == 0 and len(cols) == 4) == subs(
        polynomial, {"B": 8}
    )
    assert table["c1"][1][:3] == ["conv2d", "f32[B, 6, 28, 28]", "156"]
    macs = 8 * 6 * 28 * 28 * 25  # a multiply and an add each; then the bias and the relu
    assert 2 * macs < count(table["c1"][1][3]) < 2.2 * macs


def test_without_a_train_block_flops_stay_a_polynomial(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text("model m {\n input x: f32[B, 4]\n h = dense(x, 3, relu)\n output y = h\n}\n")
    text = summary_of(capsys, path)
    assert re.search(r"Forward FLOPs: +[\d,]+·B$", text.strip()), text
    assert rows(text)["h"][1][:3] == ["dense", "f32[B, 3]", "15"]


def test_depth_folds_the_nested_layers(capsys):
    one = rows(summary_of(capsys, EXAMPLES / "resnet.dl", "--depth", "1"))
    assert set(one) == {"stem", "stage1", "stage2", "stage3", "logits", "loss", "accuracy", "probs"}
    with pytest.raises(SystemExit):
        main(["summary", str(EXAMPLES / "resnet.dl"), "--depth", "0"])
    assert "--depth: error: needs a whole number, at least 1; got '0'" in capsys.readouterr().err


def test_a_def_of_the_users_program_is_a_layer_with_its_name_as_type(capsys):
    program = load_text("""
def block(x, n: int) {
    return dense(dense(x, n, relu), n)
}
model m {
    input x: f32[B, 4]
    h = block(x, 8)
    output y = h
}
""")
    from dlc.compiler.frontend.summary import summary

    table = rows(summary(program.build(None, training=False)))
    assert table["h"][1][:3] == ["block", "f32[B, 8]", f"{4 * 8 + 8 + 8 * 8 + 8:,}"]
    assert table["h.0"][1][:3] == ["dense", "f32[B, 8]", "40"] and table["h.0"][0] == 2


# ---- the peak memory of training, before running ------------------------------------------------------
def sample_feeds(model, sizes: dict, rng) -> dict:
    feeds = {}
    for i in model.inputs:
        shape = tuple(subs(d, sizes) for d in i.type.shape)
        feeds[i.name] = (
            rng.integers(0, 2, shape).astype(np.int32)
            if i.type.dtype == "i32"
            else rng.standard_normal(shape).astype(np.float32)
        )
    return feeds


def with_remat(example: str, k: int):
    """An example whose train block checkpoints its recurrences: `remat = k`."""
    text = (EXAMPLES / f"{example}.dl").read_text()
    return load_text(re.sub(r"(\ntrain \w+ \{\n)", rf"\1    remat = {k}\n", text), f"{example}.dl")


@pytest.mark.parametrize(
    "example, run_sizes, remat",
    [
        ("mnist_mlp", {"B": 96}, None),
        ("resnet", {"B": 12}, None),
        ("char_lstm", {"B": 24, "T": 48}, None),
        ("char_lstm", {"B": 24, "T": 45}, 8),  # checkpointed, T not a multiple of k
        ("char_transformer", {"B": 12, "T": 40}, None),
    ],
)
def test_the_peak_memory_is_within_10_percent_of_a_real_native_run(example, run_sizes, remat):
    """The polynomial, its peak located with every dim 32, evaluated at other sizes, against what the native engine allocates to train at those sizes."""
    from dlc.runtime.engines import budget
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.compiler.frontend.settings import Call

    program = load(EXAMPLES / f"{example}.dl") if remat is None else with_remat(example, remat)
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    trainable = [p.name for p in train.params if p.trainable]
    optimizer = make_optimizer(Call("adam", [], {"lr": 1e-3}))
    parts = budget.training_memory(train, trainable, 2, {s: 32 for s in run_sizes})
    predicted = {name: subs(sum((p[name] for p in parts.values()), 0), run_sizes) for name in budget.PARTS}

    engine = NativeEngine(train, evaluation, optimizer, trainable)
    params = {p.name: np.zeros(p.type.shape, np.float32) for p in train.params}
    engine.train_step(
        params,
        optimizer.init(params),
        sample_feeds(train, run_sizes, np.random.default_rng(0)),
        1e-3,
        1,
        np.array([0, 1], np.int32),
    )
    measured = engine.train_memory()
    for name in ("parameters", "gradients", "optimizer state"):
        assert predicted[name] == measured[name]
    assert abs(sum(predicted.values()) - sum(measured.values())) <= 0.1 * sum(measured.values()), (predicted, measured)
    # the activations are the arena's lower bound and the buffers outside it: never above what is allocated
    assert predicted["activations"] <= measured["activations"]


def test_summary_memory_gives_the_peak_by_layer_and_in_total(capsys):
    from dlc.runtime.engines import budget

    text = summary_of(capsys, EXAMPLES / "char_transformer.dl", "--memory", "--depth", "1", "--dim", "T=128")
    model = load(EXAMPLES / "char_transformer.dl").build(None, training=True)
    parts = budget.training_memory(model, [p.name for p in model.params], 2, {"B": 32, "T": 128})  # adamw, batch 32
    whole = sum(sum((p[name] for p in parts.values()), 0) for name in budget.PARTS)
    assert whole.symbols() == {"B", "T"} and ("B", "T", "T") in whole.terms  # attention keeps B·T·T
    assert (
        f"Peak:             {count_text(whole)} bytes: {size_text(subs(whole, {'B': 32, 'T': 128}))} "
        f"at B = 32, T = 128" in text
    )
    assert "Optimizer state:  6.4 MiB (adamw: 2 values per trained parameter)" in text
    table = rows(text)
    assert list(table)[:3] == ["chars", "x0", "h"] and "h.0" not in table
    # the rows (and what lies in no layer) add up to the total
    shown = [cols[-1] for indent, cols in table.values()]
    assert abs(
        sum(float(v.split()[0]) * {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20}[v.split()[1]] for v in shown)
        - subs(whole, {"B": 32, "T": 128})
    ) < 0.002 * subs(whole, {"B": 32, "T": 128})


def test_summary_memory_at_a_batch_past_64_bit_bytes_gives_its_peak(capsys):
    # the peak's position is found in Python's integers: a batch of 10**20 rows needs more bytes than an int64 holds
    from dlc.runtime.engines import budget

    text = summary_of(capsys, EXAMPLES / "mnist_mlp.dl", "--memory", "--batch", str(10**20))
    model = load(EXAMPLES / "mnist_mlp.dl").build(None, training=True)
    parts = budget.training_memory(model, [p.name for p in model.params], 2, {"B": 10**20})
    whole = subs(sum(sum((p[name] for p in parts.values()), 0) for name in budget.PARTS), {"B": 10**20})
    assert whole > 2**63 and f"{size_text(whole)} at B = {10**20}" in text


def test_summary_memory_needs_a_model_that_trains(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text("model m {\n input x: f32[B, 4]\n output y = dense(x, 3)\n}\n")
    assert main(["summary", str(path), "--memory"]) == 1
    assert "has no loss, so it does not train" in capsys.readouterr().err
    assert main(["summary", str(EXAMPLES / "lenet5.dl"), "--memory", "--eval"]) == 1
    assert "--memory is the memory of training: leave out --eval" in capsys.readouterr().err


SHARDED = """model mlp {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = x |> dense(100, relu) |> dense(10)
    loss   sparse_cross_entropy(logits, y)
}
train mlp {
    data = digits(image = false)
    batch = 64
    optimizer = adam(lr = 1e-3)
    shard_optimizer = true
}
"""


def test_summary_memory_gives_each_ranks_share_of_the_optimizer_state(tmp_path, capsys):
    """--ranks K: the state a sharded run's rank holds is what the engine of its first rank
    (the largest share) allocates; without shard_optimizer, all of it; and only with --memory."""
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.optim.optimizers import make_optimizer

    path = tmp_path / "mlp.dl"
    path.write_text(SHARDED)
    model = load(str(path))
    train, ev = model.build(training=True), model.build(training=False)
    engine = NativeEngine(
        train,
        ev,
        make_optimizer(Call("adam", [], {"lr": 1e-3})),
        [p.name for p in train.params],
        split=True,
        shard=(0, 3),
    )
    held = sum(a.nbytes for a in engine.state.values())
    assert 0 < held < engine.n_trained * 8 / 2  # a third of Adam's 2 values a parameter, and a little
    text = summary_of(capsys, path, "--memory", "--ranks", "3")
    assert (
        f"Per rank:         {size_text(held)} of optimizer state on each of 3 (shard_optimizer = true: at most "
        f"{held // 8:,} of the {engine.n_trained:,}" in text
    )
    path.write_text(SHARDED.replace("    shard_optimizer = true\n", ""))
    assert "the whole optimizer state on each of 3 (shard_optimizer = false)" in summary_of(
        capsys, path, "--memory", "--ranks", "3"
    )
    assert main(["summary", str(path), "--ranks", "3"]) == 1
    assert "--ranks counts the optimizer state of each rank: use it with --memory" in capsys.readouterr().err
