"""`dlc data fetch|list|bench`: the public data sets dlc downloads, checks and converts; the
time a data source takes to read its examples, alone."""

from __future__ import annotations

import time
from pathlib import Path

from dlc.compiler.errors import DlcError, Span, plural
from dlc.compiler.frontend.loader import load
from dlc.runtime.cli.arguments import positive
from dlc.runtime.data import download
from dlc.runtime.data.augment import augment_options
from dlc.runtime.data.prefetch import Batches, default_threads
from dlc.runtime.data.streamed import Streamed
from dlc.runtime.training.config import make_config, parse_setting
from dlc.runtime.training.inputs import input_arrays, load_data

HELP = "download public data sets (MNIST, CIFAR) into the data folder; list them; time a data source"


def arguments(p):
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, help="fetch, list or bench")
    a = actions.add_parser(
        "fetch", help="download, verify and convert data sets (mnist, fashion_mnist, cifar10, cifar100)"
    )
    a.add_argument("names", nargs="+", metavar="NAME", help="a data set, as `dlc data list` names it")
    actions.add_parser("list", help="the data sets dlc fetches, their sizes and which are in the data folder")
    b = actions.add_parser("bench", help="time reading a source's examples: examples/s, and per thread")
    b.add_argument(
        "data",
        metavar="SOURCE-OR-FILE.dl",
        help='a source, e.g. \'images("photos/", size = 224)\', or a .dl file: its first model\'s '
        "training data, with its augment setting, fitted to its input",
    )
    b.add_argument("--examples", type=positive, default=1000, metavar="N", help="examples to read (default 1000)")
    b.add_argument(
        "--data-threads", dest="data_threads", type=positive, metavar="N", help="decoding threads (default: the cores)"
    )
    b.add_argument("--batch", type=positive, default=64, metavar="N", help="examples a batch (default 64)")


def run(args):
    if args.action == "list":
        print(download.listing())
        return
    if args.action == "bench":
        bench(args.data, args.examples, args.data_threads or default_threads(), args.batch)
        return
    for name in args.names:
        download.known(name)  # every name checked before anything is downloaded
    for name in args.names:
        print(f"{name}: {download.fetch(name)}")


def bench(data: str, examples: int, threads: int, batch: int):
    """Read the first `examples` examples of a source (a .dl file's training data: its
    training transform, epoch 0) in batches, as a run reads them, and print the rate."""
    epoch = None
    if data.endswith(".dl"):
        program = load(data)
        model = program.build(None, training=True)
        cfg = make_config(program, model.name, {})
        columns = input_arrays(model, load_data(cfg.data, Path(data).parent, "data", cfg.span("data")))
        options = augment_options(cfg.augment, cfg.span("augment"))
        if options is not None and options.get("form") == "photos":
            first = model.inputs[0].name
            columns[first], epoch = columns[first].augmented(options, cfg.seed, cfg.span("augment")), 0
    else:
        columns = load_data(parse_setting(data, "data"), Path.cwd(), "data", Span.whole(data)).columns
    n = min(examples, len(next(iter(columns.values()))))
    if n == 0:
        raise DlcError(f"{data} has no examples", Span.whole(data))
    plan = ((slice(lo, min(lo + batch, n)), epoch) for lo in range(0, n, batch))
    started = time.perf_counter()
    for _ in Batches(columns, plan, threads):
        pass
    elapsed = max(time.perf_counter() - started, 1e-9)
    streamed = any(isinstance(v, Streamed) for v in columns.values())
    how = (
        f"on {plural(threads, 'thread')}: {n / elapsed / threads:.1f} examples/s a thread"
        if streamed
        else "held in memory"
    )
    print(f"{plural(n, 'example')} in {elapsed:.3f} s: {n / elapsed:.1f} examples/s {how}")
