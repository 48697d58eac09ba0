"""`dlc data fetch|list`: the public data sets dlc downloads, checks and converts."""
from __future__ import annotations

from dlc.runtime.data import download

HELP = "download public data sets (MNIST, CIFAR) into the data folder; list them"


def arguments(p):
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, help="fetch or list")
    a = actions.add_parser("fetch", help="download, verify and convert data sets (mnist, fashion_mnist, cifar10, "
                                         "cifar100)")
    a.add_argument("names", nargs="+", metavar="NAME", help="a data set, as `dlc data list` names it")
    actions.add_parser("list", help="the data sets dlc fetches, their sizes and which are in the data folder")


def run(args):
    if args.action == "list":
        print(download.listing())
        return
    for name in args.names:
        download.known(name)           # every name checked before anything is downloaded
    for name in args.names:
        print(f"{name}: {download.fetch(name)}")
