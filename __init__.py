"""dlc: a compiler for neural networks written in the .dl language."""
__version__ = "0.1.0"
