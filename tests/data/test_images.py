"""The images(...) source of photos (runtime/data/photos.py): class folders and listings,
every file format and mode converted to the model's channels, EXIF orientation, hostile files
(damaged, truncated, not images, gone), the transforms against torchvision's on the same crop
box, the same batches on any number of threads, prediction on photos, and Pillow missing."""

import io
import json
import re
import sys

import numpy as np
import pytest
from PIL import Image

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import Call
from dlc.runtime.cli import main
from dlc.runtime.data import photos
from dlc.runtime.data.augment import augment_options
from dlc.runtime.data.prefetch import Batches
from dlc.runtime.data.registry import load
from dlc.runtime.data.streamed import Streamed, read_rows
from dlc.runtime.data.transforms import random_resized_box

from helpers.cli import failure
from helpers.photos import CLASSES, photo_folder, photo_model, shape_photo


def source(tmp_path, *args, **kwargs):
    return load(Call("images", list(args), kwargs), tmp_path)


def read_one(path, size=8, channels=3):
    """The evaluation transform of one file: [C, size, size]."""
    column = photos.photo_column([str(path)], {"size": size})
    return read_rows(column.shaped((channels, size, size)), [0])[0]


# ---- the source ------------------------------------------------------------------------------------------
def test_class_folders_are_sorted_into_ids_and_nothing_is_decoded(tmp_path, monkeypatch):
    photo_folder(tmp_path / "photos", per_class=3)
    (tmp_path / "photos" / "square" / "notes.txt").write_text("not a photo, not an image name: ignored")
    decoded = []
    monkeypatch.setattr(photos, "pixels", lambda *a: decoded.append(a) or np.zeros((8, 8, 3), np.uint8))
    ds = source(tmp_path, "photos", size=8)
    assert not decoded
    x, y = ds.columns["x"], ds.columns["y"]
    assert isinstance(x, Streamed) and x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.meta["class_names"] == list(CLASSES) and ds.meta["classes"] == 2
    held, rest = ds.split(0.5)
    assert len(held) + len(rest) == 6 and isinstance(held.columns["x"], Streamed) and not decoded


def test_examples_are_channels_first_floats_normalized_per_channel(tmp_path):
    photo_folder(tmp_path / "photos", per_class=2)
    plain = source(tmp_path, "photos", size=8).columns["x"]
    x = read_rows(plain, slice(0, 4))
    assert x.dtype == np.float32 and x.shape == (4, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    normal = source(tmp_path, "photos", size=8, mean=mean, std=std).columns["x"]
    want = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    assert np.array_equal(read_rows(normal, slice(0, 4)), want)  # a table's lookup, the same bits
    grey = plain.shaped((1, 8, 8))
    assert read_rows(grey, [0]).shape == (1, 1, 8, 8) and plain.shaped((3, 9, 9)) is None


@pytest.mark.parametrize("listing", ["csv", "json"])
def test_a_listing_of_files_and_labels(tmp_path, listing):
    photo_folder(tmp_path / "photos", per_class=2)
    rows = [("photos/square/0.png", "square"), ("photos/circle/1.jpg", "circle"), ("photos/square/1.jpg", "square")]
    path = tmp_path / f"list.{listing}"
    if listing == "csv":
        path.write_text("file,label\n" + "".join(f"{f},{lab}\n" for f, lab in rows))
    else:
        path.write_text(json.dumps([{"file": f, "label": lab} for f, lab in rows]))
    ds = source(tmp_path, f"list.{listing}", size=8)
    assert ds.meta["class_names"] == ["circle", "square"] and ds.columns["y"].tolist() == [1, 0, 1]
    (tmp_path / "ids.csv").write_text("photos/square/0.png,2\nphotos/circle/0.png,0\n")
    ids = source(tmp_path, "ids.csv", size=8)
    assert ids.columns["y"].tolist() == [2, 0] and ids.meta["class_names"] == ["0", "1", "2"]
    (tmp_path / "gone.csv").write_text("photos/bird/0.png,bird\n")
    with pytest.raises(DlcError, match="names .*bird.*0.png, which is not a file"):
        source(tmp_path, "gone.csv", size=8)


def test_folders_without_photos_are_clear_errors(tmp_path):
    photo_folder(tmp_path / "photos", per_class=1)  # one photo a class: read as any other
    assert len(source(tmp_path, "photos", size=8)) == 2
    (tmp_path / "photos" / "bird").mkdir()
    with pytest.raises(DlcError, match=r"class folder .*bird holds no images"):
        source(tmp_path, "photos", size=8)
    (tmp_path / "flat").mkdir()
    shape_photo("circle", np.random.default_rng(0)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DlcError, match="has no class folders .*holds 1 images"):
        source(tmp_path, "flat", size=8)
    with pytest.raises(DlcError, match="neither a folder of class folders nor a listing"):
        source(tmp_path, "nowhere", size=8)
    with pytest.raises(DlcError, match="'mean' must be a number per channel"):
        source(tmp_path, "photos", size=8, mean=[0.5, 0.5])
    with pytest.raises(DlcError, match="'std' must be positive"):
        source(tmp_path, "photos", size=8, std=[0])


# ---- formats and modes -------------------------------------------------------------------------------------
def _saved(tmp_path, name, img, **options):
    path = tmp_path / name
    img.save(path, **options)
    return path


def test_every_format_and_mode_reads_as_the_models_channels(tmp_path):
    rgb = shape_photo("circle", np.random.default_rng(1), 24, 24)
    reference = read_one(_saved(tmp_path, "ref.png", rgb))
    same = {"bmp": rgb, "gif": rgb.convert("P"), "webp": rgb, "tiff": rgb}
    for fmt, img in same.items():
        x = read_one(_saved(tmp_path, f"a.{fmt}", img, **({"lossless": True} if fmt == "webp" else {})))
        assert x.shape == (3, 8, 8) and np.abs(x - reference).max() < (0.1 if fmt == "gif" else 1e-6), fmt
    rgba = rgb.convert("RGBA")
    rgba.putalpha(40)  # alpha is dropped, as torchvision's ImageFolder does
    assert np.array_equal(read_one(_saved(tmp_path, "rgba.png", rgba)), reference)
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    assert read_one(_saved(tmp_path, "p.png", palette, transparency=0)).shape == (3, 8, 8)
    cmyk = read_one(_saved(tmp_path, "cmyk.jpg", rgb.convert("CMYK"), quality=95))
    assert np.abs(cmyk - reference).mean() < 0.05
    grey = rgb.convert("L")
    as_grey = read_one(_saved(tmp_path, "grey.png", grey))
    assert np.array_equal(as_grey[0], as_grey[1]) and np.array_equal(
        read_one(tmp_path / "grey.png", channels=1), read_one(tmp_path / "ref.png", channels=1)
    )
    sixteen = Image.fromarray((np.asarray(grey, np.uint16) * 257).astype(np.uint16))
    assert sixteen.mode == "I;16"
    assert np.array_equal(read_one(_saved(tmp_path, "deep.png", sixteen), channels=1), as_grey[:1])


def test_a_large_jpeg_is_decoded_at_the_smallest_reduced_size_that_is_enough(tmp_path):
    path = _saved(tmp_path, "big.jpg", shape_photo("circle", np.random.default_rng(5), 400, 300).resize((400, 300)))
    with photos.opened(str(path)) as img:
        assert photos.loaded(img, (60, 40), "RGB").size == (100, 75)  # 1/4: 1/8 would be 50 x 38
    with photos.opened(str(path)) as img:
        assert photos.loaded(img, (300, 300), "RGB").size == (400, 300)  # whole
    full = np.asarray(Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), np.float32) / 255
    assert np.abs(read_one(path, 8) - full.transpose(2, 0, 1)).mean() < 0.1  # near the full decode's pixels


def test_exif_orientation_is_applied(tmp_path):
    upright = Image.new("RGB", (20, 40), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 20, 20))  # red on top, blue below
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the reader turns it back (ImageOps.exif_transpose)
    path = _saved(tmp_path, "turned.jpg", upright.transpose(Image.Transpose.ROTATE_90), exif=exif, quality=95)
    assert Image.open(path).size == (40, 20)
    x = read_one(path)
    assert x[0, 0].mean() > 0.8 and x[2, 0].mean() < 0.2 and x[0, -1].mean() < 0.2 and x[2, -1].mean() > 0.8


# ---- hostile files -----------------------------------------------------------------------------------------
def _hostile(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=3)
    (root / "circle" / "text.jpg").write_text("a text file named like a photo")
    good = io.BytesIO()
    shape_photo("square", np.random.default_rng(2), 64, 64).save(good, "JPEG")
    (root / "square" / "cut.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    return root


def test_damaged_files_are_errors_naming_them_or_skipped_when_asked(tmp_path):
    root = _hostile(tmp_path)
    x = source(tmp_path, "photos", size=8).columns["x"]
    files = x.files
    with pytest.raises(DlcError, match=r"text\.jpg is not an image Pillow can read"):
        read_rows(x, [files.index(str(root / "circle" / "text.jpg"))])
    with pytest.raises(DlcError, match=r"cannot decode .*cut\.jpg: "):
        read_rows(x, [files.index(str(root / "square" / "cut.jpg"))])
    kept = source(tmp_path, "photos", size=8, skip_bad=True)
    assert kept.meta["skipped"] == 2 and len(kept) == 6
    assert read_rows(kept.columns["x"], slice(0, 6)).shape == (6, 3, 8, 8)


def test_a_run_that_skips_bad_files_counts_them_in_its_summary(tmp_path, capsys):
    _hostile(tmp_path)
    path = photo_model(tmp_path, 'train photos { data = images("photos/", size = 8, skip_bad = true) epochs = 1 }')
    assert main(["train", path, "--backend", "reference", "--out", str(tmp_path / "run"), "-q"]) == 0
    said = capsys.readouterr()
    assert "2 files skipped (skip_bad)" in said.out and "note: 2 file(s) of the data Pillow cannot decode" in said.err


def test_a_file_deleted_while_a_run_reads_stops_it_naming_the_file_and_keeps_the_last_checkpoint(tmp_path):
    from dlc import Callback, load as load_model

    root = photo_folder(tmp_path / "photos", per_class=4)
    path = photo_model(tmp_path, 'train photos { data = images("photos/", size = 8) batch = 4 epochs = 2 }')
    gone = root / "square" / "2.png"

    class Delete(Callback):
        def on_epoch_end(self, epoch, logs):
            gone.unlink()

    model = load_model(path, backend="reference")
    with pytest.raises(DlcError, match=f"images: {gone} is gone: it was deleted or moved"):
        model.train(out=tmp_path / "run", progress="none", callbacks=[Delete()])
    assert json.loads(np.load(tmp_path / "run" / "last.npz")["meta"].tobytes())["epoch"] == 1


def test_pillow_missing_says_how_to_install_it(tmp_path, monkeypatch):
    photo_folder(tmp_path / "photos", per_class=1)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` raises ImportError
    with pytest.raises(DlcError, match=r'Pillow, which is not installed: pip install "dlc\[images\]"'):
        source(tmp_path, "photos", size=8)


# ---- transforms --------------------------------------------------------------------------------------------
def _torchvision():
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()
    import torchvision.transforms as T
    import torchvision.transforms.functional as F

    return T, F


def test_the_evaluation_transform_is_torchvisions_resize_and_centre_crop(tmp_path):
    T, _ = _torchvision()
    rng = np.random.default_rng(3)
    for size, (w, h) in ((8, (24, 18)), (16, (17, 40)), (224, (500, 375))):
        path = _saved(tmp_path, f"{w}x{h}.png", shape_photo("square", rng, w, h).resize((w, h)))
        theirs = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor()])(Image.open(path))
        assert np.array_equal(read_one(path, size), theirs.numpy()), (size, w, h)


def test_a_random_resized_crop_is_torchvisions_on_the_same_box(tmp_path):
    _, F = _torchvision()
    path = _saved(tmp_path, "a.png", shape_photo("circle", np.random.default_rng(4), 40, 30))
    options = augment_options(Call("photos", [], {"flip": False}))
    for example in range(4):
        rng = np.random.default_rng([0, 1, example, photos.AUGMENT_KEY])
        left, top, right, bottom = random_resized_box(
            *Image.open(path).size,
            options["scale"],
            options["ratio"],
            np.random.default_rng([0, 1, example, photos.AUGMENT_KEY]),
        )
        theirs = F.pil_to_tensor(
            F.resized_crop(Image.open(path), top, left, bottom - top, right - left, [8, 8], antialias=True)
        )
        assert np.array_equal(photos.pixels(str(path), 8, "RGB", options, rng).transpose(2, 0, 1), theirs.numpy())


def test_random_resized_crop_falls_back_to_the_centre_after_ten_tries():
    never = np.random.default_rng(0)
    assert random_resized_box(40, 40, (0.99, 1.0), (4.0, 5.0), never) == (0, 15, 40, 25)  # ratio 4, centred
    assert random_resized_box(40, 30, (2.0, 3.0), (0.75, 4 / 3), never) == (0, 0, 40, 30)  # the whole image


def test_photos_arguments_are_checked_where_written():
    for kwargs, message in (
        ({"scale": [0.5]}, "'scale' must be a range"),
        ({"scale": [0.9, 0.1]}, "'scale' must"),
        ({"crop": "square"}, "'crop' must be one of random_resized, center"),
        ({"brightness": -1}, "'brightness' must be at least 0"),
        ({"flip": 1}, "'flip' must be true or false"),
        ({"hue": 0.1}, "no option 'hue'"),
    ):
        with pytest.raises(DlcError, match=message):
            augment_options(Call("photos", [], kwargs))


def test_at_most_a_few_batches_are_read_ahead(tmp_path):
    photo_folder(tmp_path / "photos", per_class=6)
    x = source(tmp_path, "photos", size=8).columns["x"]
    planned = []

    def plan():
        for b in range(6):
            planned.append(b)
            yield slice(2 * b, 2 * b + 2), None

    batches = iter(Batches({"x": x}, plan(), threads=2, ahead=2))
    next(batches)
    assert planned == [0, 1, 2]  # the batch taken and 2 ahead: memory does not grow with the folder
    next(batches)
    assert planned == [0, 1, 2, 3]
    batches.close()


def test_batches_are_the_same_bits_on_one_and_two_threads(tmp_path):
    photo_folder(tmp_path / "photos", per_class=5)
    ds = source(tmp_path, "photos", size=8)
    options = augment_options(Call("photos", [], {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}))
    columns = {"x": ds.columns["x"].augmented(options, seed=7), "y": ds.columns["y"]}
    plan = [(np.array([3, 1, 4, 0]), 2), (np.array([9, 2, 6, 5, 8]), 2), (slice(0, 3), None)]
    one, two = (list(Batches(columns, plan, threads)) for threads in (1, 2))
    for a, b in zip(one, two):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    again = list(Batches(columns, [(np.array([3]), 2), (np.array([3]), 3)], 2))
    assert np.array_equal(again[0]["x"][0], one[0]["x"][0]) and not np.array_equal(again[1]["x"][0], again[0]["x"][0])


def test_cache_keeps_the_evaluation_transform(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=2)
    x = source(tmp_path, "photos", size=8, cache=True).columns["x"]
    first = read_rows(x, slice(0, 4))
    for f in (root / "circle").iterdir():
        f.unlink()
    assert np.array_equal(read_rows(x, slice(0, 4)), first)  # read from memory, not the files


# ---- training and prediction -------------------------------------------------------------------------------
def test_train_then_predict_on_a_photo_prints_its_class_by_name(tmp_path, capsys, monkeypatch):
    root = photo_folder(tmp_path / "photos", per_class=6)
    path = photo_model(
        tmp_path,
        'train photos { data = images("photos/", size = 8) validation = split(0.25) '
        'batch = 4 epochs = 8 optimizer = adam(lr = 0.05) '
        'augment = photos(scale = [0.6, 1.0]) }',
    )
    out = tmp_path / "run"
    assert main(["train", path, "--out", str(out), "--backend", "reference", "--data-threads", "2"]) == 0
    said = capsys.readouterr()
    assert "data wait" in said.out and "data wait" in said.err
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                str(out / "best.npz"),
                "--data",
                "photos/circle/3.jpg",
                "--output",
                str(tmp_path / "p.npz"),
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("photos/circle/3.jpg: circle ") and "square" in line
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                str(out / "best.npz"),
                "--data",
                "photos",
                "--backend",
                "reference",
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    named = [ln.split(":")[1].split()[0] for ln in lines[:-1]]
    assert len(named) == 12 and sum(n == ln.split("/")[1] for n, ln in zip(named, lines)) >= 10
    from dlc import load as load_model

    model = load_model(path, weights=out / "best.npz", backend="reference")
    probs = model.predict([root / "square" / "0.png", root / "circle" / "0.png"])["probs"]
    assert [best[0][0] for best in model.top_classes(probs)] == ["square", "circle"]
    model.quantize(calibrate=2, batch=4)  # calibrated on the first photos of the train block's data, decoded
    int8 = model.predict([root / "square" / "0.png", root / "circle" / "0.png"], int8=True)["probs"]
    assert [best[0][0] for best in model.top_classes(int8)] == ["square", "circle"]


def test_validation_and_evaluation_folders_of_other_classes_are_refused(tmp_path, capsys):
    photo_folder(tmp_path / "photos", per_class=2)
    photo_folder(tmp_path / "val", per_class=1)
    (tmp_path / "val" / "square").rename(tmp_path / "val" / "squares")
    path = photo_model(
        tmp_path, 'train photos { data = images("photos/", size = 8) validation = images("val/", size = 8) }'
    )
    err = failure(["train", path, "--backend", "reference", "--out", str(tmp_path / "run")], capsys)
    assert "the validation data has the classes circle, squares, not the training data's (circle, square)" in err
    path = photo_model(tmp_path, 'train photos { data = images("photos/", size = 8) epochs = 1 }')
    assert main(["train", path, "--backend", "reference", "--out", str(tmp_path / "run"), "-q"]) == 0
    capsys.readouterr()
    err = failure(
        [
            "eval",
            path,
            "--weights",
            str(tmp_path / "run" / "last.npz"),
            "--backend",
            "reference",
            "--data",
            f'images("{tmp_path / "val"}", size = 8)',
        ],
        capsys,
    )
    assert "size = 8) has the classes circle, squares, not the training data's (circle, square)" in err
    assert (
        main(
            [
                "eval",
                path,
                "--weights",
                str(tmp_path / "run" / "last.npz"),
                "--backend",
                "reference",
                "--data",
                f'images("{tmp_path / "photos"}", size = 8)',
            ]
        )
        == 0
    )


def test_data_bench_times_a_source(tmp_path, capsys):
    photo_folder(tmp_path / "photos", per_class=3)
    assert main(["data", "bench", f'images("{tmp_path / "photos"}", size = 8)', "--data-threads", "2"]) == 0
    assert re.fullmatch(
        r"6 examples in [\d.]+ s: [\d.]+ examples/s on 2 threads: [\d.]+ examples/s a thread\n", capsys.readouterr().out
    )


def test_photos_augment_needs_photos(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3, 8, 8), np.float32), y=np.arange(8) % 2)
    path = photo_model(tmp_path, 'train photos { data = "d.npz" augment = photos() }')
    err = failure(["train", path, "--backend", "reference", "--out", str(tmp_path / "run")], capsys)
    assert "augment = photos(...) transforms photos as they are decoded" in err and "m.dl:" in err
