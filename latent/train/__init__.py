"""Training: sharding, optimizer, losses, the pure train step, checkpoints and the loop."""
