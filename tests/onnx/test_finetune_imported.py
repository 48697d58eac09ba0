"""Fine-tuning an imported model, as docs/interop.md's "Fine-tuning a pre-trained model"
writes it: the test reads that section's snippets and runs them in order (export a small
Hugging Face BERT to ONNX, make the data, `dlc import --def`, a file that imports it and
adds a head, `dlc train`, `dlc eval`), so the page and the path stay in step; and
`dlc import --def` computes what the imported model computes."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from dlc.compiler.onnx.importer import import_model, read_model  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from helpers.torch_exports import export, sequences  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


def recipe() -> dict:
    """The fenced blocks of the section, by language: {"python": [...], "": [...], "dl": [...]}."""
    text = DOC.read_text()
    section = text.split("### Fine-tuning a pre-trained model\n", 1)[1].split("\n### ", 1)[0]
    blocks = {}
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M):
        blocks.setdefault(lang, []).append(body)
    return blocks


def dlc(command: str, cwd: Path) -> str:
    args = command.split()
    assert args[0] == "dlc", command
    run = subprocess.run([sys.executable, "-m", "dlc.runtime.cli", *args[1:]], capture_output=True, text=True, cwd=cwd)
    assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def test_an_imported_encoder_is_frozen_while_its_new_head_trains(tmp_path, monkeypatch):
    blocks = recipe()
    export_snippet, data_snippet = blocks["python"]
    (classifier,) = blocks["dl"]
    import_command, train_command, eval_command = blocks[""][0].splitlines()

    monkeypatch.chdir(tmp_path)
    for snippet in (export_snippet, data_snippet):
        exec(compile(snippet, str(DOC), "exec"), {"__name__": "recipe"})
    dlc(import_command, tmp_path)
    assert (
        "def encoder(ids: i64[batch, length], attention_mask: i64[batch, length])"
        in (tmp_path / "encoder.dl").read_text()
    )
    (tmp_path / "classifier.dl").write_text(classifier)

    # the head as it starts (the same seed as the run below): a run of 0 epochs
    start = DlcModel(str(tmp_path / "classifier.dl")).train(epochs=0, progress="none").params
    head_names = [n for n in start if n.startswith("head.")]
    encoder_names = [n for n in start if n not in head_names]
    assert len(head_names) == 4 and len(encoder_names) == 38

    summary = dlc("dlc summary classifier.dl", tmp_path)
    assert re.search(r"Trainable parameters: +1,122\n", summary), summary  # the head's, as the page says

    log = dlc(train_command, tmp_path)
    assert "init_from encoder.npz: 38 matched, 4 new" in log
    (imported, _, _), (trained, _, _) = (checkpoint.load(tmp_path / f) for f in ("encoder.npz", "run/last.npz"))
    for name in encoder_names:
        assert np.array_equal(trained[name], imported[name]), f"{name} changed though frozen"
    for name in head_names:
        assert not np.array_equal(trained[name], start[name]), f"{name} did not train"

    scores = dict(re.findall(r"(\w+) ([\d.]+)", dlc(eval_command, tmp_path).splitlines()[0]))
    assert float(scores["accuracy"]) > 0.85, scores  # chance is 0.5


def test_an_import_as_a_def_computes_what_the_imported_model_does(tmp_path):
    """The def and the model that calls it, on a BERT-like model of two outputs: the same
    outputs, from the same checkpoint."""
    path = export(tmp_path, "bert", "torchscript")
    feeds = sequences(3, 5, 1)
    outputs = {}
    for as_def in (False, True):
        result = import_model(read_model(path), name="encoder", source=path.name, as_def=as_def)
        program = tmp_path / f"encoder_{as_def}.dl"
        program.write_text(result.text)
        np.savez(program.with_suffix(".npz"), **result.weights)
        model = DlcModel(str(program), backend="reference").load_weights(program.with_suffix(".npz"))
        outputs[as_def] = model.predict(feeds)
    assert "def encoder(ids: i64[batch, length], attention_mask: i64[batch, length])" in result.text
    assert "hidden, pooled = encoder(ids, attention_mask, name = \"\")" in result.text
    for name in ("hidden", "pooled"):
        np.testing.assert_array_equal(outputs[True][name], outputs[False][name])
