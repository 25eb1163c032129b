"""The prompt pass attends over its own slots only: the prefill's cache holds the prompt (and
Coconut's thoughts and <eot>), and the loop's slots are added after it (KVCache.grow)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.infer.engine import make_generate
from latent.models import presets
from latent.nn import KVCache, Transformer

CFG = presets.llama(vocab_size=40, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=32, max_seq_len=64)
PROMPT = np.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]], np.int32)


@pytest.mark.parametrize("policy, prefill_slots", [("none", 5), ("fixed", 5 + 3 + 1)])
def test_the_prefill_allocates_its_own_slots_and_the_loop_gets_its_own_after(policy, prefill_slots, monkeypatch):
    allocated = []
    real_init = KVCache.init

    def recording_init(cfg, batch_size, max_len=None, dtype=None):
        allocated.append(max_len)
        return real_init(cfg, batch_size, max_len, dtype)

    monkeypatch.setattr(KVCache, "init", staticmethod(recording_init))
    make_generate.cache_clear()
    graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
    knobs = dict(latent_steps=3, eot_id=2) if policy == "fixed" else {}
    generate = make_generate(graphdef, CFG, 6, -1, 0, 0.0, 1.0, policy=policy, **knobs)
    out = generate(params, jnp.asarray(PROMPT), jnp.asarray(PROMPT != 0), jax.random.PRNGKey(0))
    make_generate.cache_clear()
    assert allocated == [prefill_slots]
    assert out.tokens.shape == (2, 6) and list(out.lengths) == [6, 6]


def test_grow_adds_empty_slots_and_keeps_what_was_written():
    cache = KVCache.init(CFG, 2, 4)
    cache = cache.replace(k=tuple(x + 1.0 for x in cache.k), key_mask=cache.key_mask.at[:, 1:].set(True),
                          index=jnp.asarray(4, jnp.int32))
    grown = cache.grow(3)
    assert grown.max_len == 7 and int(grown.index) == 4
    np.testing.assert_array_equal(grown.k[0][:, :, :4], cache.k[0])  # slots: axis 2 (head-major)
    np.testing.assert_array_equal(grown.k[1][:, :, 4:], 0.0)
    np.testing.assert_array_equal(grown.key_mask, np.array([[False, True, True, True, False, False, False]] * 2))
