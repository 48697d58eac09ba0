"""Runs on streamed photos (images(...), runtime/data/photos.py) are deterministic: every
example's transform is a function of (seed, epoch, example), so a run stopped after any step
and resumed ends with the same parameters, bit for bit, as one that was never stopped, whatever
the number of decoding threads of either; and two ranks, each decoding its share of every
batch, train as one process."""

import subprocess
import sys

import numpy as np

from dlc import Callback, load

from helpers.distributed import MPIRUN, assert_same_run, env, needs_mpi
from helpers.photos import photo_folder, photo_model
from helpers.stopping import StopAt

TRAIN = (
    'train photos { data = images("photos/", size = 8) validation = split(0.2) batch = 4 epochs = 2 '
    'optimizer = adam(lr = 0.01) augment = photos(scale = [0.3, 1.0], brightness = 0.3, saturation = 0.3) }'
)


def test_a_resumed_run_equals_an_uninterrupted_one_on_any_threads(tmp_path):
    photo_folder(tmp_path / "photos", per_class=8)
    path = photo_model(tmp_path, TRAIN)
    whole = load(path, backend="reference").train(out=tmp_path / "whole", progress="none", data_threads=2)
    assert whole.stopped == "done" and len(whole.history) == 2
    stopped = load(path, backend="reference")
    first = stopped.train(out=tmp_path / "parts", progress="none", data_threads=1, callbacks=[StopAt(6)])
    assert first.stopped == "stopped" and len(first.history) == 1  # inside the second epoch of 4 batches
    rest = load(path, backend="reference").train(out=tmp_path / "parts", resume=True, progress="none", data_threads=2)
    assert rest.stopped == "done"
    assert whole.params.keys() == rest.params.keys()
    for name, value in whole.params.items():
        assert np.array_equal(value, rest.params[name]), name
    measured = ("time", "data_wait")
    assert [{k: v for k, v in row.items() if k not in measured} for row in whole.history] == [
        {k: v for k, v in row.items() if k not in measured} for row in rest.history
    ]
    assert all(0 <= row["data_wait"] <= 1 for row in whole.history)


@needs_mpi
def test_two_ranks_each_decoding_their_share_train_as_one_process(tmp_path):
    """Each rank reads only its rows of a batch of photos (distributed.Share): the same run as one
    process's, which reads them all."""
    photo_folder(tmp_path / "photos", per_class=9)  # 14 to train: batches of 6, 6 and 2, none joined
    path = photo_model(tmp_path, TRAIN.replace("batch = 4", "batch = 6"))
    runs = {
        ranks: subprocess.run(
            [
                *([MPIRUN, "-n", "2"] if ranks == 2 else []),
                sys.executable,
                "-m",
                "dlc.runtime.cli",
                "train",
                path,
                "--out",
                str(tmp_path / f"r{ranks}"),
                "--backend",
                "reference",
                "-q",
            ],
            capture_output=True,
            text=True,
            env=env(),
            timeout=300,
        )
        for ranks in (1, 2)
    }
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr for run in runs.values()]
    assert_same_run(tmp_path / "r1", tmp_path / "r2")


def test_a_run_holds_one_epochs_reader_at_a_time(tmp_path, monkeypatch):
    """An epoch's reader of streamed data (and the last batch it read) is let go when the next
    epoch starts: a run's memory does not grow with its epochs."""
    from dlc.runtime.training import trainer

    readers = []

    class Counted(trainer.Batches):
        def __iter__(self):
            reader = super().__iter__()
            readers.append(reader)
            return reader

    open_at_epoch = []

    class Count(Callback):
        def on_epoch_begin(self, epoch, logs):  # before the epoch makes its reader
            open_at_epoch.append(sum(r.gi_frame is not None for r in readers))

    monkeypatch.setattr(trainer, "Batches", Counted)
    photo_folder(tmp_path / "photos", per_class=4)
    path = photo_model(tmp_path, TRAIN.replace("epochs = 2", "epochs = 4").replace("validation = split(0.2) ", ""))
    load(path, backend="reference").train(out=tmp_path / "run", progress="none", callbacks=[Count()])
    assert open_at_epoch == [0, 1, 1, 1]
    assert all(r.gi_frame is None for r in readers)  # and the last one at the run's end
