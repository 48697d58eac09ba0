"""A callback that stops a training run after a given step, to resume it."""

from dlc import Callback, StopTraining


class StopAt(Callback):
    """Stops the run once step `step` is done (its checkpoint saved, as a stopped run's is)."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, step, logs):
        if step == self.step:
            raise StopTraining(f"step {step}")
