"""The decoding KV cache's storage dtype (make_generate's cache_dtype, eval.cache_dtype,
rl.cache_dtype): auto stores the model's compute dtype as before; bfloat16 halves the cache and
decodes close to float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.infer import policies
from latent.infer.engine import make_generate
from latent.models import presets
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))
PROMPT = np.array([[0, 0, 5, 6, 7, 1], [8, 9, 10, 11, 12, 1], [0, 0, 0, 3, 4, 1], [0, 20, 21, 22, 23, 1]], np.int32)
NEW = 10


def decode(cache_dtype, policy="none"):
    graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
    knobs = dict(latent_steps=3, eot_id=2) if policy == "fixed" else {}
    generate = make_generate(graphdef, CFG, NEW, -1, 0, 0.0, 1.0, policy=policy, cache_dtype=cache_dtype, **knobs)
    return jax.device_get(generate(params, jnp.asarray(PROMPT), jnp.asarray(PROMPT != 0), jax.random.PRNGKey(0)))


def test_the_default_cache_is_the_models_dtype_and_decodes_bit_for_bit_as_float32():
    auto, float32 = decode("auto"), decode("float32")
    for a, b in zip(auto, float32):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cache_dtype 'int8' is not one of"):
        decode("int8")


@pytest.mark.parametrize("policy", ["none", "fixed"])
def test_a_bfloat16_cache_is_allocated_in_bfloat16_and_decodes_close_to_float32(policy, monkeypatch):
    allocated = []
    real_init = policies.KVCache.init

    def recording_init(cfg, batch_size, max_len=None, dtype=None):
        cache = real_init(cfg, batch_size, max_len, dtype)
        allocated.append(cache.k[0].dtype)
        return cache

    monkeypatch.setattr(policies.KVCache, "init", staticmethod(recording_init))
    make_generate.cache_clear()  # trace anew, so the cache is allocated here (fixed: in latent.nn.recurrence)
    reference = decode("float32", policy)
    assert allocated == [jnp.float32]
    bf16 = decode("bfloat16", policy)
    assert allocated == [jnp.float32, jnp.bfloat16]
    # Greedy tokens agree on most positions; the log-probs of the tokens emitted before a row's
    # first disagreement are within 0.05 nats (bfloat16 keeps 8 bits of mantissa: about 0.4%
    # relative error in each key and value), and they do differ: the cache did change.
    agree = bf16.tokens == reference.tokens
    assert agree.mean() >= 0.9
    before_first_miss = np.cumprod(agree, axis=1).astype(bool)
    gap = np.abs(bf16.logprobs - reference.logprobs)[before_first_miss]
    assert gap.max() < 0.05 and gap.max() > 0


def test_rl_rollouts_and_evaluations_reach_the_engine_with_their_cache_dtype():
    from latent.config_io import apply_overrides, load_preset
    from latent.errors import ConfigError
    from latent.methods.rl.rollout import RolloutLayout

    cfg = apply_overrides(load_preset("tiny"), ["eval.cache_dtype=bfloat16", "rl.cache_dtype=bfloat16"])
    assert cfg.eval.cache_dtype == "bfloat16" and load_preset("tiny").eval.cache_dtype == "auto"
    assert RolloutLayout(cache_dtype=cfg.rl.cache_dtype).engine_kwargs()["cache_dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="cache_dtype"):
        apply_overrides(load_preset("tiny"), ["eval.cache_dtype=int8"])
