"""The `dlc` command line: a table of commands, each a module of `commands/` that holds its
help, its arguments (`arguments(p)`) and what it does (`run(args)`).

Only the module of the command being run is imported: every command's dependencies
together cost ~0.6 s more than `dlc check` needs (measured: importing the trainer took
1.4 s, the front end 0.8 s), and start-up is paid on every call. The import happens inside
`main`'s handling of Ctrl-C, so an interrupt at any moment of start-up ends with
"interrupted" and status 130 rather than a traceback. `dlc --help`, completion and a
mistyped command build the whole table."""

from __future__ import annotations

import argparse
import gc
import importlib
import keyword
import os
import re
import signal
import sys
import threading

import dlc

# The commands, in the order `dlc --help` lists them: commands/NAME.py each (NAME_.py for a
# Python keyword). A new command is a module there and its name here.
COMMANDS = (
    "check",
    "fmt",
    "summary",
    "graph",
    "compile",
    "gradcheck",
    "bench",
    "train",
    "eval",
    "predict",
    "generate",
    "neighbours",
    "quantize",
    "checkpoint",
    "export",
    "build",
    "import",
    "data",
    "tokenizer",
    "completion",
    "lsp",
)
ALIASES = {"neighbors": "neighbours"}
# the commands that never run a model's arithmetic: they start numpy's BLAS (OpenBLAS) on one
# thread, as its pool of threads, which spin as they start, cost 20-40 ms of CPU (measured on
# `dlc check`, benchmarks/README.md, Start-up); an OPENBLAS_NUM_THREADS the user set stands
FRONT_END_COMMANDS = ("check", "fmt", "summary", "completion")


def command_module(name: str):
    return importlib.import_module(f"dlc.runtime.cli.commands.{name}{'_' * keyword.iskeyword(name)}")


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is said first at what it is about, as dlc's other
    errors are (docs/cli.md, "Where an error is"): the flag or argument (`--batch: error: ...`,
    `CKPT: error: ...`), or the word not understood (`--nope: error: ...`), then the usage;
    status 2."""

    def error(self, message: str):
        for pattern in USAGE_ERRORS:
            m = re.match(pattern, message, re.S)
            if m:
                place = max(m["place"].split("/"), key=lambda s: s.startswith("--"))  # -o/--output: --output
                self.exit(2, f"{place}: error: {m['rest'] or message}\n{self.format_usage()}")
        self.exit(2, f"{self.prog}: error: {message}\n{self.format_usage()}")


# argparse's messages and dlc's, each with its place: the flag or argument, else the word not understood
USAGE_ERRORS = (
    r"argument (?P<place>\S+?): (?P<rest>.*)",
    r"the following arguments are required: (?P<place>[^,\s]+)(?P<rest>)",
    r"unrecognized arguments: (?P<place>\S+)(?P<rest>)",
    r"unknown command '(?P<place>[^']+)'(?P<rest>)",
    r"(?P<place>[A-Z_]+): (?P<rest>.*)",  # an environment variable: DLC_NUM_THREADS
)


def parser(names=COMMANDS) -> argparse.ArgumentParser:
    """dlc's parser with these commands (all by default)."""
    p = Parser(prog="dlc", description="A compiler for neural networks written in .dl files.")
    p.add_argument("--version", action="version", version=f"dlc {dlc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", help="one of these; dlc COMMAND -h for its options")
    for name in names:
        module = command_module(name)
        c = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", None),
            aliases=[a for a, of in ALIASES.items() if of == name],
        )
        module.arguments(c)
        c.set_defaults(run=module.run, command_parser=c)
    return p


def command_parsers(p: argparse.ArgumentParser) -> dict:
    """The commands of parser `p`: name -> the command's parser."""
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def _parse(argv) -> argparse.Namespace:
    """The arguments; an unknown command or flag is a usage error with the one it may mean
    (`trian`: did you mean 'train'?; `--optimiser`: did you mean '--optimizer'?)."""
    from dlc.compiler.errors import did_you_mean

    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)  # dlc's own flags take no value
    name = ALIASES.get(first, first)
    if name in FRONT_END_COMMANDS and "numpy" not in sys.modules:  # read when numpy is first imported
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    p = parser((name,)) if name in COMMANDS else parser()
    if first is not None and name not in COMMANDS:
        p.error(f"unknown command '{first}'{did_you_mean(first, command_parsers(p))}")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        command = getattr(args, "command_parser", None) or p
        flag = next((u.partition("=")[0] for u in unknown if u.startswith("-")), "")
        flags = [s for action in command._actions for s in action.option_strings]
        command.error(f"unrecognized arguments: {' '.join(unknown)}{did_you_mean(flag, flags) if flag else ''}")
    return args


def _imported(argv) -> argparse.Namespace:
    """The arguments parsed, the command's modules imported. Importing makes objects that last
    to the end of the process (modules, classes, functions, tables), among which the cyclic
    garbage collector finds nothing: it is paused meanwhile, and what a process's start
    imported is then frozen out of every later collection (else the first one would pass over
    all of it). Both together took `dlc check` from 456 to 328 ms of CPU (benchmarks/README.md,
    Start-up). A call that imports nothing (a later one in a process: a test's) freezes
    nothing, nor the garbage it may find."""
    enabled, modules = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        return _parse(argv)
    finally:
        if len(sys.modules) > modules:
            gc.freeze()
        if enabled:
            gc.enable()


def main(argv=None) -> int:
    previous = signal.getsignal(signal.SIGINT)
    interrupts = _recorded_interrupts()
    try:
        status = _main(argv)
    except KeyboardInterrupt:  # at any moment: while importing, compiling or training
        status = None
    finally:
        if interrupts is not None:
            signal.signal(signal.SIGINT, previous)
    if status is None or interrupts:
        print("interrupted", file=sys.stderr)
        return 130
    return status


def _recorded_interrupts() -> list | None:
    """Ctrl-C raises KeyboardInterrupt as Python's own handler does, and is also recorded: one
    raised inside a callback that CPython runs and whose exceptions it drops (importlib's
    module-lock weakref callback, a __del__) would otherwise let the command run on and end
    with status 0. An interrupt that lands while llvmlite's binding code runs is put off
    until it has returned (compiler/native/codegen/interrupts.py: a double free otherwise).
    A SIGINT that is ignored or handled by the embedding program is left alone, as is one
    outside the main thread, where no handler can be set. The trainer's own handler
    (training/interrupt.py: stop after the step and save) replaces this one for the loop,
    and what it handles is not an interrupt of the command."""
    from dlc.compiler.native.codegen import interrupts

    if threading.current_thread() is not threading.main_thread() or not interrupts.pythons_own(
        signal.getsignal(signal.SIGINT)
    ):
        return None
    seen = []
    signal.signal(signal.SIGINT, interrupts.putting_off_llvmlite(seen))
    return seen


def _main(argv) -> int:
    from dlc.compiler.errors import DlcError
    from dlc.runtime.cli.arguments import apply_engine_settings

    args = _imported(argv)
    if not getattr(args, "run", None):  # `dlc` alone: a usage error
        parser().print_help(sys.stderr)
        return 2
    if hasattr(args, "threads"):
        apply_engine_settings(args)
    try:
        return args.run(args) or 0
    except DlcError as e:
        print(e.render(), file=sys.stderr)
        return 2 if e.span is not None and e.span.file.startswith("--") else 1  # a flag's value: a usage error
    except BrokenPipeError:  # the reader went away (dlc graph ... | head): it has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RecursionError:  # where the front end could not say where: at the file
        print(f"{getattr(args, 'file', 'dlc')}: error: the program nests too deeply to compile", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in dlc, not in the user's program
        if os.environ.get("DLC_DEBUG"):
            raise
        print(
            f"internal error: {type(e).__name__}: {e}\n(this is a bug in dlc; set DLC_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 3
