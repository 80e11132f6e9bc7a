"""Retraining library: data assembly, incremental fine-tuning, the gate, the MLflow registry.

Plain library code: no Prefect import, no side effects at import.
"""
