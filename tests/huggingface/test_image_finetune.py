"""An imported image classifier end to end from the CLI: a tiny random ResNet folder (config.json,
model.safetensors, preprocessor_config.json) imported by `dlc import FOLDER`, `dlc predict` on a photo
naming the classes of id2label with transformers' probabilities for the processor's pixels, fine-tuned
2 steps on a folder of generated photos by `dlc train`, predicting again from the run's checkpoint, and
exported back to a folder that transformers loads and that gives dlc's logits."""

import re

import numpy as np

from helpers.hf_vision import saved, torch
from helpers.photos import CLASSES, photo_folder

import dlc
from dlc.runtime.cli import main
from dlc.runtime.interop import checkpoint
from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

SIZE = 32


def scores(line: str) -> dict:
    """{class name: probability} of a line `dlc predict` prints for a photo."""
    return {name: float(p) for name, p in re.findall(r"(\w+) ([\d.]+)", line.split(": ", 1)[1])}


def test_an_imported_resnet_predicts_named_classes_fine_tunes_and_exports_back(tmp_path, capsys, monkeypatch):
    from PIL import Image

    torch.manual_seed(0)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1], id2label=dict(enumerate(CLASSES)), label2id={}
    )
    model = ResNetForImageClassification(config)
    processor = ConvNextImageProcessor(
        size={"shortest_edge": SIZE}, crop_pct=0.875, resample=2, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    folder = saved(model, tmp_path / "hf")
    processor.save_pretrained(folder)
    photo_folder(tmp_path / "photos", per_class=6)
    monkeypatch.chdir(tmp_path)
    assert main(["import", "hf", "-o", "resnet.dl"]) == 0
    assert "wrote resnet.preprocessor_config.json" in capsys.readouterr().out
    text = (tmp_path / "resnet.dl").read_text()
    assert 'images("photos/", size = 32, mean = [0.5, 0.4, 0.3], std = [0.2, 0.25, 0.3])' in text
    assert 'init_from  = "resnet.npz"' in text

    photo = "photos/square/2.png"
    predict = ["predict", "resnet.dl", "--data", photo, "--backend", "reference"]
    assert main([*predict, "--weights", "resnet.npz"]) == 0
    printed = scores(capsys.readouterr().out.splitlines()[0])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(**processor(Image.open(photo), return_tensors="pt")).logits, -1)[0].numpy()
    assert set(printed) == set(CLASSES)
    for k, name in enumerate(CLASSES):
        assert abs(printed[name] - probs[k]) <= 5e-4 + 1e-6, (printed, probs)  # printed with 3 decimals

    train = ["train", "resnet.dl", "--epochs", "1", "--batch", "6", "--out", "run", "--backend", "reference"]
    assert main(train) == 0
    assert "init_from resnet.npz" in capsys.readouterr().err
    (start, _, _), (tuned, _, tuned_meta) = checkpoint.load("resnet.npz"), checkpoint.load("run/last.npz")
    assert tuned_meta["meta"]["class_names"] == list(CLASSES)
    assert len(tuned_meta["history"]) == 1
    assert not np.array_equal(start["logits.W"], tuned["logits.W"])
    assert not np.array_equal(start["stem.norm.running_mean"], tuned["stem.norm.running_mean"])
    assert main([*predict, "--weights", "run/last.npz"]) == 0
    assert set(scores(capsys.readouterr().out.splitlines()[0])) == set(CLASSES)

    export = ["export", "resnet.dl", "--weights", "run/last.npz", "--format", "huggingface", "-o", "back"]
    assert main(export) == 0
    back = ResNetForImageClassification.from_pretrained("back").eval()
    pixels = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    ours = dlc.load("resnet.dl", weights="run/last.npz", backend="reference").predict(pixels)["logits"]
    with torch.no_grad():
        theirs = back(torch.tensor(pixels)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "back" / "preprocessor_config.json").is_file()
