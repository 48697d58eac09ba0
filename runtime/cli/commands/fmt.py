"""`dlc fmt`: rewrite .dl files in the canonical layout (--check: only show the diff)."""
from __future__ import annotations

from dlc.compiler.frontend.format import format_files

HELP = "rewrite .dl files in the canonical layout (--check: only show the diff)"


def arguments(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="a .dl file, or a folder of them")
    p.add_argument("--check", action="store_true", help="change nothing; print a diff and exit 1 if a file "
                                                         "is not formatted")


def run(args):
    return format_files(args.files, check=args.check)
