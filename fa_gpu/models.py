"""Ready-made generative models."""
