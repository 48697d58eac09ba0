"""The lowering rules of the families that emit no kernel of their own, a module each:
`sources.py` (inputs, parameters, constants, iota, sizes, random draws), `views.py`
(elementwise ops and views: expressions, no kernel), `pooling.py` (pooling as maps or
reductions), and those of the primitives computed more than one way, each calling the
implementation its list in compiler/native/choose/ chooses: `conv.py` (conv2d and its
gradients), `matmul.py`; and every rule found (`load`: these families and the kinds of
kernels/) and looked up (`lowering_rule`). The registry they fill is
compiler/native/program/registry.py."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Callable

from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.program.registry import INT8_LOWERINGS, LOWERINGS, PATTERN_RULES


@functools.cache
def load():
    """Import every rule: the families of this package and the kinds of kernels/."""
    from dlc.compiler.native import kernels, rules

    for package, kinds in ((rules, False), (kernels, True)):
        for module in pkgutil.iter_modules(package.__path__):
            if module.ispkg == kinds:
                importlib.import_module(f"{package.__name__}.{module.name}")


def lowering_rule(name: str, int8: bool = False) -> Callable | None:
    """A primitive's lowering rule: its own, else its fusion pattern's; `int8`: its rule as
    an integer product (kernels/int8)."""
    load()
    if int8:
        return INT8_LOWERINGS[name]
    return LOWERINGS.get(name) or PATTERN_RULES.get(PRIMITIVES[name].pattern)
