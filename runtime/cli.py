"""The `dlc` command line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import dlc
from dlc.compiler import autodiff, graph as G, passes as P, summary as S, syntax
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import load


def _add_model_args(p: argparse.ArgumentParser, backend=False):
    p.add_argument("file", help="a .dl file")
    p.add_argument("--model", help="which model of the file (default: the last one)")
    if backend:
        p.add_argument("--backend", choices=["auto", "native", "reference"], default="auto",
                       help="auto (default): the native engine, or the reference engine with a warning for a "
                            "model using an operation the native backend does not compile; native: compiled "
                            "LLVM kernels, never falling back; reference: the numpy interpreter")
        _add_threads(p)


def _add_threads(p: argparse.ArgumentParser):
    p.add_argument("--threads", type=_thread_count, metavar="N",
                   help="threads of the native code (default: $DLC_NUM_THREADS, else every core)")


def _thread_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of threads, at least 1; got '{text}'")
    return int(text)


def _pass_list(text: str) -> tuple:
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in P.PASSES:
            raise argparse.ArgumentTypeError(f"no graph pass '{name}'; the passes are {', '.join(P.PASSES)}")
    return names


def _build(args, training=True):
    return load(args.file).build(args.model, training=training)


def _write(text: str, path: str | None):
    if path:
        try:
            with open(path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            raise DlcError(f"cannot write {path}: {e.strerror}") from None
    else:
        print(text)


def _dims(pairs) -> dict:
    sizes = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise DlcError(f"--dim takes NAME=SIZE with a positive size, got '{item}'")
        sizes[name] = int(value)
    return sizes


# ---- commands -----------------------------------------------------------------------------------
def cmd_check(args):
    from dlc.runtime.trainer import make_config
    program = load(args.file)
    train = program.build(args.model, training=True)
    program.build(args.model, training=False)
    make_config(program, train.name, {}, require_data=False, model=train)     # every setting, without loading data
    print(f"{args.file}: ok")
    print(S.signature(train))


def cmd_summary(args):
    from dlc.runtime.trainer import frozen_names
    from dlc.runtime import config
    program = load(args.file)
    model = program.build(args.model, training=not args.eval)
    freeze = config.settings(program.trains.get(model.name)).get("freeze", (None, None))
    frozen = frozen_names(model, freeze[0], freeze[1]) | frozen_names(model, args.freeze or [])
    print(S.summary(model, frozen))


def _graph_for(args, grad: bool):
    model = _build(args, training=not getattr(args, "eval", False))
    if grad and "loss" not in model.graph.outputs:
        raise DlcError(f"model {model.name} has no loss, so it has no gradient graph", model.span)
    return autodiff.train_step(model.graph) if grad else model.graph


def _render(g, fmt: str) -> str:
    return {"text": G.to_text, "dot": G.to_dot, "json": G.to_json}[fmt](g)


def cmd_graph(args):
    _write(_render(_graph_for(args, args.grad), args.format), args.output)


def _optimized(args, graph, native: bool):
    """The graph after the passes asked for: -O, --passes or --dump-after for a graph,
    the default pipeline (what the engine compiles) for the native stages."""
    passes = args.passes or (P.PIPELINE if native or args.optimize or args.dump_after else ())
    if args.dump_after not in (None, "all", *passes):
        raise DlcError(f"--dump-after {args.dump_after}: that pass does not run (the passes: {', '.join(passes)})")
    return P.optimize(graph, passes, dump=args.dump_after, dump_to=sys.stderr) if passes else graph


def cmd_compile(args):
    if args.emit == "ast":
        _write(syntax.dump(load(args.file).module), args.output)
    elif args.emit in ("graph", "grad"):
        _write(_render(_optimized(args, _graph_for(args, args.emit == "grad"), False), args.format), args.output)
    else:       # the native stages, of the train step (or the forward graph without a loss)
        from dlc.compiler.codegen import render
        from dlc.compiler.codegen.kernels import build_module
        from dlc.compiler.lower import NotLowerable, lower
        from dlc.runtime import jit
        model = _build(args)
        graph = _optimized(args, autodiff.train_step(model.graph) if "loss" in model.graph.outputs else model.graph,
                           True)
        try:
            program = lower(graph)
        except NotLowerable as e:
            raise DlcError(f"the native backend cannot compile {model.name} yet: {e}") from None
        if args.emit in ("kernels", "fused"):
            _write((render.program if args.emit == "kernels" else render.fused)(program), args.output)
        else:
            module = build_module(program)
            _write(jit.optimized_ir(module) if args.emit == "llvm" else jit.assembly(module), args.output)


def cmd_gradcheck(args):
    from dlc.runtime import gradcheck as gc
    model = _build(args, training=True)
    if "loss" not in model.graph.outputs:
        raise DlcError(f"model {model.name} has no loss, so there is no gradient to check", model.span)
    sizes = gc.default_sizes(model, args.size)
    sizes.update(_dims(args.dim))
    params = gc.init_params(model, args.seed)
    feeds = gc.sample_inputs(model, sizes, args.seed)
    results = gc.gradcheck(model, feeds, params, per_param=args.entries, tolerance=args.tolerance, seed=args.seed)
    dims = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "none"
    print(f"gradient check of {model.name} in float64 (symbolic dims: {dims}; tolerance {args.tolerance:g})")
    rows = [(r.name, str(r.checked), f"{r.max_abs:.2e}", f"{r.rel:.2e}", "pass" if r.ok else "FAIL") for r in results]
    headers = ("Parameter", "Entries", "Max abs error", "Max rel error", "Result")
    widths = [max(len(x[i]) for x in [headers] + rows) for i in range(5)]
    for r in [headers] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"FAILED: {len(failed)} of {len(results)} parameters", file=sys.stderr)
        return 1
    print(f"all {len(results)} parameters pass")
    return 0


def _weights(args):
    from dlc.runtime.api import DlcModel
    return DlcModel(args.file, args.model, args.backend).load_weights(args.weights)


def cmd_train(args):
    from dlc.runtime.trainer import Trainer
    overrides = {name: getattr(args, name) for name in ("epochs", "batch", "lr", "optimizer", "seed", "init_from",
                                                         "freeze", "data", "validation", "test", "schedule", "clip",
                                                         "early_stop")}
    trainer = Trainer(load(args.file), args.model, overrides, Path(args.out) if args.out else None,
                      backend=args.backend)
    result = trainer.run(resume=args.resume if args.resume != "" else True)
    if result.stopped == "interrupted":
        return 130
    last = result.history[-1] if result.history else {}
    stats = "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("epoch", "lr", "time"))
    print(f"trained {trainer.name} for {len(result.history)} epochs ({result.stopped}): {stats}")
    if result.test:
        print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
    print(f"checkpoints: {result.out_dir / 'best.npz'}, {result.out_dir / 'last.npz'}")


def cmd_eval(args):
    values = _weights(args).evaluate(args.data, args.batch)      # which data it scores goes to stderr
    print("  ".join(f"{k} {v:.4f}" for k, v in values.items()))


def cmd_predict(args):
    model = _weights(args)
    outputs = model.predict(args.input, args.batch)
    path = Path(args.output)
    try:
        if path.suffix == ".csv":
            if len(outputs) != 1:
                raise DlcError(f"a .csv holds one output; this model has {len(outputs)}: write a .npz")
            value = next(iter(outputs.values()))
            np.savetxt(path, value.reshape(len(value), -1), delimiter=",", fmt="%.6g")
        else:
            np.savez(path, **outputs)
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"wrote {path}: {shapes}")


def cmd_generate(args):
    from dlc.runtime.api import _sequence_inputs
    model = _weights(args)
    if _sequence_inputs(model.eval_model) is None:
        print(args.prompt + model.generate(args.prompt, args.length, args.temperature, args.seed))
        return
    try:       # an encoder-decoder: the prompt is the source sequence, as token ids
        src = np.array([[int(t) for t in args.prompt.replace(",", " ").split()]], np.int64)
    except (ValueError, OverflowError):
        raise DlcError(f"{model.name} is an encoder-decoder: give the source as token ids, as in --prompt \"3 4 5\"")
    if src.size == 0:
        raise DlcError("the source sequence is empty")
    width = model.meta.get("meta", {}).get("max_len", 0)     # sources were padded to this length in training
    if src.shape[1] < width:
        src = np.pad(src, ((0, 0), (0, width - src.shape[1])))
    ids = list(model.decode(src, args.length)[0])
    print(" ".join(str(t) for t in ids[:ids.index(2) + 1 if 2 in ids else len(ids)]))


def cmd_bench(args):
    from dlc.runtime.bench import bench
    print(bench(load(args.file), args.model, args.batch, _dims(args.dim), args.steps, args.top))


# ---- parser ------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlc", description="A compiler for neural networks written in .dl files.")
    p.add_argument("--version", action="version", version=f"dlc {dlc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and shape-check a model; print its signature")
    _add_model_args(c)
    c.set_defaults(run=cmd_check)

    c = sub.add_parser("summary", help="parameters, output shapes, totals and FLOPs")
    _add_model_args(c)
    c.add_argument("--eval", action="store_true", help="summarize the evaluation-mode graph")
    c.add_argument("--freeze", action="append", metavar="PATTERN",
                   help="count these parameters as frozen (the train block's freeze is applied too)")
    c.set_defaults(run=cmd_summary)

    c = sub.add_parser("graph", help="print the graph IR (or its gradient graph)")
    _add_model_args(c)
    c.add_argument("--grad", action="store_true", help="the train-step graph with gradients")
    c.add_argument("--eval", action="store_true", help="the evaluation-mode graph")
    c.add_argument("--format", choices=["text", "dot", "json"], default="text")
    c.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    c.set_defaults(run=cmd_graph)

    c = sub.add_parser("compile", help="show a stage of compilation")
    _add_model_args(c)
    c.add_argument("--emit", choices=["ast", "graph", "grad", "fused", "kernels", "llvm", "asm"], required=True,
                   help="ast: the syntax tree; graph: the forward graph; grad: the train-step graph; fused: the "
                        "graph operations fused into each kernel, with their source lines; kernels: the fused loop "
                        "kernels of the train step, each with its source line; llvm: their optimized LLVM IR; asm: "
                        "the host assembly")
    c.add_argument("--format", choices=["text", "dot", "json"], default="text", help="for graph and grad")
    c.add_argument("-O", "--optimize", action="store_true",
                   help="graph and grad: run the graph passes (" + ", ".join(P.PIPELINE) + ") first; the native "
                        "stages always run them")
    c.add_argument("--passes", type=_pass_list, metavar="NAMES",
                   help="run these passes, comma-separated, instead of the default pipeline (implies -O)")
    c.add_argument("--dump-after", choices=[*P.PASSES, "all"], metavar="PASS",
                   help="print the graph to stderr after PASS (" + ", ".join(P.PASSES) + " or all), in the "
                        "first round and whenever it changes the graph (implies -O)")
    c.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    c.set_defaults(run=cmd_compile)

    c = sub.add_parser("gradcheck", help="check gradients against finite differences (float64)")
    _add_model_args(c)
    c.add_argument("--size", type=int, default=2, help="size of every symbolic dim (default 2)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of one symbolic dim")
    c.add_argument("--entries", type=int, default=8, help="entries checked per parameter (default 8)")
    c.add_argument("--tolerance", type=float, default=1e-6, help="largest relative error that passes")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=cmd_gradcheck)

    c = sub.add_parser("bench", help="time the native train step and every kernel in it")
    _add_model_args(c)
    c.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of another symbolic dim (default 32)")
    c.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    c.add_argument("--top", type=int, default=25, help="kernels shown, slowest first (default 25)")
    _add_threads(c)
    c.set_defaults(run=cmd_bench)

    c = sub.add_parser("train", help="train a model on its train block's data (flags override the block)")
    _add_model_args(c, backend=True)
    c.add_argument("--epochs", type=int)
    c.add_argument("--batch", type=int, help="batch size: 1 is stochastic, the data size is batch GD")
    c.add_argument("--lr", type=float, help="learning rate")
    c.add_argument("--optimizer", help="sgd, momentum, nesterov, rmsprop, adam or adamw")
    c.add_argument("--seed", type=int)
    c.add_argument("--data", help='a source, e.g. "digits()", "xor()" or a file path (.npz, .csv, IDX, .txt)')
    c.add_argument("--validation", help='e.g. "split(0.1)" or a data source')
    c.add_argument("--test", help='held-out test data, e.g. "split(0.2)"')
    c.add_argument("--schedule", help='e.g. "cosine(warmup = 1)", "step(every = 10, gamma = 0.5)"')
    c.add_argument("--clip", help='e.g. "global_norm(1.0)" or "value(0.5)"')
    c.add_argument("--early-stop", dest="early_stop", help='e.g. "patience(3, monitor = val_loss)"')
    c.add_argument("--freeze", action="append", metavar="PATTERN", help="parameters not to train (conv*, f5)")
    c.add_argument("--init-from", dest="init_from", metavar="CKPT", help="start from these weights, by name")
    c.add_argument("--out", metavar="DIR", help="checkpoints and history (default: runs/MODEL beside the file)")
    c.add_argument("--resume", nargs="?", const="", default=False, metavar="CKPT",
                   help="continue from DIR/last.npz or the given checkpoint")
    c.set_defaults(run=cmd_train)

    c = sub.add_parser("eval", help="loss and metrics of trained weights on data")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT")
    c.add_argument("--data", help="default: the train block's test data, else its data")
    c.add_argument("--batch", type=int, default=256)
    c.set_defaults(run=cmd_eval)

    c = sub.add_parser("predict", help="run trained weights on inputs and write the outputs")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT")
    c.add_argument("--input", required=True, metavar="PATH", help=".npz (arrays by input name), .csv or .txt")
    c.add_argument("--output", default="predictions.npz", metavar="PATH", help=".npz (default) or .csv")
    c.add_argument("--batch", type=int, default=256)
    c.set_defaults(run=cmd_predict)

    c = sub.add_parser("generate", help="continue a text prompt with a trained character model")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT")
    c.add_argument("--prompt", default="", help="the text to continue")
    c.add_argument("--length", type=int, default=200, help="characters to generate")
    c.add_argument("--temperature", type=float, default=0.0, help="0 is greedy; higher samples more freely")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=cmd_generate)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "run", None):
        parser().print_help()
        return 2
    if getattr(args, "threads", None):      # read by the native engine at every call
        os.environ["DLC_NUM_THREADS"] = str(args.threads)
    try:
        return args.run(args) or 0
    except DlcError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:       # the reader went away (dlc graph ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RecursionError:
        print("error: the program nests too deeply to compile", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in dlc, not in the user's program
        if os.environ.get("DLC_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {e}\n(this is a bug in dlc; set DLC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
