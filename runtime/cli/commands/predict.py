"""`dlc predict`: run trained weights on inputs and write the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.runtime.data import png
from dlc.runtime.data.photos import photo_paths
from dlc.runtime.cli.arguments import model_arguments, positive, WEIGHTS_HELP
from dlc.runtime.cli.trained import weighted_model

HELP = 'run trained weights on inputs and write the outputs'


def arguments(p):
    model_arguments(p, backend=True)
    p.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--data",
        "--input",
        dest="data",
        metavar="PATH",
        help='a file path: .npz (arrays by input name), .csv, .txt, or a table (.parquet, .arrow, '
        '.feather, a folder of them); a photo (.jpg, .png, ...) or a folder of photos, whose top '
        'classes are printed; or a source, e.g. "digits()" (--input is the older name)',
    )
    given.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        help="a text to classify (repeat for more), encoded by the tokenizer the weights were trained with; "
        "a classifier's best classes are printed by name",
    )
    p.add_argument(
        "--output",
        default="predictions.npz",
        metavar="PATH",
        help=".npz (default), .csv (one output) or .png (one output of images, drawn as a grid)",
    )
    p.add_argument("--batch", type=positive, default=256, metavar="N", help="batch size (default 256)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="with the integer products of a quantized checkpoint (dlc quantize; docs/quantization.md)",
    )


def run(args):
    model = weighted_model(args)
    photos = photo_paths(args.data) if args.text is None else None
    if args.text is not None:
        outputs = model.predict(text=args.text, batch=args.batch, int8=args.int8)
    else:
        outputs = model.predict(photos or args.data, args.batch, int8=args.int8)
    named = args.text is not None and model.meta.get("meta", {}).get("class_names")
    shown = [json.dumps(t, ensure_ascii=False) for t in args.text] if named else photos
    if shown:  # a classifier's first output: each photo's or text's best classes by name
        for item, best in zip(shown, model.top_classes(next(iter(outputs.values())))):
            print(f"{item}: " + "  ".join(f"{name} {score:.3f}" for name, score in best))
    path = Path(args.output)
    label, classes = model.classes() or (None, [])
    by_class = [k for k, v in outputs.items() if classes and v.ndim == 2 and v.shape[1] == len(classes)]
    try:
        if path.suffix == ".csv":
            if len(outputs) != 1:
                raise DlcError(f"a .csv holds one output; this model has {len(outputs)}: write a .npz")
            name, value = next(iter(outputs.items()))
            table = value.reshape(len(value), -1)
            # a header of the output's name, a column each: probs_0, probs_1, ... (one column: probs; a column
            # per class of a table's label: probs_setosa, ...)
            columns = classes if name in by_class else range(table.shape[1])
            header = ",".join([name] if table.shape[1] == 1 else [f"{name}_{c}" for c in columns])
            np.savetxt(path, table, delimiter=",", fmt="%.6g", header=header, comments="")
        elif path.suffix == ".png":
            name = path.stem if len(outputs) > 1 else next(iter(outputs))
            if name not in outputs:
                raise DlcError(
                    f"a .png holds one output: name the file after it ({', '.join(o + '.png' for o in outputs)})"
                )
            outputs = {name: outputs[name]}
            png.write_png(path, png.grid(png.image_batch(name, outputs[name])))
        else:
            np.savez(path, **outputs)
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"wrote {path}: {shapes}")
    for name in by_class:  # a table's categorical label: the names its ids stand for
        print(f"{name}: a column per class of {label}: {', '.join(classes)}")
