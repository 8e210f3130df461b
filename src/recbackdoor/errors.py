"""User-facing errors: the CLI prints these as one line and exits non-zero (no traceback)."""


class RecBackdoorError(Exception):
    """A mistake in the user's input (file, option, directory) that they can fix.

    The message should say what went wrong, where, and how to fix it.
    """


class DataError(RecBackdoorError):
    """A data file is missing, malformed, or inconsistent."""


class ConfigError(RecBackdoorError):
    """An option or configuration value is invalid."""
