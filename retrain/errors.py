"""The exception root of the retrain package."""


class RetrainError(Exception):
    """Root of every error raised by ``retrain``."""
