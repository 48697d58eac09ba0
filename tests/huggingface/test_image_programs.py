"""The programs of the image families at the published models' sizes (ResNet-50, ViT-Base/16, MobileNetV2
1.0), without PyTorch: each builds, declares exactly the parameters its tensors' names map to, is laid out
as `dlc fmt` lays it out, and its train block reads photos as the folder's preprocessor_config.json does, or
says in a comment how it differs."""

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
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


# tiny configs of each family, so that the reference interpreter runs their programs in a moment
TINY = [
    (resnet, {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 2], "layer_type": "basic", "image_size": 32}),
    (vit, {"image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 20}),
    (mobilenet_v2, {"image_size": 32, "depth_multiplier": 0.35, "num_labels": 3}),
]  # fmt: skip


@pytest.mark.parametrize("family, config", TINY, ids=lambda c: getattr(c, "MODEL_TYPES", [""])[0])
@pytest.mark.parametrize("head", ["image", "base"])
def test_def_writes_the_base_model_as_a_def_with_the_same_parameters_and_outputs(family, config, head):
    """--def: the base model a def NAME(x) that the model calls with name = "", so the checkpoint's
    names (and a file that imports it and calls it so) are the inline program's, and so are the outputs."""
    from dlc.runtime.engines import interpreter
    from dlc.runtime.training.gradcheck import init_params

    inline = family.program(config, head, name="m")
    as_def = family.program(config, head, name="m", as_def=True)
    assert as_def.count("def m(x: f32[B, 3, 32, 32]) {") == 1 and 'm(x, name = "")' in as_def
    assert format_text(as_def) == as_def and max(map(len, as_def.splitlines())) <= 120
    models = [load_text(text, "m.dl").build(None, training=False) for text in (inline, as_def)]
    assert [p.name for p in models[0].params] == [p.name for p in models[1].params]
    params = init_params(models[0], seed=1, float_dtype="f32")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    feeds |= {"y": np.zeros(2, np.int32)} if head == "image" else {}
    a, b = (interpreter.run(m.graph, feeds, params, float_dtype="f32") for m in models)
    outputs = [k for k in a if k.startswith("output:")]
    assert outputs == [k for k in b if k.startswith("output:")] and outputs
    for k in outputs:
        np.testing.assert_array_equal(a[k], b[k])


def test_def_under_the_name_of_a_def_of_the_program_is_refused():
    with pytest.raises(DlcError, match="--def: the program defines a def conv_bn of its own already"):
        resnet.program({}, "image", name="conv_bn", as_def=True)
