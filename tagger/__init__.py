"""tagger: an offline photo-tagging daemon."""

__version__ = "0.1.0"
