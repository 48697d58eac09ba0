"""The engines that run a model's steps (reference, native, data parallel) and what they share."""
