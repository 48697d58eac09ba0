"""The Python API, mirroring the command line (docs/api.md lists every public name):

model = dlc.load("examples/lenet5.dl")         # or dlc.load(path, weights="best.npz")
model                                          # its name, inputs, outputs, parameter count
model.summary()                                # dlc summary
result = model.train(epochs=5)                 # dlc train
model.train(data={"x": X, "y": Y}, validation=0.1, callbacks=[...])   # on arrays
result.history["val_loss"]                     # a column of the history
model.evaluate()                               # dlc eval
model.predict({"x": images})                   # dlc predict
model.predict(text=["a fine film"])            # dlc predict --text, by the checkpoint's tokenizer
model.generate("In the beginning", 200)        # dlc generate
model.generate("In the beginning", 200, beam=4)
model.save("m.npz")                            # a dlc checkpoint: dlc.load(path, weights="m.npz")
model.export("m.onnx")                         # dlc export (.onnx, .safetensors)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dlc.compiler.errors import DlcError, did_you_mean
from dlc.compiler.frontend.settings import integer, to_text
from dlc.compiler.frontend.loader import load as load_program
from dlc.runtime import decoding
from dlc.runtime.kv_cache import CachedSteps, by_length, check_step_model, log_softmax, step_model_name
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data import files
from dlc.runtime.data.photos import photo_column, photo_paths, top_classes
from dlc.runtime.data.prefetch import Batches
from dlc.runtime.data.streamed import first_rows, is_streamed
from dlc.runtime.data.files import read_text
from dlc.runtime.data.synthetic import BOS, EOS, PAD
from dlc.runtime.data.text import decode, encode
from dlc.runtime.data.text_tables import encoded_dataset
from dlc.runtime.data.tokenizer import Tokenizer, load as load_tokenizer
from dlc.runtime.interop import weights
from dlc.runtime.engines.backends import check_backend, make_engine
from dlc.runtime.engines.int8 import Int8Engine, calibrate_arrays
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.parameters import Parameters
from dlc.runtime.engines.protocol import Engine
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.interop import checkpoint, quantized
from dlc.compiler.huggingface.folder import TOKENIZER
from dlc.runtime.interop.huggingface import beside, end_token
from dlc.runtime.training.callbacks import Callback, StopTraining
from dlc.runtime.training.summarize import summary_settings, summary_text
from dlc.runtime.training.config import make_config
from dlc.runtime.training.inputs import (
    array_data,
    context_limit,
    data_settings,
    evaluation_data,
    fit_input,
    given_data,
    input_arrays,
    is_arrays,
    prepare_data,
)
from dlc.runtime.training.trainer import Result, Trainer, mean_metrics, to_stderr

EXPORT_FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}  # what model.export writes, by suffix


class DlcModel:
    """A model of a .dl file, built for training and for evaluation, with its weights once
    trained or loaded (`params`, by parameter name: runtime/engines/parameters.py's
    Parameters, read-only arrays whose every change is an assignment that the native
    engine's prediction sees, so that it packs them once per change). `stop_training`: set
    it to True from a callback (`self.model.stop_training = True`) to stop the run, as
    raising StopTraining does."""

    def __init__(self, path: str | Path, model: str | None = None, backend: str = "auto"):
        self.path, self.backend = str(path), check_backend(backend)
        self.program = load_program(str(path))
        self.train_model = self.program.build(model, training=True)
        self.eval_model = self.program.build(model, training=False)
        self.name = self.eval_model.name
        self._params: Parameters | None = None
        self._checked = None  # the version of the params _require_weights found to be the model's
        self.meta: dict = {}
        self.quantization: dict | None = None  # QuantizedProduct by product name (quantize, or an int8 checkpoint)
        self.quantized: dict = {}  # how it was calibrated
        self._weights_path: Path | None = None
        self.stop_training = False
        self._engine = None
        self._int8_engine = None
        self._step = None  # a token model's step model and its engine (`_step_engine`)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{i.name}: {i.type}" for i in self.eval_model.inputs if not i.is_target)
        outputs = ", ".join(
            f"{k.removeprefix('output:')}: {t.type}"
            for k, t in self.eval_model.graph.outputs.items()
            if k.startswith("output:")
        )
        count = sum(int(np.prod(p.type.shape)) for p in self.eval_model.params)
        weights = "trained or loaded weights" if self.params is not None else "no weights yet"
        return (
            f"<dlc model {self.name} from {self.path}: inputs {inputs or 'none'} -> outputs {outputs or 'none'}; "
            f"{count:,} parameters, {weights}>"
        )

    def summary(
        self, depth: int | None = None, batch: int | None = None, freeze: list | None = None, training: bool = True
    ) -> "Text":
        """The table `dlc summary` prints (layers, output shapes, parameters, FLOPs), as text
        that a notebook or the interpreter shows as the table; print() it in a script.
        `depth`, `batch`, `freeze` and `training` (False: `--eval`) are dlc summary's options."""
        model = self.train_model if training else self.eval_model
        return Text(summary_text(model, summary_settings(self.program, model, freeze, batch, {}), depth))

    @property
    def params(self) -> Parameters | None:
        """The weights by parameter name (None before training or loading), read-only: a
        weight changes by assignment, `model.params[name] = array` (a copy is kept), or with
        a new dict, `model.params = {...}`."""
        return self._params

    @params.setter
    def params(self, arrays: dict | None):
        if arrays is not None and not isinstance(arrays, Mapping):
            raise DlcError(
                f"model.params takes a dict of arrays by parameter name, or None; not {type(arrays).__name__}"
            )
        self._params = arrays if arrays is None or isinstance(arrays, Parameters) else Parameters(arrays)

    # -- training --
    def train(
        self,
        out: str | Path | None = None,
        resume: bool | str | Path = False,
        log: Callable[[str], None] | None = None,
        progress: str | int | bool = "auto",
        tensorboard: str | Path | None = None,
        callbacks: Iterable = (),
        overwrite: bool = False,
        **overrides: Any,
    ) -> Result:
        """Train with the file's train block; keyword arguments override its settings: `data`,
        `validation` and `test` may be dicts of arrays by input and target name (numpy's or
        anything with __array__, a torch tensor), checked as a file's data is, and
        `validation` or `test` a fraction held out.
        `out`: the run's folder (default: runs/MODEL beside the file); a new run refuses a
        folder holding another run's checkpoints unless `overwrite` (`resume` continues that
        run: True for its last.npz, or a checkpoint's path).
        `progress`: "auto" (a line redrawn on a terminal, tqdm's bar in a notebook, else a line
        per epoch), "bar", "epochs", "none" or N (a line every N steps): runtime/training/progress.py;
        True and False are "auto" and "none".
        `tensorboard`: a folder for TensorBoard event files (runtime/training/tensorboard.py).
        `callbacks`: objects called as the run goes (runtime/training/callbacks.py); a
        dlc.Callback's `model` is this model. Returns the run's Result (history, params,
        stopped, test scores)."""
        callbacks = list(callbacks)
        for c in callbacks:
            if isinstance(c, Callback):
                c.model = self
        trainer = Trainer(
            self.program,
            self.name,
            overrides,
            Path(out) if out else None,
            log,
            self.backend,
            progress,
            tensorboard,
            [*callbacks, StopTrainingFlag(self)],
        )
        result = trainer.run(resume=resume, overwrite=overwrite)
        self.params = result.params
        self.meta = {"meta": getattr(trainer, "meta", {}), "data": data_settings(trainer.cfg)}
        return result

    # -- weights --
    def load_weights(self, path: str | Path) -> "DlcModel":
        """A checkpoint (.npz) or a .safetensors file, in dlc's or torch.nn's names and layouts."""
        arrays, self.meta = weights.load(path, self.eval_model.params)
        self.params = Parameters.owning(arrays)
        self.quantization, self.quantized, self._int8_engine = None, {}, None
        self._weights_path = Path(path)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the weights as a dlc checkpoint (.npz: every parameter and state array by name,
        and the facts of the data they were trained on: vocabulary, data settings), which
        `dlc.load(FILE.dl, weights=path)`, `load_weights` and `dlc eval --weights` read. The
        model itself is its .dl file. With a quantization (`quantize`), it holds that too: a
        quantized checkpoint (docs/quantization.md). Returns the path."""
        self._require_weights()
        path = Path(path)
        if path.suffix != ".npz":
            raise DlcError(
                f"save writes a dlc checkpoint, a .npz file, not '{path.name}': "
                "model.export(path) writes .onnx and .safetensors"
            )
        meta = {
            "model": self.name,
            "source_hash": checkpoint.source_hash(Path(self.path).read_text()),
            **{k: v for k, v in self.meta.items() if k in ("meta", "data") and v is not None},
        }
        more = {}
        if self.quantization is not None:
            meta["quantization"] = quantized.describe(self.quantization, self.quantized, self.eval_model)
            more = quantized.arrays(self.quantization)
        checkpoint.save(path, self.params, {}, meta, more)
        return path

    def export(self, path: str | Path, layout: str = "dlc", int8: bool = False) -> Path:
        """Write the model for another tool, as `dlc export` does, by the suffix: .onnx (the
        evaluation graph with its weights, for onnxruntime; needs the onnx package) or
        .safetensors (the weights, in dlc's names and layouts, or with layout="torch" in
        torch.nn's). `int8`: the integer products of the quantization (as `predict`'s) in
        ONNX's QDQ form, .onnx only (docs/quantization.md, "Export"). Returns the path."""
        self._require_weights()
        path = Path(path)
        fmt = EXPORT_FORMATS.get(path.suffix)
        if fmt is None:
            raise DlcError(f"cannot tell the format of '{path.name}': name it .onnx or .safetensors")
        if layout not in ("dlc", "torch"):
            raise DlcError(f"layout is 'dlc' or 'torch', not '{layout}'")
        if int8 and fmt != "onnx":
            raise DlcError(f"int8=True exports a quantized model as .onnx, not as {fmt}")
        if fmt == "onnx":
            from dlc.compiler.onnx.export import save_onnx

            save_onnx(self.eval_model, self.params, path, quantization=self._read_quantization() if int8 else None)
        else:
            weights.save(
                path, self.params, self.eval_model, checkpoint.source_hash(Path(self.path).read_text()), layout
            )
        return path

    def _require_weights(self):
        """Weights to run on, exactly the model's parameters: checked once per change of them
        (Parameters.version), as the engines bind them by their sizes."""
        if self.params is None:
            raise DlcError(f"model {self.name} has no weights: train it or load a checkpoint first")
        if self.params.version != self._checked:
            checkpoint.check_params(
                None, self.params, {p.name: p.type.shape for p in self.eval_model.params}, "model.params"
            )
            for name, a in self.params.items():
                if a.dtype.kind not in "biuf":
                    raise DlcError(f"model.params: {name} is an array of {a.dtype}, not of numbers")
            self._checked = self.params.version

    @property
    def engine(self) -> Engine:
        """The engine (native or reference, by `backend`) that runs the model, made on first use."""
        if self._engine is None:
            self._engine = make_engine(self.backend, self.train_model, self.eval_model)
        return self._engine

    # -- int8 --
    def quantize(
        self,
        calibrate: int = 32,
        observer: str = "minmax",
        percentile: float = 99.99,
        data: Any = None,
        batch: int | None = None,
    ) -> "DlcModel":
        """Quantize the products to int8 (docs/quantization.md), calibrated in float32 on the
        first `calibrate` batches (of `batch`, default the train block's) of the train block's
        training data, in order, or of `data` (a source, a path, or a dict of arrays by input
        name). `observer`: "minmax" or "percentile" (the `percentile`-th). Then
        predict(..., int8=True), evaluate(int8=True) and save() use it. Returns the model."""
        self._require_weights()
        if not isinstance(calibrate, int) or calibrate < 1:
            raise DlcError(f"calibrate is a number of batches, at least 1, not {calibrate!r}")
        batch = None if batch is None else integer("quantize", "batch", batch, low=1)
        arrays, size, said = self._calibration_data(data)
        arrays = first_rows(arrays, calibrate * (batch or size))  # photos decoded: only what calibration reads
        targets = all(i.name in arrays for i in self.eval_model.inputs)
        graph = self.eval_model.graph if targets else predict_graph(self.eval_model)
        self.quantization, self.quantized = calibrate_arrays(
            graph, self.params, arrays, calibrate, batch or size, observer, percentile, said
        )
        self._int8_engine = None
        return self

    def _calibration_data(self, data) -> tuple[dict, int, str]:
        """(arrays by input name, the train block's batch, what they are in words)."""
        cfg = make_config(self.program, self.name, {}, require_data=data is None)
        if data is None:
            train, _, _, _ = prepare_data(cfg, Path(self.path).parent, self.eval_model)
            return train, cfg.batch, to_text(cfg.data)
        if is_arrays(data):
            return input_arrays(self.eval_model, array_data(data, "data"), need_targets=False), cfg.batch, "arrays"
        spec, ds = given_data(data, Path.cwd(), self.tokenizer)
        return input_arrays(self.eval_model, ds, need_targets=False), cfg.batch, to_text(spec)

    def engine_for(self, int8: bool) -> Engine:
        """The engine that runs the model in float32 (`engine`), or with int8 the reference
        engine with the integer products of its quantization (docs/quantization.md, "Engines")."""
        if not int8:
            return self.engine
        if self._int8_engine is None:
            self._read_quantization()
            if self.backend == "reference":
                self._int8_engine = Int8Engine(self.train_model, self.eval_model, self.quantization)
            else:
                self._int8_engine = NativeEngine(self.train_model, self.eval_model, int8=self.quantization)
        return self._int8_engine

    def _read_quantization(self) -> dict:
        """The quantization: `quantize`'s, else the one of the quantized checkpoint the weights came from."""
        if self.quantization is None:
            if self._weights_path is None or "quantization" not in self.meta:
                raise DlcError(
                    f"model {self.name} has no int8 quantization: quantize it (`dlc quantize`, "
                    "model.quantize()) or load a quantized checkpoint"
                )
            self.quantization, self.quantized = quantized.load(
                self._weights_path, self.eval_model, Path(self.path).read_text()
            )
        return self.quantization

    # -- use --
    def evaluate(
        self, data: Any = None, batch: int = 256, log: Callable[[str], None] | None = None, int8: bool = False
    ) -> dict:
        """Loss and metrics (evaluation mode) on `data` (a source such as "digits()", a
        path, or a dict of arrays by input and target name), by default on data the weights
        were not trained on: the test, else the validation data of the settings the
        checkpoint was trained with (the train block's for plain weights;
        inputs.evaluation_data). `log` (default: stderr) is told which. `int8`: with the
        integer products of the quantization (`quantize`, or a quantized checkpoint)."""
        self._require_weights()
        batch = integer("evaluate", "batch", batch, low=1)
        engine = self.engine_for(int8)
        arrays = evaluation_data(
            self.program,
            self.eval_model,
            data,
            self.meta.get("data"),
            log or to_stderr,
            self.meta.get("meta", {}),
            self.tokenizer,
        )
        if len(next(iter(arrays.values()))) == 0:
            raise DlcError("evaluate: the data has no examples")
        return mean_metrics(engine, self.params, arrays, batch)

    def predict(
        self, data: Any = None, batch: int = 256, int8: bool = False, *, text: str | list | None = None
    ) -> dict:
        """Outputs for `data`: a dict of arrays by input name (an unknown name is refused), an
        array (the first input; numpy's or anything with __array__), a source such as
        "digits()", a path to an npz / csv / text file or a table (inputs.input_arrays binds it,
        a table read as the training data was), or photos: an image file, a folder of them or a
        list of image files, read with the evaluation transform of the images(...) the weights
        were trained on (`top_classes` names their classes). Or `text`: a string or a list of
        them, encoded by the tokenizer the weights were trained with, as long as its texts were
        (`tokenizer`; its ids, mask and lengths bound as the columns of texts(...) are). `int8`:
        with the integer products of the quantization, as `evaluate`."""
        self._require_weights()
        if (data is None) == (text is None):
            raise DlcError("predict takes data or text=, one of them")
        batch = integer("predict", "batch", batch, low=1)
        engine = self.engine_for(int8)
        paths = photo_paths(data) if text is None else None
        if text is not None:
            ds = encoded_dataset(self.tokenizer().encode(text), {})
        elif paths is not None:
            column = photo_column(paths, self.meta.get("meta", {}).get("image"))
            ds = Dataset({self.eval_model.inputs[0].name: column}, named=True)
        elif isinstance(data, (str, Path)):
            ds = self._read_inputs(data)
        elif is_arrays(data):
            ds = array_data(data, "data")
        else:
            ds = array_data({self.eval_model.inputs[0].name: data}, "data")
        arrays = input_arrays(self.eval_model, ds, need_targets=False, trained=self.meta.get("meta", {}))
        n = len(next(iter(arrays.values())))
        if n == 0:
            raise DlcError("predict: the data has no examples")
        if n <= batch and not is_streamed(arrays):  # one batch, neither sliced nor joined (Python's µs
            out = engine.predict(self.params, arrays)  # count at batch 1)
        else:
            parts: dict = {}
            for given in Batches(arrays, ((slice(start, start + batch), None) for start in range(0, n, batch))):
                part = engine.predict(self.params, given)
                for k, v in part.items():
                    parts.setdefault(k, []).append(v)
            for k, v in parts.items():
                if len(v) > 1 and v[0].ndim == 0:
                    raise DlcError(
                        f"output {k} is one number per batch, not per example: predict all {n} examples "
                        f"as one batch (batch = {n})"
                    )
            out = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
        if not out:
            raise DlcError(f"model {self.name} declares no outputs; add `output name = ...`")
        return out

    def _read_inputs(self, data) -> Dataset:
        """A text file (encoded by the vocabulary), another file or a source such as digits()."""
        if Path(data).suffix == ".txt":
            text = read_text(Path(data), Path.cwd(), "predict")
            return Dataset({self.eval_model.inputs[0].name: encode(text, self.vocab())[None, :]}, named=True)
        if str(data).lower().endswith((".csv", ".csv.gz")):  # inputs only: every column is a feature
            return files.csv(Path.cwd(), str(data), label=None)
        return given_data(data, Path.cwd(), self.tokenizer)[1]

    def classes(self) -> tuple[str, list] | None:
        """(the label column's name, its classes' names by id) of the table the weights were
        trained on when its label was categorical (runtime/data/tables.py), else None."""
        meta = self.meta.get("meta", {})
        label = meta.get("label")
        names = (meta.get("categories") or {}).get(label)
        return (label, names) if names else None

    def top_classes(self, scores: np.ndarray, k: int = 3) -> list:
        """The `k` best classes of each row of a classifier's output [N, classes], as (name,
        score) pairs, named as the data the weights were trained on named them (the class
        folders of images(...), a table's categorical label)."""
        named = self.meta.get("meta", {}).get("class_names") or (self.classes() or (None, None))[1]
        scores = np.asarray(scores)
        if scores.ndim < 2:
            raise DlcError(
                f"top_classes takes a classifier's scores [N, classes], not an array of shape {list(scores.shape)}"
            )
        return top_classes(scores, named, integer("top_classes", "k", k, low=1))

    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the model's text (runtime/data/tokenizer.py): the one the checkpoint keeps
        (weights trained on tokenized text), else OUT.tokenizer.json beside the program OUT.dl, where
        `dlc import` writes a Hugging Face folder's tokenizer.json."""
        meta = self.meta.get("meta", {}).get("tokenizer")
        if meta is not None:
            return Tokenizer.from_meta(meta, f"the tokenizer of {self._weights_path or 'the trained weights'}")
        path = beside(Path(self.path), TOKENIZER)
        if not path.is_file():
            raise DlcError(
                f"{self.name} has no tokenizer: its checkpoint keeps none (its weights were not trained on "
                f"tokenized text) and {path} does not exist (dlc import FOLDER copies a folder's tokenizer.json "
                "there); without one, give token ids"
            )
        return load_tokenizer(path)

    def vocab(self) -> str:
        """The characters of the text the weights were trained on, an id each."""
        vocab = self.meta.get("meta", {}).get("vocab")
        if vocab is None:
            raise DlcError("this checkpoint has no vocabulary: it was not trained on text")
        return vocab

    def decode(self, src: np.ndarray, max_len: int, bos: int = 1, eos: int = 2, batch: int = 256) -> np.ndarray:
        """Greedy decoding of many sources at once with an encoder-decoder model: feed BOS,
        then each step's most likely token, until EOS or max_len tokens. Returns [N, max_len]
        ids (0 after EOS). `generate` decodes one source, by any of its decodings."""
        self._require_weights()
        batch, max_len = integer("decode", "batch", batch, low=1), integer("decode", "max_len", max_len, low=1)
        src_in, dec_in = self._encoder_decoder_inputs()
        src = fit_input(src_in, np.asarray(src), self.eval_model)  # ids the model can look up
        out = np.zeros((len(src), max_len), np.int32)
        for start in range(0, len(src), batch):
            s = src[start : start + batch]
            seq = np.full((len(s), 1), bos, np.int32)
            done = np.zeros(len(s), bool)
            for t in range(max_len):
                probs = self._next_probs({src_in.name: s, dec_in.name: seq})
                nxt = np.where(done, 0, probs.argmax(-1)).astype(np.int32)
                out[start : start + len(s), t] = nxt
                done |= nxt == eos
                if done.all():
                    break
                seq = np.concatenate([seq, nxt[:, None]], axis=1)
        return out

    def generate(
        self,
        prompt: str | Iterable[int],
        length: int,
        temperature: float | None = None,
        seed: int = 0,
        *,
        beam: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        length_penalty: float | None = None,
        cache: bool = True,
    ) -> str | list:
        """Continue a character model's `prompt` (text) by `length` characters (a model trained
        with a tokenizer: by `length` tokens of it, `tokenizer`), or decode an
        encoder-decoder's source (`prompt`: token ids) into at most `length` tokens, up to
        EOS, or continue a token language model's prompt (one with a step model, as an
        imported GPT-2: text its tokenizer reads, token ids, or a list of either, of any lengths
        in tokens, decoded together, each row as it would be alone) by `length` tokens: greedily (the default), by
        sampling (a temperature above 0, top_k or top_p; seeded by `seed`) or by beam search
        (runtime/decoding.py says how). A token model decodes one position per token from a
        cache of keys and values (runtime/kv_cache.py); cache=False runs the whole model over
        the whole prefix for each token instead, for the same tokens. Returns the continuation
        (a str, or a list of ids; a list of them for a list of prompts); with beam=K, the K
        best as decoding.Candidate(sequence, log_prob, score), best first."""
        self._require_weights()
        step = step_model_name(self.program.models, self.name)
        if step is not None:
            options = dict(beam=beam, temperature=temperature, top_k=top_k, top_p=top_p, length_penalty=length_penalty)
            return self._generate_tokens(prompt, length, step, cache, seed, options)
        encoder_decoder = _sequence_inputs(self.eval_model) is not None
        eos = self._token("eos") if encoder_decoder else None
        options = dict(beam=beam, temperature=temperature, top_k=top_k, top_p=top_p, length_penalty=length_penalty)
        decoding.check(length, eos, **options)
        if encoder_decoder:
            next_log_probs, spell = self._decoder_steps(prompt), list
        else:
            next_log_probs, spell = self._character_steps(prompt)
        found = [
            c._replace(sequence=spell(c.sequence))
            for c in decoding.decode(next_log_probs, length, eos, seed=seed, **options)
        ]
        return found if beam is not None else found[0].sequence

    def _generate_tokens(self, prompt, length: int, step: str, cache: bool, seed: int, options: dict):
        """`generate` for a token language model with the step model `step`."""
        many = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
        prompts = list(prompt) if many else [prompt]
        tokenizer = self.tokenizer() if any(isinstance(p, str) for p in prompts) else None
        ids = [[int(t) for t in (tokenizer.corpus(p) if isinstance(p, str) else p)] for p in prompts]
        eos = end_token(Path(self.path))
        decoding.check(length, eos, **options)
        if not all(ids):
            raise DlcError(
                f"generate: {self.name} continues prompts of at least one token; got "
                f"{', '.join(str(len(i)) for i in ids)} tokens"
            )
        inp = next(i for i in self.eval_model.inputs if not i.is_target)
        for row in ids:
            fit_input(inp, np.array([row]), self.eval_model)  # ids the model can look up
        positions, longest = context_limit(self.eval_model), max(map(len, ids))
        if positions and longest + length > positions:
            raise DlcError(
                f"generate: the prompt's {longest} tokens and {length} more exceed the {positions} positions "
                f"of {self.name}"
            )
        if cache:
            model, engine = self._step_engine(step)
            next_log_probs = CachedSteps(lambda feeds: engine.predict(self.params, feeds), model, ids, longest + length)
        else:
            next_log_probs = self._token_steps(ids)
        found = decoding.decode(next_log_probs, length, eos, seed=seed, rows=len(ids), **options)
        rows = [ids[0]] * len(found) if options["beam"] is not None else ids
        found = [c._replace(sequence=_spelled(tokenizer, row, list(c.sequence))) for c, row in zip(found, rows)]
        if options["beam"] is not None:
            return found
        return [c.sequence for c in found] if many else found[0].sequence

    def _step_engine(self, step: str):
        """The step model `step` (evaluation mode) and an engine that runs it, made on first use."""
        if self._step is None:
            model = self.program.build(step, training=False)
            check_step_model(model)
            self._step = model, make_engine(self.backend, self.program.build(step, training=True), model)
        return self._step

    def _token_steps(self, prompts: list):
        """The next-token log-probabilities after each prompt and prefix by the whole model over the whole
        sequence (the callback of runtime/decoding.py, without a cache)."""
        inp = next(i for i in self.eval_model.inputs if not i.is_target)

        def next_log_probs(prefixes):
            rows = [prompts[0 if len(prompts) == 1 else i] + list(p) for i, p in enumerate(prefixes)]
            logp = [None] * len(rows)
            for group in by_length(rows).values():  # a call for the rows of each length
                feeds = {inp.name: np.array([rows[i] for i in group], np.int32)}
                logits = next(iter(self.engine.predict(self.params, feeds).values()))
                for i, row in zip(group, log_softmax(logits[:, -1])):
                    logp[i] = row
            return np.stack(logp)

        return next_log_probs

    def _character_steps(self, prompt: str):
        """The next-token log-probabilities after the prompt and each prefix (the callback of
        runtime/decoding.py), and the text of a continuation: of characters, or of the tokens
        of the checkpoint's tokenizer."""
        if "tokenizer" in self.meta.get("meta", {}):
            tok = self.tokenizer()
            first = next((t for t in (tok.bos, tok.eos) if t is not None), 0)  # no prompt: the start of a text
            start, size, spell = (list(tok.corpus(prompt)) or [first]), tok.vocab_size, tok.decode
        else:
            vocab = self.vocab()
            start = list(encode(prompt, vocab)) if prompt else [0]  # no prompt: start from character 0
            size, spell = len(vocab), lambda ids: decode(ids, vocab)
        inp = self.eval_model.inputs[0]
        context = context_limit(self.eval_model)

        def next_log_probs(prefixes):
            contexts = [start + list(p) for p in prefixes]
            windows = np.array([ids[-context:] if context else ids for ids in contexts], np.int32)
            probs = self._next_probs({inp.name: windows})
            if probs.shape[1] < size:
                raise DlcError(f"the model's output has {probs.shape[1]} classes, the vocabulary {size}")
            return _log(probs[:, :size])

        return next_log_probs, lambda ids: spell(np.array(ids, np.int64))

    def _decoder_steps(self, source):
        """The next-token log-probabilities after the source and BOS + each prefix."""
        src_in, dec_in = self._encoder_decoder_inputs()
        src = np.asarray(source)
        if src.size == 0:
            raise DlcError("the source sequence is empty")
        if src.ndim != 1 or not np.issubdtype(src.dtype, np.integer):
            raise DlcError(f"{self.name} is an encoder-decoder: its prompt is the source as token ids, as in [3, 4, 5]")
        width = self.meta.get("meta", {}).get("max_len", 0)  # sources were padded to this length in training
        src = np.pad(src, (0, max(0, width - len(src))), constant_values=self._token("pad"))
        src = fit_input(src_in, src[None, :], self.eval_model)  # ids the model can look up
        bos = self._token("bos")

        def next_log_probs(prefixes):
            dec = np.array([(bos,) + p for p in prefixes], np.int32)
            return _log(self._next_probs({src_in.name: np.repeat(src, len(prefixes), axis=0), dec_in.name: dec}))

        return next_log_probs

    def neighbours(self, word: str, k: int = 5, param: str | None = None) -> list:
        """The `k` words whose vectors are nearest to `word`'s by cosine similarity, as
        (word, similarity), nearest first: the rows of an embedding table (`param`, by
        default the first [vocabulary, dim] parameter the model declares) named by the vocabulary the
        model was trained with (meta "vocab_words", as the skipgram source gives it)."""
        self._require_weights()
        words = self.meta.get("meta", {}).get("vocab_words")
        if words is None:
            raise DlcError(
                "this checkpoint has no word list: it was not trained on a source of words such as skipgram()"
            )
        tables = {n: a for n, a in self.params.items() if a.ndim == 2 and len(a) == len(words)}
        if not tables:
            raise DlcError(
                f"no parameter of the model is a [{len(words)}, dim] table: the vocabulary it was trained "
                f"on has {len(words)} words"
            )
        param = param or next(iter(tables))
        if param not in tables:
            raise DlcError(f"'{param}' is not a [{len(words)}, dim] table of the model{did_you_mean(param, tables)}")
        if word not in words:
            raise DlcError(
                f"'{word}' is not among the {len(words)} words the model was trained on{did_you_mean(word, words)}"
            )
        table = np.asarray(tables[param], np.float64)
        unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit[words.index(word)]
        order = [i for i in np.argsort(-similarity, kind="stable") if words[i] != word][:k]
        return [(words[i], float(similarity[i])) for i in order]

    def _encoder_decoder_inputs(self):
        pair = _sequence_inputs(self.eval_model)
        if pair is None:
            raise DlcError(
                f"model {self.name} is not an encoder-decoder (it needs two integer inputs: "
                "the source and the decoder input)"
            )
        return pair

    def _token(self, name: str) -> int:
        """The pad, bos or eos id of the data the model was trained on (dlc's sequence tasks' by default)."""
        default = {"pad": PAD, "bos": BOS, "eos": EOS}[name]
        return int(self.meta.get("meta", {}).get(name, default))

    def _next_probs(self, feeds: dict) -> np.ndarray:
        """The first output at the last position: the next-token distribution, [batch, classes]."""
        out = np.asarray(next(iter(self.engine.predict(self.params, feeds).values())), np.float64)
        return out[:, -1] if out.ndim == 3 else out.reshape(len(out), -1)


def _spelled(tokenizer, prompt: list, ids: list) -> str | list:
    """A continuation as the text it adds to the prompt's (the tokens decoded together, as a
    tokenizer joins them: GPT-2's spaces belong to the token after them), or its ids without a tokenizer."""
    if tokenizer is None:
        return ids
    before, whole = tokenizer.decode(prompt), tokenizer.decode(prompt + ids)
    return whole[len(before) :] if whole.startswith(before) else tokenizer.decode(ids)


def _log(probs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # a probability of 0 is a log-probability of -inf
        return np.log(probs)


def _sequence_inputs(model):
    """(source, decoder input) of an encoder-decoder model, or None."""
    inputs = [i for i in model.inputs if not i.is_target]
    if len(inputs) == 2 and all(i.type.dtype in ("i32", "i64") for i in inputs):
        return inputs
    return None


class Text(str):
    """Text that the interpreter and a notebook show as it is (a table), not as a quoted string."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer, cycle: bool):
        printer.text(str(self))


class StopTrainingFlag(Callback):
    """Keras' habit: a callback sets `model.stop_training = True`, and the run stops after
    that batch or epoch, as if it had raised StopTraining (called after the caller's callbacks)."""

    def __init__(self, model: DlcModel):
        self.flagged = model

    def on_train_begin(self, logs: dict):
        self.flagged.stop_training = False

    def on_batch_end(self, step: int, logs):
        self.stop_if_set()

    def on_epoch_end(self, epoch: int, logs: dict):
        self.stop_if_set()

    def stop_if_set(self):
        if self.flagged.stop_training:
            raise StopTraining("model.stop_training was set")


def load(
    path: str | Path, model: str | None = None, weights: str | Path | None = None, backend: str = "auto"
) -> DlcModel:
    """The model `model` (default: the file's first) of the .dl file at `path`, with the
    weights of a checkpoint (.npz, as model.save writes and training does) or a
    .safetensors file when `weights` is given. `backend`: "auto" (native where it can
    run the model), "native" or "reference"."""
    m = DlcModel(path, model, backend)
    return m.load_weights(weights) if weights is not None else m


def import_folder(
    folder: str | Path,
    output: str | Path,
    weights: str | Path | None = None,
    as_def: bool = False,
    backend: str = "auto",
) -> DlcModel:
    """`dlc import FOLDER -o OUTPUT`: the Hugging Face model folder at `folder` written as the
    program `output` (.dl), its checkpoint (`weights`, default OUTPUT.npz), the config that
    export writes back and the folder's tokenizer beside it; the imported model, with its weights."""
    from dlc.runtime.interop.huggingface import save_import

    weights = Path(weights) if weights else Path(output).with_suffix(".npz")
    save_import(folder, output, weights, as_def)
    return load(output, weights=weights, backend=backend)
