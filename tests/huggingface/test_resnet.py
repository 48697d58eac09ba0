"""Hugging Face ResNet imported (compiler/huggingface/resnet.py): logits and features equal
transformers' in eval mode (the batchnorms' running statistics imported), gradients equal in
training mode, the weights written back under their names."""

import json

import pytest

from helpers.hf_vision import (
    FEATURES,
    check_forward,
    check_gradients,
    check_round_trip,
    saved,
    torch,
    trained_statistics,
)

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import resnet
from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel

SIZE = 32


def config(**changes) -> ResNetConfig:
    settings = dict(embedding_size=8, hidden_sizes=[16, 24], depths=[2, 1], num_labels=3)
    return ResNetConfig(**(settings | changes))


@pytest.mark.parametrize(
    "changes",
    [{}, {"layer_type": "basic"}, {"downsample_in_bottleneck": True, "downsample_in_first_stage": True}],
    ids=["bottleneck", "basic", "downsampled"],
)
def test_a_classifier_gives_transformers_logits(tmp_path, changes):
    torch.manual_seed(0)
    model = trained_statistics(ResNetForImageClassification(config(**changes)), SIZE)
    check_forward(model, tmp_path, "image", SIZE, {"logits": "logits"})


def test_the_base_model_gives_transformers_features(tmp_path):
    torch.manual_seed(0)
    model = trained_statistics(ResNetModel(config()), SIZE)
    check_forward(model, tmp_path, "base", SIZE, FEATURES)


def test_gradients_equal_torchs(tmp_path):
    torch.manual_seed(0)
    check_gradients(resnet, ResNetForImageClassification(config()), tmp_path, SIZE, 3)


def test_the_weights_go_back_under_their_names(tmp_path):
    torch.manual_seed(0)
    check_round_trip(resnet, ResNetForImageClassification(config()), tmp_path)


def test_def_imports_the_base_model_for_a_head_of_ones_own(tmp_path, capsys):
    """dlc import --def: a file that imports the program and calls the def with name = "" under a
    head of its own reads the imported checkpoint's every array but the replaced classifier's."""
    import numpy as np

    from dlc.runtime.api import DlcModel
    from dlc.runtime.cli import main

    torch.manual_seed(0)
    folder = saved(trained_statistics(ResNetForImageClassification(config()), SIZE), tmp_path / "folder", SIZE)
    assert main(["import", str(folder), "-o", str(tmp_path / "r.dl"), "--def"]) == 0
    assert f"def r(x: f32[B, 3, {SIZE}, {SIZE}])" in (tmp_path / "r.dl").read_text()
    imported = DlcModel(str(tmp_path / "r.dl")).load_weights(str(tmp_path / "r.npz"))
    (tmp_path / "mine.dl").write_text(
        'import "r.dl"\n\nmodel mine {\n'
        f"    input  x: f32[B, 3, {SIZE}, {SIZE}]\n    target y: i32[B]\n"
        '    last, features = r(x, name = "")\n    head = dense(features, 5)\n'
        "    loss   sparse_cross_entropy(head, y)\n    output scores = head\n}\n"
    )
    assert main(["check", str(tmp_path / "mine.dl")]) == 0, capsys.readouterr().err
    mine = DlcModel(str(tmp_path / "mine.dl"))
    kept = {k for k in imported.params if not k.startswith("logits.")}
    assert kept == {p.name for p in mine.eval_model.params} - {"head.W", "head.b"}
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    assert imported.predict({"x": x})["logits"].shape == (2, 3)


def test_a_config_dlc_cannot_express_is_refused_naming_the_key():
    written = config().to_dict()
    for change, message in [
        ({"layer_type": "wide"}, 'layer_type must be "bottleneck" or "basic", got "wide"'),
        ({"hidden_act": "mish"}, 'hidden_act "mish" is not an activation dlc imports'),
        ({"depths": [1, 1, 1]}, "hidden_sizes has 2 stages and depths 3"),
        ({"embedding_size": "8"}, '\'embedding_size\' is "8"; dlc needs a whole number of at least 1'),
    ]:
        with pytest.raises(DlcError, match=message):
            resnet.program(written | change, "image")


def test_a_hostile_image_folder_is_refused_by_dlc_import_naming_the_file(tmp_path, capsys):
    from helpers.cli import failure

    torch.manual_seed(0)
    folder = saved(ResNetForImageClassification(config()), tmp_path / "folder")
    out = str(tmp_path / "m.dl")
    for preprocessor, message in [
        ("{", "preprocessor_config.json is not readable JSON"),
        ('{"image_mean": "red"}', 'preprocessor_config.json: image_mean must be a number per channel, got "red"'),
        ('{"crop_size": {"height": 32, "width": 48}}', "preprocessor_config.json: crop_size must be a square"),
    ]:
        (folder / "preprocessor_config.json").write_text(preprocessor)
        assert message in failure(["import", str(folder), "-o", out], capsys)
    (folder / "preprocessor_config.json").unlink()
    written = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(written | {"hidden_sizes": [16, 32]}))
    err = failure(["import", str(folder), "-o", out], capsys)
    assert "does not match the model" in err and "stage2.b.norm.beta is [6] in the checkpoint but [8]" in err
    assert not (tmp_path / "m.dl").exists() and not (tmp_path / "m.npz").exists()
