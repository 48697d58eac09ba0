"""Hugging Face folders on disk (docs/interop.md, "Hugging Face models"): an import's files
written beside its program, and a model's weights written back as a folder that
`transformers` loads.

`dlc import FOLDER -o OUT.dl` writes OUT.dl, its checkpoint OUT.npz (the label names of a
classifier in its metadata, as a data source's class names, and an image model's photos'
size and normalization), OUT.config.json (the folder's config, which export writes back, with
the imported architecture) and, when the folder has them, OUT.tokenizer.json and
OUT.preprocessor_config.json. `dlc export OUT.dl --format huggingface -o FOLDER` reads
OUT.config.json beside the program and writes config.json and model.safetensors in the
original names and layouts (and tokenizer.json, preprocessor_config.json).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError, json_document, plural
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.huggingface import family, head_of, import_folder, model_name
from dlc.compiler.huggingface.folder import CONFIG, PREPROCESSOR, TOKENIZER, WEIGHTS, Config, safetensors_package
from dlc.runtime.interop import checkpoint

CONFIG_SUFFIX = ".config.json"  # OUT.dl's config: OUT.config.json


def config_path(program: Path) -> Path:
    return program.with_name(program.stem + CONFIG_SUFFIX)


def beside(program: Path, name: str) -> Path:
    """PROGRAM.NAME: a folder's input file (tokenizer.json, preprocessor_config.json) beside the program."""
    return program.with_name(f"{program.stem}.{name}")


def end_token(program: Path) -> int | None:
    """The end-of-text token id of the folder `program` was imported from (its config's
    `eos_token_id`, in PROGRAM.config.json), at which generation stops; None for a program not
    imported from a folder, or a config without one."""
    path = config_path(program)
    if not path.is_file():
        return None
    try:
        eos = json_document(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (ValueError, AttributeError) as e:
        raise DlcError(f"{path} is not readable JSON of settings ({e})") from None
    if isinstance(eos, list) and len(eos) == 1:
        eos = eos[0]
    if eos is not None and (not isinstance(eos, int) or isinstance(eos, bool)):
        raise DlcError(f"{path}: 'eos_token_id' is {json.dumps(eos)}; dlc stops generating at one token id")
    return eos


def save_import(folder, out, weights=None, as_def: bool = False) -> list:
    """Import the folder as the program `out` (.dl) and its checkpoint (`weights`, default
    OUT.npz), with the config and tokenizer beside it; the program is built once before
    anything is written. Returns the lines that say what was written."""
    out = Path(out)
    if out.suffix != ".dl":
        raise DlcError(f"-o takes the .dl file to write, got '{out}'")
    weights = Path(weights) if weights else out.with_suffix(".npz")
    init_from = os.path.relpath(weights.resolve(), out.resolve().parent)
    imported = import_folder(folder, model_name(out.stem), as_def, weights=init_from, stem=out.stem)
    try:
        model = load_text(imported.text, str(out)).build(None, training=False)
    except DlcError as e:  # a config dlc's checks refuse
        e.notes.append((f"in the program imported from {folder}; nothing was written", None))
        raise
    params = checkpoint.conform(weights, imported.weights, model.params)
    _write_text(out, imported.text)
    meta = {"model": imported.name, "source_hash": checkpoint.source_hash(imported.text)}
    kept = {"class_names": imported.class_names, "image": imported.image}  # what predict names and reads photos by
    if any(kept.values()):
        meta["meta"] = {k: v for k, v in kept.items() if v}
    checkpoint.save(weights, params, {}, meta)
    _write_text(config_path(out), json.dumps(imported.config, indent=2))
    said = [
        f"wrote {out} (model {imported.name}: {imported.architecture})",
        f"wrote {weights} ({plural(len(params), 'array')})",
        f"wrote {config_path(out)} (the config dlc export --format huggingface writes back)",
    ]
    if imported.unused:  # what the folder holds that the architecture does not read: said, not dropped silently
        print(
            f"note: {plural(len(imported.unused), 'tensor')} of {folder} not in {imported.architecture}, left out: "
            + ", ".join(imported.unused[:6])
            + (f" and {len(imported.unused) - 6} more" if len(imported.unused) > 6 else ""),
            file=sys.stderr,
        )
    for name, path in imported.files.items():
        _copy(path, beside(out, name))
        said.append(f"wrote {beside(out, name)}")
    return said


def save_folder(program: Path, params: dict, folder) -> list:
    """The parameters of the program imported as `program` as a Hugging Face folder: config.json
    (the import's, from PROGRAM.config.json) and model.safetensors in transformers' names and
    layouts, and the tokenizer beside the program. Returns the files written."""
    source = config_path(program)
    if not source.is_file():
        raise DlcError(
            f"{program} was not imported from a Hugging Face folder: there is no {source.name} beside it "
            "(dlc import FOLDER writes it), which says what the folder's config.json is"
        )
    try:
        config = Config(json_document(source.read_text(encoding="utf-8")), str(source))
    except ValueError as e:
        raise DlcError(f"{source} is not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise DlcError(f"{source} holds no object of settings")
    module = family(config)
    _, head = head_of(config, module)
    tensors = {k: np.ascontiguousarray(v) for k, v in module.tensors(config, params, head).items()}
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DlcError(f"cannot make the folder {folder}: {e.strerror}") from None
    st = safetensors_package()
    try:
        st.numpy.save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    except (st.SafetensorError, OSError) as e:
        raise DlcError(f"cannot write {folder / WEIGHTS}: {e}") from None
    _write_text(folder / CONFIG, json.dumps(dict(config), indent=2))
    written = [folder / CONFIG, folder / WEIGHTS]
    for name in (TOKENIZER, PREPROCESSOR):
        if beside(program, name).is_file():
            _copy(beside(program, name), folder / name)
            written.append(folder / name)
    return written


def _write_text(path: Path, text: str):
    try:
        path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}") from None


def _copy(source: Path, path: Path):
    try:
        shutil.copyfile(source, path)
    except shutil.SameFileError:
        pass
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}") from None
