"""`dlc summary`: the model's layers: types, output shapes, parameters and FLOPs; totals."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import summary as summaries
from dlc.compiler.frontend.loader import load
from dlc.compiler.ir.dims import numel
from dlc.compiler.native import bf16
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines import budget
from dlc.runtime.engines.distributed import optimizer_shards
from dlc.runtime.training.config import flags
from dlc.runtime.training.summarize import summary_settings, summary_text
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.cli.arguments import model_arguments, positive
from dlc.runtime.cli.shared import dim_sizes, native_graph

HELP = "the model's layers: types, output shapes, parameters and FLOPs; totals"


def arguments(p):
    model_arguments(p)
    p.add_argument("--depth", type=positive, metavar="N", help="show the layers N levels deep (default: all)")
    p.add_argument(
        "--batch",
        type=positive,
        metavar="N",
        help="count FLOPs at batch N (default: the train block's batch; without one, a polynomial in it)",
    )
    p.add_argument("--dim", action="append", metavar="NAME=SIZE", help="count FLOPs at this size of a symbolic dim")
    p.add_argument(
        "--memory",
        action="store_true",
        help="the peak memory of training instead, by layer and in total: activations, parameters, "
        "gradients and optimizer state, as polynomials in the dims",
    )
    p.add_argument(
        "--ranks",
        type=positive,
        metavar="K",
        help="with --memory: also the optimizer state each of K ranks holds (with the train block's "
        "shard_optimizer = true, its share; else all of it)",
    )
    p.add_argument("--eval", action="store_true", help="summarize the evaluation-mode graph")
    products = p.add_mutually_exclusive_group()
    products.add_argument(
        "--int8",
        action="store_true",
        help="which products (matmuls, convolutions) dlc quantize makes integer, and why the others "
        "are not (docs/quantization.md)",
    )
    products.add_argument(
        "--bf16",
        action="store_true",
        help="which products (matmuls, convolutions and their gradients) of the train step run in "
        "bf16 under precision = \"bf16\", and why the others stay float32 (docs/native.md)",
    )
    p.add_argument(
        "--freeze",
        action="append",
        metavar="PATTERN",
        help="count these parameters as frozen instead of the train block's freeze, as `dlc train --freeze` trains",
    )


def run(args):
    """FLOPs are counted at --batch, else at the train block's batch, else left a polynomial in
    the batch; --memory's peak is located at that batch (or the default one) and the other dims
    at 32 unless --dim gives them."""
    program = load(args.file)
    if args.int8:
        print(summaries.int8_table(program.build(args.model, training=False)))
        return
    if args.bf16:
        print(bf16_summary(program.build(args.model, training=True)))
        return
    model = program.build(args.model, training=not args.eval)
    given = flags(args, ("freeze", "batch"))
    settings = summary_settings(program, model, given["freeze"], given["batch"], dim_sizes(args.dim))
    if args.ranks and not args.memory:
        raise DlcError("--ranks counts the optimizer state of each rank: use it with --memory")
    if not args.memory:
        print(summary_text(model, settings, args.depth))
        return
    if args.eval:
        raise DlcError("--memory is the memory of training: leave out --eval")
    model.require_loss("it does not train")
    cfg = settings.cfg
    sizes = budget.memory_sizes(model, cfg.batch, settings.sizes)
    slots = len(make_optimizer(cfg.optimizer).slots())
    parts = budget.training_memory(model, settings.trained, slots, sizes)
    print(
        summaries.memory_table(
            model,
            parts,
            sizes,
            args.depth,
            f"{cfg.optimizer.name}: {slots} value{'s' if slots != 1 else ''} per trained parameter",
        )
    )
    if args.ranks:
        print(rank_state(model, settings.trained, slots, cfg.shard_optimizer, args.ranks))


def bf16_summary(model) -> str:
    """The products of the train step the native engine compiles (the forward graph without
    a loss) under precision bf16: compiler/native/bf16.py's rule."""
    graph = optimize(native_graph(model))
    return summaries.bf16_table(bf16.products(graph), graph)


def rank_state(model, trained: list, slots: int, sharded: bool, ranks: int) -> str:
    """The optimizer state one of `ranks` ranks holds: its largest share's (optimizer_shards)
    with `shard_optimizer = true`, else the whole state."""
    if not sharded:
        return f"Per rank:         the whole optimizer state on each of {ranks} (shard_optimizer = false)"
    trained = set(trained)
    n = sum(int(numel(p.type.shape)) for p in model.params if p.name in trained)
    share = max(hi - lo for lo, hi in optimizer_shards(n, ranks))
    return (
        f"Per rank:         {summaries.size_text(4 * slots * share)} of optimizer state on each of {ranks} "
        f"(shard_optimizer = true: at most {share:,} of the {n:,} trained parameters' state)"
    )
