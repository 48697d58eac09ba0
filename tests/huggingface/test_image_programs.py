"""The programs of the image families at the published models' sizes (ResNet-50, ViT-Base/16, MobileNetV2
1.0), without PyTorch: each builds, declares exactly the parameters its tensors' names map to, is laid out
as `dlc fmt` lays it out, and its train block reads photos as the folder's preprocessor_config.json does, or
says in a comment how it differs."""

import pytest

from dlc.compiler.frontend.format import format_text
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.huggingface import mobilenet_v2, resnet, vision, vit

# the preprocessor_config.json of microsoft/resnet-50, google/vit-base-patch16-224, google/mobilenet_v2_1.0_224
RESNET = {"crop_pct": 0.875, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
          "size": 224, "do_normalize": True, "do_resize": True}  # fmt: skip
VIT = {"size": {"height": 224, "width": 224}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
       "resample": 2, "do_resize": True, "do_normalize": True}  # fmt: skip
MOBILENET = {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}, "do_center_crop": True,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}  # fmt: skip
CASES = [(resnet, RESNET, 1000), (vit, VIT, 1000), (mobilenet_v2, MOBILENET, 1001)]


@pytest.mark.parametrize("family, preprocessor, classes", CASES, ids=lambda c: getattr(c, "MODEL_TYPES", [""])[0])
@pytest.mark.parametrize("head", ["image", "base"])
def test_a_published_size_builds_with_the_parameters_its_names_map(family, preprocessor, classes, head):
    config = {"num_labels": classes}
    text = family.program(config, head, preprocessor=preprocessor, weights="model.npz")
    assert format_text(text) == text and max(map(len, text.splitlines())) <= 120
    model = load_text(text, "model.dl").build(None, training=head == "image")
    declared = {p.name for p in model.params}
    assert declared == {d for d, _, how in family.names(config, head) if how != "count"}
    size = family.image(config, preprocessor)["size"]
    assert tuple(model.inputs[0].type.shape[1:]) == (3, size, size) == (3, 224, 224)


def test_the_train_block_reads_photos_as_the_processor_or_says_how_it_differs():
    resnet_text = resnet.program({}, "image", preprocessor=RESNET)
    assert "mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]" in resnet_text
    assert "#   it resamples bicubic, images(...) bilinear" in resnet_text
    vit_text = vit.program({}, "image", preprocessor=VIT)
    assert "#   it resizes a photo to 224 x 224, images(...) its short side to 256, then crops the centre" in vit_text
    assert "unlike" not in mobilenet_v2.program({}, "image", preprocessor=MOBILENET)  # its resize and crop are dlc's
    assert "the photos are not normalized" in resnet.program({}, "image")
    assert vision.transform_notes({"size": {"shortest_edge": 224}, "crop_pct": 0.9}, 224) == [
        "its crop_pct is 0.9, images(...) crops 0.875"
    ]


def test_the_checkpoint_keeps_the_photos_settings():
    assert mobilenet_v2.image({}, MOBILENET) == {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert resnet.image({}, {"size": {"shortest_edge": 64}, "do_normalize": False, "image_mean": [0.5] * 3}) == {
        "size": 64,
        "mean": None,
        "std": None,
    }
