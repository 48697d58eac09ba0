"""Hostile Hugging Face folders: each is refused by `dlc import` with a message naming the file and
what is wrong (exit 1, no traceback), and nothing is written."""

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from helpers.cli import failure  # noqa: E402
from helpers.hf_folders import tiny_folder  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "folder"
    tiny_folder(path, "BertForSequenceClassification")
    return path


def copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "folder")


def refused(folder, tmp_path, capsys) -> str:
    err = failure(["import", str(folder), "-o", str(tmp_path / "m.dl")], capsys)
    assert not (tmp_path / "m.dl").exists() and not (tmp_path / "m.npz").exists()
    return err


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def test_a_folder_without_config_json(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    (folder / "config.json").unlink()
    assert "has no config.json" in refused(folder, tmp_path, capsys)


def test_a_config_that_is_not_json(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    (folder / "config.json").write_text('{"model_type": "bert",')
    assert "config.json is not readable JSON" in refused(folder, tmp_path, capsys)


def test_an_unknown_model_type_lists_what_dlc_imports(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    edit_config(folder, model_type="albert", architectures=["AlbertForMaskedLM"])
    err = refused(folder, tmp_path, capsys)
    assert "the model_type 'albert'" in err and "bert, distilbert, gpt2, roberta" in err
    assert "BertForMaskedLM" in err and "GPT2LMHeadModel" in err


def test_an_architecture_of_the_family_without_a_head_is_named(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    edit_config(folder, architectures=["BertForQuestionAnswering"])
    err = refused(folder, tmp_path, capsys)
    assert "the architecture BertForQuestionAnswering is not one dlc imports" in err


def test_a_config_whose_shapes_disagree_with_the_weights_names_the_tensor(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    edit_config(folder, vocab_size=120)
    err = refused(folder, tmp_path, capsys)
    assert "the tensor 'bert.embeddings.word_embeddings.weight' is [100, 32], but config.json makes it [120, 32]" in err


def test_a_setting_dlc_cannot_use_is_named_with_its_value(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    edit_config(folder, position_embedding_type="relative_key")
    assert "'position_embedding_type' is \"relative_key\" (relative positions)" in refused(folder, tmp_path, capsys)
    edit_config(folder, position_embedding_type="absolute", hidden_size="wide")
    assert "'hidden_size' is \"wide\"; dlc needs a positive whole number" in refused(folder, tmp_path, capsys)


def test_a_truncated_safetensors_file(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    err = refused(folder, tmp_path, capsys)
    assert "model.safetensors is not a readable safetensors file" in err and "damaged or truncated" in err


def test_a_sharded_index_naming_a_missing_shard(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    names = {
        "bert.embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
        "classifier.weight": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": names}))
    err = refused(folder, tmp_path, capsys)
    assert "names the shard 'model-00002-of-00002.safetensors', which is not in" in err


def test_a_sharded_folder_imports_as_the_single_file_does(saved, tmp_path, capsys):
    """Two shards and their index give the program and weights model.safetensors gives."""
    from safetensors.numpy import load_file, save_file

    from dlc.compiler.huggingface import import_folder

    folder = copy(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for shard, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(folder / shard))
    weight_map = {k: shard for shard, part in shards.items() for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    whole, sharded = import_folder(saved, "m"), import_folder(folder, "m")
    assert whole.text == sharded.text
    assert sorted(whole.weights) == sorted(sharded.weights)
    assert all((whole.weights[k] == sharded.weights[k]).all() for k in whole.weights)


def test_a_folder_of_pytorch_pickles_only_is_told_to_save_safetensors(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    err = refused(folder, tmp_path, capsys)
    assert "it holds pytorch_model.bin, which dlc does not read" in err and "safe_serialization=True" in err
