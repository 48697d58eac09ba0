"""Hugging Face MobileNetV2 imported (compiler/huggingface/mobilenet_v2.py): logits and features equal
transformers' in eval mode, with TensorFlow's padding or torch's, dilated blocks (output_stride) and the
channel arithmetic of depth_multiplier and min_depth; gradients equal; the weights written back."""

import pytest

from helpers.hf_vision import FEATURES, check_forward, check_gradients, check_round_trip, torch, trained_statistics

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import mobilenet_v2
from transformers import MobileNetV2Config, MobileNetV2ForImageClassification, MobileNetV2Model

SIZE = 32


def config(**changes) -> MobileNetV2Config:
    settings = dict(image_size=SIZE, depth_multiplier=0.25, min_depth=4, num_labels=3, classifier_dropout_prob=0.3)
    return MobileNetV2Config(**(settings | changes))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tf_padding": False, "first_layer_is_expansion": False, "finegrained_output": False},
        {"output_stride": 8, "depth_multiplier": 0.5, "expand_ratio": 4.0, "depth_divisible_by": 4},
    ],
    ids=["tf_padding", "torch_padding", "dilated"],
)
def test_a_classifier_gives_transformers_logits(tmp_path, changes):
    torch.manual_seed(0)
    model = trained_statistics(MobileNetV2ForImageClassification(config(**changes)), SIZE)
    check_forward(model, tmp_path, "image", SIZE, {"logits": "logits"})


def test_the_base_model_gives_transformers_features(tmp_path):
    torch.manual_seed(0)
    model = trained_statistics(MobileNetV2Model(config()), SIZE)
    check_forward(model, tmp_path, "base", SIZE, FEATURES)


def test_gradients_equal_torchs(tmp_path):
    torch.manual_seed(0)
    check_gradients(
        mobilenet_v2, MobileNetV2ForImageClassification(config(classifier_dropout_prob=0.0)), tmp_path, SIZE, 3
    )


def test_the_weights_go_back_under_their_names(tmp_path):
    torch.manual_seed(0)
    check_round_trip(mobilenet_v2, MobileNetV2ForImageClassification(config()), tmp_path)


def test_a_config_dlc_cannot_express_is_refused_naming_the_key():
    written = config().to_dict()
    for change, message in [
        ({"depth_multiplier": 0}, "depth_multiplier must be above 0, got 0"),
        ({"min_depth": "8"}, '\'min_depth\' is "8"; dlc needs a whole number of at least 1'),
        ({"hidden_act": "hardswish"}, 'hidden_act "hardswish" is not an activation dlc imports'),
        ({"tf_padding": "yes"}, '\'tf_padding\' is "yes"; dlc needs true or false'),
    ]:
        with pytest.raises(DlcError, match=message):
            mobilenet_v2.program(written | change, "image")
