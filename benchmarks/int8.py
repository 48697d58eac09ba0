"""int8 prediction: dlc's quantization (docs/quantization.md) against onnxruntime's
`quantize_static` in both its formats and, where it is installed, OpenVINO running that
quantization, all calibrated on the same batches, each against its own float32.

The models:

    digits_cnn              examples/digits_cnn.dl, trained here (--epochs, default 12) or
                            --weights digits_cnn=CKPT; its test split
    transformer_classifier  examples/transformer_classifier.dl, trained here (default 3 epochs)
                            or --weights; its validation split (it has no test split)
    mobilenet_v2, resnet18  torchvision's, random weights and batch norms' statistics of a
                            random batch (dlc.tools.real_models), exported by torch.onnx.export
                            (TorchScript, opset 17) at 3 x 64 x 64 and 3 x 224 x 224 (--image)
                            and imported by `dlc import`, a model at each size; random images as
                            data (--examples of them, default 512: at 64 one image was 1.6
                            points of agreement), predicted 32 at a time

Each is quantized by dlc (`model.quantize`, min-max) on the first CALIBRATE batches of its
training data (the train block's batch; the imported ones: random images, batches of 8), and
by onnxruntime's `quantize_static` (per channel, u8 activations, s8 weights, min-max) of
the float32 ONNX file (the imported models' own, PyTorch's export that dlc imported; the
examples', dlc's export) on the same batches, twice: in the QDQ format (QuantizeLinear and
DequantizeLinear around float32 operators, which onnxruntime fuses) and in the QOperator
one (QLinearConv, QLinearMatMul, ... written in the file). OpenVINO, when `import openvino`
works (an optional peer: not in dlc's test extra, its wheel is 180 MB), runs the QDQ file
(its low-precision transformations turn the pairs into int8 operators: the same scales, no
second calibration) and the float32 file; where it does not compile one (OpenVINO 2026.4's
int8 passes throw on the QDQ model of dlc's export, at a dequantized bias add), a note says
so and that column is missing. `--observer percentile` (--percentile P)
calibrates both by percentiles instead: dlc's observer (docs/quantization.md) and
onnxruntime's CalibrationMethod.Percentile cutting the same share of values, (100 - P) %, on
each side (onnxruntime's cut is (100 - P) / 2 % a side of its own P; its percentiles are
those of a histogram of 2048 bins, dlc's exact). Before anything is timed, onnxruntime's
float32 must agree with dlc's within 1e-4 of the largest output. The column `qdq quanta` is
the largest difference between onnxruntime running dlc's own QDQ export (`dlc export
--int8`) and dlc's int8, in quanta of the output (docs/quantization.md, "Export"; a note
says when it is above one). On an x86-64 host without VNNI, onnxruntime's fused u8 · s8
kernels saturate (compiler/onnx/qdq.py `fused_int8_saturates`): there it runs dlc's export
with its graph optimizations off, the products in float32, and the run says so; `ort_int8`
is onnxruntime's fused model as its users get it, saturation included. OpenVINO's float32,
when it runs, must agree with dlc's as onnxruntime's does (its precision pinned to f32: on a
host with bf16 its default is bf16); its int8 runs with its defaults but the threads, as its
users get it (on such a host, its float parts in bf16).

The error, of each int8 against dlc's float32, on the model's first output over the
evaluation data: top-1 agreement (argmax over the last axis), SQNR in dB (10 log10 of
Σ float32² over Σ (int8 - float32)²), and the accuracy against the labels where the data has
them.

The time, digits_cnn and transformer_classifier at batch 1 and 256, the imported models at
batch 1 and 8 (--batch), in rounds (benchmarks/rounds.py), each after a pause:

    dlc_f32       the native engine (DlcModel.predict)
    dlc_int8      the native engine with --int8 (DlcModel.predict(int8=True))
    dlc_f32_lib   the library of `dlc build --embed-weights` of the float32 weights, called
                  from C (deploy_timer.c, as benchmarks/deploy.py): a column only for models of
                  one f32 input; its outputs are first checked to be dlc_f32's bits
    dlc_int8_lib  the library of `dlc build --int8`, timed as dlc_f32_lib: a column only where
                  this dlc's `dlc build` has --int8, for models of one f32 input; its outputs
                  are first checked to be dlc_int8's bits
    ort_f32       onnxruntime on the float32 file
    ort_qdq       onnxruntime on quantize_static's QDQ model
    ort_qop       onnxruntime on quantize_static's QOperator model
    ov_f32        OpenVINO on the float32 file (when installed)
    ov_int8       OpenVINO on quantize_static's QDQ model (when installed)

`ort_int8` is the faster of ort_qdq and ort_qop (by their medians; the column `ort int8`
says which). onnxruntime runs on THREADS threads, its pool not spinning
(benchmarks/imported.py), OpenVINO on THREADS threads (its latency hint), dlc on its
default. The ratios: dlc_int8 over dlc_f32, over ort_int8 and over ov_int8 (the engine's
calls, from Python), dlc_int8_lib over dlc_f32_lib, over ort_int8 and over ov_int8 (the
libraries' calls, from C: at batch 1 the engine's call is mostly Python's), ort_int8 over
ort_f32, ov_int8 over ov_f32.

    python benchmarks/int8.py
    python benchmarks/int8.py --only digits_cnn --epochs 2 --batch 1 --rounds 2 --json /tmp/int8.json
    python benchmarks/int8.py --only digits_cnn --weights digits_cnn=runs/digits/best.npz
    python benchmarks/int8.py --only resnet18 --examples 64
    python benchmarks/int8.py --only resnet18 --image 64 --batch 1 --examples 16 --rounds 1 --seconds 0.1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.compiler.onnx.qdq import fused_int8_saturates
from deploy import c_point, process_slot, timer
from imported import imported, onnxruntime_session
from machine import print_results
from rounds import ROUNDS, interleave, others_cell, ratio_cell, reported, timed, time_o3_code
from train_step import THREADS, json_safe, markdown

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAINED = {"digits_cnn": 12, "transformer_classifier": 3}  # model -> default epochs
IMPORTED = ("mobilenet_v2", "resnet18")
MODELS = (*TRAINED, *IMPORTED)
BATCHES = (1, 256)
CALIBRATE = 8  # calibration batches
IMPORTED_BATCH = 8  # the imported models' calibration batch
IMPORTED_EXAMPLES = 512  # ... and their evaluation images (--examples)
IMPORTED_IMAGES = (64, 224)  # their images' sides (--image)
IMPORTED_BATCHES = (1, 8)  # their timed batch sizes
EVAL_BATCH = {"trained": 256, "imported": 32}  # examples a call when scoring the error
OUTPUT_RTOL = 1e-4
SECONDS = 1.0  # a round's seconds of each
PAUSE_S = 0.05  # before each slot: the previous one's threads go to sleep
ORT_FORMATS = {"ort_qdq": "QDQ", "ort_qop": "QOperator"}  # quantize_static's formats
TIMED = ("dlc_f32", "dlc_int8", "dlc_f32_lib", "dlc_int8_lib", "ort_f32", *ORT_FORMATS, "ov_f32", "ov_int8")
FLOAT_PEERS = ("ort_f32", "ov_f32")  # each must give dlc's float32 outputs first
LIBRARIES = {"dlc_f32_lib": "dlc_f32", "dlc_int8_lib": "dlc_int8"}  # each library -> the engine it must equal
PAIRS = (
    ("dlc_int8", "dlc_f32"),
    ("dlc_int8", "ort_int8"),
    ("dlc_int8", "ov_int8"),
    ("dlc_int8_lib", "dlc_f32_lib"),
    ("dlc_int8_lib", "ort_int8"),
    ("dlc_int8_lib", "ov_int8"),
    ("ort_int8", "ort_f32"),
    ("ov_int8", "ov_f32"),
)
INT8 = ("dlc_int8", *ORT_FORMATS, "ov_int8")  # the int8 predictors scored for error


@dataclass
class Subject:
    """A model to measure: its DlcModel with float32 weights, the calibration batches (input
    name -> array, the inputs only), the evaluation inputs and their labels (or None); an
    imported model's images' side."""

    name: str
    model: object
    calibration: list
    inputs: dict
    labels: np.ndarray | None
    image: int | None = None
    onnx: Path | None = None  # the ONNX file it was imported from, which the peers run

    @property
    def label(self) -> str:
        return self.name if self.image is None else f"{self.name} {self.image} px"


def trained(name: str, epochs: int, weights: str | None, folder: Path) -> Subject:
    """An example trained `epochs` epochs (or its --weights), its calibration batches and its
    evaluation data."""
    from dlc.runtime.api import DlcModel
    from dlc.runtime.cli import main
    from dlc.runtime.training.inputs import evaluation_data

    path = EXAMPLES / f"{name}.dl"
    if weights is None:
        weights = folder / name / "best.npz"
        print(f"training {name} for {epochs} epochs", flush=True)
        if main(["train", str(path), "--out", str(weights.parent), "--epochs", str(epochs), "-q"]) != 0:
            raise SystemExit(f"dlc train {path} failed")
    model = DlcModel(str(path), backend="native").load_weights(weights)
    train, batch, _ = model._calibration_data(None)
    names = [i.name for i in model.eval_model.inputs if not i.is_target]
    taken = min(len(train[names[0]]), CALIBRATE * batch)  # as model.quantize takes them
    calibration = [{k: train[k][s : s + batch] for k in names} for s in range(0, taken, batch)]
    held_out = evaluation_data(model.program, model.eval_model, None, model.meta.get("data"), lambda _: None)
    targets = [i.name for i in model.eval_model.inputs if i.is_target]
    return Subject(
        name, model, calibration, {k: held_out[k] for k in names}, held_out[targets[0]] if len(targets) == 1 else None
    )


def torchvision(name: str, image: int, examples: int, folder: Path) -> Subject:
    """torchvision's model with random weights, exported at `image` pixels a side and
    imported; `examples` random images."""
    from dlc.runtime.api import DlcModel
    from dlc.tools import real_models

    onnx_path = folder / f"{name}.onnx"
    real_models.export(name, onnx_path, "torchscript", image=image)
    program, weights, _ = imported(onnx_path, folder)
    model = DlcModel(str(program), backend="native").load_weights(weights)
    calibration = [real_models.example(name, IMPORTED_BATCH, seed=100 + k, image=image) for k in range(CALIBRATE)]
    inputs = real_models.example(name, examples, seed=1, image=image)
    return Subject(name, model, calibration, inputs, None, image, onnx_path)


def quantized(s: Subject, folder: Path, observer: str, percentile: float) -> dict:
    """dlc's quantization and onnxruntime's of the same float32 model on the same batches, by
    the same observer ("minmax", or "percentile": the (100 - `percentile`)th to the
    `percentile`th): the paths of the ONNX files (float32: the file the model was imported
    from, else dlc's export; dlc's QDQ export,
    quantize_static's in each of ORT_FORMATS) and of the checkpoints (float32, dlc's quantized
    one)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from dlc.compiler.onnx.export import save_onnx
    from dlc.runtime.interop import checkpoint

    model = s.model
    joined = {k: np.concatenate([b[k] for b in s.calibration]) for k in s.calibration[0]}
    model.quantize(
        calibrate=len(s.calibration),
        data=joined,
        batch=len(next(iter(s.calibration[0].values()))),
        observer=observer,
        percentile=percentile,
    )
    paths = {
        "f32": s.onnx or folder / f"{s.name}.f32.onnx",
        "qdq": folder / f"{s.name}.qdq.onnx",
        "ort_qdq": folder / f"{s.name}.ort_qdq.onnx",
        "ort_qop": folder / f"{s.name}.ort_qop.onnx",
        "dlc_f32_lib": folder / f"{s.name}.f32.npz",
        "dlc_int8_lib": folder / f"{s.name}.int8.npz",
    }
    if s.onnx is None:
        save_onnx(model.eval_model, model.params, paths["f32"])
    save_onnx(model.eval_model, model.params, paths["qdq"], quantization=model.quantization)
    checkpoint.save(paths["dlc_f32_lib"], model.params, {}, {})
    model.save(paths["dlc_int8_lib"])

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(s.calibration)

        def get_next(self):
            return next(self.batches, None)

    for kind, form in (("ort_qdq", QuantFormat.QDQ), ("ort_qop", QuantFormat.QOperator)):
        quantize_static(
            str(paths["f32"]),
            str(paths[kind]),
            Batches(),
            quant_format=form,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile if observer == "percentile" else CalibrationMethod.MinMax,
            extra_options={"CalibPercentile": 100 - 2 * (100 - percentile)},
        )
    return paths


def openvino_version() -> str | None:
    """OpenVINO's version where `import openvino` works, else None (it is an optional peer)."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def openvino_predictors(s: Subject, paths: dict) -> dict:
    """ov_f32 and ov_int8 (none where OpenVINO is not installed, and each only where OpenVINO
    compiles its file, a note saying so otherwise): OpenVINO's CPU plugin on THREADS threads,
    latency hint, on the float32 file (its precision pinned to f32) and on quantize_static's
    QDQ model (its defaults), each a function of the feeds giving the first output (a copy:
    OpenVINO's output tensor is overwritten by the next call)."""
    if openvino_version() is None:
        return {}
    import openvino

    core = openvino.Core()
    predictors = {}
    for kind, path, config in (
        ("ov_f32", paths["f32"], {"INFERENCE_PRECISION_HINT": "f32"}),
        ("ov_int8", paths["ort_qdq"], {}),
    ):
        try:
            compiled = core.compile_model(
                str(path), "CPU", {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", **config}
            )
        except RuntimeError as e:
            reason = next((line for line in str(e).splitlines() if "CALLBACK" in line), str(e).splitlines()[-1])
            print(f"  note: {s.label}: OpenVINO does not compile {path.name}, no {kind}: {reason.strip()}", flush=True)
            continue
        request, first = compiled.create_infer_request(), compiled.output(0)
        predictors[kind] = lambda feeds, request=request, first=first: request.infer(feeds)[first].copy()
    return predictors


def predict_all(predict, inputs: dict, batch: int = 256) -> np.ndarray:
    """`predict(feeds)`'s first output over every example, `batch` at a time."""
    n = len(next(iter(inputs.values())))
    return np.concatenate([predict({k: v[s : s + batch] for k, v in inputs.items()}) for s in range(0, n, batch)])


def sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    noise = ((got.astype(np.float64) - want) ** 2).sum()
    return float("inf") if noise == 0 else float(10 * np.log10((want.astype(np.float64) ** 2).sum() / noise))


def errors(s: Subject, predictors: dict, paths: dict) -> dict:
    """The error row: each int8 against dlc's float32 (agreement, SQNR, accuracy) once the
    peers' float32 are found to be dlc's, and how far onnxruntime's run of dlc's QDQ
    export is from dlc's int8, in quanta of the output."""
    from dlc.compiler.ir.int8 import activation_params

    batch = EVAL_BATCH["trained" if s.image is None else "imported"]
    out = {k: predict_all(fn, s.inputs, batch) for k, fn in predictors.items()}
    want = out["dlc_f32"].astype(np.float64)
    f32_error = {}  # float32 peer -> its largest difference from dlc's, relative to the largest output
    for peer in (k for k in FLOAT_PEERS if k in out):
        err = f32_error[peer] = float(np.abs(out[peer] - want).max() / max(np.abs(want).max(), 1e-30))
        if out[peer].shape != want.shape or err > OUTPUT_RTOL:
            raise SystemExit(f"{s.label}: {peer}, a peer's float32, differs from dlc's ({err:.2e} of the largest)")
    quantum = activation_params(out["dlc_int8"].min(), out["dlc_int8"].max())[0]
    quanta = float(np.abs(out["qdq"] - out["dlc_int8"]).max() / quantum)
    if quanta > 1:
        print(
            f"  note: {s.label}: onnxruntime running dlc's QDQ export differs from dlc's int8 by {quanta:.3g} quanta "
            "(float32 roundings moved products' inputs across rounding boundaries)",
            flush=True,
        )
    row = {"model": s.name, "image": s.image, "examples": len(want), "qdq_quanta": quanta, "f32_error": f32_error}
    top = want.argmax(-1)
    for k in (k for k in INT8 if k in out):
        row[f"{k}_agreement"] = float((out[k].argmax(-1) == top).mean())
        row[f"{k}_sqnr_db"] = sqnr_db(out[k], want)
    if s.labels is not None:
        for k in (k for k in ("dlc_f32", *INT8) if k in out):
            row[f"{k}_accuracy"] = float((out[k].argmax(-1) == s.labels).mean())
    return row


def library_predictors(s: Subject, paths: dict, seconds: float, folder: Path, int8: bool) -> dict:
    """The libraries of LIBRARIES this dlc builds for the model (none unless it takes one f32
    input; dlc_int8_lib where `int8`, this dlc's `dlc build` having --int8), each a function of
    the feeds giving the C timer's result: `dlc build --embed-weights` of the float32
    checkpoint, `dlc build --int8` of the quantized one, both created with NULL (their weights
    compiled in)."""
    inputs = [i for i in s.model.eval_model.inputs if not i.is_target]
    if len(inputs) != 1 or inputs[0].type.dtype != "f32":
        return {}
    exe = timer(folder)
    predictors = {}
    for kind, flag in (("dlc_f32_lib", "--embed-weights"), ("dlc_int8_lib", "--int8"))[: 1 + int8]:
        out = folder / kind
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlc.runtime.cli",
                "build",
                str(s.model.path),
                flag,
                "--weights",
                str(paths[kind]),
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        if built.returncode:
            raise SystemExit(f"dlc build {flag} of {s.name} failed: {built.stderr}")
        predictors[kind] = lambda feeds, out=out: c_point(exe, out, s.model.name, "-", feeds, seconds, folder)
    return predictors


def build_has_int8() -> bool:
    """Whether this dlc's `dlc build` takes --int8."""
    from dlc.runtime.cli.commands import build

    parser = argparse.ArgumentParser()
    build.arguments(parser)
    return "--int8" not in parser.parse_known_args(["m.dl", "-o", "out", "--int8"])[1]


def measure(s: Subject, args, folder: Path, library: bool) -> tuple[dict, list]:
    """(the error row, the time rows at each batch size) of a subject, measured as `args` say."""
    batches = args.batch or (BATCHES if s.image is None else IMPORTED_BATCHES)
    rounds, seconds = args.rounds, args.seconds
    paths = quantized(s, folder, args.observer, args.percentile)
    model = s.model
    exact = not fused_int8_saturates()
    sessions = {
        k: onnxruntime_session(paths[k], THREADS, fused=exact or k != "qdq") for k in ("f32", "qdq", *ORT_FORMATS)
    }
    if not exact:
        print(
            f"  note: {s.label}: this CPU has no VNNI, where onnxruntime's fused u8·s8 products saturate: dlc's QDQ "
            "export runs unfused (the products in float32); ort_qdq's and ort_qop's products saturate",
            flush=True,
        )
    first = sessions["f32"].get_outputs()[0].name  # the model's first output, as predict's first

    def ort(kind):
        return lambda feeds: sessions[kind].run([first], feeds)[0]

    def dlc(int8: bool):
        return lambda feeds: next(iter(model.predict(feeds, batch=len(next(iter(feeds.values()))), int8=int8).values()))

    predictors = {
        "dlc_f32": dlc(False),
        "dlc_int8": dlc(True),
        "ort_f32": ort("f32"),
        **{k: ort(k) for k in ORT_FORMATS},
        "qdq": ort("qdq"),
        **openvino_predictors(s, paths),
    }
    error_row = errors(s, predictors, paths)
    scored = [k for k in INT8 if k in predictors]
    print(
        "  {}: agreement {}; SQNR {}; qdq within {:.2g} quanta".format(
            s.label,
            ", ".join(f"{k} {error_row[f'{k}_agreement']:.4f}" for k in scored),
            ", ".join(f"{k} {error_row[f'{k}_sqnr_db']:.1f} dB" for k in scored),
            error_row["qdq_quanta"],
        ),
        flush=True,
    )
    libraries = library_predictors(s, paths, seconds, folder, library)
    rows = []
    for batch in batches:
        feeds = {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in s.inputs.items()}
        slots = {k: timed(lambda fn=fn: fn(feeds)) for k, fn in predictors.items() if k in TIMED}
        for kind, lib in libraries.items():
            got = lib(feeds)["output"].reshape(-1)
            want = predictors[LIBRARIES[kind]](feeds).reshape(-1)
            if not np.array_equal(got, want):
                raise SystemExit(f"{s.name}, batch {batch}: {kind}'s outputs are not {LIBRARIES[kind]}'s bits")
            slots[kind] = process_slot(lambda lib=lib: lib(feeds)["c_ms"])
        measured = interleave(slots, rounds, warmup=1, seconds_each=seconds, pause_s=PAUSE_S)
        # ort_int8: the faster format's rounds under a name of their own, for its ratios
        faster = min(ORT_FORMATS, key=measured.median_s)
        measured.names.append("ort_int8")
        measured.seconds["ort_int8"] = measured.seconds[faster]
        pairs = [(a, b) for a, b in PAIRS if a in measured.names and b in measured.names]
        head = {"model": s.name, "image": s.image, "batch": batch, "ort_int8_format": ORT_FORMATS[faster]}
        row = reported(measured, head, f"{s.label} batch {batch}", pairs)
        rows.append(row)
        print(
            "  batch {}: {}; ort_int8 is {}".format(
                batch, ", ".join(f"{k} {row[k]:.3f} ms" for k in TIMED if k in row), row["ort_int8_format"]
            ),
            flush=True,
        )
    return error_row, rows


def image_cell(r: dict) -> str:
    return "-" if r["image"] is None else str(r["image"])


def time_table(rows: list) -> str:
    cols = ["model", "image", "batch"] + [f"{k} ms" for k in TIMED] + ["ort int8"]
    cols += [f"{a}/{b}" for a, b in PAIRS] + ["others"]
    # three decimals: a library's call at batch 1 takes a few microseconds
    body = [
        [r["model"], image_cell(r), str(r["batch"])]
        + [f"{r[k]:.3f}" if k in r else "-" for k in TIMED]
        + [r["ort_int8_format"]]
        + [ratio_cell(r[f"{a}/{b}"]) if f"{a}/{b}" in r else "-" for a, b in PAIRS]
        + [others_cell(r["others"])]
        for r in rows
    ]
    return markdown(cols, body)


def error_table(rows: list) -> str:
    def cell(r, key, fmt):
        return format(r[key], fmt) if key in r else "-"

    int8 = "dlc / ort QDQ / ort QOperator / ov"  # INT8's order
    cols = ["model", "image", "examples", f"agreement {int8}", f"SQNR dB {int8}", f"accuracy f32 / {int8}"]
    cols.append("qdq quanta")
    body = [
        [
            r["model"],
            image_cell(r),
            str(r["examples"]),
            " / ".join(cell(r, f"{k}_agreement", ".4f") for k in INT8),
            " / ".join(cell(r, f"{k}_sqnr_db", ".1f") for k in INT8),
            " / ".join(cell(r, f"{k}_accuracy", ".4f") for k in ("dlc_f32", *INT8)),
            f"{r['qdq_quanta']:.2g}",
        ]
        for r in rows
    ]
    return markdown(cols, body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument(
        "--batch",
        type=int,
        action="append",
        help=f"timed batch sizes (default {BATCHES}, the imported models {IMPORTED_BATCHES})",
    )
    ap.add_argument(
        "--image",
        type=int,
        action="append",
        help=f"the imported models' images' side (repeatable; default {IMPORTED_IMAGES})",
    )
    ap.add_argument(
        "--epochs", type=int, help="training epochs of the examples (default: digits_cnn 12, transformer_classifier 3)"
    )
    ap.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=CKPT",
        help="trained weights of an example instead of training it (repeatable)",
    )
    ap.add_argument(
        "--examples",
        type=int,
        default=IMPORTED_EXAMPLES,
        help=f"evaluation images of the imported models (default {IMPORTED_EXAMPLES})",
    )
    ap.add_argument(
        "--observer",
        choices=("minmax", "percentile"),
        default="minmax",
        help="the calibration's observer, dlc's and onnxruntime's (default minmax)",
    )
    ap.add_argument("--percentile", type=float, default=99.99, help="the percentile observer's P (default 99.99)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of the predictors in turn (default {ROUNDS})")
    ap.add_argument("--seconds", type=float, default=SECONDS, help=f"a round's seconds of each (default {SECONDS})")
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    time_o3_code()
    weights = dict(w.split("=", 1) for w in args.weights)
    unknown = set(weights) - set(TRAINED)
    if unknown:
        ap.error(f"--weights names the examples {', '.join(TRAINED)}, not {', '.join(sorted(unknown))}")
    if any(side < 32 for side in args.image or ()):
        ap.error("--image takes at least 32 pixels (five halvings leave a 1 x 1 map)")
    import onnxruntime

    library = build_has_int8()
    observer = args.observer + (f" {args.percentile}" if args.observer == "percentile" else "")
    openvino = openvino_version()
    print(
        f"int8 prediction: dlc against onnxruntime {onnxruntime.__version__} quantize_static, QDQ and QOperator, "
        f"and {f'OpenVINO {openvino}' if openvino else 'not OpenVINO (not installed)'} ({THREADS} threads); "
        f"calibration on {CALIBRATE} batches, {observer}; "
        f"dlc build --int8: {'timed' if library else 'not in this dlc'}; "
        f"the imported models on {args.examples} images; "
        f"median ms per call over {args.rounds} rounds of about {args.seconds} s of each, in turn",
        flush=True,
    )
    error_rows, time_rows = [], []
    with tempfile.TemporaryDirectory(prefix="dlc-int8-") as tmp:
        for name in args.only or MODELS:
            for image in (None,) if name in TRAINED else args.image or IMPORTED_IMAGES:
                folder = Path(tmp) / (name if image is None else f"{name}_{image}")
                folder.mkdir()
                s = (
                    trained(name, args.epochs or TRAINED[name], weights.get(name), folder)
                    if image is None
                    else torchvision(name, image, args.examples, folder)
                )
                error_row, rows = measure(s, args, folder, library)
                error_rows.append(error_row)
                time_rows += rows
    text = "\n\n".join(t for t in (error_table(error_rows), time_table(time_rows) if time_rows else "") if t)
    print_results(text, json_safe({"error": error_rows, "time": time_rows}), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
