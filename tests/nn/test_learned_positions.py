"""A learned position table never turns logits into NaN: positions past model.max_seq_len take
its last row (latent.nn.positions.learned_position_rows), positions inside it are untouched."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.config import ModelConfig
from latent.nn import KVCache, Transformer

TABLE = 8


def learned_model():
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=TABLE,
                      positions="learned", norm="layer", mlp="gelu")
    return Transformer(cfg, rngs=nnx.Rngs(0))


def test_forward_past_the_table_is_finite_and_keeps_positions_inside_it():
    model = learned_model()
    tokens_1xT = jnp.arange(TABLE + 4, dtype=jnp.int32)[None] % 32
    long_logits = model(tokens_1xT).logits
    assert np.isfinite(np.asarray(long_logits)).all()
    inside_logits = model(tokens_1xT[:, :TABLE]).logits
    np.testing.assert_allclose(long_logits[:, :TABLE], inside_logits, atol=1e-6)


def test_decoding_past_the_table_with_a_cache_is_finite():
    model = learned_model()
    cache = KVCache.init(model.cfg, 1, TABLE + 3)
    out = model(jnp.ones((1, TABLE), jnp.int32), cache=cache)
    for _ in range(3):  # positions TABLE, TABLE + 1, TABLE + 2
        out = model(jnp.ones((1, 1), jnp.int32), cache=out.cache)
        assert np.isfinite(np.asarray(out.logits)).all()
