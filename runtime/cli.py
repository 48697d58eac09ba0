"""The `dlc` command line.

Only the standard library is imported up front: the compiler, numpy and the runtime are
imported inside `main`, within its handling of Ctrl-C, so an interrupt at any moment of
start-up ends with "interrupted" and status 130 rather than a traceback."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import dlc


def _add_model_args(p: argparse.ArgumentParser, backend=False):
    p.add_argument("file", help="a .dl file")
    p.add_argument("--model", metavar="NAME", help="which model of the file (default: the last one)")
    if backend:
        p.add_argument("--backend", choices=["auto", "native", "reference"], default="auto",
                       help="auto (default): the native engine, or the reference engine with a warning for a "
                            "model using an operation the native backend does not compile; native: compiled "
                            "LLVM kernels, never falling back; reference: the numpy interpreter")
        _add_threads(p)


def _add_threads(p: argparse.ArgumentParser):
    p.add_argument("--threads", type=_thread_count, metavar="N",
                   help="threads of the native code (default: $DLC_NUM_THREADS, else every core)")


# ---- argument types: a value out of range is a usage error (status 2) -----------------------------
def _whole(least: int, most: int | None = None, what: str = ""):
    """A whole number from `least` (to `most`); `what` names it in the message."""
    def parse(text: str) -> int:
        value = int(text) if text.isdigit() else None      # no sign, no fraction, no exponent
        if value is None or value < least or (most is not None and value > most):
            bound = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise argparse.ArgumentTypeError(f"needs a whole number{what}, {bound}; got '{text}'")
        return value
    return parse


_thread_count = _whole(1, what=" of threads")
_positive = _whole(1)


def _seed(text: str) -> int:
    from dlc.runtime.training.config import SEED_MAX
    return _whole(0, SEED_MAX)(text)


def _real(low: float, strict: bool, most: float | None = None):
    """A finite number above `low` (`strict`) or at least `low` (and at most `most`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        high = most is not None and value > most
        if not math.isfinite(value) or value < low or (strict and value == low) or high:
            bound = f"{'above' if strict else 'at least'} {low:g}" + ("" if most is None else f" and at most {most:g}")
            raise argparse.ArgumentTypeError(f"needs a finite number {bound}; got '{text}'")
        return value
    return parse


def _checkpoint(text: str) -> str:
    """--resume's checkpoint: `dlc train --resume FILE.dl` would otherwise take the model file for it."""
    if text.endswith(".dl"):
        raise argparse.ArgumentTypeError(f"takes a checkpoint, not the model file '{text}': write "
                                         f"`dlc train {text} --resume` to continue from DIR/last.npz, or "
                                         "`--resume CKPT` after the file")
    return text


def _pass_list(text: str) -> tuple:
    from dlc.compiler.passes import optimize as P
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in P.PASSES:
            raise argparse.ArgumentTypeError(f"no graph pass '{name}'; the passes are {', '.join(P.PASSES)}")
    return names


def _threads(args):
    """--threads, else a valid $DLC_NUM_THREADS, for the native engine, which reads the variable."""
    if args.threads:
        os.environ["DLC_NUM_THREADS"] = str(args.threads)
    elif "DLC_NUM_THREADS" in os.environ:
        try:
            _thread_count(os.environ["DLC_NUM_THREADS"])
        except argparse.ArgumentTypeError as e:
            args.command_parser.error(f"DLC_NUM_THREADS: {e}")


# ---- helpers --------------------------------------------------------------------------------------------
def _build(args, training=True):
    from dlc.compiler.frontend.loader import load
    return load(args.file).build(args.model, training=training)


def _write(text: str, path: str | None):
    from dlc.compiler.errors import DlcError
    if path:
        try:
            with open(path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            raise DlcError(f"cannot write {path}: {e.strerror}") from None
    else:
        print(text)


def _dims(pairs) -> dict:
    from dlc.compiler.errors import DlcError
    sizes = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise DlcError(f"--dim takes NAME=SIZE with a positive size, got '{item}'")
        sizes[name] = int(value)
    return sizes


# ---- commands -----------------------------------------------------------------------------------
def cmd_check(args):
    from dlc.compiler.frontend import summary as S
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.config import make_config
    program = load(args.file)
    train = program.build(args.model, training=True)
    program.build(args.model, training=False)
    make_config(program, train.name, {}, require_data=False, model=train)     # every setting, without loading data
    print(f"{args.file}: ok")
    print(S.signature(train))


def cmd_summary(args):
    """--freeze replaces the train block's freeze, as in `dlc train`: the same settings (make_config)
    and the same names (frozen_names), so the trainable count is what trains. FLOPs are counted at
    --batch, else at the train block's batch, else left a polynomial in the batch; --memory's peak is
    located at that batch (or the default one) and the other dims at 32 unless --dim gives them."""
    from dlc.compiler.errors import DlcError
    from dlc.compiler.frontend import summary as S
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.ir.dims import symbols
    from dlc.runtime.api import summary_settings
    from dlc.runtime.engines import budget
    from dlc.runtime.training.optim import make_optimizer
    program = load(args.file)
    model = program.build(args.model, training=not args.eval)
    cfg, frozen, batch, given = summary_settings(program, model, args.freeze, args.batch, _dims(args.dim))
    if not args.memory:
        print(S.summary(model, frozen, args.depth, given))
        return
    if args.eval:
        raise DlcError("--memory is the memory of training: leave out --eval")
    model.require_loss("it does not train")
    dims = sorted({s for i in model.inputs for s in symbols(i.type.shape)} - {batch})
    sizes = ({batch: cfg.batch} if batch else {}) | {s: 32 for s in dims} | given
    slots = len(make_optimizer(cfg.optimizer).slots())
    trainable = [p.name for p in model.params if p.trainable and p.name not in frozen]
    parts = budget.training_memory(model, trainable, slots, sizes)
    print(S.memory_table(model, parts, sizes, args.depth,
                         f"{cfg.optimizer.name}: {slots} value{'s' if slots != 1 else ''} per trained parameter"))


def _graph_for(args, grad: bool):
    from dlc.compiler.passes import autodiff
    model = _build(args, training=not getattr(args, "eval", False))
    if grad:
        model.require_loss("it has no gradient graph")
    return autodiff.train_step(model.graph) if grad else model.graph


def _render(g, fmt: str) -> str:
    from dlc.compiler.ir import graph as G
    return {"text": G.to_text, "dot": G.to_dot, "json": G.to_json}[fmt](g)


def cmd_graph(args):
    if args.format == "html":       # both graphs of the model, its source and its native kernels
        from dlc.compiler.graph_page import page
        model = _build(args, training=not args.eval)
        if args.grad:
            model.require_loss("it has no gradient graph")
        _write(page(model, "train_step" if args.grad else "forward"), args.output)
        return
    _write(_render(_graph_for(args, args.grad), args.format), args.output)


def _optimized(args, graph, native: bool):
    """The graph after the passes asked for: -O, --passes or --dump-after for a graph,
    the default pipeline (what the engine compiles) for the native stages."""
    from dlc.compiler.passes import optimize as P
    from dlc.compiler.errors import DlcError
    passes = args.passes or (P.PIPELINE if native or args.optimize or args.dump_after else ())
    if args.dump_after not in (None, "all", *passes):
        raise DlcError(f"--dump-after {args.dump_after}: that pass does not run (the passes: {', '.join(passes)})")
    return P.optimize(graph, passes, dump=args.dump_after, dump_to=sys.stderr) if passes else graph


def cmd_compile(args):
    from dlc.compiler.passes import autodiff
    from dlc.compiler.frontend import syntax
    from dlc.compiler.errors import DlcError
    from dlc.compiler.frontend.loader import load
    if args.emit == "ast":
        _write(syntax.dump(load(args.file).module), args.output)
    elif args.emit in ("graph", "grad"):
        _write(_render(_optimized(args, _graph_for(args, args.emit == "grad"), False), args.format), args.output)
    else:       # the native stages, of the train step (or the forward graph without a loss)
        from dlc.compiler.native import render
        from dlc.compiler.native.driver import build_module
        from dlc.compiler.native.lower import NotLowerable, lower
        from dlc.compiler.native import jit
        model = _build(args)
        graph = _optimized(args, autodiff.train_step(model.graph) if "loss" in model.graph.outputs else model.graph,
                           True)
        if args.emit == "fused" or args.explain_fusion:
            from dlc.compiler.native.fusion import Fusion
            fusion = Fusion(graph)
            _write(fusion.explanation() if args.explain_fusion else fusion.text(), args.output)
            return
        try:
            program = lower(graph)
        except NotLowerable as e:
            raise DlcError(f"the native backend cannot compile {model.name} yet: {e}") from None
        if args.emit == "kernels":
            _write(render.program(program), args.output)
        else:
            module = build_module(program).module
            _write(jit.optimized_ir(module) if args.emit == "llvm" else jit.assembly(module), args.output)


def cmd_gradcheck(args):
    from dlc.runtime.training import gradcheck as gc
    model = _build(args, training=True)
    model.require_loss("there is no gradient to check")
    sizes = gc.default_sizes(model, args.size)
    sizes.update(_dims(args.dim))
    params = gc.init_params(model, args.seed)
    feeds = gc.sample_inputs(model, sizes, args.seed)
    dims = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "none"
    if args.hessian:
        results = gc.hvp_check(model, feeds, params, tolerance=args.tolerance, native_tolerance=args.native_tolerance,
                               seed=args.seed)
        print(f"Hessian-vector product check of {model.name} against differences of the gradient in float64 "
              f"(symbolic dims: {dims}; tolerance {args.tolerance:g}, native {args.native_tolerance:g})")
        headers = ("Parameter", "Engine", "Entries", "Max abs error", "Max rel error", "Result")
        rows = [(r.name, f"{r.engine} ({gc.HVP_ENGINES[r.engine]})", str(r.checked), f"{r.max_abs:.2e}",
                 f"{r.rel:.2e}", "pass" if r.ok else "FAIL") for r in results]
        passed = "pass on both engines"
    else:
        results = gc.gradcheck(model, feeds, params, per_param=args.entries, tolerance=args.tolerance, seed=args.seed)
        print(f"gradient check of {model.name} in float64 (symbolic dims: {dims}; tolerance {args.tolerance:g})")
        headers = ("Parameter", "Entries", "Max abs error", "Max rel error", "Result")
        rows = [(r.name, str(r.checked), f"{r.max_abs:.2e}", f"{r.rel:.2e}", "pass" if r.ok else "FAIL") for r in results]
        passed = "pass"
    widths = [max(len(x[i]) for x in [headers] + rows) for i in range(len(headers))]
    for r in [headers] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    failed, total = {r.name for r in results if not r.ok}, len({r.name for r in results})
    if failed:
        print(f"FAILED: {len(failed)} of {total} parameters", file=sys.stderr)
        return 1
    print(f"all {total} parameters {passed}")
    return 0


def _weights(args):
    from dlc.runtime.api import DlcModel
    return DlcModel(args.file, args.model, args.backend).load_weights(args.weights)


def cmd_train(args):
    from dlc.compiler.errors import plural
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training.progress import row_values, terminal_width, wrap_items
    from dlc.runtime.training.trainer import Trainer
    overrides = {name: getattr(args, name) for name in ("epochs", "batch", "lr", "optimizer", "seed", "init_from",
                                                         "freeze", "data", "validation", "test", "schedule", "clip",
                                                         "early_stop", "memory", "precision", "allreduce_bucket")}
    overrides["check_numerics"] = args.check_numerics or None       # the flag adds to the block, never clears it
    progress = "none" if args.quiet else args.log_every or "auto"
    trainer = Trainer(load(args.file), args.model, overrides, Path(args.out) if args.out else None,
                      backend=args.backend, progress=progress, tensorboard=args.tensorboard)
    result = trainer.run(resume=args.resume if args.resume != "" else True, overwrite=args.overwrite)
    if result.stopped == "interrupted":
        return 130
    if not trainer.writes:      # another rank of a distributed run: rank 0 reports
        return 0
    head = f"trained {trainer.name} for {plural(len(result.history), 'epoch')} ({result.stopped})"
    stats = row_values(result.history[-1]) if result.history else []
    items = [f"{head}: {stats[0]}", *stats[1:]] if stats else [head]
    print(wrap_items(items, terminal_width(sys.stdout) if sys.stdout.isatty() else None))
    if result.test:
        print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
    written = [str(result.out_dir / name) for name in result.written]
    print(f"checkpoints: {', '.join(written)}" if written else "no checkpoint written (no epoch ran)")


def cmd_eval(args):
    values = _weights(args).evaluate(args.data, args.batch)      # which data it scores goes to stderr
    print("  ".join(f"{k} {v:.4f}" for k, v in values.items()))


def cmd_predict(args):
    import numpy as np
    from dlc.compiler.errors import DlcError
    model = _weights(args)
    outputs = model.predict(args.data, args.batch)
    path = Path(args.output)
    try:
        if path.suffix == ".csv":
            if len(outputs) != 1:
                raise DlcError(f"a .csv holds one output; this model has {len(outputs)}: write a .npz")
            name, value = next(iter(outputs.items()))
            table = value.reshape(len(value), -1)
            # a header of the output's name, a column each: probs_0, probs_1, ... (one column: probs)
            header = ",".join([name] if table.shape[1] == 1 else [f"{name}_{i}" for i in range(table.shape[1])])
            np.savetxt(path, table, delimiter=",", fmt="%.6g", header=header, comments="")
        elif path.suffix == ".png":
            from dlc.runtime.data import png
            name = path.stem if len(outputs) > 1 else next(iter(outputs))
            if name not in outputs:
                raise DlcError(f"a .png holds one output: name the file after it ({', '.join(o + '.png' for o in outputs)})")
            outputs = {name: outputs[name]}
            png.write_png(path, png.grid(png.image_batch(name, outputs[name])))
        else:
            np.savez(path, **outputs)
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"wrote {path}: {shapes}")


def cmd_neighbours(args):
    model = _weights(args)
    for word in args.words:
        found = model.neighbours(word, args.k, args.param)
        print(f"{word}: " + ", ".join(f"{w} {sim:.2f}" for w, sim in found))


def cmd_generate(args):
    import json
    from dlc.compiler.errors import DlcError
    from dlc.runtime.api import _sequence_inputs
    model = _weights(args)
    if _sequence_inputs(model.eval_model) is None:
        prompt, show = args.prompt, lambda text: args.prompt + text
        in_table = lambda text: json.dumps(show(text), ensure_ascii=False)     # quoted: text may span lines
    else:
        try:        # an encoder-decoder: the prompt is the source sequence, as token ids
            prompt = [int(t) for t in args.prompt.replace(",", " ").split()]
        except ValueError:
            raise DlcError(f"{model.name} is an encoder-decoder: give the source as token ids, as in "
                           "--prompt \"3 4 5\"")
        show = in_table = lambda ids: " ".join(str(t) for t in ids)
    found = model.generate(prompt, args.length, args.temperature, args.seed, beam=args.beam, top_k=args.top_k,
                           top_p=args.top_p, length_penalty=args.length_penalty)
    if args.beam is None:
        print(show(found))
        return
    penalized = args.length_penalty is not None
    print(f"{'log_prob':>10}  " + (f"{'score':>10}  " if penalized else "") + "sequence")
    for c in found:
        print(f"{c.log_prob:>10.4f}  " + (f"{c.score:>10.4f}  " if penalized else "") + in_table(c.sequence))
    if penalized:
        print(f"log_prob: the sum of the model's log-probabilities of the generated tokens; score: log_prob / "
              f"((5 + length) / 6) ** {args.length_penalty:g}, the length-penalized log-probability they are "
              "ranked by", file=sys.stderr)


EXPORT_SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}


def _export_format(args) -> str:
    """--format, else the output's suffix; torch's pickled .pt / .pth is not written (usage errors)."""
    suffix = Path(args.output).suffix
    if suffix in (".pt", ".pth"):
        args.command_parser.error(f"dlc does not write {suffix} files (torch's pickle format needs torch and runs "
                                  "code when loaded): write a .safetensors file with --format torch and load it with "
                                  "safetensors.torch.load_file")
    fmt = args.format or EXPORT_SUFFIXES.get(suffix)
    if fmt is None:
        args.command_parser.error(f"cannot tell the format of '{args.output}': name it .onnx or .safetensors, "
                                  "or give --format")
    if suffix in EXPORT_SUFFIXES and (EXPORT_SUFFIXES[suffix] == "onnx") != (fmt == "onnx"):
        args.command_parser.error(f"--format {fmt} does not write a {suffix} file")
    return fmt


def cmd_export(args):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.training import checkpoint
    from dlc.runtime.interop import weights
    from dlc.runtime.training.config import make_config
    from dlc.runtime.training.trainer import initial_parameters
    fmt = _export_format(args)
    program = load(args.file)
    model = program.build(args.model, training=False)
    if args.weights:
        params, _ = weights.load(args.weights, model.params)
    else:       # the parameters a run of the train block starts from
        seed = make_config(program, model.name, {}, require_data=False, model=model).seed
        params = initial_parameters(model, seed)
        print(f"note: no --weights: exporting the initial parameters of {model.name} (seed {seed})", file=sys.stderr)
    if fmt == "onnx":
        from dlc.compiler.onnx.export import save_onnx
        save_onnx(model, params, args.output)
    else:
        layout = "torch" if fmt == "torch" else "dlc"
        kept = weights.save(args.output, params, model, checkpoint.source_hash(Path(args.file).read_text()), layout)
        if kept:
            print(f"note: {len(kept)} parameters have no torch.nn counterpart and keep their dlc names and layouts: "
                  + ", ".join(kept), file=sys.stderr)
    print(f"wrote {args.output} ({fmt})")


def cmd_bench(args):
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.engines.bench import bench
    print(bench(load(args.file), args.model, args.batch, _dims(args.dim), args.steps, args.top, args.precision))


def cmd_import(args):
    """An ONNX model as a .dl program (OUT.dl, the model named after it) and its weights as a
    dlc checkpoint (OUT.npz, or --weights); the program is built once before anything is written."""
    from dlc.compiler.errors import DlcError, plural
    from dlc.compiler.frontend.loader import load_text
    from dlc.compiler.onnx.importer import import_model, read_model
    from dlc.runtime.training import checkpoint
    out = Path(args.output)
    if out.suffix != ".dl":
        raise DlcError(f"-o takes the .dl file to write, got '{args.output}'")
    weights = Path(args.weights) if args.weights else out.with_suffix(".npz")
    imported = import_model(read_model(args.file), name=out.stem, source=Path(args.file).name, as_def=args.as_def)
    try:
        model = load_text(imported.text, str(out)).build(None, training=False)
    except DlcError as e:       # a value of the ONNX model dlc's checks refuse (an attribute out of range)
        e.notes.append((f"in the program imported from {args.file}; nothing was written", None))
        raise
    checkpoint.conform(weights, imported.weights, model.params)
    _write(imported.text.rstrip("\n"), str(out))
    checkpoint.save(weights, imported.weights, {}, {"model": imported.name,
                                                    "source_hash": checkpoint.source_hash(imported.text)})
    print(f"wrote {out} (model {imported.name}: {plural(len(imported.inputs), 'input')}, "
          f"{plural(len(imported.outputs), 'output')})")
    print(f"wrote {weights} ({plural(len(imported.weights), 'array')})")


def cmd_data_fetch(args):
    from dlc.runtime.data import download as fetch
    for name in args.names:
        fetch.known(name)           # every name checked before anything is downloaded
    for name in args.names:
        print(f"{name}: {fetch.fetch(name)}")


def cmd_data_list(args):
    from dlc.runtime.data import download as fetch
    print(fetch.listing())


FILE_METAVARS = ("PATH", "CKPT", "OUT", "OUT.dl")     # what a flag of these takes is a file, DIR a folder


def cmd_completion(args):
    """dlc's completion script for bash or zsh, made by shtab from this parser: commands, flags,
    choices, and file names where an argument is a file (folder names for DIR)."""
    from dlc.compiler.errors import optional_package
    shtab = optional_package("shtab", "completion", "dlc completion")
    p = parser()
    for command in _commands(p).values():
        for action in command._actions:
            if action.dest == "file" or action.metavar in FILE_METAVARS:
                action.complete = shtab.FILE
            elif action.metavar == "DIR":
                action.complete = shtab.DIRECTORY
    print(shtab.complete(p, shell=args.shell))


# ---- parser ------------------------------------------------------------------------------------------
WEIGHTS_HELP = "a checkpoint (.npz) or .safetensors file, in dlc's or torch.nn's names"


def parser() -> argparse.ArgumentParser:
    from dlc.compiler.passes import optimize as P
    p = argparse.ArgumentParser(prog="dlc", description="A compiler for neural networks written in .dl files.")
    p.add_argument("--version", action="version", version=f"dlc {dlc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", help="one of these; dlc COMMAND -h for its options")

    c = sub.add_parser("check", help="parse and shape-check a model; print its signature")
    _add_model_args(c)
    c.set_defaults(run=cmd_check)

    c = sub.add_parser("summary", help="the model's layers: types, output shapes, parameters and FLOPs; totals")
    _add_model_args(c)
    c.add_argument("--depth", type=_positive, metavar="N", help="show the layers N levels deep (default: all)")
    c.add_argument("--batch", type=int, metavar="N",
                   help="count FLOPs at batch N (default: the train block's batch; without one, a polynomial in it)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="count FLOPs at this size of a symbolic dim")
    c.add_argument("--memory", action="store_true",
                   help="the peak memory of training instead, by layer and in total: activations, parameters, "
                        "gradients and optimizer state, as polynomials in the dims")
    c.add_argument("--eval", action="store_true", help="summarize the evaluation-mode graph")
    c.add_argument("--freeze", action="append", metavar="PATTERN",
                   help="count these parameters as frozen instead of the train block's freeze, as "
                        "`dlc train --freeze` trains")
    c.set_defaults(run=cmd_summary)

    c = sub.add_parser("graph", help="print the graph IR (or its gradient graph)")
    _add_model_args(c)
    c.add_argument("--grad", action="store_true", help="the train-step graph with gradients")
    c.add_argument("--eval", action="store_true", help="the evaluation-mode graph")
    c.add_argument("--format", choices=["text", "dot", "json", "html"], default="text",
                   help="text (default): a node a line; dot: Graphviz; json: nodes, types and source places; "
                        "html: one page to explore the forward and train-step graphs by layer, with the source "
                        "and the native kernels")
    c.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    c.set_defaults(run=cmd_graph)

    c = sub.add_parser("compile", help="show a stage of compilation")
    _add_model_args(c)
    stage = c.add_mutually_exclusive_group(required=True)
    stage.add_argument("--emit", choices=["ast", "graph", "grad", "fused", "kernels", "llvm", "asm"],
                       help="ast: the syntax tree; graph: the forward graph; grad: the train-step graph; fused: "
                            "the fusion's groups, the graph operations each kernel computes, with their source lines; "
                            "kernels: the fused loop kernels of the train step, each with its source line; llvm: "
                            "their optimized LLVM IR; asm: the host assembly")
    stage.add_argument("--explain-fusion", action="store_true",
                       help="at every kernel boundary of the train step (the forward graph without a loss), why the "
                            "producer is not computed in its reader's kernel, with both source lines")
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
    c.add_argument("--size", type=_positive, default=2, metavar="N", help="size of every symbolic dim (default 2)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of one symbolic dim")
    c.add_argument("--entries", type=_positive, default=8, metavar="N",
                   help="entries checked per parameter (default 8)")
    c.add_argument("--tolerance", type=_real(0, strict=True), default=1e-6, metavar="T",
                   help="largest relative error that passes (default 1e-6)")
    c.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="seed of the parameters, the inputs and the entries checked (default 0)")
    c.add_argument("--hessian", action="store_true",
                   help="check Hessian-vector products instead, on the reference engine (float64) and the native one")
    c.add_argument("--native-tolerance", dest="native_tolerance", type=_real(0, strict=True), default=1e-4,
                   metavar="T", help="with --hessian: the largest relative error that passes on the native engine, "
                                     "which computes in float32 (default 1e-4)")
    c.set_defaults(run=cmd_gradcheck)

    c = sub.add_parser("bench", help="time the native train step (a model without a loss: its prediction) and "
                                      "every kernel in it")
    _add_model_args(c)
    c.add_argument("--batch", type=_positive, default=32, metavar="N",
                   help="batch size: B and every input's leading dim (default 32)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of another symbolic dim (default 32)")
    c.add_argument("--steps", type=_positive, default=20, metavar="N", help="timed steps (default 20)")
    c.add_argument("--top", type=_positive, default=25, metavar="N", help="kernels shown, slowest first (default 25)")
    c.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="of the operands of matmuls and convolutions, as in dlc train (default f32)")
    _add_threads(c)
    c.set_defaults(run=cmd_bench)

    c = sub.add_parser("train", help="train a model on its train block's data (flags override the block)")
    _add_model_args(c, backend=True)
    c.add_argument("--epochs", type=int, metavar="N", help="passes over the training data")
    c.add_argument("--batch", type=int, metavar="N", help="batch size: 1 is stochastic, the data size is batch GD")
    c.add_argument("--memory", metavar="SIZE", help="the most training may take, such as 2GB: a batch that needs "
                                                    "more is refused before anything is allocated")
    c.add_argument("--lr", type=float, metavar="X", help="learning rate")
    c.add_argument("--optimizer", metavar="SPEC", help='replaces the train block\'s: a name (sgd, momentum, nesterov, rmsprop, '
                                        'adam, adamw) with its defaults, or a spec, e.g. "sgd(lr = 0.1, momentum = 0.9)"')
    c.add_argument("--seed", type=int, metavar="N",
                   help="seed of everything random: initialization, shuffling, dropout, augmentation")
    c.add_argument("--data", metavar="SPEC",
                   help='a source, e.g. "digits()", "xor()" or a file path (.npz, .csv, IDX, .txt)')
    c.add_argument("--validation", metavar="SPEC", help='e.g. "split(0.1)" or a data source')
    c.add_argument("--test", metavar="SPEC", help='held-out test data, e.g. "split(0.2)"')
    c.add_argument("--schedule", metavar="SPEC", help='e.g. "cosine(warmup = 1)", "step(every = 10, gamma = 0.5)"')
    c.add_argument("--clip", metavar="SPEC", help='e.g. "global_norm(1.0)" or "value(0.5)"')
    c.add_argument("--precision", metavar="P",
                   help="of the operands of matmuls and convolutions: f32, or bf16 (rounded to bfloat16, "
                        "summed in float32; the parameters stay float32)")
    c.add_argument("--allreduce-bucket", dest="allreduce_bucket", metavar="SIZE",
                   help="on several processes (mpirun), the gradients are averaged in buckets of this size, each as "
                        "soon as the backward pass has finished it (default 128KB; 0: all at once after it)")
    c.add_argument("--early-stop", dest="early_stop", metavar="SPEC", help='e.g. "patience(3, monitor = val_loss)"')
    c.add_argument("--freeze", action="append", metavar="PATTERN", help="parameters not to train (conv*, f5)")
    c.add_argument("--init-from", dest="init_from", metavar="CKPT", help="start from these weights, by name")
    c.add_argument("--check-numerics", dest="check_numerics", action="store_true",
                   help="test every kernel's values; stop at the first NaN or Inf and name the line and operation "
                        "that made it")
    c.add_argument("--out", metavar="DIR", help="checkpoints and history (default: runs/MODEL beside the file)")
    c.add_argument("--resume", nargs="?", type=_checkpoint, const="", default=False, metavar="CKPT",
                   help="continue from DIR/last.npz or the given checkpoint")
    c.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints of another run in the --out folder (without it, a new run refuses "
                        "that folder)")
    c.add_argument("--tensorboard", metavar="DIR",
                   help='write TensorBoard event files to DIR: lr every step, loss and metrics every epoch '
                        '(needs tensorboardX: pip install "dlc[tensorboard]")')
    shown = c.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true",
                       help="no progress and no line per epoch: the summary, warnings and errors only")
    shown.add_argument("--log-every", dest="log_every", type=_positive, metavar="N",
                       help="a plain line every N steps instead of the redrawn progress line (for log files and CI)")
    c.set_defaults(run=cmd_train)

    c = sub.add_parser("eval", help="loss and metrics of trained weights on data")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    c.add_argument("--data", metavar="SPEC", help="the data to score (default: the test data of the checkpoint's "
                                                   "run, else its validation data, else its training data)")
    c.add_argument("--batch", type=_positive, default=256, metavar="N", help="batch size (default 256)")
    c.set_defaults(run=cmd_eval)

    c = sub.add_parser("predict", help="run trained weights on inputs and write the outputs")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    c.add_argument("--data", "--input", dest="data", required=True, metavar="PATH",
                   help='a file path: .npz (arrays by input name), .csv or .txt; or a source, e.g. "digits()" '
                        "(--input is the older name)")
    c.add_argument("--output", default="predictions.npz", metavar="PATH",
                   help=".npz (default), .csv (one output) or .png (one output of images, drawn as a grid)")
    c.add_argument("--batch", type=_positive, default=256, metavar="N", help="batch size (default 256)")
    c.set_defaults(run=cmd_predict)

    c = sub.add_parser("generate", help="continue a text prompt with a trained character model")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    c.add_argument("--prompt", default="", metavar="TEXT",
                   help="the text to continue (an encoder-decoder's source: token ids, \"3 4 5\")")
    c.add_argument("--length", type=_whole(0), default=200, metavar="N",
                   help="characters to generate; an encoder-decoder's most tokens, EOS included (default 200)")
    c.add_argument("--temperature", type=_real(0, strict=False), metavar="T",
                   help="0 is greedy (the default); higher samples more freely (the default with --top-k or "
                        "--top-p: 1)")
    c.add_argument("--top-k", type=_positive, metavar="K", help="sample among the K most likely tokens")
    c.add_argument("--top-p", type=_real(0, strict=True, most=1), metavar="P",
                   help="sample among the fewest most likely tokens whose probabilities sum to at least P "
                        "(nucleus sampling)")
    c.add_argument("--beam", type=_positive, metavar="K",
                   help="beam search: print the K best sequences found, with their log-probabilities")
    c.add_argument("--length-penalty", type=_real(0, strict=False), metavar="ALPHA",
                   help="with --beam, for an encoder-decoder: rank by log_prob / ((5 + length) / 6) ** ALPHA "
                        "(GNMT's; default 0: by log_prob)")
    c.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the sampling (default 0)")
    c.set_defaults(run=cmd_generate)

    c = sub.add_parser("neighbours", aliases=["neighbors"],
                       help="the words nearest to some words, by the cosine similarity of a trained embedding")
    _add_model_args(c, backend=True)
    c.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    c.add_argument("words", nargs="+", metavar="WORD", help="the words to look up")
    c.add_argument("-k", type=_positive, default=5, metavar="K", help="how many neighbours of each (default 5)")
    c.add_argument("--param", metavar="NAME", help="the embedding table (default: the first the model declares with a "
                                                   "row per word of the vocabulary)")
    c.set_defaults(run=cmd_neighbours)

    c = sub.add_parser("export", help="write a model's weights as .safetensors (dlc's or torch.nn's layout) or the "
                                      "model as .onnx",
                       description="torch's own .pt format is a pickle, which needs torch to write and runs code "
                                   "when loaded: --format torch writes a .safetensors file in torch.nn's names and "
                                   "layouts instead, for safetensors.torch.load_file and load_state_dict.")
    _add_model_args(c)
    c.add_argument("--weights", metavar="CKPT", help="a checkpoint (.npz) or .safetensors file (default: the initial "
                                                     "parameters, seeded as training seeds them)")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="the file to write: .onnx or .safetensors")
    c.add_argument("--format", choices=["onnx", "safetensors", "torch"],
                   help="default: from OUT's suffix. safetensors: dlc's names and layouts; torch: torch.nn's "
                        "(a .safetensors file)")
    c.set_defaults(run=cmd_export)

    c = sub.add_parser("import", help="an ONNX model as a .dl program and a checkpoint of its weights")
    c.add_argument("file", help="an .onnx file")
    c.add_argument("-o", "--output", required=True, metavar="OUT.dl", help="the .dl program to write")
    c.add_argument("--weights", metavar="PATH", help="the checkpoint to write (default: OUT.npz)")
    c.add_argument("--def", dest="as_def", action="store_true",
                   help="write the model as a def that another .dl file imports and calls, and a model that calls it")
    c.set_defaults(run=cmd_import)
    c = sub.add_parser("data", help="download public data sets (MNIST, CIFAR) into the data folder; list them")
    actions = c.add_subparsers(dest="action", metavar="ACTION", required=True, help="fetch or list")
    a = actions.add_parser("fetch", help="download, verify and convert data sets (mnist, fashion_mnist, cifar10, "
                                         "cifar100)")
    a.add_argument("names", nargs="+", metavar="NAME", help="a data set, as `dlc data list` names it")
    a.set_defaults(run=cmd_data_fetch)
    a = actions.add_parser("list", help="the data sets dlc fetches, their sizes and which are in the data folder")
    a.set_defaults(run=cmd_data_list)
    c = sub.add_parser("completion", help="print the shell completion script of dlc for bash or zsh (needs shtab)",
                       description='bash: eval "$(dlc completion bash)" in ~/.bashrc; zsh: dlc completion zsh > '
                                   '"${fpath[1]}/_dlc". The script needs the shtab package: pip install "dlc[completion]".')
    c.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    c.set_defaults(run=cmd_completion)
    for c in sub.choices.values():
        c.set_defaults(command_parser=c)
    return p


def _commands(p: argparse.ArgumentParser) -> dict:
    """dlc's commands: name -> the command's parser."""
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def _parse(argv) -> argparse.Namespace:
    """The arguments; an unknown command or flag is a usage error with the one it may mean
    (`trian`: did you mean 'train'?; `--optimiser`: did you mean '--optimizer'?)."""
    from dlc.compiler.errors import did_you_mean
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    first = next((a for a in argv if not a.startswith("-")), None)      # dlc's own flags take no value
    if first is not None and first not in _commands(p):
        p.error(f"unknown command '{first}'{did_you_mean(first, _commands(p))}")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        command = getattr(args, "command_parser", None) or p
        flag = next((u.partition("=")[0] for u in unknown if u.startswith("-")), "")
        flags = [s for action in command._actions for s in action.option_strings]
        command.error(f"unrecognized arguments: {' '.join(unknown)}{did_you_mean(flag, flags) if flag else ''}")
    return args


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:       # at any moment: while importing, compiling or training
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    from dlc.compiler.errors import DlcError
    args = _parse(argv)
    if not getattr(args, "run", None):       # `dlc` alone: a usage error
        parser().print_help(sys.stderr)
        return 2
    if hasattr(args, "threads"):
        _threads(args)
    try:
        return args.run(args) or 0
    except DlcError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except BrokenPipeError:       # the reader went away (dlc graph ... | head): it has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
