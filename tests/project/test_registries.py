"""The registries of the train block's settings are complete, as tests/ir/test_records.py checks
the primitives': every optimizer class and every data source is registered under its name,
and each registered one is documented in docs/training.md with its options."""

import inspect
import re
from pathlib import Path

import pytest

from dlc.runtime.data import files, images, photos, registry, synthetic, tables, text, text_tables
from dlc.runtime.data.dataset import Dataset
from dlc.runtime import optim
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.optim.optimizers import OPTIMIZERS

TRAINING_MD = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()


def subclasses(cls) -> set:
    return {c for sub in cls.__subclasses__() for c in {sub} | subclasses(sub)}


def doc_row(name: str) -> str | None:
    """The row of a table of training.md that starts with the name (`name` or `name(...)`)."""
    m = re.search(rf"^\| `{name}[`(].*$", TRAINING_MD, re.M)
    return m[0] if m else None


def test_every_optimizer_class_is_registered_under_its_name():
    classes = {c for c in subclasses(Optimizer) if c.__module__.startswith(optim.__name__ + ".")}
    assert classes == set(OPTIMIZERS.values())
    assert all(OPTIMIZERS[c.name] is c for c in classes)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_is_documented_with_its_options(name):
    row = doc_row(name)
    assert row, f"docs/training.md has no row for the optimizer {name}"
    # a row may say it is another optimizer with other defaults ("`sgd` with `momentum = 0.9`")
    based_on = re.match(r"\| `\w+` \| (?:as )?`(\w+)`", row)
    shown = row + (doc_row(based_on[1]) or "" if based_on and based_on[1] in OPTIMIZERS else "")
    missing = [o for o in OPTIMIZERS[name].options if f"`{o}" not in shown]
    assert not missing, f"docs/training.md's row of {name} does not name {missing}"


def source_functions() -> dict:
    """The functions of the source modules that make a data set from a call: (base_dir, args) -> Dataset."""
    found = {}
    for module in (files, images, photos, synthetic, tables, text, text_tables):
        for name, f in inspect.getmembers(module, inspect.isfunction):
            if (
                f.__module__ == module.__name__
                and list(inspect.signature(f).parameters) == ["base_dir", "args"]
                and inspect.signature(f).return_annotation in (Dataset, "Dataset")
            ):
                found[name] = f
    return found


def test_every_data_source_function_is_registered_under_its_name():
    assert source_functions() == registry.SOURCES


@pytest.mark.parametrize("name", sorted(registry.SOURCES))
def test_every_data_source_is_in_the_table_of_sources(name):
    table = TRAINING_MD.split("## Data sources", 1)[1].split("\n\n", 2)[1]
    assert re.search(rf"`{name}[`(]", table), f"docs/training.md's table of data sources lacks {name}"
