"""`dlc check`: parse and shape-check a model; print its signature (its warnings on stderr)."""

from __future__ import annotations

import sys

from dlc.compiler.frontend import summary as summaries
from dlc.compiler.frontend.loader import load
from dlc.runtime.training.config import make_config
from dlc.runtime.cli.arguments import model_arguments

HELP = 'parse and shape-check a model; print its signature'


def arguments(p):
    model_arguments(p)


def run(args):
    program = load(args.file)
    for warning in program.warnings:
        print(warning.render("warning"), file=sys.stderr)
    train = program.check(args.model)
    make_config(program, train.name, {}, require_data=False, model=train)  # every setting, without loading data
    print(f"{args.file}: ok")
    print(summaries.signature(train))
