"""Monitoring library: the prediction log, embeddings, drift, decay, bias, the verdict, reports.

Plain library code: no Prefect import, no side effects at import.
"""
