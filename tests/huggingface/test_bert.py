"""The BERT family imported from Hugging Face folders (BERT, RoBERTa, DistilBERT) against
transformers on the same folder: every head's outputs in evaluation mode, and the gradients of
a classifier's loss with respect to every parameter (dropout 0, in float64), by the family's
own table of names; `dlc import FOLDER` from the command line and the program it writes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.huggingface import bert, import_folder  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from dlc.runtime.engines import interpreter  # noqa: E402
from helpers.hf_folders import tiny_folder  # noqa: E402
from helpers.numeric import assert_close, gradients  # noqa: E402

HEADS = ["Model", "ForSequenceClassification", "ForTokenClassification", "ForMaskedLM"]
FAMILIES = ["Bert", "Roberta", "DistilBert"]
OUTPUTS = {"hidden": "last_hidden_state", "pooled": "pooler_output", "logits": "logits"}


def batch(model, seed=0, B=3, T=7) -> dict:
    """Token ids with padding at the end of two rows (masked, as a tokenizer pads), and token types."""
    rng = np.random.default_rng(seed)
    config = model.config
    ids = rng.integers(3, config.vocab_size, (B, T)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = config.pad_token_id
    feeds = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) > 1:
        feeds["token_type_ids"] = rng.integers(0, config.type_vocab_size, (B, T)).astype(np.int32)
    return feeds


def imported(path, name="m"):
    result = import_folder(path, name)
    return result, load_text(result.text, f"{name}.dl")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", HEADS)
def test_every_head_of_every_family_computes_what_transformers_computes(tmp_path, family, head):
    hf = tiny_folder(tmp_path / "folder", family + head)
    result, program = imported(tmp_path / "folder")
    model = program.build(None, training=False)
    feeds = batch(hf)
    labels = {"label": np.zeros(3, np.int32), "labels": np.zeros((3, 7), np.int32)}
    targets = {name: labels[name] for name in labels if f"target {name}:" in result.text}
    outputs = interpreter.run(model.graph, feeds | targets, result.weights, float_dtype="f32")
    with torch.no_grad():
        expected = hf(**{k: torch.tensor(v, dtype=torch.long) for k, v in feeds.items()})
    names = [n.removeprefix("output:") for n in outputs if n.removeprefix("output:") in OUTPUTS]
    assert names == (
        ["hidden", "pooled"]
        if head == "Model" and family != "DistilBert"
        else ["hidden"]
        if head == "Model"
        else ["logits"]
    )
    for name in names:
        want = getattr(expected, OUTPUTS[name]).numpy()
        np.testing.assert_allclose(
            outputs["output:" + name], want, atol=1e-5, rtol=1e-5, err_msg=f"{family}{head} {name}"
        )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForTokenClassification"])
def test_the_gradients_of_a_classifiers_loss_are_torchs(tmp_path, family, head):
    """Every parameter's gradient, in float64 with dropout off: the loss is the mean cross-entropy
    in both (transformers' own loss when given labels, -100 ignored)."""
    rates = (
        {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}
        if family == "DistilBert"
        else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    )
    hf = tiny_folder(tmp_path / "folder", family + head, **rates).double().train()
    result, program = imported(tmp_path / "folder")
    model = program.build(None, training=True)
    feeds = batch(hf, seed=1)
    rng = np.random.default_rng(2)
    if head == "ForSequenceClassification":
        feeds["label"] = rng.integers(0, 2, 3).astype(np.int32)
        labels = torch.tensor(feeds["label"], dtype=torch.long)
    else:
        feeds["labels"] = np.where(feeds["attention_mask"] == 1, rng.integers(0, 2, (3, 7)), -100).astype(np.int32)
        labels = torch.tensor(feeds["labels"], dtype=torch.long)
    out = gradients(model, feeds, result.weights)
    ours = bert.tensors(
        result.config, {k[5:]: v for k, v in out.items() if k.startswith("grad:")}, bert.HEADS[result.architecture]
    )
    loss = hf(
        **{k: torch.tensor(v, dtype=torch.long) for k, v in feeds.items() if k not in ("label", "labels")},
        labels=labels,
    ).loss
    loss.backward()
    assert_close(out["loss"], loss.item(), 1e-9, "loss")
    theirs = dict(hf.named_parameters())
    assert set(ours) <= set(theirs), set(ours) - set(theirs)
    for name, grad in ours.items():
        assert_close(grad, theirs[name].grad.numpy(), 1e-6, name)


def test_import_from_the_command_line_writes_the_program_its_weights_and_the_config(tmp_path, capsys):
    tiny_folder(tmp_path / "folder", "BertForSequenceClassification", id2label={0: "negative", 1: "positive"})
    out = tmp_path / "bert.dl"
    assert main(["import", str(tmp_path / "folder"), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "model bert: BertForSequenceClassification" in said and "41 arrays" in said
    text = out.read_text()
    assert "def bert_layer(" in text and "multi_head_attention(x, x, heads, mask, attention_rate)" in text
    assert 'init_from = "bert.npz"' in text and "train bert {" in text
    from dlc.runtime.interop import checkpoint

    params, _, meta = checkpoint.load(tmp_path / "bert.npz")
    assert meta["meta"]["class_names"] == ["negative", "positive"]
    assert (tmp_path / "bert.config.json").is_file()
    assert main(["check", str(out)]) == 0
