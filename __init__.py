"""dlc: a compiler for neural networks written in the .dl language."""
__version__ = "0.1.0"


def load(path: str, model: str | None = None):
    """Load a .dl model for training and inference (see dlc.runtime.api)."""
    from dlc.runtime.api import DlcModel
    return DlcModel(path, model)
