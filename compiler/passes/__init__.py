"""Graph-to-graph passes: autodiff, the rewrite passes before lowering, hoisting."""

from dlc.compiler.passes import scan_vjp  # noqa: F401  (adds scan's VJP to its record)
