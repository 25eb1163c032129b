"""Tiny random Hugging Face models (PyTorch, CPU) and a jitted runner for ours, for parity tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from latent.nn import KVCache, jitted_apply

VOCAB = 97


def tiny_hf_config(family: str, **overrides):
    """A random tiny config of each family; overrides go to the transformers config."""
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "gpt2":
        args = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                    bos_token_id=0, eos_token_id=0)
        args.update(overrides)
        return transformers.GPT2Config(**args)
    if family == "llama":
        return transformers.LlamaConfig(**{**common, **overrides})
    if family == "qwen2":
        return transformers.Qwen2Config(**{**common, **overrides})
    if family == "qwen3":
        return transformers.Qwen3Config(**{**common, "head_dim": 12, **overrides})
    if family == "qwen3_next":
        args = {**common, "head_dim": 16, "layer_types": ["full_attention"] * 2, "num_experts": 0, **overrides}
        return transformers.Qwen3NextConfig(**args)
    raise ValueError(family)


def random_hf_model(config, seed: int = 0):
    """A float32 eval-mode model whose every weight (norms and biases too) is random."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def padded_batch(lengths: list[int], total: int, seed: int = 0):
    """Left-padded random token ids [B, total], padding mask and HF-style position ids."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(len(lengths), total)).astype(np.int32)
    mask = np.zeros((len(lengths), total), bool)
    for b, n in enumerate(lengths):
        mask[b, total - n:] = True
        tokens[b, : total - n] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


def hf_logits(model, tokens, mask, positions) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()


def make_jitted(model):
    """A pure jitted forward over split params, as hot loops use it (latent.nn.jitted_apply)."""
    graphdef, state = nnx.split(model)
    apply = jitted_apply(graphdef)

    def forward(tokens, mask, cache=None):
        out = apply(state, jnp.asarray(tokens), jnp.asarray(mask), cache=cache)
        return out.logits, out.cache

    return forward


def decode_with_cache(model, tokens, mask, prefill: int) -> np.ndarray:
    """Logits [B, T, V] from a prefill of `prefill` positions then one-token steps with the cache."""
    forward = make_jitted(model)
    B, T = tokens.shape
    cache = KVCache.init(model.cfg, B, T)
    logits, cache = forward(tokens[:, :prefill], mask[:, :prefill], cache)
    chunks = [np.asarray(logits)]
    for t in range(prefill, T):
        logits, cache = forward(tokens[:, t : t + 1], mask[:, t : t + 1], cache)
        chunks.append(np.asarray(logits))
    return np.concatenate(chunks, axis=1)
