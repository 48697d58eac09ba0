"""Checkpoints: one .npz per checkpoint, written atomically, loadable without pickle.

Arrays are stored as `param:<name>` and `opt:<name>:<slot>`; everything else (epoch,
step, RNG position, history, vocabulary, a hash of the model source, the dlc version)
is one JSON document stored as the uint8 array `meta`. Nothing in the file can run
code when it is read. A training run writes its checkpoints with `Checkpoints`, a callback
(runtime/training/callbacks.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

import dlc
from dlc.compiler.errors import DlcError, Span, did_you_mean, json_document
from dlc.compiler.ir.graph import DTYPES
from dlc.runtime.data.formats import BadNpz, npz_arrays

FORMAT = "dlc-checkpoint-1"


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save(path: Path, params: dict, opt_state: dict, meta: dict, more: dict | None = None):
    """Write to a temporary file in the same folder, then rename over `path`. `more`: arrays
    stored under their own keys (a quantized checkpoint's `int8:` arrays, runtime/interop/quantized.py)."""
    arrays = {f"param:{k}": np.asarray(v) for k, v in params.items()} | dict(more or {})
    for name, slots in opt_state.items():
        for slot, v in slots.items():
            arrays[f"opt:{name}:{slot}"] = np.asarray(v)
    doc = {"format": FORMAT, "dlc_version": dlc.__version__, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    _replace(Path(path), lambda f: np.savez(f, **arrays))


def copy(source: Path, path: Path):
    """The checkpoint `source` as `path` too (best.npz of the epoch whose last.npz was just
    written), replaced at once as `save` replaces it."""
    with open(source, "rb") as f:
        data = f.read()
    _replace(Path(path), lambda f: f.write(data))


def _replace(path: Path, write):
    """`write(file)` into a temporary file in the same folder, synced, then renamed over `path`:
    a reader, or a run killed meanwhile, sees the old checkpoint or the new, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".npz")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would keep a checkpoint from those it is shared with
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DlcError(f"cannot write the checkpoint {path}: {e.strerror}", Span.whole(path)) from None


def _umask() -> int:
    """The process's umask, which only setting it tells: set and put back at once (a file another
    thread makes meanwhile gets the stricter 077)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


RUN_FILES = ("last.npz", "best.npz", "int8.npz", "history.json", "history.csv", "history.png")


def refuse_another_run(out: Path, overwrite: bool):
    """A new run's folder may not hold another run's checkpoints, so that a short trial run
    never silently replaces a better model, unless `overwrite` (clear_run then deletes that
    run's files, once the new run has everything it needs to start). Continuing the run is
    `resume`, which does not come here."""
    held = [name for name in ("last.npz", "best.npz") if (out / name).exists()]
    if held and not overwrite:
        raise DlcError(
            f"{out} holds the checkpoints of another run ({', '.join(held)}): continue that run with "
            "--resume, replace it with --overwrite, or write this one elsewhere with --out DIR",
            Span.whole(out),
        )


def clear_run(out: Path):
    """Delete the files of the run `out` held (--overwrite): a shorter new run leaves none of them behind."""
    for name in RUN_FILES:
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise DlcError(f"cannot replace {out / name}: {e.strerror}") from None


def _temporary_prefix(path: Path) -> str:
    return f".{path.stem}-"


def remove_stale_temporaries(path: Path, before: float):
    """Delete the temporary files of `path` that a killed save left: named as `save` names them
    (mkstemp adds 8 characters of [a-z0-9_]) and last changed before `before` (a run writing
    one now, in the same folder, keeps its own)."""
    pattern = re.compile(re.escape(_temporary_prefix(path)) + r"[a-z0-9_]{8}\.npz")
    for tmp in Path(path).parent.glob(_temporary_prefix(path) + "*.npz"):
        try:
            if pattern.fullmatch(tmp.name) and tmp.stat().st_mtime < before:
                tmp.unlink()
        except OSError:  # gone already, or not ours to delete: leave it
            pass


def load(path) -> tuple[dict, dict, dict]:
    """(params, optimizer state, meta) of a checkpoint; a damaged file is a clear error. The
    `int8:` arrays of a quantized checkpoint are left to runtime/interop/quantized.py."""
    arrays, meta = read(path)
    params, opt = {}, {}
    for key, value in arrays.items():
        kind, _, rest = key.partition(":")
        if kind == "param":
            params[rest] = value
        elif kind == "opt":
            name, _, slot = rest.rpartition(":")
            opt.setdefault(name, {})[slot] = value
        elif kind != "int8":  # a plain npz of weights: names are the keys
            params[key] = value
    check_arrays(path, {**params, **{f"{name}:{slot}": v for name, slots in opt.items() for slot, v in slots.items()}})
    return params, opt, meta


def read(path) -> tuple[dict, dict]:
    """(every array by its key, meta) of a checkpoint; a damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DlcError(f"no checkpoint at {path}", Span.whole(path))
    unreadable = f"{path} is not a readable checkpoint"
    try:
        arrays = npz_arrays(path)
    except BadNpz as e:
        member = _member(e.member) if e.member else ""
        raise DlcError(
            unreadable
            + {
                "npy": ": it is not an .npz archive (it holds a single .npy array)",
                "not zip": ": it is not an .npz archive",
                "archive": f": the archive is damaged ({e.reason})",
                "objects": f" ({member} holds Python objects, which dlc does not load)",
                "not npy": f" ({member} is not an .npy array)",
                "member": f": {member} is damaged ({e.reason})",
                "memory": f": {member} claims a shape larger than memory",
            }[e.kind],
            Span.whole(path),
        ) from None
    except OSError as e:
        raise DlcError(f"{unreadable}: {e.strerror or 'it cannot be read'}", Span.whole(path)) from None
    meta = {}
    if "meta" in arrays:
        try:
            meta = json_document(arrays.pop("meta").tobytes().decode())
        except ValueError:
            raise DlcError(
                f"{path} is not a readable checkpoint: its metadata is damaged (not JSON)", Span.whole(path)
            ) from None
        check_meta(path, meta)
    return arrays, meta


def rename(path, renames: dict, out) -> dict:
    """Write the checkpoint at `path` to `out` with its parameters renamed, as renaming a
    binding in the .dl file renames them (docs/editors.md): each OLD of `renames` renames the
    parameter OLD and every parameter under it (OLD.W, OLD.fwd.b) to NEW, and with them their
    optimizer state, their int8 arrays and the quantization's list of products. Returns
    {old name: new name} of every parameter renamed. An OLD that names no parameter, and a
    new name that another parameter has, are errors: nothing is written."""
    path = Path(path)
    arrays, meta = read(path)
    names = {_array_name(key) for key in arrays} - {None}
    for old in renames:
        outer = next((other for other in renames if other != old and _under(old, other)), None)
        if outer is not None:
            raise DlcError(
                f"{old} lies under {outer}, which renames it too: rename each parameter once",
                Span.whole(f"{old}={renames[old]}"),
            )
        if not any(_under(name, old) for name in names):
            tops = {name.split(".")[0] for name in names}
            raise DlcError(
                f"{path} has no parameter {old} nor any under {old}.{did_you_mean(old, tops)} "
                f"(its parameters: {_listed(sorted(names))})",
                Span.whole(path),
            )
    after = {name: _renamed(name, renames) for name in sorted(names)}
    clash = next((new for new in after.values() if list(after.values()).count(new) > 1), None)
    if clash is not None:
        raise DlcError(f"two parameters would both be named {clash} (one of them would be lost)", Span.whole(path))
    renamed = {_renamed_key(key, renames): value for key, value in arrays.items()}
    products = (meta.get("quantization") or {}).get("products")
    if isinstance(products, list):
        meta["quantization"]["products"] = [_renamed(p, renames) for p in products]
    renamed["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    _replace(Path(out), lambda f: np.savez(f, **renamed))
    return {old: new for old, new in after.items() if new != old}


def _under(name: str, old: str) -> bool:
    """Whether parameter `name` is `old` or lies under it (old.W, old.fwd.b)."""
    return name == old or name.startswith(old + ".")


def _renamed(name: str, renames: dict) -> str:
    """A parameter's name after `renames`: by the first OLD it is or lies under."""
    old = next((old for old in renames if _under(name, old)), None)
    return name if old is None else renames[old] + name[len(old) :]


def _array_name(key: str) -> str | None:
    """The parameter an array of a checkpoint belongs to (param:NAME, opt:NAME:SLOT, int8:NAME:PART,
    or a plain .npz's NAME), None for none."""
    kind, _, rest = key.partition(":")
    if kind in ("opt", "int8"):
        return rest.rpartition(":")[0]
    return rest if kind == "param" else key


def _renamed_key(key: str, renames: dict) -> str:
    name = _array_name(key)
    if name is None:
        return key
    kind, colon, rest = key.partition(":")
    if kind in ("opt", "int8"):
        return f"{kind}:{_renamed(name, renames)}:{rest.rpartition(':')[2]}"
    return f"param:{_renamed(name, renames)}" if kind == "param" else _renamed(name, renames)


def _listed(names: list, most: int = 8) -> str:
    return ", ".join(names[:most]) + (f", and {len(names) - most} more" if len(names) > most else "")


def _member(key: str) -> str:
    """A checkpoint's member as a person names it: parameter h.W, h.W's optimizer state m."""
    kind, _, rest = key.partition(":")
    if kind == "param":
        return f"parameter {rest}"
    if kind == "opt":
        name, _, slot = rest.rpartition(":")
        return f"{name}'s optimizer state {slot}"
    return f"array '{key}'"


def check_arrays(path, arrays: dict):
    """Refuse weights that no engine can take, whatever file they came from (a checkpoint, a
    .safetensors file, an import's arrays): names that are printable text, and numbers."""
    for name, value in arrays.items():
        if not name or not name.isprintable():
            raise DlcError(f"{path} is not a readable checkpoint: it names an array {name!r}", Span.whole(path))
        if value.dtype.kind not in "biuf":
            raise DlcError(
                f"{path} is not a readable checkpoint: {name} holds {_kind(value.dtype)} values, not numbers",
                Span.whole(path),
            )


def _kind(dtype: np.dtype) -> str:
    return {
        "U": "text",
        "S": "bytes",
        "O": "Python object",
        "c": "complex",
        "V": "raw record",
        "M": "date",
        "m": "time span",
    }.get(dtype.kind, str(dtype))


# ---- the metadata's schema: what each field dlc reads must be --------------------------------------------
def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _setting(v) -> bool:
    """A setting as runtime.config.to_json writes it: a call, a name, a list or a plain value."""
    if isinstance(v, dict) and "call" in v:
        return (
            set(v) == {"call", "args", "kwargs"}
            and isinstance(v["call"], str)
            and isinstance(v["args"], list)
            and isinstance(v["kwargs"], dict)
            and all(map(_setting, v["args"] + list(v["kwargs"].values())))
        )
    if isinstance(v, dict):
        return set(v) == {"name"} and isinstance(v["name"], str)
    if isinstance(v, list):
        return all(map(_setting, v))
    return v is None or isinstance(v, (str, int, float, bool))


def _text(v) -> bool:
    return isinstance(v, str)


def _texts(v) -> bool:
    return isinstance(v, list) and all(map(_text, v))


def _tokenizer(v) -> bool:
    return isinstance(v, dict) and _text(v.get("json")) and _count(v.get("pad"))


META_SCHEMA = {
    "format": _text,
    "dlc_version": _text,
    "quantization": lambda v: isinstance(v, dict),
    "model": _text,
    "source_hash": _text,
    "optimizer": _text,
    "epoch": _count,
    "step": _count,
    "batch": _count,
    "seed": _count,
    "history": lambda v: isinstance(v, list) and all(isinstance(row, dict) for row in v),
    # the loss and metric sums of the batches of an epoch stopped inside it
    "partial": lambda v: (
        v is None
        or (
            isinstance(v, dict)
            and set(v) == {"totals", "seen"}
            and _count(v["seen"])
            and isinstance(v["totals"], dict)
            and all(map(_number, v["totals"].values()))
        )
    ),
    "early_stop": lambda v: (
        v is None or (isinstance(v, dict) and (v.get("best") is None or _number(v["best"])) and _count(v.get("bad", 0)))
    ),
    # facts of the data: the vocabulary of a text or its words, the padded length of a sequence task
    # and a table's: its features stacked as x, its label column, each categorical column's names by id;
    # a tokenizer (runtime/data/tokenizer.py: its tokenizer.json and padding id) and the classes' names
    "meta": lambda v: (
        isinstance(v, dict)
        and _text(v.get("vocab", ""))
        and _tokenizer(v.get("tokenizer", {"json": "", "pad": 0}))
        and _texts(v.get("class_names", []))
        and _count(v.get("max_len", 0))
        and _texts(v.get("vocab_words", []))
        and _texts(v.get("features", []))
        and _text(v.get("label", ""))
        and isinstance(v.get("categories", {}), dict)
        and all(map(_texts, v.get("categories", {}).values()))
    ),
    # the data settings `dlc eval` reuses (inputs.data_settings)
    "data": lambda v: (
        isinstance(v, dict)
        and set(v) == {"data", "validation", "test", "seed"}
        and _count(v["seed"])
        and all(_setting(v[k]) for k in ("data", "validation", "test"))
    ),
}


def check_meta(path, meta):
    """Refuse metadata that is not what `save` writes: one clear error naming the file and the
    field, rather than a failure wherever the field is used (resume, eval, generate). Fields
    that are absent are not checked (plain weights have none)."""
    if not isinstance(meta, dict):
        problem = f"a JSON {type(meta).__name__}, not an object"
    else:
        bad = [k for k, ok in META_SCHEMA.items() if k in meta and not ok(meta[k])]
        if not bad:
            return
        shown = json.dumps(meta[bad[0]])
        problem = f"{bad[0]} is {shown if len(shown) <= 40 else shown[:37] + '...'}"
    raise DlcError(f"{path} is not a readable checkpoint: its metadata is damaged ({problem})", Span.whole(path))


def conform(path, saved: dict, params: list) -> dict:
    """The saved arrays as the model's parameters (`Model.params`): exactly its names and
    shapes, numbers only, converted to each parameter's dtype and made contiguous, so an
    engine can use them as they are (a plain .npz of float64 weights is welcome)."""
    check_params(path, saved, {p.name: p.type.shape for p in params})
    check_arrays(path, saved)
    return {
        p.name: np.asarray(saved[p.name], DTYPES[p.type.dtype], order="C") for p in params
    }  # a scalar stays a scalar


def optimizer_state(path, saved: dict, fresh: dict) -> dict:
    """`fresh` (an optimizer's initial state, {param: {slot: array}}) with each slot that the
    checkpoint at `path` saved (`saved`, as `load` returns it); a slot of another shape than
    its parameter is damage."""
    state = {}
    for name, slots in fresh.items():
        state[name] = {}
        for slot, init in slots.items():
            value = saved.get(name, {}).get(slot)
            if value is not None and value.shape != init.shape:
                raise DlcError(
                    f"{path} is not a readable checkpoint: the optimizer state {name}:{slot} is "
                    f"{value.dtype}{list(value.shape)}, but {name} is {list(init.shape)}",
                    Span.whole(path),
                )
            state[name][slot] = init if value is None else np.array(value, init.dtype)
    return state


def check_params(path, saved: dict, expected: dict, what: str | None = None):
    """Refuse a checkpoint whose parameters are not exactly the model's; `what` names them
    when they are not the checkpoint at `path` (None) but the model's weights given in Python."""
    problems = []
    for name, shape in expected.items():
        if name not in saved:
            problems.append(f"missing {name} {list(shape)}")
        elif tuple(saved[name].shape) != tuple(shape):
            problems.append(
                f"{name} is {list(saved[name].shape)} in {what or 'the checkpoint'} but {list(shape)} in the model"
            )
    unexpected = [name for name in saved if name not in expected]
    problems += [f"unexpected {name}" for name in unexpected]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        renames = renamed_bindings([name for name in expected if name not in saved], unexpected)
        hint = (
            f": if a binding was renamed, rename its parameters: dlc checkpoint rename {path} "
            f"{' '.join(f'{old}={new}' for old, new in renames)} -o RENAMED.npz"
            if renames and path is not None
            else ""
        )
        raise DlcError(
            f"{what or f'the checkpoint {path}'} does not match the model: {shown}{hint}",
            None if path is None else Span.whole(path),
        )


def renamed_bindings(missing: list, unexpected: list) -> list:
    """(old, new) of the bindings whose renaming explains the parameters a checkpoint lacks and
    has too many: the parameters under old (b.h.W, b.h.b) are exactly those under new (b.inner.W,
    b.inner.b) but for that one name. A binding the names leave in doubt is left out."""
    candidates: dict = {}
    for u in unexpected:
        for m in missing:
            a, b = u.split("."), m.split(".")
            differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
            if len(a) == len(b) and len(differ) == 1:
                at = differ[0] + 1
                candidates.setdefault((".".join(a[:at]), ".".join(b[:at])), []).append((u, m))
    found = []
    for (old, new), pairs in candidates.items():
        olds, news = ([n for n in names if _under(n, under)] for names, under in ((unexpected, old), (missing, new)))
        if len(pairs) == len(olds) == len(news) == len({u for u, _ in pairs}) == len({m for _, m in pairs}):
            found.append((old, new))
    return [(o, n) for o, n in found if [f[0] for f in found].count(o) == 1 and [f[1] for f in found].count(n) == 1]
