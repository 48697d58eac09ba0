"""A layer of the standard library against its PyTorch twin: the same parameters and inputs,
in float64, give the same outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
from torch.func import functional_call  # noqa: E402

from dlc.compiler.ir.dims import concrete  # noqa: E402
from dlc.runtime.interop.torch_layout import TorchLayout  # noqa: E402
from helpers.numeric import assert_close, build, check_params_given, forward, gradients  # noqa: E402


DT = torch.float64
RTOL = 1e-5


# ---- the harness ---------------------------------------------------------------------------------------------
def _shape_text(shape) -> str:
    return ", ".join(str(d) for d in shape)


def _model_source(decls, body, outputs, r_shapes=None):
    lines = ["model m {"]
    lines += [f"    param {k}: f32[{_shape_text(s)}] = zeros" for k, s in decls.items()]
    lines += ["    " + line.strip() for line in body.strip().splitlines()]
    lines += [f"    output {o}" for o in outputs]
    if r_shapes is not None:
        lines += [f"    input r_{o}: f32[{_shape_text(s)}]" for o, s in r_shapes.items()]
        lines.append("    loss " + " + ".join(f"sum({o} * r_{o})" for o in outputs))
    lines.append("}")
    return "\n".join(lines)


def parity(
    decls: dict,
    body: str,
    torch_fn,
    outputs=("y",),
    feeds=None,
    values=None,
    training=True,
    seed=0,
    scale=0.5,
    rtol=RTOL,
    sizes=None,
):
    """Run `body` in dlc and `torch_fn` in torch with the same values; compare outputs,
    state updates and the gradient of every trainable parameter.

    decls: float tensors declared as model params (the layer's inputs), name -> shape.
    values: values for some params by name (the rest are random normal * scale).
    torch_fn(T, feeds) -> dict: the outputs by name, plus optional "update:<state>" values;
    T holds a float64 leaf tensor for every dlc parameter and state, in dlc's layout
    (`Leaves`: T.torch(prefix) gives the layer's in torch.nn's names).
    sizes: values of the symbolic dims of the model's own inputs (e.g. {"N": 4}).
    """
    feeds = dict(feeds or {})
    values = dict(values or {})
    probe = build(_model_source(decls, body, outputs), training)
    r_shapes = {o: tuple(probe.graph.outputs[f"output:{o}"].type.shape) for o in outputs}
    model = build(_model_source(decls, body, outputs, r_shapes), training)

    rng = np.random.default_rng(seed)
    params = {}
    for p in model.params:
        params[p.name] = (
            np.asarray(values[p.name], np.float64) if p.name in values else rng.standard_normal(p.type.shape) * scale
        )
    check_params_given(model, params)
    for o, s in r_shapes.items():
        feeds[f"r_{o}"] = rng.standard_normal(tuple(concrete(d, sizes or {}) for d in s))

    dl_out = forward(model, feeds, params)
    dl_step = gradients(model, feeds, params)

    T = Leaves(
        {p.name: torch.tensor(params[p.name], dtype=DT, requires_grad=p.trainable) for p in model.params},
        TorchLayout(model.params),
    )
    tfeeds = {
        k: (
            torch.tensor(v, dtype=DT)
            if np.issubdtype(np.asarray(v).dtype, np.floating)
            else torch.tensor(np.asarray(v), dtype=torch.long)
        )
        for k, v in feeds.items()
    }
    t_out = torch_fn(T, tfeeds)
    loss = sum((t_out[o] * tfeeds[f"r_{o}"]).sum() for o in outputs)
    if loss.requires_grad:  # not for step functions: no gradient anywhere
        loss.backward()

    for o in outputs:
        assert_close(dl_out[f"output:{o}"], t_out[o].detach().numpy(), rtol, f"output {o}")
    assert_close(dl_step["loss"], loss.detach().numpy(), rtol, "loss")
    for key, value in t_out.items():
        if key.startswith("update:"):
            assert_close(dl_out[key], value.detach().numpy(), rtol, key)
    for p in model.params:
        if not p.trainable:
            continue
        tg = T[p.name].grad
        tg = np.zeros(p.type.shape) if tg is None else tg.numpy()
        assert_close(dl_step[f"grad:{p.name}"], tg, rtol, f"grad:{p.name}")
    return model, dl_out, dl_step


class Leaves(dict):
    """The leaf tensors of a model's parameters by dlc name."""

    def __init__(self, tensors: dict, layout: TorchLayout):
        super().__init__(tensors)
        self.layout = layout

    def torch(self, prefix: str) -> dict:
        """The tensors of the layer named `prefix` by their torch.nn names relative to it,
        computed from the leaves (transposed, concatenated) by dlc's mapping."""
        return {
            name[len(prefix) + 1 :]: value
            for name, value in self.layout.to_torch(self, torch.cat).items()
            if name.startswith(prefix + ".")
        }


def call(module, mapping: dict, *args, **kwargs):
    """Run a torch module with the given parameters (all of them must be given)."""
    names = {n for n, _ in module.named_parameters()}
    missing = names - set(mapping)
    assert not missing, f"no value for torch parameters {sorted(missing)}"
    return functional_call(module, mapping, args, kwargs)


def step_matches_torch(exe, params: dict, x: np.ndarray, forward, rng, what: str, tolerance: float = 1e-5):
    """A step graph's (`exe`, helpers.native_cases.step_graph: loss = y · r_y) output y and
    every parameter's gradient against torch in float64, where forward(x, T) is y from x
    and the parameters as torch tensors T: the largest error relative to the largest value."""
    from helpers.native_cases import run_native

    T = {name: torch.tensor(v, dtype=DT, requires_grad=True) for name, v in params.items()}
    y = forward(torch.tensor(x, dtype=DT), T)
    r = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    (y * torch.tensor(r, dtype=DT)).sum().backward()
    got = run_native(exe, {"x": x, "r_y": r, "rng": np.zeros(2, np.int32)}, params)
    expected = {"metric:output:y": y.detach().numpy()} | {f"grad:{name}": t.grad.numpy() for name, t in T.items()}
    for name, want in expected.items():
        assert got[name].shape == want.shape, f"{what} {name}: shape {got[name].shape}, torch's {want.shape}"
        diff, scale = np.abs(got[name] - want).max(), np.abs(want).max()
        # a gradient that is exactly zero (windows that read only padding) matches only zeros
        err = diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)
        assert err < tolerance, f"{what} {name}: relative error {err:.2e}"
