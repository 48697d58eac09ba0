"""Photo loading: dlc's images(...) source read as a training run reads it (decode, random
resized crop to 224, flip, normalize: `augment = photos(...)`, runtime/data/prefetch.py's
threads) against torchvision's ImageFolder and DataLoader(num_workers=N) with the same
transforms, on a generated folder of 500x375 JPEGs saved at quality 90. Prints images/s, in
all and per thread (dlc) or worker process (torchvision), for each count.

    python benchmarks/data.py                     # 512 photos, 1 and 2 threads / workers
    python benchmarks/data.py --photos 2000 --counts 1 2 4
    python benchmarks/data.py --quick             # a smoke run: 16 small photos, nothing to read into
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_folder(root: Path, photos: int, width: int, height: int, seed: int = 0) -> Path:
    """`photos` JPEGs (quality 90) of smooth colour gradients and noise, in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(photos):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 1, 3)
        rgb = np.stack([x / width * 255 * a, y / height * 255 * b, (x + y) / (width + height) * 255 * c], -1)
        rgb += rng.normal(0, 12, rgb.shape)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def dlc_rate(root: Path, size: int, threads: int, batch: int) -> float:
    """Images a second of dlc's training reads of the folder: epoch 0, in order."""
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.data.augment import augment_options
    from dlc.runtime.data.prefetch import Batches
    from dlc.runtime.data.registry import load

    ds = load(Call("images", [str(root)], {"size": size, "mean": MEAN, "std": STD}), root)
    x = ds.columns["x"].augmented(augment_options(Call("photos", [], {})), seed=0)
    n = len(x)
    plan = ((slice(lo, min(lo + batch, n)), 0) for lo in range(0, n, batch))
    started = time.perf_counter()
    for _ in Batches({"x": x}, plan, threads):
        pass
    return n / (time.perf_counter() - started)


def torchvision_rate(root: Path, size: int, workers: int, batch: int) -> float:
    """Images a second of torchvision's ImageFolder through a DataLoader of `workers` processes."""
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()
    import torch
    import torchvision.datasets as datasets
    import torchvision.transforms as T

    transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    folder = datasets.ImageFolder(str(root), transform)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=False, num_workers=workers)
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(folder) / (time.perf_counter() - started)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=512)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2], help="threads (dlc) and workers (torchvision)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="16 photos of 64x48 read at 32: that it runs, not its speed")
    args = p.parse_args()
    photos, width, height, size = (16, 64, 48, 32) if args.quick else (args.photos, 500, 375, 224)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "photos", photos, width, height)
        print(f"{photos} JPEGs of {width}x{height} (quality 90) -> {size}x{size}: random resized crop, flip, normalize")
        print(f"{'count':>5}  {'dlc img/s':>10}  {'per thread':>10}  {'torchvision img/s':>17}  {'per worker':>10}")
        for count in args.counts:
            ours = dlc_rate(root, size, count, args.batch)
            theirs = torchvision_rate(root, size, count, args.batch)
            print(f"{count:>5}  {ours:>10.1f}  {ours / count:>10.1f}  {theirs:>17.1f}  {theirs / count:>10.1f}")


if __name__ == "__main__":
    main()
