"""dlc: a compiler for neural networks written in the .dl language. The Python API
(docs/api.md): `dlc.load` gives a model to train, evaluate, predict with, save and export, `dlc.import_folder`
one imported from a Hugging Face folder;
`dlc.Callback` and `dlc.StopTraining` are for the callbacks of its training."""

__version__ = "0.1.0"

# each public name and the module that defines it, imported when first used: `import dlc`
# and the command line start without building the compiler, and no module of the package,
# whose import first runs this one, is in an import cycle with the runtime
PUBLIC = {
    "load": "dlc.runtime.api",
    "import_folder": "dlc.runtime.api",
    "Callback": "dlc.runtime.training.callbacks",
    "StopTraining": "dlc.runtime.training.callbacks",
}
__all__ = [*PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'dlc' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(PUBLIC[name]), name)


def __dir__() -> list:
    return sorted([*globals(), *PUBLIC])
