"""The memory of a run over streamed data does not grow with the data set (docs/training.md,
"Threads and memory"): a run over 10x more photos, or over a 10x longer table streamed from
disk, peaks within 10 % of the resident memory of the smaller run. Each run is a process of its
own, its peak its VmHWM. The same data read into memory (cache = true, stream = false) peaks
well above the bound, which shows the measure sees what a larger data set would add."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import pyarrow as pa  # the optional extra dlc[tables], which dlc[test] installs
import pyarrow.parquet as pq

from dlc.runtime.data import row_groups

from helpers.photos import photo_folder

BOUND = 0.10  # the issue's and the docs' bound on the larger run's peak over the smaller's
SIZE = 128  # photos read at 128 x 128: 48 kB of pixels an example, so holding them would show
FEATURES = 16
GROUP = 2_500  # rows of a Parquet row group: the smaller table has the 8 the cache holds

RUN = """
import sys
from dlc import load
load(sys.argv[1], backend="reference").train(out=sys.argv[2], progress="none", data_threads=2)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(peak.split()[1]))
"""

PHOTOS = """
model m {
    input  x: f32[B, 3, SIZE, SIZE]
    target y: i32[B]
    logits = dense(flatten(x), 2)
    loss   sparse_cross_entropy(logits, y)
}
train m { data = DATA  batch = 32  epochs = 1 }
""".replace("SIZE", str(SIZE))

TABLE = """
model m {
    input  x: f32[B, FEATURES]
    target y: i32[B]
    logits = dense(dense(x, 16, tanh), 2)
    loss   sparse_cross_entropy(logits, y)
}
train m { data = DATA  batch = 1000  epochs = 1 }
""".replace("FEATURES", str(FEATURES))


def peak_kb(tmp_path, name: str, text: str) -> int:
    """The peak resident memory (kB) of a process that trains the model of `text`."""
    path = tmp_path / f"{name}.dl"
    path.write_text(text)
    run = subprocess.run(
        [sys.executable, "-c", RUN, str(path), str(tmp_path / f"run-{name}")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1])


def grew(small: int, large: int) -> float:
    return large / small - 1


def test_ten_times_more_photos_take_the_same_memory(tmp_path):
    for per_class in (50, 500):
        photo_folder(tmp_path / f"p{per_class}", per_class=per_class)
    data = 'images("p{}/", size = {}{})'
    small = peak_kb(tmp_path, "small", PHOTOS.replace("DATA", data.format(50, SIZE, "")))
    large = peak_kb(tmp_path, "large", PHOTOS.replace("DATA", data.format(500, SIZE, "")))
    cached = peak_kb(tmp_path, "cached", PHOTOS.replace("DATA", data.format(500, SIZE, ", cache = true")))
    assert grew(small, large) <= BOUND, (small, large)
    assert grew(small, cached) > BOUND, (small, cached)  # 1000 photos held: 48 MB


def table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {f"f{i}": rng.normal(0, 1, rows).astype(np.float32) for i in range(FEATURES)}
    return pa.table(columns | {"label": np.array(["no", "yes"])[rng.integers(0, 2, rows)]})


def test_a_ten_times_longer_streamed_table_takes_the_same_memory(tmp_path):
    small_rows = row_groups.CACHED * GROUP
    for rows in (small_rows, 10 * small_rows):
        pq.write_table(table(rows), tmp_path / f"t{rows}.parquet", row_group_size=GROUP)
    data = 'parquet("t{}.parquet", label = "label", stream = {})'
    small = peak_kb(tmp_path, "small", TABLE.replace("DATA", data.format(small_rows, "true")))
    large = peak_kb(tmp_path, "large", TABLE.replace("DATA", data.format(10 * small_rows, "true")))
    whole = peak_kb(tmp_path, "whole", TABLE.replace("DATA", data.format(10 * small_rows, "false")))
    assert grew(small, large) <= BOUND, (small, large)
    assert grew(small, whole) > BOUND, (small, whole)  # 13 MB of features, twice (the columns, then x)
