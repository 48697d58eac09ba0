"""The graph IR: graphs, symbolic dims, the primitive records and the ops that emit them."""
