"""The exception root of the monitor package."""


class MonitorError(Exception):
    """Root of every error raised by ``monitor``."""


class InputError(MonitorError, ValueError):
    """Arrays or rows handed to a check are invalid (empty, NaN, mismatched shapes, ...)."""


class StoreError(MonitorError):
    """The prediction log cannot be read or written."""
