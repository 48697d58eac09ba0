"""`dlc check`: parse and shape-check a model; print its signature."""
from __future__ import annotations

from dlc.compiler.frontend import summary as summaries
from dlc.compiler.frontend.loader import load
from dlc.runtime.training.config import make_config
from dlc.runtime.cli.arguments import model_arguments

HELP = 'parse and shape-check a model; print its signature'


def arguments(p):
    model_arguments(p)


def run(args):
    program = load(args.file)
    train = program.check(args.model)
    make_config(program, train.name, {}, require_data=False, model=train)     # every setting, without loading data
    print(f"{args.file}: ok")
    print(summaries.signature(train))
