"""The front end: .dl text -> AST -> a built Model (the forward and initializer graphs)."""
