"""driftloop's shared core: settings, the demo data, the base model."""

__version__ = "0.1.0"
