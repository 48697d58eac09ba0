"""`dlc train`: train a model on its train block's data (flags override the block)."""

from __future__ import annotations

import sys
from pathlib import Path

from dlc.compiler.errors import plural
from dlc.compiler.frontend.loader import load
from dlc.runtime.terminal import terminal_width
from dlc.runtime.training.progress import row_values, wrap_items
from dlc.runtime.optim.optimizers import OPTIMIZERS
from dlc.runtime.training.config import flags
from dlc.runtime.training.trainer import Trainer
from dlc.runtime.cli.arguments import checkpoint_path, model_arguments, positive, seed_number, whole

HELP = "train a model on its train block's data (flags override the block)"


def arguments(p):
    model_arguments(p, backend=True)
    p.add_argument("--epochs", type=whole(0), metavar="N", help="passes over the training data")
    p.add_argument("--batch", type=positive, metavar="N", help="batch size: 1 is stochastic, the data size is batch GD")
    p.add_argument(
        "--memory",
        metavar="SIZE",
        help="the most training may take, such as 2GB: a batch that needs more is refused before anything is allocated",
    )
    p.add_argument("--lr", type=float, metavar="X", help="learning rate")
    p.add_argument(
        "--optimizer",
        metavar="SPEC",
        help=f"replaces the train block's: a name ({', '.join(OPTIMIZERS)}) with its defaults, or a "
        'spec, e.g. "sgd(lr = 0.1, momentum = 0.9)"',
    )
    p.add_argument(
        "--seed",
        type=seed_number,
        metavar="N",
        help="seed of everything random: initialization, shuffling, dropout, augmentation",
    )
    p.add_argument(
        "--data", metavar="SPEC", help='a source, e.g. "digits()", "xor()" or a file path (.npz, .csv, IDX, .txt)'
    )
    p.add_argument("--validation", metavar="SPEC", help='e.g. "split(0.1)" or a data source')
    p.add_argument("--test", metavar="SPEC", help='held-out test data, e.g. "split(0.2)"')
    p.add_argument("--schedule", metavar="SPEC", help='e.g. "cosine(warmup = 1)", "step(every = 10, gamma = 0.5)"')
    p.add_argument("--clip", metavar="SPEC", help='e.g. "global_norm(1.0)" or "value(0.5)"')
    p.add_argument(
        "--precision",
        metavar="P",
        help="of the operands of matmuls and convolutions: f32, or bf16 (rounded to bfloat16, "
        "summed in float32; the parameters stay float32)",
    )
    p.add_argument(
        "--allreduce-bucket",
        dest="allreduce_bucket",
        metavar="SIZE",
        help="on several processes (mpirun), the gradients are averaged in buckets of this size, each as "
        "soon as the backward pass has finished it (default 128KB; 0: all at once after it)",
    )
    p.add_argument(
        "--data-threads",
        dest="data_threads",
        type=positive,
        metavar="N",
        help="threads that decode streamed data such as images(\"photos/\") ahead of the steps (default: the cores)",
    )
    p.add_argument("--early-stop", dest="early_stop", metavar="SPEC", help='e.g. "patience(3, monitor = val_loss)"')
    p.add_argument("--freeze", action="append", metavar="PATTERN", help="parameters not to train (conv*, f5)")
    p.add_argument("--init-from", dest="init_from", metavar="CKPT", help="start from these weights, by name")
    p.add_argument(
        "--check-numerics",
        dest="check_numerics",
        action="store_true",
        help="test every kernel's values; stop at the first NaN or Inf and name the line and operation that made it",
    )
    p.add_argument("--out", metavar="DIR", help="checkpoints and history (default: runs/MODEL beside the file)")
    p.add_argument(
        "--resume",
        nargs="?",
        type=checkpoint_path,
        const="",
        default=False,
        metavar="CKPT",
        help="continue from DIR/last.npz or the given checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoints of another run in the --out folder (without it, a new run refuses that folder)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help='write TensorBoard event files to DIR: lr every step, loss and metrics every epoch '
        '(needs tensorboardX: pip install "dlc[tensorboard]")',
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress and no line per epoch: the summary, warnings and errors only",
    )
    shown.add_argument(
        "--log-every",
        dest="log_every",
        type=positive,
        metavar="N",
        help="a plain line every N steps instead of the redrawn progress line (for log files and CI)",
    )


def run(args):
    overrides = flags(
        args,
        (
            "epochs",
            "batch",
            "lr",
            "optimizer",
            "seed",
            "init_from",
            "freeze",
            "data",
            "validation",
            "test",
            "schedule",
            "clip",
            "early_stop",
            "memory",
            "precision",
            "allreduce_bucket",
            "data_threads",
        ),
    )
    overrides["check_numerics"] = args.check_numerics or None  # the flag adds to the block, never clears it
    progress = "none" if args.quiet else args.log_every or "auto"
    trainer = Trainer(
        load(args.file),
        args.model,
        overrides,
        Path(args.out) if args.out else None,
        backend=args.backend,
        progress=progress,
        tensorboard=args.tensorboard,
    )
    result = trainer.run(resume=args.resume if args.resume != "" else True, overwrite=args.overwrite)
    if result.stopped == "interrupted":
        return 130
    if not trainer.writes:  # another rank of a distributed run: rank 0 reports
        return 0
    last = result.history[-1] if result.history else {}
    length = plural(last["step"], "step") if "step" in last else plural(len(result.history), "epoch")  # by steps
    head = f"trained {trainer.name} for {length} ({result.stopped})"
    stats = row_values(last) if last else []
    items = [f"{head}: {stats[0]}", *stats[1:]] if stats else [head]
    if "data_wait" in last:
        items.append(f"data wait {last['data_wait']:.0%} of the last {'row' if 'step' in last else 'epoch'}")
    if trainer.meta.get("skipped"):
        items.append(f"{plural(trainer.meta['skipped'], 'file')} skipped (skip_bad)")
    print(wrap_items(items, terminal_width(sys.stdout) if sys.stdout.isatty() else None))
    if result.test:
        print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
    written = [str(result.out_dir / name) for name in result.written]
    print(f"checkpoints: {', '.join(written)}" if written else "no checkpoint written (no epoch ran)")
