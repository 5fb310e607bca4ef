"""Vectorized generative processes (environments)."""
