"""`dlc completion bash|zsh`: dlc's completion script, made by shtab from dlc's parser."""

from __future__ import annotations

from dlc.compiler.errors import optional_package
from dlc.runtime import cli

HELP = "print the shell completion script of dlc for bash or zsh (needs shtab)"
DESCRIPTION = (
    'bash: eval "$(dlc completion bash)" in ~/.bashrc; zsh: dlc completion zsh > "${fpath[1]}/_dlc". '
    'The script needs the shtab package: pip install "dlc[completion]".'
)
FILE_METAVARS = ("PATH", "CKPT", "OUT", "OUT.dl")  # what a flag of these takes is a file, DIR a folder


def arguments(p):
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")


def run(args):
    """Commands, flags, choices, and file names where an argument is a file (folder names for DIR)."""
    shtab = optional_package("shtab", "completion", "dlc completion")
    p = cli.parser()
    for command in cli.command_parsers(p).values():
        for action in command._actions:
            if action.dest == "file" or action.metavar in FILE_METAVARS:
                action.complete = shtab.FILE
            elif action.metavar == "DIR":
                action.complete = shtab.DIRECTORY
    print(shtab.complete(p, shell=args.shell))
