"""An imported BERT-style classifier fine-tuned end to end, from the command line and from the
Python API, and exported back: `dlc export --format huggingface` writes a folder that
transformers loads and that computes what dlc computes with the trained weights."""

import json

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
    tmp = imported
    code = main(
        [
            "train",
            str(tmp / "bert.dl"),
            "--data",
            str(tmp / "train.npz"),
            "--epochs",
            "2",
            "--batch",
            "16",
            "--backend",
            "reference",
            "--out",
            str(tmp / "run"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "bert.npz: 41 matched, 0 new" in out.err
    trained, _, meta = checkpoint.load(tmp / "run" / "last.npz")
    start, _, _ = checkpoint.load(tmp / "bert.npz")
    assert not np.array_equal(trained["classifier.W"], start["classifier.W"])  # it trained
    assert len(meta["history"]) == 2 and all(np.isfinite(row["loss"]) for row in meta["history"])

    assert (
        main(
            [
                "export",
                str(tmp / "bert.dl"),
                "--weights",
                str(tmp / "run" / "last.npz"),
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
    ours = dlc.load(str(tmp / "bert.dl"), weights=str(tmp / "run" / "last.npz")).predict(
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
