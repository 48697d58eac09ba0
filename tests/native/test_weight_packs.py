"""A prediction's weights packed once (kernels/gemm: WeightPacksKernel, docs/native.md):
a change of layout only — the same bits as the program that packs B inside every GEMM,
in float32 and bfloat16, packed as the JIT packs a plain dict's ("each call": products of
one row read B) and as a built library and the JIT's Parameters are packed ("once": they
stream the packed panels too), at batches of one and more; and a prediction after a weight
changed is that of the new weight."""

from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.compiler.native import PACK_WEIGHTS
from dlc.runtime.engines.native import NO_KEY, Executable
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.training.trainer import initial_parameters
from helpers.c_api import inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def predictions(exe: Executable, feeds: dict, params: dict, weights: int | None = None) -> bytes:
    """The outputs' bytes; `weights`: the version of `params` (`Executable.run`)."""
    arrays, sizes = exe.run(feeds, exe.given(params), weights=weights)
    return b"".join(exe.output(name, arrays, sizes).tobytes() for name in sorted(exe.program.outputs))


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("model", ["char_lstm", "transformer_classifier"])
def test_weights_packed_once_change_no_bit(model, precision, mode):
    eval_model = load(EXAMPLES / f"{model}.dl").build(None, training=False)
    params = initial_parameters(eval_model, 3)
    packing, plain = (
        Executable(predict_graph(eval_model), precision=precision, pack_weights=pack) for pack in (mode, None)
    )
    assert packing.program.weights_ready is not None and plain.program.weights_ready is None
    feeds = lambda batch: {eval_model.inputs[0].name: inputs(model, batch, seed=batch), "rng": NO_KEY}
    for batch in (1, 5, 1):
        assert predictions(packing, feeds(batch), params) == predictions(plain, feeds(batch), params), batch
    before = predictions(packing, feeds(5), params)
    name = next(n for n in params if n.endswith(("Wx", "Wq")))
    params[name][...] = np.random.default_rng(0).normal(0, 0.5, params[name].shape)  # in place
    after = predictions(packing, feeds(5), params)
    assert after == predictions(plain, feeds(5), params) and after != before


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
@pytest.mark.parametrize("model", ["alexnet_cnn", "resnet", "inception_cnn", "digits_cnn"])
def test_each_weight_flag_guards_a_copy(model, mode):
    """A flag is made only for a copy of weights that a kernel makes while it is clear:
    a pack of the WeightPacksKernel, or a copy of weights in another form (a Winograd
    convolution's transformed filters, a convolution's filters by channels)."""
    program = Executable(
        predict_graph(load(EXAMPLES / f"{model}.dl").build(None, training=False)), pack_weights=mode
    ).program
    guarded = [flag for k in program.kernels if type(k).__name__ == "WeightPacksKernel" for flag in k.flags]
    guarded += [k.ready[1] for k in program.kernels if type(k).__name__ == "WeightTransformKernel" and k.ready]
    assert sorted(guarded) == list(range(program.buffers[program.weights_ready].size))


FILTERS = Path(__file__).resolve().parents[1] / "deploy" / "filters.dl"


def test_a_models_weights_are_packed_once_per_change_and_never_stale(tmp_path):
    """DlcModel.predict packs its weights once while they are unchanged (the Parameters'
    version, runtime/engines/parameters.py): a later call reads the packs the first made.
    After a change by each public path (an assignment, a new dict, a checkpoint loaded, a
    run of training) it predicts what a fresh engine given the same weights as a plain dict
    (which packs at every call) predicts, bit for bit; a write in place is refused."""
    from dlc.runtime.api import DlcModel
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.interop import checkpoint

    source = tmp_path / "filters.dl"
    source.write_text(FILTERS.read_text())
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "filters.npz", x=rng.standard_normal((4, 32, 9, 11)).astype(np.float32), y=np.arange(4) % 4)
    model = DlcModel(source, backend="native")
    model.params = initial_parameters(model.eval_model, 5)
    xs = [rng.standard_normal((batch, 32, 9, 11)).astype(np.float32) for batch in (1, 3)]

    def same_as_fresh_engine() -> bytes:
        fresh = NativeEngine(model.train_model, model.eval_model)
        got = b""
        for x in xs:
            want = fresh.predict(dict(model.params), {"x": x})["logits"]
            assert model.predict({"x": x})["logits"].tobytes() == want.tobytes(), len(x)
            got += want.tobytes()
        return got

    first = same_as_fresh_engine()
    exe = model.engine.predict_exe
    packs = [b.id for b in exe.program.buffers if b.role == "packed" and b.id != exe.program.weights_ready]
    assert len(packs) >= 4  # Winograd's filters, the two other convolutions' (as A), the dense layer's (as B)
    assert exe.packed_at == model.params.version and all(exe.packed[exe.program.weights_ready])
    for bid in packs:  # the packs spoiled: the next call of the same version reads them, packing nothing
        exe.packed[bid][:] = 0
    assert model.predict({"x": xs[1]})["logits"].tobytes() != first[-12 * 4 :]
    model.params = dict(model.params)  # a new version, the same values: packed again
    assert same_as_fresh_engine() == first

    name = "h.W"
    with pytest.raises(ValueError, match="read-only"):
        model.params[name][...] = 0
    model.params[name] = rng.normal(0, 0.2, model.params[name].shape).astype(np.float32)
    assigned = same_as_fresh_engine()
    assert assigned != first
    model.params = {**model.params, "p.W": np.zeros_like(model.params["p.W"])}
    assert same_as_fresh_engine() not in (first, assigned)
    checkpoint.save(tmp_path / "first.npz", initial_parameters(model.eval_model, 5), {}, {})
    model.load_weights(tmp_path / "first.npz")
    assert same_as_fresh_engine() == first
    model.train(out=tmp_path / "run", epochs=1, progress="none")
    assert same_as_fresh_engine() != first


def test_an_engines_step_writes_only_weights_it_may(tmp_path):
    """A train step writes its weights in place: an engine refuses a model's read-only
    Parameters there, and given a plain dict it predicts from the weights the step wrote
    (packed again at every call)."""
    from dlc.compiler.errors import DlcError
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.engines.parameters import Parameters
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.compiler.frontend.settings import Call

    program = load(FILTERS)
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    opt = make_optimizer(Call("sgd", [], {"lr": 0.1}))
    engine = NativeEngine(train, evaluation, opt, [p.name for p in train.params if p.trainable])
    params = initial_parameters(train, 5)
    x = np.random.default_rng(1).standard_normal((2, 32, 9, 11)).astype(np.float32)
    batch = {"x": x, "y": np.arange(2, dtype=np.int32)}
    key = np.zeros(2, np.int32)
    with pytest.raises(DlcError, match="read-only Parameters"):
        engine.train_step(Parameters(params), opt.init(params), batch, 0.1, 1, key)
    before = engine.predict(params, {"x": x})["logits"]
    engine.train_step(params, opt.init({n: params[n] for n in engine.trainable}), batch, 0.1, 1, key)
    after = engine.predict(params, {"x": x})["logits"]
    fresh = NativeEngine(train, evaluation).predict({k: v.copy() for k, v in params.items()}, {"x": x})["logits"]
    assert after.tobytes() == fresh.tobytes() and after.tobytes() != before.tobytes()


SMALL_PLANES = """
model small {
    input  x: f32[B, 32, 3, 3]
    s = conv2d(x, 24, 3, stride = 2, padding = 1, act = relu)
    p = conv2d(s, 40, 1)
    output logits = dense(global_avg_pool(p), 4)
}
"""


def test_filters_kept_packed_give_the_bits_of_filters_unpacked_in_few_columns_and_more(tmp_path):
    """A convolution whose filters a prediction keeps packed as its GEMM's A, in a call of at
    most FEW_COLUMNS columns (2 x 2 pixels at batch 1: the few-columns path on A's panels) and
    of more (batch 5: the tiles'): the bits of the program that packs nothing, at either, and
    after the filters change."""
    from dlc.compiler.native.kernels.gemm import GemmKernel

    source = tmp_path / "small.dl"
    source.write_text(SMALL_PLANES)
    eval_model = load(source).build(None, training=False)
    params = initial_parameters(eval_model, 3)
    once, plain = (Executable(predict_graph(eval_model), pack_weights=pack) for pack in ("once", None))
    kept = [k for k in once.program.kernels if isinstance(k, GemmKernel) and k.packed_a]
    assert len(kept) == 2 and all(k.ready is not None for k in kept)
    feeds = lambda batch: {"x": np.random.default_rng(batch).standard_normal((batch, 32, 3, 3)).astype(np.float32)}
    for batch in (1, 5, 1):
        assert predictions(once, feeds(batch) | {"rng": NO_KEY}, params) == predictions(
            plain, feeds(batch) | {"rng": NO_KEY}, params
        ), batch
    params["s.W"] = np.random.default_rng(9).normal(0, 0.3, params["s.W"].shape).astype(np.float32)
    for batch in (1, 5):
        assert predictions(once, feeds(batch) | {"rng": NO_KEY}, params) == predictions(
            plain, feeds(batch) | {"rng": NO_KEY}, params
        ), batch


MANY_PLANES = SMALL_PLANES.replace("conv2d(x, 24, 3", "conv2d(x, 64, 3").replace("conv2d(s, 40, 1)", "conv2d(s, 72, 1)")


def test_bf16_filters_are_rounded_and_packed_once_with_the_bits_of_packing_at_every_call(tmp_path):
    """A bf16 prediction keeps its convolutions' filters (GEMMs of at least 64 filters: the
    3 x 3 one through im2col, the pointwise one) packed as their GEMMs' A, rounded as the
    bf16 routines round them, and reads the packs while the weights' version stays: at most
    FEW_COLUMNS columns (batch 1) and more (batch 5), the bits of the program that packs
    nothing, and after the filters change (a new version)."""
    from dlc.compiler.native.kernels.gemm import GemmKernel, PackKernel

    source = tmp_path / "many.dl"
    source.write_text(MANY_PLANES)
    eval_model = load(source).build(None, training=False)
    params = initial_parameters(eval_model, 3)
    once, plain = (
        Executable(predict_graph(eval_model), precision="bf16", pack_weights=pack) for pack in ("once", None)
    )
    kept = [k for k in once.program.kernels if isinstance(k, GemmKernel) and k.packed_a]
    assert len(kept) == 2 and all(k.bf16 and k.ready is not None for k in kept)
    packs = [p for p in once.program.kernels[0].packs if isinstance(p, PackKernel) and p.which == "a"]
    assert len(packs) == 2 and all(p.bf16 for p in packs)
    feeds = lambda batch: {
        "x": np.random.default_rng(batch).standard_normal((batch, 32, 3, 3)).astype(np.float32),
        "rng": NO_KEY,
    }

    def kept_between_calls(batch, version):  # packed at the version's first call, read after
        return predictions(once, feeds(batch), params, version)

    for batch in (1, 5, 1):
        assert kept_between_calls(batch, 1) == predictions(plain, feeds(batch), params), batch
    before = kept_between_calls(1, 1)
    params["s.W"] = np.random.default_rng(9).normal(0, 0.3, params["s.W"].shape).astype(np.float32)
    for batch in (1, 5):
        assert kept_between_calls(batch, 2) == predictions(plain, feeds(batch), params), batch
    assert kept_between_calls(1, 2) != before
