"""Hugging Face model folders in and out: `dlc import FOLDER` (docs/interop.md, "Hugging Face models").

folder.py reads and checks a folder; each other module of this package is a family, a pure
translation between the folder's config and tensors and a `.dl` program and its parameters:

    MODEL_TYPES = ("bert", "roberta")         # the config["model_type"] values it reads
    HEADS = {"BertModel": "base", ...}        # config["architectures"][0] -> the head it writes
    def program(config, head) -> str                      # the .dl program (a model and a train block)
    def weights(config, tensors, head) -> dict           # the folder's tensors -> dlc's parameters
    def tensors(config, params, head) -> dict            # the inverse, to export back to a folder

`program` may take keywords too, which it is given when it declares them: `name` (the model's
name, the output file's stem), `as_def` (`--def`: the model's body as a def another file calls),
`source` (the folder's name, for the program's first comment), `weights` (the checkpoint the
train block starts from), `tokenizer` (the tokenizer file beside the program) and `preprocessor`
(preprocessor_config.json's settings, or None). An image family declares `image(config,
preprocessor)` too: the photos' size and normalization the checkpoint keeps for `dlc predict`. The registry is the
package's modules that declare MODEL_TYPES, found when first asked for: a family is added by
adding its module.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field

from dlc.compiler.errors import DlcError


@functools.cache
def families() -> dict:
    """Each model_type dlc imports -> the module of its family."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for model_type in getattr(module, "MODEL_TYPES", ()):
            found[model_type] = module
    return found


def architectures() -> list:
    """Every architecture (config["architectures"]) dlc imports, sorted."""
    return sorted({a for module in set(families().values()) for a in module.HEADS})


def family(config) -> object:
    """The family module of a config, or an error naming its model_type and what dlc imports."""
    source = getattr(config, "source", "config.json")
    model_type = config.get("model_type")
    known = families()
    if model_type not in known:
        shown = f"the model_type '{model_type}'" if isinstance(model_type, str) else "no model_type"
        named = config.get("architectures")
        if isinstance(named, list) and named and isinstance(named[0], str):
            shown += f" ({named[0]})"
        raise DlcError(f"{source} has {shown}; dlc imports {', '.join(sorted(known))} ({', '.join(architectures())})")
    return known[model_type]


def head_of(config, module) -> tuple[str, str]:
    """(the architecture, its head): config["architectures"][0], or the family's base model when
    the config names none; an architecture of the family dlc has no head for is refused by name."""
    source = getattr(config, "source", "config.json")
    base = [a for a, h in module.HEADS.items() if h == "base"]
    names = config.get("architectures") or base
    if not names:
        raise DlcError(f"{source} names no architecture; dlc imports {', '.join(module.HEADS)}")
    if not isinstance(names, list) or not isinstance(names[0], str):
        raise DlcError(f"{source}: 'architectures' is {names!r}, not a list of class names")
    if names[0] not in module.HEADS:
        raise DlcError(
            f"{source}: the architecture {names[0]} is not one dlc imports; of {config['model_type']}, dlc imports "
            + ", ".join(module.HEADS)
        )
    return names[0], module.HEADS[names[0]]


def model_name(stem: str) -> str:
    """A file's stem as the model's name: an identifier, never a keyword nor a library function's name."""
    from dlc.compiler.frontend.loader import stdlib_env
    from dlc.compiler.frontend.syntax import keywords
    from dlc.compiler.onnx.importer import RESERVED_NAMES, Namer

    name = Namer.clean(stem, "model")
    return name + "_model" if name in keywords() | stdlib_env().visible_names() | RESERVED_NAMES else name


@dataclass
class ImportedFolder:
    """A folder imported: the program, its parameters by dlc name, the config export writes
    back (the folder's, with `architectures` the imported one), the class names of a
    classifier's labels (id2label), the folder's input files by name, and an image model's
    photos' settings (images(...)'s size, mean and std)."""

    name: str
    architecture: str
    text: str
    weights: dict
    config: dict
    class_names: list | None = None
    files: dict = field(default_factory=dict)
    image: dict | None = None
    unused: list = field(default_factory=list, kw_only=True)  # the folder's tensors the program has no place for


def import_folder(
    path, name: str, as_def: bool = False, weights: str | None = None, stem: str | None = None
) -> ImportedFolder:
    """The `.dl` program and parameters of the Hugging Face model folder at `path`, the model
    named `name`; `as_def`: the model's body as a def another file calls (`--def`); `weights`:
    the checkpoint's file name, which the train block starts from (`init_from`); `stem`: the
    program file's (default `name`), which names the input files kept beside it (STEM.tokenizer.json)."""
    from dlc.compiler.huggingface.folder import PREPROCESSOR, TOKENIZER, read_folder, read_settings

    folder = read_folder(path, accept=lambda config: head_of(config, family(config)))
    module = family(folder.config)
    architecture, head = head_of(folder.config, module)
    asked = inspect.signature(module.program).parameters
    tokenizer = f"{stem or name}.{TOKENIZER}" if TOKENIZER in folder.files else None
    preprocessor = read_settings(folder.files[PREPROCESSOR]) if PREPROCESSOR in folder.files else None
    given = {"name": name, "as_def": as_def, "source": folder.path.name, "weights": weights, "tokenizer": tokenizer}
    given["preprocessor"] = preprocessor
    if as_def and "as_def" not in asked:
        raise DlcError(f"--def is not available for {folder.config['model_type']} models yet")
    text = module.program(folder.config, head, **{k: v for k, v in given.items() if k in asked})
    weights = module.weights(folder.config, folder.tensors, head)
    config = dict(folder.config) | {"architectures": [architecture]}
    image = module.image(folder.config, preprocessor) if hasattr(module, "image") else None
    names = class_names(folder.config, head)
    unused = folder.tensors.unread()
    return ImportedFolder(name, architecture, text, weights, config, names, folder.files, image, unused=unused)


def class_names(config, head: str) -> list | None:
    """A classifier's label names by id (id2label), or None for a model without labels or
    whose names are transformers' defaults (LABEL_0, ...)."""
    if head not in ("sequence", "token", "image") or not isinstance(config.get("id2label"), dict):
        return None
    labels = config["id2label"]
    names = [str(labels.get(str(i), labels.get(i, ""))) for i in range(len(labels))]
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names
