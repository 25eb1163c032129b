"""Model families (presets of latent.config.ModelConfig) and Hugging Face import/export."""

from latent.models import hf, presets

__all__ = ["hf", "presets"]
