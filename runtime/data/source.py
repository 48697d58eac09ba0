"""What a data source is: a function `fn(base_dir, args) -> Dataset` made a source by
`@source(**params)`, under its own name (the name a `.dl` file calls it by).

The source gets its call's arguments bound as every spec's are (`Call.bind`: `params` maps
each parameter to its default, REQUIRED when it must be given) and checks them with
`Args.check`, so a bad argument is reported where it is written. From Python, a source is
called as source(base_dir, *args, **kwargs); `source.read(base_dir, call)` reads a `Call`.
runtime/data/registry.py lists the sources by name.
"""

from __future__ import annotations

import functools
import pathlib

from dlc.runtime.data.dataset import Dataset
from dlc.compiler.frontend.settings import Call


def source(**params):
    def make(fn):
        def read(base_dir, call: Call) -> Dataset:
            return fn(pathlib.Path(base_dir), call.bind(params))

        @functools.wraps(fn)
        def from_python(base_dir, *args, **kwargs) -> Dataset:
            return read(base_dir, Call(fn.__name__, list(args), kwargs))

        from_python.read = read
        from_python.params = params  # its signature in a .dl file (the language server's completion)
        return from_python

    return make
