"""The runner and the per-file stages, from a path to a stored result."""
