"""The query language: terms such as `label:dog score:0.5..` parsed into a `Query`."""
