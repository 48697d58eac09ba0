"""A model's summary as its train block trains it (`dlc summary`, model.summary()): the train
block's settings with the flags applied, the parameters it trains and freezes and the
optimizer's parameter groups, the batch FLOPs are counted at; the table with the groups."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.frontend.summary import summary
from dlc.runtime.engines import budget
from dlc.runtime.training.config import TrainConfig, make_config, trained_names
from dlc.runtime.training.groups import describe


@dataclass
class SummarySettings:
    cfg: TrainConfig
    trained: list  # the parameters training updates, in the model's order
    frozen: set  # the trainable ones it does not
    groups: list  # the optimizer's parameter groups (train block's param_groups)
    batch: str | None  # the batch dim's symbol
    sizes: dict  # what FLOPs are counted at: the batch when given or set, and --dim's


def summary_settings(program, model, freeze: list | None, batch: int | None, dims: dict) -> SummarySettings:
    """`freeze` and `batch` override the train block's, as in `dlc train`: the same settings
    (make_config) and the same names (trained_names), so the trainable count is what trains."""
    cfg = make_config(program, model.name, {"freeze": freeze, "batch": batch}, require_data=False)
    trained, groups = trained_names(model, cfg)
    frozen = {p.name for p in model.params if p.trainable and p.name not in trained}
    symbol = budget.batch_symbol(model.graph)
    sizes = ({symbol: cfg.batch} if symbol and "batch" in cfg.spans else {}) | dims
    return SummarySettings(cfg, trained, frozen, groups, symbol, sizes)


def summary_text(model, settings: SummarySettings, depth: int | None) -> str:
    """The layer table and, when the train block has parameter groups, the groups."""
    text = summary(model, settings.frozen, depth, settings.sizes)
    if settings.groups:
        text += "\n" + describe(settings.groups, settings.cfg.optimizer, settings.trained, model.params)
    return text
