"""Real models as ONNX files, built with random weights (no download) and exported by
PyTorch's two exporters with a dynamic batch axis: the models of docs/onnx.md's table of
real models (tests/onnx/test_real_models.py).

    python -m dlc.tools.real_models resnet18 dynamo model.onnx
    python -m dlc.tools.real_models --list
    python -m dlc.tools.real_models --table          # docs/onnx.md's table, measured now

`export(name, path, exporter)` writes the model `name` of MODELS exported by `exporter`
("torchscript": opset 17 with dynamic_axes; "dynamo": opset 18 with dynamic_shapes) to
`path`; `example(name, batch)` gives inputs to feed it. Needs torch, and torchvision
(the classifiers) or transformers (BERT, GPT-2); `compare` and `--table` also onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import types
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

EXPORTERS = ("torchscript", "dynamo")
VOCAB, POSITIONS, HIDDEN = 64, 32, 32  # the language models' sizes, small
SEQUENCE = 7  # the length of the sequences fed to them
IMAGE = 64  # the classifiers' images' side unless `image` says otherwise


def without_torchvision_ops():
    """Let torchvision import without its compiled ops: the wheel served for a CPU torch may
    be a CUDA build whose extension does not load, and only the registrations of its
    detection ops need it, not the classifiers' definitions (transformers imports
    torchvision too, where it is installed)."""
    if "torchvision" not in sys.modules:
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules.setdefault(name, types.ModuleType(name))


def torchvision_models():
    without_torchvision_ops()
    import torchvision.models

    return torchvision.models


def _classifier(name: str):
    return lambda: getattr(torchvision_models(), name)(weights=None)


def _recurrent(kind: str):
    from torch import nn

    class Recurrent(nn.Module):  # sequences (B, T, 16) -> the last step's features
        def __init__(self):
            super().__init__()
            if kind == "lstm":
                self.rnn = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
            else:
                self.rnn = nn.GRU(16, 24, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0][:, -1]

    return Recurrent()


def _transformer_classifier():
    from torch import nn

    class Classifier(nn.Module):  # token ids (B, T) -> 5 class scores
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, HIDDEN)
            layer = nn.TransformerEncoderLayer(HIDDEN, 4, 2 * HIDDEN, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(HIDDEN, 5)

        def forward(self, ids):
            return self.head(self.encoder(self.embed(ids)).mean(1))

    return Classifier()


def _hugging_face(name: str):
    without_torchvision_ops()
    import transformers
    from torch import nn

    if name == "bert":
        model = transformers.BertModel(
            transformers.BertConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=2 * HIDDEN,
                max_position_embeddings=POSITIONS,
            )
        )
    else:
        model = transformers.GPT2Model(
            transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=POSITIONS)
        )

    class Hidden(nn.Module):  # ids and a mask -> the last hidden state
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, attention_mask):
            return self.model(input_ids=ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    return Hidden()


def _images(batch, rng, image=IMAGE):
    return {"x": rng.standard_normal((batch, 3, image, image)).astype(np.float32)}


def _features(batch, rng):
    return {"x": rng.standard_normal((batch, SEQUENCE, 16)).astype(np.float32)}


def _ids(batch, rng):
    return {"ids": rng.integers(1, VOCAB, (batch, SEQUENCE))}


def _ids_and_mask(batch, rng):
    mask = np.ones((batch, SEQUENCE), np.int64)
    mask[0, SEQUENCE // 2 :] = 0  # a padded sequence
    return {"ids": rng.integers(1, VOCAB, (batch, SEQUENCE)), "attention_mask": mask}


@dataclass(frozen=True)
class RealModel:
    build: Callable  # () -> the torch module, random weights
    inputs: Callable  # (batch, rng) -> {input name: array}
    needs: str  # the package its definition comes from


MODELS = {
    **{
        name: RealModel(_classifier(name), _images, "torchvision")
        for name in ("resnet18", "squeezenet1_1", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x0_5")
    },
    "lstm": RealModel(lambda: _recurrent("lstm"), _features, "torch"),
    "gru": RealModel(lambda: _recurrent("gru"), _features, "torch"),
    "transformer": RealModel(_transformer_classifier, _ids, "torch"),
    "bert": RealModel(lambda: _hugging_face("bert"), _ids_and_mask, "transformers"),
    "gpt2": RealModel(lambda: _hugging_face("gpt2"), _ids_and_mask, "transformers"),
}


def missing(name: str) -> list:
    """The packages the model `name` needs that are not installed (found without importing
    them: torchvision must be imported through torchvision_models)."""
    from importlib.util import find_spec

    return [p for p in dict.fromkeys(("torch", MODELS[name].needs)) if find_spec(p) is None]


def example(name: str, batch: int = 2, seed: int = 0, image: int | None = None) -> dict:
    """Inputs for the model `name` with `batch` rows; a classifier's images `image` pixels a
    side (default IMAGE), an option of the classifiers only."""
    if image is None:
        return MODELS[name].inputs(batch, np.random.default_rng(seed))
    if MODELS[name].inputs is not _images:
        raise ValueError(f"{name} takes no images: `image` is an option of the classifiers")
    return _images(batch, np.random.default_rng(seed), image)


def _calibrate(model, feeds: dict) -> None:
    """Batch norms' statistics from a batch of `feeds` and random affine parameters, so that
    activations keep their scale through a deep network in evaluation (with torch's initial
    statistics, mobilenet_v2's outputs are about 1e-9)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.momentum = 1.0  # the running statistics become this batch's
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.normal_(norm.bias, 0.0, 0.1)
    with torch.no_grad():
        model.train()(*(torch.from_numpy(a) for a in feeds.values()))


def export(name: str, path, exporter: str, image: int | None = None) -> None:
    """The model `name` with random weights (seed 0), exported by `exporter` to `path` with
    axis 0 of every input the symbolic dim "batch" (a classifier's images `image` pixels a
    side, as `example`). Raises what the exporter raises."""
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    torch.manual_seed(0)
    model = MODELS[name].build()
    _calibrate(model, example(name, batch=8, seed=1, image=image))
    model.eval()
    feeds = example(name, image=image)
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=list(feeds),
                output_names=["y"],
                opset_version=17,
                dynamic_axes={k: {0: "batch"} for k in feeds},
                dynamo=False,
            )
        else:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=list(feeds),
                output_names=["y"],
                opset_version=18,
                dynamic_shapes={k: {0: batch} for k in feeds},
                dynamo=True,
                verbose=False,
            )


# what the exporters themselves cannot export (so nothing to import)
EXPORTER_FAILS = {("gpt2", "torchscript"): "the TorchScript exporter fails on GPT-2 (unordered_map::at)"}


@dataclass
class Comparison:
    text: str  # the imported program
    want: np.ndarray  # onnxruntime's output
    outputs: dict = field(default_factory=dict)  # engine -> dlc's output

    def error(self, engine: str) -> float:
        """The largest |dlc - onnxruntime| on `engine`."""
        return float(np.abs(self.outputs[engine].astype(np.float64) - self.want).max())


def compare(path, name: str, engines=("reference", "native"), batch: int = 3) -> Comparison:
    """The ONNX model `name` at `path` imported by dlc and run on `engines` at `batch` (not
    the export's batch), beside onnxruntime."""
    import onnxruntime
    from dlc.compiler.onnx.importer import import_model, read_model
    from dlc.runtime.api import DlcModel

    path = Path(path)
    result = import_model(read_model(path), source=path.name)
    program, weights = path.with_suffix(".dl"), path.with_suffix(".npz")
    program.write_text(result.text)
    np.savez(weights, **result.weights)
    feeds = example(name, batch, seed=1)
    want = onnxruntime.InferenceSession(str(path)).run(None, feeds)[0]
    out = Comparison(result.text, want)
    for engine in engines:
        out.outputs[engine] = (
            DlcModel(str(program), backend=engine)
            .load_weights(weights)
            .predict({result.inputs[k]: v for k, v in feeds.items()})[result.outputs["y"]]
        )
    return out


def table(engines=("reference", "native")) -> str:
    """docs/onnx.md's table of real models: each model by each exporter, imported and run."""
    rows = [
        "| model | exporter | import | lines | " + " | ".join(f"max error, {e}" for e in engines) + " |",
        "|---|---|---|---|" + "---|" * len(engines),
    ]
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            for exporter in EXPORTERS:
                if (name, exporter) in EXPORTER_FAILS:
                    rows.append(f"| {name} | {exporter} | exporter fails | | " + " | " * (len(engines) - 1) + " |")
                    continue
                path = Path(folder) / f"{name}_{exporter}.onnx"
                export(name, path, exporter)
                try:
                    c = compare(path, name, engines)
                except Exception as e:  # the table says what fails, in one line
                    rows.append(f"| {name} | {exporter} | **{str(e).splitlines()[0][:120]}** | |" + " |" * len(engines))
                    continue
                rows.append(
                    f"| {name} | {exporter} | ok | {len(c.text.splitlines())} | "
                    + " | ".join(f"{c.error(e):.1e}" for e in engines)
                    + " |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dlc.tools.real_models", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", choices=list(MODELS))
    p.add_argument("exporter", nargs="?", choices=EXPORTERS)
    p.add_argument("path", nargs="?")
    p.add_argument("--list", action="store_true", help="print the models' names")
    p.add_argument("--table", action="store_true", help="print docs/onnx.md's table of real models, measured now")
    args = p.parse_args(argv)
    if args.table:
        print(table())
        return 0
    if args.list or not args.path:
        print("\n".join(MODELS))
        return 0
    export(args.name, args.path, args.exporter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
