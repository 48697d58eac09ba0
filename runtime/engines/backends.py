"""Which engine runs a model: the native engine, or the reference engine where the native
backend cannot compile the model (`--backend auto|native|reference`)."""

from __future__ import annotations

import sys
import time

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.model import Model
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.lower import NotLowerable
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.protocol import Engine
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.terminal import span

BACKENDS = ("auto", "native", "reference")


def check_backend(backend) -> str:
    """`backend`, one of BACKENDS, else dlc's error naming them."""
    if backend not in BACKENDS:
        raise DlcError(f"unknown backend '{backend}' ({', '.join(BACKENDS)})")
    return backend


def make_engine(
    backend: str, train_model: Model, eval_model: Model, *args, log=None, split=False, buckets=0, shard=None, **kw
) -> Engine:
    """The engine `backend` names. `auto` is the native engine, or, for a model using an
    operation the native backend does not compile, the reference engine after a warning
    naming that operation and its line; `native` never falls back (the error says why).
    `split`: a native engine whose steps are two calls, gradients and update (the reference
    engine's always are), or with `buckets` (bytes) one call that hands its gradients to the
    host in buckets of that size (a data-parallel run, compiler/native/buckets.py); with
    `shard` (rank, ranks), a native engine that updates its rank's share of the parameters
    (`shard_optimizer`), or none: the reference engine cannot."""
    check_backend(backend)
    if backend == "reference":
        return ReferenceEngine(train_model, eval_model, *args, **kw)
    try:
        started = time.perf_counter()
        engine = NativeEngine(train_model, eval_model, *args, split=split, buckets=buckets, shard=shard, **kw)
        if log and engine.train_exe is not None:
            log(
                built_message(
                    engine.train_exe.compiled.cached,
                    time.perf_counter() - started,
                    not engine.train_exe.driver.optimized,
                )
            )
        return engine
    except NotLowerable as e:
        if backend == "native":
            raise
        if shard is not None:
            e.message += "; shard_optimizer = true needs the native engine"
            raise
        e.message += "; running on the slow reference engine instead (--backend native refuses)"
        (log or _warn)(e.render("warning"))
    return ReferenceEngine(train_model, eval_model, *args, **kw)


def built_message(cached: bool, seconds: float, quick: bool) -> str:
    """What the run says of its train step: loaded from the compile cache, or compiled (then
    stored there), and whether it is the quick (or unoptimized) code that runs before the O3
    code (runtime/engines/tiers.py); `seconds` counts lowering the graph too."""
    what = "the native train step"
    if quick:  # within 80 columns
        what += " unoptimized" if jit.quick_code() == "unoptimized" else "'s quick code"
    if cached:
        return f"loaded {what} from the cache ({span(seconds)})"
    return f"compiled {what} in {span(seconds)} (cached for the next runs)"


def _warn(message: str):
    print(message, file=sys.stderr)
