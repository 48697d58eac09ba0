"""`dlc checkpoint rename`: a checkpoint's parameters renamed, as renaming a binding in the
.dl file renames them (docs/editors.md), so that the checkpoints saved before still load."""

from __future__ import annotations

import argparse

from dlc.compiler.frontend.syntax import IDENTIFIER
from dlc.runtime.interop import checkpoint

HELP = "rename a checkpoint's parameters after a binding of the model was renamed, so that it loads again"


def renaming(text: str) -> tuple:
    """OLD=NEW: a parameter's name, or a binding's under which parameters lie (h, enc.h), and its new one."""
    old, equals, new = text.partition("=")
    if not equals or not all(map(_dotted_name, (old, new))):
        raise argparse.ArgumentTypeError(f"needs OLD=NEW, two names such as h=hidden or enc.h=enc.hidden; got '{text}'")
    return old, new


def _dotted_name(text: str) -> bool:
    return all(IDENTIFIER.fullmatch(part) for part in text.split("."))


def arguments(p):
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, help="rename")
    r = actions.add_parser(
        "rename",
        help="rename parameters: OLD=NEW renames OLD and every parameter under it (OLD.W, OLD.b), "
        "their optimizer state and int8 arrays",
    )
    r.add_argument("checkpoint", metavar="CKPT", help="the checkpoint (.npz) to read")
    r.add_argument("renames", nargs="+", type=renaming, metavar="OLD=NEW", help="a binding's old and new name")
    r.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="the checkpoint to write")


def run(args):
    renamed = checkpoint.rename(args.checkpoint, dict(args.renames), args.output)
    for old, new in renamed.items():
        print(f"{old} -> {new}")
    print(f"wrote {args.output}")
