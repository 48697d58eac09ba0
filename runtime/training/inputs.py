"""The data of a training run, bound to the model's inputs: the `data`, `validation` and
`test` settings loaded (runtime/data/registry.py) or arrays given in Python, splits held
out, columns matched to the model's inputs and targets and checked against their types;
and the data `dlc eval` scores."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError, did_you_mean
from dlc.compiler.frontend.loader import Program
from dlc.compiler.frontend.model import Model
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.formats import not_numbers, numbers
from dlc.runtime.data.registry import load
from dlc.runtime.data.streamed import Mapped, Streamed
from dlc.runtime.data.tables import as_trained, kept_meta, recode
from dlc.runtime.data.text_tables import with_model_tokenizer
from dlc.runtime.training.config import Flag, TrainConfig, is_split, make_config, parse_setting, split_args
from dlc.runtime.training.gradcheck import ignored_values, index_bound
from dlc.compiler.frontend.settings import Call, Symbol, from_json, show, to_json, to_text


def load_data(spec, base: Path, what: str, span=None) -> Dataset:
    """The data set of a setting: a source's call, a file path, or arrays by name (`array_data`)."""
    if is_arrays(spec):
        return array_data(spec, what)
    if isinstance(spec, Symbol):
        spec = Call(spec.name, span=spec.span)
    if not isinstance(spec, (Call, str, Path)):
        shown = (
            show(spec) if isinstance(spec, (int, float)) else f"a value of type {type(spec).__name__}"
        )  # not its values
        raise DlcError(
            f"{what} must be a data source such as digits(), a file path, or a dict of arrays by "
            f"input and target name, got {shown}",
            span,
        )
    return load(spec, base, span)


def given_data(data, base: Path, tokenizer=None) -> tuple:
    """(the spec, the data set) of data given to eval, predict or quantize (their --data): text is
    read as the flag's, a source's call or a path, and an error in it is located at the flag.
    `tokenizer`: the model's (a function giving it), which texts(...) takes when it names none."""
    spec = parse_setting(data, "data") if isinstance(data, str) else data
    span = Flag("data", data).span() if isinstance(data, str) else None
    read = with_model_tokenizer(spec, base, tokenizer) if tokenizer is not None else spec
    return spec, load_data(read, base, "data", span)


def array_data(arrays: Mapping, what: str) -> Dataset:
    """Arrays given in Python by input and target name: numpy arrays, or anything numpy can
    read (`__array__`: a torch tensor, ...), checked as a file's columns are (`numbers`).
    Errors name the array, never show its values."""
    columns = {}
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise DlcError(f"{what}: arrays are named by input or target, got a name of type {type(name).__name__}")
        try:
            a = np.asarray(value)
        except Exception as e:  # torch: a tensor that requires grad, or is not on the CPU
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DlcError(
                f"{what}: array '{name}' ({type(value).__name__}) cannot be read as a numpy array: {reason}"
            ) from None
        if a.dtype == object:
            raise DlcError(f"{what}: array '{name}' ({type(value).__name__}) is not an array of numbers")
        columns[name] = a
    return Dataset(numbers(what, None, columns, kind="array"), named=True)


def is_arrays(spec) -> bool:
    """Whether a data setting is arrays given in Python (not a source or file a checkpoint can name)."""
    return isinstance(spec, Mapping)


def input_arrays(
    model: Model,
    ds: Dataset,
    need_targets: bool = True,
    said: set | None = None,
    span=None,
    trained: dict | None = None,
) -> dict:
    """The data's columns bound to the model's inputs (and targets, as declared: `bindings`)
    and fitted to them (`fit_input`). With `trained`, the meta of the data the model was
    trained on, the data is read as that was (`as_trained`: a table's x of the trained
    columns, without the trained label when targets are not needed) and the categories of
    the columns bound are given the trained ids (`recode`)."""
    if trained is not None:
        ds = as_trained(ds, trained, label=need_targets)
    chosen = bindings(model, ds, need_targets, said, span)
    if trained is not None:
        ds = recode(ds, trained, ds.reads(chosen.values()), span)
    return {i.name: fit_input(i, ds.column(chosen[i.name], span), model) for i in model.inputs if i.name in chosen}


def bindings(model: Model, ds: Dataset, need_targets: bool = True, said: set | None = None, span=None) -> dict:
    """{input or target name: the column of `ds` it binds to}. Named data (a dict, an .npz saved
    with keywords) binds by name only: a column no input has is refused. A source's columns
    (x, y) bind by name when every input has one (or one `ds.stacked` makes: a table's x and
    y), else in order (a table's x and y first), and so do a file's unnamed ones (arr_0, a
    CSV's), which stderr is told once (`said`: the notes already given). `span`: the data's
    setting, where a categorical column bound to a float input is reported."""
    wanted = [i for i in model.inputs if need_targets or not i.is_target]
    cols = ds.columns
    if ds.named:
        names = [i.name for i in model.inputs]
        for c in cols:
            if c not in names:
                raise DlcError(
                    f"model {model.name} has no input named '{c}'{did_you_mean(c, names)} "
                    f"(its inputs: {', '.join(names)})",
                    span or model.span,
                    [("the model is declared here", model.span)] if span else [],
                )
        missing = [i for i in wanted if i.name not in cols]
        if missing:
            raise DlcError(
                f"the data has no array for {', '.join(i.name for i in missing)} of model {model.name} "
                f"(it has {', '.join(cols) or 'none'})",
                missing[0].span,
                [("the data is set here", span)] if span else [],
            )
    if all(i.name in cols or i.name in ds.stacked for i in wanted):
        chosen = {i.name: i.name for i in wanted}
    else:
        stacked = {m for members in ds.stacked.values() for m in members}
        order = list(ds.stacked) + [c for c in cols if c not in stacked]
        if len(order) < len(wanted):
            hint = (
                ' (a table\'s label column is chosen with parquet(path, label = "name"))'
                if ds.stacked and "y" not in ds.stacked
                else ""
            )
            raise DlcError(
                f"the data has {len(order)} column(s) ({', '.join(order)}) but model {model.name} needs "
                f"{len(wanted)}: {', '.join(i.name for i in wanted)}{hint}",
                span,
            )
        chosen = {i.name: c for i, c in zip(wanted, order)}
        note = "note: the data's columns bind to the inputs in order: " + ", ".join(
            f"{c} -> {i}" for i, c in chosen.items()
        )
        said = set() if said is None else said
        if note not in said:
            said.add(note)
            print(note, file=sys.stderr)
    categorical = ds.meta.get("categories") or {}
    for i in wanted:
        of = [m for m in ds.reads([chosen[i.name]]) if m in categorical]
        if of and i.type.is_float:
            raise DlcError(
                f"{i.name} is {i.type} but the data's column '{of[0]}' holds categories (ids of "
                f"{len(categorical[of[0]])} names): declare an integer input (i32, ids for an "
                f"embedding or classes), or leave the column out",
                span,
            )
    return chosen


def context_limit(model: Model) -> int:
    """The longest sequence the model accepts: a parameter sliced to the sequence
    length (learned positions, P[0:T]) or whose rows 0..T-1 are gathered (embedding(arange(T),
    ...), as BERT's and GPT-2's positions) bounds it; 0 means no limit."""
    g = model.graph
    for n in g.nodes_with("slice"):
        src = g.inputs(n)[0]
        if g.op(src.node) == "param":
            for axis, stop in enumerate(g.attrs(n)["stops"]):
                if not isinstance(stop, int):
                    return src.shape[axis]
    for n in g.nodes_with("gather"):
        table, rows = g.inputs(n)[:2]
        if (
            g.op(table.node) == "param"
            and g.op(rows.node) == "iota"
            and not all(isinstance(d, int) for d in rows.shape)
        ):
            return table.shape[0]
    return 0


def check_tokens(model: Model, ds: Dataset, chosen: dict, span=None):
    """Token ids fit the model (the columns meta "token_columns" names, of a tokenizer's
    "vocab_size"): each input bound to one takes every id of the vocabulary, and its texts are
    as long as a fixed sequence axis, and no longer than the positions the model has."""
    size = ds.meta.get("vocab_size")
    for inp in model.inputs:
        if inp.name not in chosen or not ds.reads([chosen[inp.name]]) & set(ds.meta.get("token_columns") or ()):
            continue
        bound, _ = index_limits(model, inp.name)
        if bound is not None and size is not None and bound < size:
            raise DlcError(
                f"the tokenizer has a vocabulary of {size} tokens, but {inp.name} takes ids 0 to {bound - 1} "
                f"({bound} rows of the model): give the model {size} (an embedding's rows, a classifier's classes), "
                f"or train a tokenizer of at most {bound} tokens",
                span,
            )
        width, seq = ds.column(chosen[inp.name]).shape[1], inp.type.shape[1] if len(inp.type.shape) == 2 else None
        limit = context_limit(model)
        if isinstance(seq, int) and seq != width:
            raise DlcError(
                f"the texts are {width} tokens long, but {inp.name}: {inp.type} takes {seq}: make them {seq} "
                f"(texts(..., length = {seq}), text(..., seq = {seq}))",
                span,
            )
        if limit and width > limit:
            raise DlcError(
                f"the texts are {width} tokens long, but the model has positions for {limit}: cut them to {limit} "
                f"(texts(..., length = {limit}), text(..., seq = {limit})), or give the model more positions",
                span,
            )


def index_limits(model: Model, name: str) -> tuple:
    """(index_bound, the ignored values as a list) of integer input `name`, found in the
    graph once per model."""
    key = ("index limits", name)
    if key not in model.derived:
        node = next(n for n in model.graph.nodes_with("input") if model.graph.attrs(n)["name"] == name)
        model.derived[key] = index_bound(model.graph, node), sorted(ignored_values(model.graph, node))
    return model.derived[key]


def fit_input(inp, arr: np.ndarray, model: Model) -> np.ndarray:
    """An array for input `inp`: its shape checked, its dtype the input's, its values
    (for an index input) within what the model can look up. An example is reshaped only
    between a flat vector and a shape of the same size (64 values <-> [1, 8, 8]): any
    other difference is a layout the model would misread ([1, 8, 8] as [8, 8, 1])."""
    typ = inp.type
    want = typ.shape[1:]
    have = arr.shape[1:]
    if isinstance(arr, Streamed):  # decoded when read, as the input's examples (photos: its channels)
        fitted = arr.shaped(want) if all(isinstance(w, int) for w in want) else None
        if fitted is None:
            raise DlcError(_misfit(inp, arr.shape), inp.span)
        if typ.is_float and fitted.dtype == np.float32:
            return fitted
        dtype = np.float32 if typ.is_float else bool if typ.dtype == "bool" else np.int32
        return Mapped(fitted, lambda batch: fit_input(inp, batch, model), dtype)  # each batch checked as it is read
    if len(want) != len(have) or any(isinstance(w, int) and w != h for w, h in zip(want, have)):
        flat = min(len(want), len(have)) <= 1
        if flat and all(isinstance(w, int) for w in want) and int(np.prod(have)) == int(np.prod(want)):
            arr = arr.reshape((arr.shape[0],) + tuple(want))
        else:
            raise DlcError(_misfit(inp, arr.shape), inp.span)
    what = not_numbers(arr)
    if what:
        raise DlcError(f"the data for {inp.name} holds {what}, not numbers", inp.span)
    # no copy of an array of the input's dtype: the engines only read their inputs, and an
    # array the native engine is given again keeps its binding (runtime/engines/native.py Layout)
    if typ.is_float:
        return arr.astype(np.float32, copy=False)
    if typ.dtype == "bool":
        return arr.astype(bool, copy=False)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DlcError(f"{inp.name} is {typ} but the data has fractional values", inp.span)
    bound, ignored = index_limits(model, inp.name)
    looked_up = arr[~np.isin(arr, ignored)] if ignored else arr  # an ignore index is no index
    if bound is not None and looked_up.size and (looked_up.min() < 0 or looked_up.max() >= bound):  # before the cast
        raise DlcError(
            f"{inp.name} has values from {looked_up.min():.0f} to {looked_up.max():.0f}, but the model "
            f"takes 0 to {bound - 1} there",
            inp.span,
        )
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise DlcError(f"{inp.name} has values beyond the 32-bit integers of {typ}", inp.span)
    return arr.astype(np.int32, copy=False)  # a text's windows stay views of it (Dataset.rows)


def _misfit(inp, shape: tuple) -> str:
    """Why data of shape `shape` (examples of shape[1:]) does not fit input `inp`: one example
    without its batch axis, or a layout, with the NCHW layout of images."""
    typ = inp.type
    want = list(typ.shape[1:])
    what = "target" if inp.is_target else "input"
    if len(shape) == len(want) and all(not isinstance(w, int) or w == s for w, s in zip(want, shape)):
        return (
            f"the data for {inp.name} has shape {list(shape)}: one example of {what} {inp.name}: {typ} without "
            f"the batch axis; add a batch axis: {inp.name}[None]"
        )
    have = shape[1:]
    msg = (
        f"the data for {inp.name} has examples of shape {list(have)}, which does not fit {what} "
        f"{inp.name}: {typ} (examples of shape {want})"
    )
    if min(len(have), len(want)) <= 1:
        return msg + ": an example is reshaped only when the sizes agree"
    msg += ": an example is reshaped only between a flat vector and a shape of the same size"
    if len(have) == 3:
        dims = ", ".join(str(d) for d in (typ.shape[0],) + tuple(have))
        msg += (
            f"; images are NCHW: conv2d reads [C, H, W] per example, so data of [C, H, W] examples "
            f"needs {inp.name}: {typ.dtype}[{dims}]"
        )
    elif len(want) == 3:
        msg += "; images are NCHW: conv2d reads [C, H, W] per example"
    return msg


def prepare_data(cfg: TrainConfig, base: Path, model: Model) -> tuple:
    """(train, validation, test, meta): the data bound to the model's inputs, with the
    test and validation splits held out deterministically from the seed. Each must hold an
    example (an empty one has no mean loss, no metric, no epoch to take)."""
    full = load_data(cfg.data, base, "data", cfg.span("data"))
    sets, empty = {"test": None, "validation": None}, {}
    for name, seed in (("test", cfg.seed), ("validation", cfg.seed + 1)):
        spec = getattr(cfg, name)
        if is_split(spec):
            n = len(full)
            fraction, tail = split_args(spec)
            full, sets[name] = full.split(fraction, seed, tail, cfg.span(name))
            empty[name] = (
                f"{name} = {to_text(spec)} holds out no example of the {n}: use a larger fraction or more data"
            )
        elif spec is not None:
            sets[name] = load_data(spec, base, name, cfg.span(name))
            empty[name] = f"the {name} data has no examples"
    sets["data"] = full
    for name in ("test", "validation"):
        if sets[name] is not None:
            same_classes(sets[name], full.meta, f"the {name} data", cfg.span(name))
    split = any(is_split(spec) for spec in (cfg.test, cfg.validation))
    empty["data"] = "the training data has no examples" + (" left after the splits" if split else "")
    said: set = set()
    chosen = bindings(model, full, said=said, span=cfg.span("data"))
    check_tokens(model, full, chosen, cfg.span("data"))
    meta = kept_meta(full.meta, full.reads(chosen.values()))
    bound = {
        name: input_arrays(model, ds, said=said, span=cfg.span(name), trained=None if name == "data" else meta)
        if ds is not None
        else None
        for name, ds in sets.items()
    }  # shapes first
    for name, ds in sets.items():
        if ds is not None and len(ds) == 0:
            raise DlcError(empty[name], cfg.span(name) or model.span)  # arrays given in Python: at the model
    return bound["data"], bound["validation"], bound["test"], meta


def same_classes(ds: Dataset, trained: dict, what: str, span=None):
    """Data of class folders of its own (images(...)) numbers them by their sorted names: it
    must have the classes of the data the model was trained on (meta `trained`), or its ids
    would name other classes."""
    names, known = ds.meta.get("class_names"), trained.get("class_names")
    if names is not None and known is not None and names != known:
        raise DlcError(
            f"{what} has the classes {', '.join(names)}, not the training data's ({', '.join(known)}): "
            "their ids would differ, so give it the same class folders",
            span,
        )


# ---- the data a checkpoint was trained on, and the data `dlc eval` scores ----------------------------
DATA_SETTINGS = ("data", "validation", "test")


def data_settings(cfg: TrainConfig) -> dict:
    """The data settings a run resolved (file and flags), as checkpoints record them; arrays
    given in Python as none (a checkpoint does not keep them)."""
    return {name: None if is_arrays(getattr(cfg, name)) else to_json(getattr(cfg, name)) for name in DATA_SETTINGS} | {
        "seed": cfg.seed
    }


def evaluation_data(
    program: Program, model: Model, data, saved: dict | None, log, trained: dict | None = None, tokenizer=None
) -> dict:
    """The arrays `dlc eval` scores: `data` (a source, a path or its text, or a dict of arrays
    by input and target name) when given, read as `trained` says (the meta of the data the
    weights were trained on: `input_arrays`), its classes checked against it; else, with the
    data settings a checkpoint recorded (`saved`, else the train block's), the test data, else
    the validation data, else the training data itself. `log` is told which, with a note when
    the data is what the weights were trained on. `tokenizer`: as given_data's."""
    if is_arrays(data):
        log(f"evaluating the {len(data)} given arrays")
        return input_arrays(model, array_data(data, "data"))
    if saved:
        cfg = TrainConfig(**{name: from_json(saved[name]) for name in DATA_SETTINGS}, seed=saved["seed"])
        if cfg.data is None and data is None:
            raise DlcError(
                f"model {model.name} was trained on arrays given to train(), which its weights do not "
                "keep: give the data to score (evaluate(data=...), dlc eval --data)"
            )
    else:
        cfg = make_config(program, model.name, {}, require_data=data is None)
    base, trained_on = Path(program.path).parent, to_text(cfg.data)
    if data is not None:
        spec, ds = given_data(data, base, tokenizer)
        log(f"evaluating {to_text(spec)}")
        if to_text(spec) == trained_on:
            log("note: this is the data the weights were trained on (but for any held-out splits)")
        same_classes(ds, trained or {}, f"the data {to_text(spec)}")
        return input_arrays(model, ds, trained=trained or {})
    train, val, test, _ = prepare_data(cfg, base, model)

    def held_out(which: str, spec) -> str:
        if is_split(spec):
            fraction, tail = split_args(spec)
            return (
                f"the {which} split (the last {fraction * 100:g}% of {trained_on})"
                if tail
                else f"the {which} split ({fraction * 100:g}% of {trained_on}, seed {cfg.seed})"
            )
        return f"the {which} data {to_text(spec)}"

    if test is not None:
        log(f"evaluating {held_out('test', cfg.test)}")
        return test
    if val is not None:
        log(f"evaluating {held_out('validation', cfg.validation)}")
        return val
    log(f"evaluating the training data {trained_on}")
    log("note: there is no test or validation data, so this scores the examples the weights were trained on")
    return train
