"""`dlc fmt`: rewrite .dl files in the canonical layout (--check: only show the diff)."""

from __future__ import annotations

from dlc.compiler.frontend.format import LINE_WIDTH, format_files
from dlc.runtime.cli.arguments import positive

HELP = "rewrite .dl files in the canonical layout (--check: only show the diff)"


def arguments(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="a .dl file, or a folder of them")
    p.add_argument(
        "--check", action="store_true", help="change nothing; print a diff and exit 1 if a file is not formatted"
    )
    p.add_argument(
        "--line-width",
        type=positive,
        default=LINE_WIDTH,
        metavar="N",
        help=f"break lines longer than N characters where they can be (default {LINE_WIDTH})",
    )


def run(args):
    return format_files(args.files, check=args.check, width=args.line_width)
