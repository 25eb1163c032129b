"""latent: JAX-native research codebase for latent reasoning language models."""

__version__ = "0.1.0"
