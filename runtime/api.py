"""The Python API, mirroring the command line:

    model = dlc.load("examples/lenet5.dl")
    result = model.train(epochs=5)                 # dlc train
    model.evaluate()                               # dlc eval
    model.predict({"x": images})                   # dlc predict
    model.generate("In the beginning", 200)        # dlc generate
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load as load_program
from dlc.runtime.data import registry
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.files import read_text
from dlc.runtime.data.text import decode, encode
from dlc.runtime.interop import weights
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.training.inputs import data_settings, evaluation_data, fit_input, input_arrays
from dlc.runtime.training.trainer import Trainer, mean_metrics, to_stderr


class DlcModel:
    def __init__(self, path: str, model: str | None = None, backend: str = "auto"):
        self.path, self.backend = path, backend
        self.program = load_program(path)
        self.train_model = self.program.build(model, training=True)
        self.eval_model = self.program.build(model, training=False)
        self.name = self.eval_model.name
        self.params: dict | None = None
        self.meta: dict = {}
        self._engine = None

    # -- training --
    def train(self, out: str | None = None, resume=False, log=None, progress="auto", tensorboard=None,
              **overrides):
        """Train with the file's train block; keyword arguments override its settings.
        `progress`: "auto" (a line redrawn on a terminal, tqdm's bar in a notebook, else a line
        per epoch), "bar", "epochs", "none" or N (a line every N steps): runtime/training/progress.py.
        `tensorboard`: a folder for TensorBoard event files (runtime/training/tensorboard.py)."""
        trainer = Trainer(self.program, self.name, overrides, Path(out) if out else None, log, self.backend,
                          progress, tensorboard)
        result = trainer.run(resume=resume)
        self.params = result.params
        self.meta = {"meta": getattr(trainer, "meta", {}), "data": data_settings(trainer.cfg)}
        return result

    # -- weights --
    def load_weights(self, path) -> "DlcModel":
        """A checkpoint (.npz) or a .safetensors file, in dlc's or torch.nn's names and layouts."""
        self.params, self.meta = weights.load(path, self.eval_model.params)
        return self

    def _require_weights(self):
        if self.params is None:
            raise DlcError(f"model {self.name} has no weights: train it or load a checkpoint first")

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.backend, self.train_model, self.eval_model)
        return self._engine

    # -- use --
    def evaluate(self, data=None, batch: int = 256, log=None) -> dict:
        """Loss and metrics (evaluation mode) on `data` (a source such as "digits()" or a
        path), by default on data the weights were not trained on: the test, else the
        validation data of the settings the checkpoint was trained with (the train block's
        for plain weights; inputs.evaluation_data). `log` (default: stderr) is told which."""
        self._require_weights()
        arrays = evaluation_data(self.program, self.eval_model, data, self.meta.get("data"), log or to_stderr)
        return mean_metrics(self.engine, self.params, arrays, batch)

    def predict(self, inputs, batch: int = 256) -> dict:
        """Outputs for inputs: a dict by input name, an array (the first input), or a path
        to an npz / csv / text file."""
        self._require_weights()
        if isinstance(inputs, (str, Path)):
            inputs = self._read_inputs(Path(inputs))
        if isinstance(inputs, np.ndarray):
            inputs = {self.eval_model.inputs[0].name: inputs}
        ds = Dataset(dict(inputs), {})
        arrays = input_arrays(self.eval_model, ds, need_targets=False)
        n = len(next(iter(arrays.values())))
        parts: dict = {}
        for start in range(0, n, batch):
            out = self.engine.predict(self.params, {k: v[start:start + batch] for k, v in arrays.items()})
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        if not parts:
            raise DlcError(f"model {self.name} declares no outputs; add `output name = ...`")
        for k, v in parts.items():
            if len(v) > 1 and v[0].ndim == 0:
                raise DlcError(f"output {k} is one number per batch, not per example: predict all {n} examples "
                               f"as one batch (batch = {n})")
        return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}

    def _read_inputs(self, path: Path) -> dict:
        if path.suffix == ".txt":
            text = read_text(path, Path.cwd(), "predict")
            return {self.eval_model.inputs[0].name: encode(text, self.vocab())[None, :]}
        ds = registry.load(str(path), Path.cwd())
        return ds.columns

    def vocab(self) -> str:
        vocab = self.meta.get("meta", {}).get("vocab")
        if vocab is None:
            raise DlcError("this checkpoint has no vocabulary: it was not trained on text")
        return vocab

    def decode(self, src: np.ndarray, max_len: int, bos: int = 1, eos: int = 2, batch: int = 256) -> np.ndarray:
        """Greedy decoding with an encoder-decoder model: feed BOS, then each step's most
        likely token, until EOS or max_len tokens. Returns [N, max_len] ids (0 after EOS)."""
        self._require_weights()
        pair = _sequence_inputs(self.eval_model)
        if pair is None:
            raise DlcError(f"model {self.name} is not an encoder-decoder (it needs two integer inputs: "
                           "the source and the decoder input)")
        src_in, dec_in = pair
        src = fit_input(src_in, np.asarray(src), self.eval_model)      # ids the model can look up
        out = np.zeros((len(src), max_len), np.int32)
        for start in range(0, len(src), batch):
            s = src[start:start + batch]
            seq = np.full((len(s), 1), bos, np.int32)
            done = np.zeros(len(s), bool)
            for t in range(max_len):
                probs = next(iter(self.engine.predict(self.params, {src_in.name: s, dec_in.name: seq}).values()))
                nxt = np.where(done, 0, probs[:, -1].argmax(-1)).astype(np.int32)
                out[start:start + len(s), t] = nxt
                done |= nxt == eos
                if done.all():
                    break
                seq = np.concatenate([seq, nxt[:, None]], axis=1)
        return out

    def generate(self, prompt: str, length: int, temperature: float = 0.0, seed: int = 0) -> str:
        """Continue `prompt` by `length` characters, greedily (temperature 0) or by
        sampling; the model's first output is the next-character distribution."""
        self._require_weights()
        if length < 0 or not 0 <= temperature < math.inf:       # NaN fails the comparison too
            raise DlcError(f"generate needs a length >= 0 and a finite temperature >= 0, got {length} and "
                           f"{temperature}")
        vocab = self.vocab()
        inp = self.eval_model.inputs[0]
        context = _context_limit(self.eval_model)
        ids = list(encode(prompt, vocab)) if prompt else [0]
        rng = np.random.default_rng(seed)
        for _ in range(length):
            window = np.array([ids[-context:] if context else ids], np.int32)
            out = next(iter(self.engine.predict(self.params, {inp.name: window}).values()))
            probs = np.asarray(out, np.float64).reshape(-1)
            if probs.size < len(vocab):
                raise DlcError(f"the model's output has {probs.size} classes, the vocabulary {len(vocab)}")
            probs = probs[:len(vocab)]
            if temperature == 0:
                nxt = int(np.argmax(probs))
            else:
                logits = np.log(np.maximum(probs, 1e-12)) / temperature
                p = np.exp(logits - logits.max())
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            ids.append(nxt)
        return decode(np.array(ids[len(prompt) if prompt else 1:]), vocab)


def _sequence_inputs(model):
    """(source, decoder input) of an encoder-decoder model, or None."""
    inputs = [i for i in model.inputs if not i.is_target]
    if len(inputs) == 2 and all(i.type.dtype in ("i32", "i64") for i in inputs):
        return inputs
    return None


def _context_limit(model) -> int:
    """The longest sequence the model accepts: a parameter sliced to the sequence
    length (learned positions, P[0:T]) bounds it; 0 means no limit."""
    g = model.graph
    for n in g.nodes_with("slice"):
        src = g.inputs(n)[0]
        if g.op(src.node) == "param":
            for axis, stop in enumerate(g.attrs(n)["stops"]):
                if not isinstance(stop, int):
                    return src.shape[axis]
    return 0


def load(path: str, model: str | None = None, backend: str = "auto") -> DlcModel:
    return DlcModel(path, model, backend)
