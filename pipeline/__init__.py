"""Synthetic instruction-data generation for code LLMs, verified by execution."""

__version__ = "0.1.0"
