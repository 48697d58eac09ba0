"""An imported BERT-style classifier fine-tuned end to end, from the command line and from the
Python API, and exported back: `dlc export --format huggingface` writes a folder that
transformers loads and that computes what dlc computes with the trained weights."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import dlc  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from helpers.hf_folders import tiny_folder  # noqa: E402


def task(n, seed):
    """Does token 5 occur in the sequence? Random ids, some padded, the label the answer."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, 100, (n, 8)).astype(np.int32)
    label = rng.integers(0, 2, n).astype(np.int32)
    where = rng.integers(0, 6, n)
    ids[label == 1, where[label == 1]] = 5
    mask = np.ones_like(ids)
    mask[::3, 6:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "label": label}


@pytest.fixture
def imported(tmp_path, capsys):
    tiny_folder(tmp_path / "folder", "BertForSequenceClassification", id2label={0: "absent", 1: "present"})
    assert main(["import", str(tmp_path / "folder"), "-o", str(tmp_path / "bert.dl")]) == 0
    np.savez(tmp_path / "train.npz", **task(64, 0))
    capsys.readouterr()
    return tmp_path


def test_the_imported_classifier_fine_tunes_from_the_command_line_and_exports_back(imported, capsys):
    """Dropout on, on both engines: the same losses (the engines draw the same masks)."""
    tmp = imported
    histories = {}
    for backend in ("native", "reference"):
        args = ["train", str(tmp / "bert.dl"), "--data", str(tmp / "train.npz"), "--epochs", "2", "--batch", "16"]
        code = main(args + ["--backend", backend, "--out", str(tmp / backend)])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "bert.npz: 41 matched, 0 new" in out.err
        trained, _, meta = checkpoint.load(tmp / backend / "last.npz")
        histories[backend] = [row["loss"] for row in meta["history"]]
    start, _, _ = checkpoint.load(tmp / "bert.npz")
    assert not np.array_equal(trained["classifier.W"], start["classifier.W"])  # it trained
    assert len(histories["native"]) == 2 and all(np.isfinite(histories["native"]))
    np.testing.assert_allclose(histories["native"], histories["reference"], rtol=1e-4)

    assert (
        main(
            [
                "export",
                str(tmp / "bert.dl"),
                "--weights",
                str(tmp / "native" / "last.npz"),
                "--format",
                "huggingface",
                "-o",
                str(tmp / "back"),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    import transformers

    config = json.loads((tmp / "back" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["id2label"]["1"] == "present"
    back = transformers.BertForSequenceClassification.from_pretrained(str(tmp / "back")).eval()
    batch = task(5, 1)
    ours = dlc.load(str(tmp / "bert.dl"), weights=str(tmp / "native" / "last.npz")).predict(
        {k: v for k, v in batch.items() if k != "label"}
    )["logits"]
    with torch.no_grad():
        theirs = back(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items() if k != "label"}).logits
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_the_imported_classifier_fine_tunes_from_the_api(tmp_path):
    tiny_folder(tmp_path / "folder", "BertForSequenceClassification")
    model = dlc.import_folder(tmp_path / "folder", tmp_path / "bert.dl", backend="reference")
    start = model.predict({k: v for k, v in task(4, 1).items() if k != "label"})["logits"]
    result = model.train(data=task(64, 0), epochs=2, batch=16)
    losses = result.history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not np.allclose(model.predict({k: v for k, v in task(4, 1).items() if k != "label"})["logits"], start)


def test_the_label_names_of_id2label_name_the_classes(imported):
    """id2label's names are kept in the imported checkpoint's metadata, as a data source's class names."""
    model = dlc.load(str(imported / "bert.dl"), weights=str(imported / "bert.npz"))
    assert model.top_classes(np.array([[0.0, 1.0], [3.0, -1.0]]), 1) == [[("present", 1.0)], [("absent", 3.0)]]


def test_export_back_needs_the_imported_config_beside_the_program(imported, capsys):
    (imported / "bert.config.json").unlink()
    assert (
        main(
            [
                "export",
                str(imported / "bert.dl"),
                "--weights",
                str(imported / "bert.npz"),
                "--format",
                "huggingface",
                "-o",
                str(imported / "back"),
            ]
        )
        == 1
    )
    assert "was not imported from a Hugging Face folder: there is no bert.config.json" in capsys.readouterr().err


def test_export_back_refuses_a_program_whose_parameters_the_architecture_has_no_place_for(imported, capsys):
    """A head changed after the import (a layer added) is not the folder's architecture any more."""
    program = imported / "bert.dl"
    program.write_text(
        program.read_text().replace(
            "    output logits = classifier", "    extra = dense(classifier, 2)\n    output logits = extra"
        )
    )
    assert main(["export", str(program), "--format", "huggingface", "-o", str(imported / "back")]) == 1
    err = capsys.readouterr().err
    assert "the program has parameters that BertForSequenceClassification has no place for: extra.W, extra.b" in err


def test_a_new_head_on_an_imported_masked_lm_trains_as_interop_md_writes_it(tmp_path, capsys):
    """docs/interop.md's recipe, its classifier read from the page: a BertForMaskedLM imported with
    --def, a file that calls it and adds a head, trained from the encoder's weights."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "interop.md").read_text()
    section = page.split("## Hugging Face models\n", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "classifier.dl").write_text(re.search(r"^```dl\n(.*?)^```$", section, re.S | re.M).group(1))
    tiny_folder(tmp_path / "mlm", "BertForMaskedLM")
    assert main(["import", str(tmp_path / "mlm"), "-o", str(tmp_path / "encoder.dl"), "--def"]) == 0
    np.savez(tmp_path / "train.npz", **task(32, 0))
    capsys.readouterr()
    code = main(
        [
            "train",
            str(tmp_path / "classifier.dl"),
            "--epochs",
            "1",
            "--backend",
            "reference",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    said = re.search(r"init_from \S*encoder.npz: (.*)", err).group(1)
    assert said in section.replace("\n", " ")
    trained, _, _ = checkpoint.load(tmp_path / "run" / "last.npz")
    start, _, _ = checkpoint.load(tmp_path / "encoder.npz")
    assert not np.array_equal(trained["layer.0.attention.Wq"], start["layer.0.attention.Wq"])  # the encoder trains too


REVIEWS = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_an_imported_classifier_fine_tunes_on_sentences_and_names_a_texts_label(tmp_path, capsys):
    """A folder with its tokenizer.json: the program's train block reads a CSV of sentences with
    texts(...) through it, the imported model predicts texts(...) naming no tokenizer through it,
    `dlc predict --text` and the API's predict(text=...) name the label,
    and a text longer than the model's positions is refused before any step."""
    pytest.importorskip("tokenizers")
    import shutil

    tiny_folder(tmp_path / "folder", "BertForSequenceClassification", vocab_size=400, max_position_embeddings=32)
    shutil.copy(REVIEWS / "reviews_tokenizer.json", tmp_path / "folder" / "tokenizer.json")
    assert main(["import", str(tmp_path / "folder"), "-o", str(tmp_path / "bert.dl")]) == 0
    assert 'texts("train.csv", tokenizer = "bert.tokenizer.json")' in (tmp_path / "bert.dl").read_text()
    (tmp_path / "few.csv").write_text("text\na great film\nan awful disaster\n")
    imported = dlc.load(str(tmp_path / "bert.dl"), weights=str(tmp_path / "bert.npz"))  # the tokenizer beside it
    by_data = imported.predict(f'texts("{tmp_path / "few.csv"}", label = none)')["logits"]
    assert np.array_equal(by_data, imported.predict(text=["a great film", "an awful disaster"])["logits"])
    shutil.copy(REVIEWS / "reviews.csv", tmp_path / "train.csv")
    args = ["train", str(tmp_path / "bert.dl"), "--epochs", "1", "--batch", "32", "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    weights = str(tmp_path / "run" / "last.npz")
    predicted = ["--text", "a great film", "--output", str(tmp_path / "predictions.npz")]
    assert main(["predict", str(tmp_path / "bert.dl"), "--weights", weights, *predicted]) == 0
    said = capsys.readouterr().out
    assert re.search(r"\b(positive|negative)\b", said), said
    model = dlc.load(str(tmp_path / "bert.dl"), weights=weights)
    probs = next(iter(model.predict(text=["a great film", "an awful disaster"]).values()))
    assert probs.shape == (2, 2) and np.all(np.isfinite(probs))
    (tmp_path / "train.csv").write_text("text,label\n" + "a great film " * 20 + ",positive\nawful,negative\n")
    assert main(args + ["--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "but the model has positions for 32" in err and "Traceback" not in err, err
