"""Optimizers, learning-rate schedules, the numbers of a step as formulas (Python and C), and the
second-order methods: what the train block's optimizer, schedule and clip settings are, which
the engines (runtime/engines/) run."""
