"""A model's weights whose every change is counted, so that an engine keeps what it made of
them (a prediction's weights packed for its GEMMs, docs/native.md "Weight packs") for as
long as they stay the same, and never past a change."""

from __future__ import annotations

import itertools

import numpy as np

from dlc.compiler.errors import DlcError

# every version any Parameters of the process has had is a number of this count: two
# mappings never share one, so a version names one content of one mapping
_VERSIONS = itertools.count(1)


def _read_only(a) -> np.ndarray:
    a = np.asarray(a)
    a.flags.writeable = False
    return a


class Parameters(dict):
    """Parameter arrays by name (a dict), each read-only, and `version`: a number new at every
    change, which no other change of any Parameters has had. A change is an assignment
    (`params[name] = array`, `update`, `del`, `pop`, ...), which keeps a read-only copy of
    the array given (the caller's stays theirs to write), so none goes uncounted: a write
    in place is numpy's error ("assignment destination is read-only"). The native engine's
    prediction packs the weights once per version (runtime/engines/native.py)."""

    def __init__(self, arrays=(), **named):
        super().__init__()
        self.version = next(_VERSIONS)
        self.update(arrays, **named)

    @classmethod
    def owning(cls, arrays: dict) -> "Parameters":
        """The arrays themselves, made read-only, not copies: for arrays nothing else holds (a
        checkpoint just read)."""
        params = cls()
        for name, a in arrays.items():
            dict.__setitem__(params, name, _read_only(a))
        return params

    def _changed(self):
        self.version = next(_VERSIONS)

    def __setitem__(self, name, value):
        super().__setitem__(name, _read_only(np.array(value)))
        self._changed()

    def __delitem__(self, name):
        super().__delitem__(name)
        self._changed()

    def update(self, arrays=(), **named):
        for name, value in dict(arrays, **named).items():
            self[name] = value

    def __ior__(self, arrays):
        self.update(arrays)
        return self

    def setdefault(self, name, value=None):
        if name not in self:
            self[name] = value
        return self[name]

    def pop(self, name, *default):
        if name in self:
            self._changed()
        return super().pop(name, *default)

    def popitem(self):
        item = super().popitem()
        self._changed()
        return item

    def clear(self):
        super().clear()
        self._changed()

    def __reduce__(self):  # a copy (pickle, copy.deepcopy) is a mapping of its own, with a version of its own
        return type(self), (dict(self),)


def require_writable(params: dict, what: str):
    """A DlcError unless `params` may be written in place by `what` (a train step, an
    optimizer's update): a model's Parameters are read-only, so that their version counts
    every change."""
    if isinstance(params, Parameters):
        raise DlcError(
            f"{what} writes the weights in place: give it a dict of writeable arrays, not a model's "
            "read-only Parameters ({name: a.copy() for name, a in params.items()})"
        )
