"""`dlc import`: an ONNX model, or a Hugging Face model folder, as a .dl program and a checkpoint of its weights."""

from __future__ import annotations

from pathlib import Path

from dlc.compiler.errors import DlcError, plural
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.interop import checkpoint
from dlc.runtime.cli.shared import write

HELP = "an ONNX model or a Hugging Face model folder as a .dl program and a checkpoint of its weights"


def arguments(p):
    p.add_argument("file", help="an .onnx file, or a Hugging Face model folder (config.json and model.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.dl", help="the .dl program to write")
    p.add_argument("--weights", metavar="PATH", help="the checkpoint to write (default: OUT.npz)")
    p.add_argument(
        "--def",
        dest="as_def",
        action="store_true",
        help="write the model as a def that another .dl file imports and calls, and a model that calls it",
    )


def run(args):
    """A folder is a Hugging Face model's (one named .onnx is refused as the ONNX import refuses
    a directory), anything else an ONNX model."""
    if Path(args.file).is_dir() and Path(args.file).suffix != ".onnx":
        from dlc.runtime.interop.huggingface import save_import

        for line in save_import(args.file, args.output, args.weights, args.as_def):
            print(line)
    else:
        import_onnx(args)


def import_onnx(args):
    """An ONNX model as a .dl program (OUT.dl, the model named after it) and its weights as a
    dlc checkpoint (OUT.npz, or --weights); the program is built once before anything is written."""
    from dlc.compiler.onnx.importer import import_model, read_model

    out = Path(args.output)
    if out.suffix != ".dl":
        raise DlcError(f"-o takes the .dl file to write, got '{args.output}'")
    weights = Path(args.weights) if args.weights else out.with_suffix(".npz")
    imported = import_model(read_model(args.file), name=out.stem, source=Path(args.file).name, as_def=args.as_def)
    try:
        model = load_text(imported.text, str(out)).build(None, training=False)
    except DlcError as e:  # a value of the ONNX model dlc's checks refuse (an attribute out of range)
        e.notes.append((f"in the program imported from {args.file}; nothing was written", None))
        raise
    checkpoint.conform(weights, imported.weights, model.params)
    write(imported.text.rstrip("\n"), str(out))
    checkpoint.save(
        weights, imported.weights, {}, {"model": imported.name, "source_hash": checkpoint.source_hash(imported.text)}
    )
    print(
        f"wrote {out} (model {imported.name}: {plural(len(imported.inputs), 'input')}, "
        f"{plural(len(imported.outputs), 'output')})"
    )
    print(f"wrote {weights} ({plural(len(imported.weights), 'array')})")
