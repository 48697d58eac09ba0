"""Every product int8, short sums too: the rule that keeps a product whose sums are too short
to gain float32 (compiler/passes/int8.py FEWEST_TERMS, FEWEST_CHANNELS) set aside, so that the
integer kernels stay tested on what only it keeps from them (a first layer of 1 to 3
channels, depthwise and small grouped convolutions, dense layers of a few terms)."""

import contextlib

import pytest

from dlc.compiler.passes import int8


@contextlib.contextmanager
def every_product_integer():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8, "FEWEST_TERMS", 1)
        patch.setattr(int8, "FEWEST_CHANNELS", 1)
        yield
