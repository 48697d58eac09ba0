"""`dlc export`: write a model's weights as .safetensors (dlc's or torch.nn's layout) or the model as .onnx."""

from __future__ import annotations

import sys
from pathlib import Path

from dlc.compiler.frontend.loader import load
from dlc.runtime.interop import weights
from dlc.runtime.interop import checkpoint, quantized
from dlc.runtime.training.config import make_config
from dlc.runtime.training.trainer import initial_parameters
from dlc.runtime.cli.arguments import model_arguments

HELP = (
    "write a model's weights as .safetensors (dlc's or torch.nn's layout), the model as .onnx, or an imported "
    "Hugging Face model as its folder"
)
DESCRIPTION = (
    "torch's own .pt format is a pickle, which needs torch to write and runs code when "
    "loaded: --format torch writes a .safetensors file in torch.nn's names and layouts "
    'instead, for safetensors.torch.load_file and load_state_dict.'
)


def arguments(p):
    model_arguments(p)
    p.add_argument(
        "--weights",
        metavar="CKPT",
        help="a checkpoint (.npz) or .safetensors file (default: the initial "
        "parameters, seeded as training seeds them)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the file to write: .onnx or .safetensors; a folder"
    )
    p.add_argument(
        "--format",
        choices=["onnx", "safetensors", "torch", "huggingface"],
        help="default: from OUT's suffix. safetensors: dlc's names and layouts; torch: torch.nn's "
        "(a .safetensors file); huggingface: the folder (config.json, model.safetensors) of a model dlc import "
        "read from one",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="the integer products of a quantized checkpoint (--weights, from dlc quantize) in ONNX's "
        "QDQ form (docs/quantization.md)",
    )


EXPORT_SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}


def export_format(args) -> str:
    """--format, else the output's suffix; torch's pickled .pt / .pth is not written (usage errors)."""
    suffix = Path(args.output).suffix
    if suffix in (".pt", ".pth"):
        args.command_parser.error(
            f"dlc does not write {suffix} files (torch's pickle format needs torch and runs "
            "code when loaded): write a .safetensors file with --format torch and load it with "
            "safetensors.torch.load_file"
        )
    fmt = args.format or EXPORT_SUFFIXES.get(suffix)
    if fmt is None:
        args.command_parser.error(
            f"cannot tell the format of '{args.output}': name it .onnx or .safetensors, or give --format"
        )
    if fmt == "huggingface":
        if suffix in EXPORT_SUFFIXES:
            args.command_parser.error(f"--format huggingface writes a folder, not a {suffix} file")
        return fmt
    if suffix in EXPORT_SUFFIXES and (EXPORT_SUFFIXES[suffix] == "onnx") != (fmt == "onnx"):
        args.command_parser.error(f"--format {fmt} does not write a {suffix} file")
    return fmt


def run(args):
    fmt = export_format(args)
    if args.int8 and fmt != "onnx":
        args.command_parser.error(
            f"--int8 exports a quantized model as .onnx, not as {fmt}: the weights of a "
            "quantized checkpoint are its file itself"
        )
    if args.int8 and not args.weights:
        args.command_parser.error("--int8 needs --weights Q.npz, a quantized checkpoint (dlc quantize)")
    program = load(args.file)
    model = program.build(args.model, training=False)
    if args.weights:
        params, _ = weights.load(args.weights, model.params)
    else:  # the parameters a run of the train block starts from
        seed = make_config(program, model.name, {}, require_data=False, model=model).seed
        params = initial_parameters(model, seed)
        print(f"note: no --weights: exporting the initial parameters of {model.name} (seed {seed})", file=sys.stderr)
    if fmt == "huggingface":
        from dlc.runtime.interop.huggingface import save_folder

        written = save_folder(Path(args.file), params, args.output)
        print(f"wrote {args.output} ({', '.join(p.name for p in written)})")
        return
    if fmt == "onnx":
        from dlc.compiler.onnx.export import save_onnx  # onnx is an optional extra

        quantization = quantized.load(args.weights, model, Path(args.file).read_text())[0] if args.int8 else None
        save_onnx(model, params, args.output, quantization=quantization)
    else:
        layout = "torch" if fmt == "torch" else "dlc"
        kept = weights.save(args.output, params, model, checkpoint.source_hash(Path(args.file).read_text()), layout)
        if kept:
            print(
                f"note: {len(kept)} parameters have no torch.nn counterpart and keep their dlc names and layouts: "
                + ", ".join(kept),
                file=sys.stderr,
            )
    print(f"wrote {args.output} ({fmt})")
