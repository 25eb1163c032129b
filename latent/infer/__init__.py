"""Inference: one jitted decoding engine with a KV cache."""
