"""Compatibility layers for running the real engines where the usual stack is incomplete (CPU machines)."""
