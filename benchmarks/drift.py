"""Float32 drift: dlc and PyTorch trained side by side with Adam, step by step.

Both start from the same parameters (dlc's initializers, copied into the torch modules
in torch.nn's layout by runtime/interop/torch_layout.py, through train_step.torch_state) and see the same batches (a fresh random batch at
every step); reported: the largest relative loss difference over the steps (and where),
and at the end each parameter tensor's relative difference (in norm, and the largest
entry's); over several seeds (--seeds N), how many stay within 1e-4. Switches isolate
the causes of a drift:

    --update fused       the native engine's own fused update (default)
    --update torch       the native engine's gradients, stepped by torch.optim.Adam
    --update float64     ... by runtime/optim/optimizers.py's Adam on float64 copies of the parameters
    --libm               exp and tanh as libm calls instead of the inline polynomials
    --grads              the gradients at the initial parameters: native and torch float32
                         against torch float64 (summation order and rounding, no training)
    --floor              torch against itself from parameters 1 ulp apart (the noise floor)

    python benchmarks/drift.py                         # mlp and lenet, 100 steps, batch 64
    python benchmarks/drift.py --only lenet --update torch
    python benchmarks/drift.py --engine reference --batch 8 --seeds 6

The models are benchmarks/workloads/{mlp,lenet}.dl and their torch twins in train_step.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import WORKLOAD_DIR, make_batch, rel, torch_model, torch_state  # noqa: E402

MODELS = ("mlp", "lenet")
UPDATES = ("fused", "torch", "float64")


def setup(name: str, seed: int = 0, batch: int = 64, steps: int = 100, fixed: bool = False):
    """(train model, eval model, initial float32 parameters, the batch of every step:
    a fresh one at each step, or with `fixed` one batch for all)."""
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.gradcheck import init_params

    prog = load(str(WORKLOAD_DIR / f"{name}.dl"))
    train, ev = prog.build(training=True), prog.build(training=False)
    init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(train, seed).items()}
    batches = [
        {k: v[:batch] for k, v in make_batch(name, seed * 100_003 + (0 if fixed else t)).items()} for t in range(steps)
    ]
    return train, ev, init, batches


def use_libm():
    """exp and tanh in native code as calls of expf / tanhf, not the inline polynomials."""
    from dlc.compiler.native.codegen import scalar

    scalar.exp = lambda kb, x: kb.call("expf", scalar.f32, [x])
    scalar.tanh = lambda kb, x: kb.call("tanhf", scalar.f32, [x])


def _optimizer(name: str, lr: float):
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer

    return make_optimizer(Call(name, [], {"lr": lr}))


def _native_grads(engine, params: dict) -> dict:
    """The gradients of the engine's last step (views of its flat gradient array)."""
    return {
        n: engine.grads[engine.offsets[n] : engine.offsets[n] + params[n].size].reshape(params[n].shape)
        for n in engine.trainable
    }


def train_dlc(
    name: str, init: dict, batches: list, lr: float = 1e-3, engine: str = "native", update: str = "fused", models=None
) -> tuple:
    """Adam on dlc: (loss per step, final parameters). With update != "fused" the engine
    runs a zero-rate SGD step (p - 0·g leaves p as it is) and the Adam step is applied
    to its gradients outside: by torch.optim.Adam, or by runtime/optim/optimizers.py's in float64 (the
    reference engine's `update`)."""
    from dlc.runtime.engines.backends import make_engine

    train, ev = models or setup(name, steps=0)[:2]
    trainable = [p.name for p in train.params if p.trainable]
    adam = _optimizer("adam", lr)
    eng = make_engine(engine, train, ev, adam if update == "fused" else _optimizer("sgd", 1.0), trainable)
    if update != "fused" and eng.name != "native":
        raise SystemExit("--update needs the native engine (the gradients come from its flat array)")
    params = {k: v.copy() for k, v in init.items()}
    state = eng.optimizer.init({n: params[n] for n in trainable})
    losses, outside = [], None
    for t, batch in enumerate(batches, 1):
        out = eng.train_step(params, state, batch, lr if update == "fused" else 0.0, t, np.array([0, t], np.int32))
        losses.append(out["loss"])
        if update != "fused":
            # made after the first step: params then holds views of the engine's flat array
            outside = outside or _outside_update(update, adam, params, lr)
            outside(t, _native_grads(eng, params))
    return losses, params


def _outside_update(update: str, adam, params: dict, lr: float):
    """step(t, grads) applying Adam to `params` in place."""
    if update == "torch":
        import torch

        tensors = {n: torch.from_numpy(params[n]) for n in params}  # sharing the engine's arrays
        opt = torch.optim.Adam(tensors.values(), lr=lr)

        def step(t, grads):
            for n, g in grads.items():
                tensors[n].grad = torch.from_numpy(g.copy())
            opt.step()

        return step
    from dlc.runtime.engines import reference

    master = {n: p.astype(np.float64) for n, p in params.items()}
    state = adam.init(master)

    def step(t, grads):
        reference.update(adam, master, {n: g.astype(np.float64) for n, g in grads.items()}, state, lr, t)
        for n, p in master.items():
            params[n][...] = p

    return step


def train_torch(name: str, init: dict, batches: list, lr: float = 1e-3) -> tuple:
    """Adam in PyTorch: (loss per step, final state dict as numpy, torch layout)."""
    import torch

    model = _torch_model(name, init, torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        loss = _torch_loss(model, batch, torch.float32)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_model(name: str, init: dict, dtype):
    import torch

    model = torch_model(name, torch)
    model.load_state_dict({k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in torch_state(name, init).items()})
    return model.to(dtype)


def _torch_loss(model, batch: dict, dtype):
    import torch

    x = {k: torch.from_numpy(v).to(dtype) for k, v in batch.items() if k != "y"}
    return torch.nn.functional.cross_entropy(model(x), torch.from_numpy(batch["y"].astype(np.int64)))


def dlc_run(name, init, batches, lr, engine="native", update="fused", models=None) -> tuple:
    """train_dlc with the parameters in torch's layout, for compare()."""
    losses, params = train_dlc(name, init, batches, lr, engine, update, models)
    return losses, torch_state(name, params)


def compare(a: tuple, b: tuple) -> dict:
    """Two runs' (losses, parameters in torch layout): the largest relative loss
    difference and its step (from 1), and per tensor the relative difference in norm
    and the largest entry's relative difference."""
    diffs = [rel(x, y) for x, y in zip(a[0], b[0])]
    worst = int(np.argmax(diffs))
    params = {}
    for k, pa in a[1].items():
        pb = b[1][k]
        d = np.abs(pa.astype(np.float64) - pb)
        entry = d / np.maximum(np.maximum(np.abs(pa), np.abs(pb)), 1e-30)
        params[k] = (float(np.linalg.norm(d) / max(np.linalg.norm(pb), 1e-30)), float(entry.max()))
    return {"loss": diffs[worst], "step": worst + 1, "losses": diffs, "params": params}


def gradient_errors(name: str, init: dict, batch: dict, models=None) -> dict:
    """Per parameter, the relative error (in norm) of the native and torch float32
    gradients at `init` against torch's float64 gradient."""
    import torch
    from dlc.runtime.engines.backends import make_engine

    grads = {}
    for dtype in (torch.float32, torch.float64):
        model = _torch_model(name, init, dtype)
        _torch_loss(model, batch, dtype).backward()
        grads[dtype] = {k: p.grad.numpy().astype(np.float64) for k, p in model.named_parameters()}
    train, ev = models or setup(name, steps=0)[:2]
    eng = make_engine("native", train, ev, _optimizer("sgd", 1.0), [p.name for p in train.params if p.trainable])
    params = {k: v.copy() for k, v in init.items()}
    eng.train_step(params, {}, batch, 0.0, 1, np.array([0, 1], np.int32))
    native = torch_state(name, _native_grads(eng, params))
    exact = grads[torch.float64]
    err = lambda g, k: float(np.linalg.norm(g[k] - exact[k]) / np.linalg.norm(exact[k]))
    return {k: (err(native, k), err(grads[torch.float32], k)) for k in exact}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=MODELS, action="append", help="one model (repeatable)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64, help="examples per batch (at most 128 for mlp, 64 for lenet)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="parameters and batches (the first seed)")
    ap.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed + 1, ... and summarize")
    ap.add_argument("--fixed", action="store_true", help="one batch for every step (Adam overfits it)")
    ap.add_argument("--engine", choices=("native", "reference"), default="native")
    ap.add_argument("--update", choices=UPDATES, default="fused", help="who applies Adam to dlc's gradients")
    ap.add_argument("--libm", action="store_true", help="exp and tanh by libm calls in native code")
    ap.add_argument("--grads", action="store_true", help="gradient errors against float64 instead of training")
    ap.add_argument("--floor", action="store_true", help="torch against torch from parameters 1 ulp apart")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.libm:
        use_libm()
    label = (
        "torch from 1 ulp"
        if args.floor
        else f"dlc {args.engine}, update {args.update}" + (", libm" if args.libm else "")
    )
    for name in args.only or MODELS:
        worst = []
        for seed in range(args.seed, args.seed + args.seeds):
            train, ev, init, batches = setup(name, seed, args.batch, args.steps, args.fixed)
            if args.grads:
                print(f"{name}, seed {seed}: gradient relative error vs torch float64 (native f32, torch f32)")
                for k, (n, t) in gradient_errors(name, init, batches[0], (train, ev)).items():
                    print(f"  {k:<16} {n:.1e}  {t:.1e}")
                continue
            ref = train_torch(name, init, batches, args.lr)
            if args.floor:
                other = train_torch(
                    name, {k: np.nextafter(v, np.float32(np.inf)) for k, v in init.items()}, batches, args.lr
                )
            else:
                other = dlc_run(name, init, batches, args.lr, args.engine, args.update, (train, ev))
            c = compare(other, ref)
            worst.append(c["loss"])
            print(
                f"{name} ({label}) vs torch, seed {seed}, {args.steps} Adam steps, batch {args.batch}: "
                f"max relative loss difference {c['loss']:.1e} (step {c['step']})",
                flush=True,
            )
            if args.seeds == 1:
                marks = sorted({1, 10, 25, 50, 75, args.steps} & set(range(1, args.steps + 1)))
                print("  loss difference at steps " + ", ".join(f"{s}: {c['losses'][s - 1]:.1e}" for s in marks))
                print("  final parameters, relative difference in norm / largest entry:")
                for k, (norm, entry) in c["params"].items():
                    print(f"    {k:<16} {norm:.1e} / {entry:.1e}")
        if len(worst) > 1:
            print(
                f"{name} ({label}): within 1e-4 on {sum(w < 1e-4 for w in worst)}/{len(worst)} seeds, "
                f"median {np.median(worst):.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
