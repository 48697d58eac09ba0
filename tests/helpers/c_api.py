"""The C API of a library `dlc build` made, through ctypes: its status codes and a thin wrapper
of its calls, and the models' inputs; for a --train library, the batches `dlc train` feeds its
engine and a loop of train_step over them. The fuzz scripts of tests/deploy/test_build.py import
it in a process of their own, with tests/ on sys.path."""

import ctypes
import re
from pathlib import Path

import numpy as np


# model -> (input dtype, the shape of a batch of `b`, the ids' range for an integer input)
MODELS = {
    "digits_cnn": (np.float32, lambda b: (b, 1, 8, 8), None),
    "char_lstm": (np.int32, lambda b: (b, 12), 96),
    "transformer_classifier": (np.int32, lambda b: (b, 20), 1000),
}
STATUS = {
    "DLC_OK": 0,
    "DLC_ERROR_ARGUMENT": 1,
    "DLC_ERROR_SHAPE": 2,
    "DLC_ERROR_WEIGHTS": 3,
    "DLC_ERROR_CPU": 4,
    "DLC_ERROR_MEMORY": 5,
    "DLC_ERROR_INDEX": 6,
}


def inputs(model: str, batch: int, seed: int = 0) -> np.ndarray:
    dtype, shape, ids = MODELS[model]
    rng = np.random.default_rng(seed)
    return rng.integers(0, ids, shape(batch)).astype(dtype) if ids else rng.standard_normal(shape(batch)).astype(dtype)


class Api:
    """A built library's C functions, typed, in this process."""

    def __init__(self, lib: Path, name: str):
        self.folder, self.name = lib, name
        self.lib = ctypes.CDLL(str(lib / f"lib{name}.so"))
        f = lambda fn: getattr(self.lib, f"{name}_{fn}")
        f("error").restype = ctypes.c_char_p
        f("create").argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        f("create_from_memory").argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
        f("predict_arrays").argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 5
        for fn in ("destroy", "error", "set_threads"):
            f(fn).argtypes = [ctypes.c_void_p] + ([ctypes.c_int] if fn == "set_threads" else [])
        self.f = f
        self.train_inputs = []
        if hasattr(self.lib, f"{name}_train_step"):  # a --train library
            c = ctypes
            # train_step's inputs in the header's order: `const T *name, const int64_t name_shape[rank]`
            proto = (lib / f"{name}.h").read_text().split(f"int {name}_train_step(")[1].split(");")[0]
            self.train_inputs = re.findall(r"const int64_t (\w+)_shape\[", proto)
            f("train_step").argtypes = [c.c_void_p] * (2 + 2 * len(self.train_inputs)) + [c.c_int64]

    def create(self, path=None, data: bytes | None = None):
        model = ctypes.c_void_p()
        if data is not None:
            status = self.f("create_from_memory")(ctypes.byref(model), data, len(data))
        else:
            status = self.f("create")(ctypes.byref(model), None if path is None else str(path).encode())
        return status, model

    def error(self, model) -> str:
        return self.f("error")(model).decode()

    def predict(self, model, x: np.ndarray | None, shape, capacity: int, out_rank: int = 2, nulls=()):
        """(status, output, its shape); `nulls` names the pointers to pass as NULL."""
        out = np.zeros(max(capacity, 1), np.float32)
        out_shape = np.zeros(8, np.int64)
        shape = np.asarray(shape, np.int64)
        p = lambda a: ctypes.c_void_p(a.ctypes.data)
        inputs = (ctypes.c_void_p * 1)(None if "x" in nulls or x is None else p(x))
        shapes = (ctypes.c_void_p * 1)(None if "shape" in nulls else p(shape))
        outputs = (ctypes.c_void_p * 1)(None if "y" in nulls else p(out))
        caps = np.array([capacity], np.int64)
        oshapes = (ctypes.c_void_p * 1)(p(out_shape))
        status = self.f("predict_arrays")(
            model,
            None if "inputs" in nulls else ctypes.cast(inputs, ctypes.c_void_p),
            ctypes.cast(shapes, ctypes.c_void_p),
            ctypes.cast(outputs, ctypes.c_void_p),
            p(caps),
            ctypes.cast(oshapes, ctypes.c_void_p),
        )
        return status, out, out_shape[:out_rank]


def trainer_batches(dl: Path, overrides: dict, out: Path) -> list:
    """The batches `dlc train --backend native` feeds its engine, in order: a run of the model
    in `dl` in this process with the flags' `overrides` (its checkpoints in `out`), the
    engine's train_step recorded; each step's random key is the library's, (seed, step)."""
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.training.trainer import Trainer

    fed, step = [], NativeEngine.train_step

    def recorded(self, params, opt_state, batch, lr, number, key):
        fed.append({k: v.copy() for k, v in batch.items()})
        assert list(key) == [overrides.get("seed", 0), number]
        return step(self, params, opt_state, batch, lr, number, key)

    NativeEngine.train_step = recorded
    try:
        Trainer(load(dl), None, overrides, out, backend="native", progress="none").run(overwrite=True)
    finally:
        NativeEngine.train_step = step
    return fed


def train_steps(api: Api, instance, batches: list):
    """Each batch through the library's train_step (its inputs by name, in the header's order)."""
    p = lambda a: ctypes.c_void_p(a.ctypes.data)
    values = np.zeros(8, np.float64)
    for batch in batches:
        arrays = [np.ascontiguousarray(batch[n]) for n in api.train_inputs]
        shapes = [np.array(a.shape, np.int64) for a in arrays]
        status = api.f("train_step")(
            instance, *[q for a, s in zip(arrays, shapes) for q in (p(a), p(s))], p(values), values.size
        )
        assert status == 0, api.error(instance)
