"""Hugging Face ViT imported (compiler/huggingface/vit.py): logits, the sequence and the pooler equal
transformers' in eval mode (its dropout off), gradients equal, the weights written back under their names."""

import pytest

from helpers.hf_vision import FEATURES, check_forward, check_gradients, check_round_trip, torch

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import vit
from transformers import ViTConfig, ViTForImageClassification, ViTModel

SIZE = 32


def config(**changes) -> ViTConfig:
    settings = dict(
        image_size=SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    return ViTConfig(**(settings | changes))


def test_a_classifier_gives_transformers_logits(tmp_path):
    torch.manual_seed(0)
    check_forward(ViTForImageClassification(config()), tmp_path, "image", SIZE, {"logits": "logits"})


def test_the_base_model_gives_transformers_sequence_and_pooler(tmp_path):
    torch.manual_seed(0)
    model = ViTModel(config(hidden_act="gelu_new", pooler_output_size=24))
    check_forward(model, tmp_path, "base", SIZE, FEATURES)


def test_gradients_equal_torchs(tmp_path):
    torch.manual_seed(0)
    model = ViTForImageClassification(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    check_gradients(vit, model, tmp_path, SIZE, 3)


def test_the_weights_go_back_under_their_names(tmp_path):
    torch.manual_seed(0)
    check_round_trip(vit, ViTForImageClassification(config()), tmp_path)


def test_a_config_dlc_cannot_express_is_refused_naming_the_key():
    written = config().to_dict()
    for change, message in [
        ({"qkv_bias": False}, "'qkv_bias' is false \\(no biases on the query, key and value projections\\)"),
        ({"hidden_size": 30}, "hidden_size 30 is not a multiple of num_attention_heads 4"),
        ({"image_size": [32, 48]}, "'image_size' is \\[32, 48\\]; dlc needs a whole number of at least 1"),
    ]:
        with pytest.raises(DlcError, match=message):
            vit.program(written | change, "image")
    with pytest.raises(DlcError, match="reads photos of 64 x 64, but config.json's image_size is 32"):
        vit.program(written, "image", preprocessor={"size": {"height": 64, "width": 64}})
