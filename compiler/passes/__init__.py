"""Graph-to-graph passes: autodiff, the rewrite passes before lowering, hoisting."""
