"""The run layer, below both training and evaluation: a run directory's checkpoints
(`latent.run.checkpoint`: params and optimizer state as separate orbax items, the data-iterator
state, the meta record) and loading one for use (`latent.run.load`: config, tokenizer, params)."""

from latent.run.load import Run, load_run

__all__ = ["Run", "load_run"]
