"""Metrics, traces and logs: beside every layer, below none."""
