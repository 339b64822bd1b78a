"""Telemetry: Prometheus metrics (metrics.py, metered_store.py) and log set-up (logs.py)."""
