"""Orchestration: Prefect flows, alerts, approval and the ``driftloop`` CLI (no statistics here)."""
