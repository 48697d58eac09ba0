"""Training: the loop (the trainer, its callbacks, early stopping), its settings and parameter
groups, what a run shows, gradient checks and `dlc bench`. The optimizers and schedules it
drives are runtime/optim/, the engines that run a step runtime/engines/, and checkpoints
runtime/interop/."""
