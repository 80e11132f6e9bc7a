"""The exception root of the flows package."""


class FlowError(Exception):
    """Root of every error raised by ``flows``."""
