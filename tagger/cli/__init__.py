"""The `tagger` command line: one module per theme, `main.py` the error boundary."""
