"""The dlc compiler: .dl source -> graph IR -> gradient graph."""
from . import primitives  # noqa: F401  (registers the primitives)
from . import autodiff  # noqa: F401  (registers the scan VJP)
