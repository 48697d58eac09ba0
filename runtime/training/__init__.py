"""Training: the trainer, its settings, optimizers and schedules, checkpoints, progress."""
