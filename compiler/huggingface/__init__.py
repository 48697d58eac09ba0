"""Hugging Face model folders as .dl programs and checkpoints (`dlc import FOLDER`)."""
