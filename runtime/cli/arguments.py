"""What the commands' arguments share: the model file and its model, the engine and its
threads, and the argument types whose bad values are usage errors (status 2) that name the
value and the range it must be in."""

from __future__ import annotations

import argparse
import math
import os

from dlc.compiler.native import MOST_THREADS

WEIGHTS_HELP = "a checkpoint (.npz) or .safetensors file, in dlc's or torch.nn's names"


def model_arguments(p: argparse.ArgumentParser, backend=False):
    """A .dl file and which of its models; with `backend`, the engine that runs it and its threads."""
    p.add_argument("file", help="a .dl file")
    p.add_argument("--model", metavar="NAME", help="which model of the file (default: the last one)")
    if backend:
        p.add_argument(
            "--backend",
            choices=["auto", "native", "reference"],
            default="auto",
            help="auto (default): the native engine, or the reference engine with a warning for a "
            "model using an operation the native backend does not compile; native: compiled "
            "LLVM kernels, never falling back; reference: the numpy interpreter",
        )
        thread_arguments(p)


def thread_arguments(p: argparse.ArgumentParser):
    """--threads and --no-budget, which `apply_engine_settings` turns into the variables the
    native engine reads."""
    p.add_argument(
        "--threads",
        type=thread_count,
        metavar="N",
        help="threads of the native code (default: $DLC_NUM_THREADS, else every core)",
    )
    p.add_argument(
        "--no-budget",
        action="store_true",
        help="run calls estimated beyond the work budget ($DLC_WORK_BUDGET seconds, default 60 a call)",
    )


def apply_engine_settings(args):
    """--no-budget and --threads (else a valid $DLC_NUM_THREADS) as the environment variables
    the native engine reads."""
    if args.no_budget:
        os.environ["DLC_WORK_BUDGET"] = "none"
    if args.threads:
        os.environ["DLC_NUM_THREADS"] = str(args.threads)
    elif "DLC_NUM_THREADS" in os.environ:
        try:
            thread_count(os.environ["DLC_NUM_THREADS"])
        except argparse.ArgumentTypeError as e:
            args.command_parser.error(f"DLC_NUM_THREADS: {e}")


# ---- argument types: a value out of range is a usage error (status 2) -----------------------------
def whole(least: int, most: int | None = None, what: str = ""):
    """A whole number from `least` (to `most`); `what` names it in the message."""

    def parse(text: str) -> int:
        value = int(text) if text.isdigit() else None  # no sign, no fraction, no exponent
        if value is None or value < least or (most is not None and value > most):
            bound = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise argparse.ArgumentTypeError(f"needs a whole number{what}, {bound}; got '{text}'")
        return value

    return parse


thread_count = whole(1, MOST_THREADS, what=" of threads")
positive = whole(1)


def seed_number(text: str) -> int:
    from dlc.runtime.training.config import SEED_MAX

    return whole(0, SEED_MAX)(text)


def real(low: float, strict: bool, most: float | None = None):
    """A finite number above `low` (`strict`) or at least `low` (and at most `most`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        high = most is not None and value > most
        if not math.isfinite(value) or value < low or (strict and value == low) or high:
            bound = f"{'above' if strict else 'at least'} {low:g}" + ("" if most is None else f" and at most {most:g}")
            raise argparse.ArgumentTypeError(f"needs a finite number {bound}; got '{text}'")
        return value

    return parse


def checkpoint_path(text: str) -> str:
    """--resume's checkpoint: `dlc train --resume FILE.dl` would otherwise take the model file for it."""
    if text.endswith(".dl"):
        raise argparse.ArgumentTypeError(
            f"takes a checkpoint, not the model file '{text}': write "
            f"`dlc train {text} --resume` to continue from DIR/last.npz, or "
            "`--resume CKPT` after the file"
        )
    return text


def pass_list(text: str) -> tuple:
    from dlc.compiler.passes import optimize as graph_passes

    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in graph_passes.PASSES:
            raise argparse.ArgumentTypeError(f"no graph pass '{name}'; the passes are {', '.join(graph_passes.PASSES)}")
    return names
