"""One module per command. Each takes a typed options object and the environment as a mapping."""
