"""Hostile Hugging Face folders: each is refused by `dlc import` with a message naming the file and
what is wrong (exit 1, no traceback), and nothing is written."""

import json
import sys

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


def test_a_config_nested_deeper_than_json_reads_is_not_json(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    (folder / "config.json").write_text("[" * 10**5 + "]" * 10**5)
    assert "config.json is not readable JSON (it is nested too deeply to read)" in refused(folder, tmp_path, capsys)


def test_an_unknown_model_type_lists_what_dlc_imports(saved, tmp_path, capsys):
    folder = copy(saved, tmp_path)
    edit_config(folder, model_type="albert", architectures=["AlbertForMaskedLM"])
    err = refused(folder, tmp_path, capsys)
    assert (
        "the model_type 'albert' (AlbertForMaskedLM)" in err
        and "bert, distilbert, gpt2, mobilenet_v2, resnet, roberta, vit" in err
        and "BertForMaskedLM" in err
        and "GPT2LMHeadModel" in err
    )


def test_an_unknown_model_is_refused_before_its_weights_are_read(saved, tmp_path, capsys):
    """A user who points dlc at a model it does not import hears so first, not after a
    checkpoint of gigabytes is read, nor that the weights are missing or damaged."""
    folder = copy(saved, tmp_path)
    edit_config(folder, model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "model.safetensors").write_bytes(b"not read")
    assert "the model_type 'llama' (LlamaForCausalLM)" in refused(folder, tmp_path, capsys)
    (folder / "model.safetensors").unlink()
    assert "the model_type 'llama' (LlamaForCausalLM)" in refused(folder, tmp_path, capsys)


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


def tokenizer(words: int):
    """A WordPiece tokenizer of `words` tokens ([PAD], [UNK], [CLS], [SEP] and w4, w5, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(4, words)])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_the_tokenizer_is_copied_beside_the_program_and_named_in_its_train_block(saved, tmp_path, capsys):
    """As STEM.tokenizer.json, the program file's stem (my-bert), not the model's name (my_bert)."""
    pytest.importorskip("tokenizers")
    from dlc.runtime.cli import main

    folder = copy(saved, tmp_path)
    tokenizer(100).save(str(folder / "tokenizer.json"))
    assert main(["import", str(folder), "-o", str(tmp_path / "my-bert.dl")]) == 0
    said = capsys.readouterr().out
    assert "model my_bert:" in said and f"wrote {tmp_path / 'my-bert.tokenizer.json'}" in said
    assert (tmp_path / "my-bert.tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert (
        'data      = texts("train.csv", tokenizer = "my-bert.tokenizer.json")' in (tmp_path / "my-bert.dl").read_text()
    )
    args = ["export", str(tmp_path / "my-bert.dl"), "--weights", str(tmp_path / "my-bert.npz")]
    assert main(args + ["--format", "huggingface", "-o", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_a_tokenizer_that_does_not_fit_the_vocabulary_is_refused(saved, tmp_path, capsys):
    pytest.importorskip("tokenizers")
    folder = copy(saved, tmp_path)
    tokenizer(150).save(str(folder / "tokenizer.json"))
    err = refused(folder, tmp_path, capsys)
    assert "tokenizer.json gives token ids up to 149, but config.json's vocab_size is 100" in err


def test_bfloat16_and_float16_weights_import_as_float32_exactly(tmp_path):
    """The Hub keeps many models in bfloat16 or float16: each number is read exactly as float32."""
    import torch

    from dlc.compiler.huggingface import import_folder

    model = tiny_folder(tmp_path / "f32", "BertForSequenceClassification")
    for dtype in (torch.bfloat16, torch.float16):
        half = model.to(dtype)
        half.save_pretrained(str(tmp_path / str(dtype)), safe_serialization=True)
        weights = import_folder(tmp_path / str(dtype), "m").weights
        expected = half.bert.encoder.layer[0].attention.self.query.weight.float().detach().numpy()
        assert weights["layer.0.attention.Wq"].dtype == "float32"
        assert (weights["layer.0.attention.Wq"] == expected.T).all(), dtype


def test_without_the_extra_import_names_it(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    err = refused(saved, tmp_path, capsys)
    assert 'pip install "dlc[onnx]"' in err and "safetensors" in err


def test_export_to_a_folder_named_as_a_file_is_a_usage_error(saved, tmp_path, capsys):
    from helpers.cli import usage_error

    args = ["export", str(tmp_path / "m.dl"), "--format", "huggingface", "-o", str(tmp_path / "w.safetensors")]
    assert "--format huggingface writes a folder, not a .safetensors file" in usage_error(args, capsys)


def test_tensors_the_architecture_does_not_read_are_named_in_a_note(tmp_path, capsys):
    """bert-base-uncased's folder says BertForMaskedLM but holds BertForPreTraining's weights: the
    pooler and the next-sentence head are left out, and said to be."""
    from dlc.runtime.cli import main

    tiny_folder(tmp_path / "folder", "BertForPreTraining")
    edit_config(tmp_path / "folder", architectures=["BertForMaskedLM"])
    assert main(["import", str(tmp_path / "folder"), "-o", str(tmp_path / "m.dl")]) == 0
    err = capsys.readouterr().err
    assert "note: 4 tensors of" in err and "not in BertForMaskedLM, left out: bert.pooler.dense.bias" in err
    assert "cls.seq_relationship.weight" in err
