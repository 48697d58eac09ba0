"""A Hugging Face model folder as `dlc import FOLDER` reads it: `config.json`, the weights in
`model.safetensors` or in the shards that `model.safetensors.index.json` names, and the files
its inputs need (`tokenizer.json`). Every way a folder can be wrong is a `DlcError` that names
the file: no config.json, JSON that does not parse, a damaged or truncated safetensors file, a
shard the index names that is not there, a setting of the config a family cannot use, a tensor
whose shape is not the one the config makes. No PyTorch: safetensors are read by the
`safetensors` package's numpy functions (the `dlc[onnx]` extra)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError, json_document, optional_package

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
PREPROCESSOR = "preprocessor_config.json"  # an image model's: the photos' size, crop, mean and std

# transformers' activation names -> the standard library's (transformers' "gelu" is the exact one)
ACTIVATIONS = {
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}


class Config(dict):
    """config.json's settings, and the file they were read from (for the messages)."""

    def __init__(self, settings: dict, source: str = CONFIG):
        super().__init__(settings)
        self.source = source


@dataclass
class Folder:
    """A model folder read and checked: its config, its tensors by their names in the folder,
    and the input files it holds (`tokenizer.json`), by name."""

    path: Path
    config: Config
    tensors: dict
    files: dict


def read_folder(path, accept=lambda config: None) -> Folder:
    """The folder's config, tokenizer and weights. `accept(config)` runs before the rest is read:
    a model dlc does not import is refused before its checkpoint, gigabytes perhaps, is read."""
    path = Path(path)
    if not path.is_dir():
        raise DlcError(f"no such folder: {path}" if not path.exists() else f"{path} is not a folder")
    config = read_config(path / CONFIG)
    accept(config)
    files = {name: path / name for name in (TOKENIZER, PREPROCESSOR) if (path / name).is_file()}
    if TOKENIZER in files and isinstance(config.get("vocab_size"), int):
        check_tokenizer(files[TOKENIZER], config["vocab_size"])
    return Folder(path, config, read_tensors(path), files)


def check_tokenizer(path: Path, vocab_size: int):
    """Refuse a tokenizer.json that gives ids the model's embedding has no row for."""
    try:
        spec = json_document(path.read_text(encoding="utf-8"))
        vocab = spec["model"]["vocab"]
        ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))  # Unigram: a list
        ids += [token["id"] for token in spec.get("added_tokens") or []]
    except (ValueError, KeyError, TypeError) as e:
        raise DlcError(f"{path} is not a tokenizer of the tokenizers library ({type(e).__name__}: {e})") from None
    if not all(isinstance(i, int) for i in ids):
        raise DlcError(f"{path} is not a tokenizer of the tokenizers library: its ids are not all whole numbers")
    if ids and max(ids) >= vocab_size:
        raise DlcError(
            f"{path} gives token ids up to {max(ids)}, but config.json's vocab_size is {vocab_size}: "
            "the tokenizer is not the model's"
        )


def read_config(path: Path) -> Config:
    if not path.is_file():
        raise DlcError(
            f"{path.parent} has no {CONFIG}: a Hugging Face model folder holds its config.json "
            "beside model.safetensors (save_pretrained writes both)"
        )
    return Config(read_settings(path), str(path))


def read_settings(path: Path) -> dict:
    """The object of settings of a JSON file (config.json, preprocessor_config.json)."""
    try:
        settings = json_document(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DlcError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(settings, dict):
        raise DlcError(f"{path} holds a JSON {type(settings).__name__}, not an object of settings")
    return settings


class Tensors(dict):
    """The folder's tensors by name, and which of them a family has read (by `tensors[name]`)."""

    def __init__(self, arrays: dict):
        super().__init__(arrays)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)

    def unread(self) -> list:
        """The tensors the import left out (a head the architecture has not, a tied copy), sorted."""
        return sorted(name for name in self if name not in self.read)


def read_tensors(folder: Path) -> Tensors:
    """Every tensor of the folder by name: model.safetensors, or the shards of its index."""
    if (folder / WEIGHTS).is_file():
        return Tensors(_read_safetensors(folder / WEIGHTS))
    if (folder / INDEX).is_file():
        return Tensors(_read_shards(folder, folder / INDEX))
    other = [p.name for p in sorted(folder.iterdir()) if p.suffix in (".bin", ".pt", ".h5", ".msgpack")]
    raise DlcError(
        f"{folder} has no {WEIGHTS} nor {INDEX}"
        + (
            f"; it holds {', '.join(other)}, which dlc does not read (a pickle runs code when loaded): "
            "save the model with save_pretrained(folder, safe_serialization=True)"
            if other
            else ""
        )
    )


def safetensors_package():
    optional_package("safetensors", "onnx", "reading a Hugging Face folder's .safetensors files")
    import safetensors.numpy

    return safetensors


def _read_safetensors(path: Path) -> dict:
    st = safetensors_package()
    tensors, bfloat16 = {}, []
    try:
        with st.safe_open(str(path), "np") as f:
            for key in f.keys():
                # bfloat16 is read from the file's bytes: numpy has no such type, unless a package such as
                # ml_dtypes (which onnx imports) added one, which float32 arithmetic would not accept
                if f.get_slice(key).get_dtype() == "BF16":
                    bfloat16.append(key)
                    continue
                try:
                    array = f.get_tensor(key)
                except TypeError:  # another type numpy has not: float8
                    array = None
                if array is None or array.dtype.kind not in "biuf":
                    raise DlcError(
                        f"{path}: the tensor '{key}' holds {f.get_slice(key).get_dtype()} numbers, which dlc "
                        "cannot read without PyTorch; save the model in float32 (model.float().save_pretrained)"
                    )
                tensors[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
        if bfloat16:  # the top half of a float32's bits: exact in float32, from the file's bytes
            raw = dict(st.deserialize(path.read_bytes()))
            for key in bfloat16:
                bits = np.frombuffer(raw[key]["data"], "<u2").astype(np.uint32) << 16
                tensors[key] = bits.view(np.float32).reshape(raw[key]["shape"])
    except st.SafetensorError as e:
        raise DlcError(f"{path} is not a readable safetensors file ({e}): it is damaged or truncated") from None
    except OSError as e:
        raise DlcError(f"cannot read {path}: {e.strerror}") from None
    return tensors


def _read_shards(folder: Path, index: Path) -> dict:
    try:
        weight_map = json_document(index.read_text(encoding="utf-8")).get("weight_map")
    except (ValueError, AttributeError) as e:
        raise DlcError(f"{index} is not readable JSON of a weight_map ({e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise DlcError(f"{index} has no weight_map of tensor names to shard files")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if not path.resolve().is_relative_to(folder.resolve()):
            raise DlcError(f"{index} names the shard '{shard}', outside the model's folder")
        if not path.is_file():
            named = sorted(k for k, v in weight_map.items() if v == shard)
            raise DlcError(f"{index} names the shard '{shard}', which is not in {folder} (it holds {named[0]}, ...)")
        tensors.update(_read_safetensors(path))
    missing = sorted(k for k in weight_map if k not in tensors)
    if missing:
        raise DlcError(f"{index} puts '{missing[0]}' in {weight_map[missing[0]]}, which does not hold it")
    return tensors


def take(tensors: dict, name: str, shape: tuple, source: str = WEIGHTS) -> np.ndarray:
    """The tensor `name`, which the config says is `shape`; missing or of another shape, an
    error naming it, its shape and the expected one."""
    if name not in tensors:
        raise DlcError(f"{source}: the model's weights have no tensor '{name}' (expected {list(shape)})")
    array = tensors[name]
    if tuple(array.shape) != tuple(shape):
        raise DlcError(
            f"{source}: the tensor '{name}' is {list(array.shape)}, but config.json makes it {list(shape)}: "
            "the config does not describe these weights"
        )
    return array


def setting(config: dict, key: str, kind=int, default=None, check=None, why: str = ""):
    """The config's `key`, of type `kind` (a default when absent and one is given); anything
    else an error naming the key and its value. `check` a further test, `why` what it asks."""
    source = getattr(config, "source", CONFIG)
    if key not in config or config[key] is None:
        if default is not None:
            return default
        raise DlcError(f"{source} has no setting '{key}', which this model needs")
    value = config[key]
    kinds = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kinds) or check and not check(value):
        expected = why or {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}[kind]
        raise DlcError(f"{source}: '{key}' is {json.dumps(value)}; dlc needs {expected}")
    return value


def refuse(config: dict, key: str, value, what: str):
    """An error for a setting dlc does not express: the key, its value and what it would mean."""
    raise DlcError(
        f"{getattr(config, 'source', CONFIG)}: '{key}' is {json.dumps(value)} ({what}): dlc does not import it"
    )
