"""Which engine runs a model: the native engine, or the reference engine where the native
backend cannot compile the model (`--backend auto|native|reference`)."""
from __future__ import annotations

import sys

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.model import Model
from dlc.compiler.native.lower import NotLowerable
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.protocol import Engine
from dlc.runtime.engines.reference import ReferenceEngine

BACKENDS = ("auto", "native", "reference")


def make_engine(backend: str, train_model: Model, eval_model: Model, *args, log=None, split=False, **kw) -> Engine:
    """The engine `backend` names. `auto` is the native engine, or, for a model using an
    operation the native backend does not compile, the reference engine after a warning
    naming that operation and its line; `native` never falls back (the error says why).
    `split`: a native engine whose steps are two calls, gradients and update (the reference
    engine's always are)."""
    if backend not in BACKENDS:
        raise DlcError(f"unknown backend '{backend}' ({', '.join(BACKENDS)})")
    if backend == "reference":
        return ReferenceEngine(train_model, eval_model, *args, **kw)
    try:
        if log and args:
            log("compiling the native train step (cached for the next runs) ...")
        return NativeEngine(train_model, eval_model, *args, split=split, **kw)
    except NotLowerable as e:
        if backend == "native":
            raise
        e.message += "; running on the slow reference engine instead (--backend native refuses)"
        (log or _warn)(e.render("warning"))
    return ReferenceEngine(train_model, eval_model, *args, **kw)


def _warn(message: str):
    print(message, file=sys.stderr)
