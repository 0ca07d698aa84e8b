"""The errors tagger raises on purpose; the CLI turns each into one `error: ...` line."""


class TaggerError(Exception):
    """A problem the user can fix; its message is the whole story, no traceback needed."""


class ConfigError(TaggerError):
    """Settings that cannot be used."""


class SchemaError(TaggerError):
    """A database whose schema this tagger cannot use as it is."""


class WeightsError(TaggerError):
    """Model weights that are missing, damaged or of the wrong kind."""


class SkipFile(Exception):
    """A file that is recorded as failed with `reason`, while the run goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadImage(SkipFile):
    """The file's content is not a usable image: retrying will not help until it changes."""


class Unreadable(SkipFile):
    """The file could not be read right now (vanished, permission): worth another try later."""


class RuntimeUnavailable(TaggerError):
    """An inference runtime or precision that is not installed or not supported here."""
