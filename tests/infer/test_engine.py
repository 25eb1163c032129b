"""The jitted decoding loop: greedy equals step-by-step argmax without a cache; EOS stops; sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.infer.engine import make_generate
from latent.infer.sampling import sample_tokens
from latent.models import presets
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))


def _model():
    return Transformer(CFG, rngs=nnx.Rngs(0))


def test_greedy_generation_matches_uncached_argmax_decoding():
    model = _model()
    graphdef, params = nnx.split(model)
    prompt = np.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]], np.int32)
    mask = prompt != 0
    generate = make_generate(graphdef, CFG, 6, -1, 0, 0.0, 1.0)  # eos -1: never stops early
    tokens, lengths = generate(params, jnp.asarray(prompt), jnp.asarray(mask), jax.random.PRNGKey(0))
    assert tokens.shape == (2, 6) and list(lengths) == [6, 6]
    for b in range(2):
        sequence = list(prompt[b][mask[b]])
        for _ in range(6):
            logits = model(jnp.asarray([sequence], jnp.int32)).logits[0, -1]
            sequence.append(int(jnp.argmax(logits)))
        assert list(np.asarray(tokens[b])) == sequence[-6:]


def test_eos_stops_each_example_and_pads_after_it():
    graphdef, params = nnx.split(_model())
    prompt = jnp.asarray([[5, 6, 7], [8, 9, 10]], jnp.int32)
    greedy = make_generate(graphdef, CFG, 8, -1, 0, 0.0, 1.0)
    free_run, _ = greedy(params, prompt, jnp.ones((2, 3), bool), jax.random.PRNGKey(0))
    eos = int(free_run[0, 2])  # make example 0's third token the EOS
    tokens, lengths = make_generate(graphdef, CFG, 8, eos, 0, 0.0, 1.0)(
        params, prompt, jnp.ones((2, 3), bool), jax.random.PRNGKey(0)
    )
    assert int(lengths[0]) == 3 and (np.asarray(tokens[0, 3:]) == 0).all()
    expected_1 = list(np.asarray(free_run[1]))
    stop = expected_1.index(eos) + 1 if eos in expected_1 else 8
    assert int(lengths[1]) == stop


def test_top_p_keeps_only_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: sample_tokens(logits, k, 1.0, 0.7))(jax.random.split(jax.random.PRNGKey(0), 2000))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=4) / 2000
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 already reaches 0.7
    np.testing.assert_allclose(counts[:2], [0.5 / 0.8, 0.3 / 0.8], atol=0.04)
    assert int(sample_tokens(jnp.asarray([[1.0, 3.0, 3.0]]), jax.random.PRNGKey(0), 0.0, 1.0)[0]) == 1  # first on ties
