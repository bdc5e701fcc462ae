"""Canary analysis: pure verdicts from signals, and thin readers for Prometheus and Triton's metrics port."""
