"""Diagnostics sown by the decoder (latent.nn.diagnostics): attention sink share, output-gate
mean and sparsity, activation scale, per layer; recorded only when switched on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.models import presets
from latent.nn import SDPA_CORES, Diagnostic, KVCache, Transformer, pop_diagnostics, set_diagnostics
from latent.nn.diagnostics import SMALL_GATE, first_key_share, gate_summary, pooled_over_real_queries
from tests.conftest import tiny_model_fields as tiny
from tests.nn.attention_by_hand import first_layer_by_hand


def recorded(model, tokens, **kwargs):
    set_diagnostics(model, True)
    model(tokens, **kwargs)
    return pop_diagnostics(model)


def test_attention_stats_use_each_examples_first_real_token():
    cfg = presets.gated(presets.llama(**tiny()))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (1, 6), 0, cfg.vocab_size)
    alone = recorded(model, tokens)
    padded_tokens = jnp.concatenate([jnp.zeros((1, 3), tokens.dtype), tokens], axis=1)
    padded = recorded(model, padded_tokens, padding_mask=jnp.arange(9)[None] >= 3)
    for field in ("sink_share", "max_abs_activation", "gate_mean", "small_gate_share"):
        np.testing.assert_allclose(getattr(padded, field), getattr(alone, field), rtol=1e-5)
    assert alone.sink_share.shape == (cfg.n_layers,)
    # Query t spreads weight over t+1 keys; each attends to the first with some share in (0, 1].
    assert np.all((alone.sink_share > 0) & (alone.sink_share <= 1))
    assert np.all((alone.gate_mean > 0) & (alone.gate_mean < 1))
    one_token = recorded(model, tokens[:, :1])
    np.testing.assert_allclose(one_token.sink_share, 1.0, rtol=1e-6)
    ungated = Transformer(presets.llama(**tiny()), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(recorded(ungated, tokens).gate_mean, 1.0)


def test_sink_share_and_gate_mean_of_a_given_attention_pattern():
    """The statistics on hand-written probabilities: example 0 is left-padded by one slot (its
    first real key is slot 1, its slot-0 query is padding); example 1 is unpadded. Only real
    queries count, and each reads the weight on its own example's first real key."""
    probs_BxTxS = np.array(
        [
            [[1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0], [0.0, 0.25, 0.75]],  # row 0: the padded query
            [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]],
        ],
        np.float32,
    )
    gates_BxT = np.array([[0.9, 0.2, 0.4], [0.1, 0.3, 0.5]], np.float32)
    valid_BxT = np.array([[False, True, True], [True, True, True]])

    def stats(probs_BxKxGxTxS, gates_BxTxHxW, first_key_B, valid_BxT):
        real = [jnp.asarray(valid_BxT, jnp.float32)]
        gate_mean_BxT, small_BxT = gate_summary(jnp.asarray(gates_BxTxHxW))
        return (
            pooled_over_real_queries([first_key_share(jnp.asarray(probs_BxKxGxTxS), jnp.asarray(first_key_B))], real),
            pooled_over_real_queries([gate_mean_BxT], real),
            pooled_over_real_queries([small_BxT], real),
        )

    sink_share, gate_mean, small_gate_share = stats(
        probs_BxTxS[:, None, None], gates_BxT[:, :, None, None], [1, 0], valid_BxT  # K = G = H = W = 1
    )
    np.testing.assert_allclose(sink_share, (1.0 + 0.25 + 1.0 + 0.5 + 0.2) / 5, rtol=1e-6)
    np.testing.assert_allclose(gate_mean, (0.2 + 0.4 + 0.1 + 0.3 + 0.5) / 5, rtol=1e-6)
    np.testing.assert_allclose(small_gate_share, 0.0)  # 0.1 is not below SMALL_GATE

    # Several kv heads and query groups: the mean over real queries and all H = K * G heads.
    rng = np.random.default_rng(0)
    B, K, G, T, W = 2, 2, 3, 5, 4
    probs = rng.dirichlet(np.ones(T), size=(B, K, G, T)).astype(np.float32)
    gates = rng.uniform(size=(B, T, K * G, W)).astype(np.float32)
    first_B, valid = np.array([2, 0]), np.arange(T)[None] >= np.array([[2], [0]])
    sink, gate, small, n = 0.0, 0.0, 0.0, 0
    for b in range(B):
        for t in range(T):
            if valid[b, t]:
                sink += probs[b, :, :, t, first_B[b]].mean()
                gate += gates[b, t].mean()
                small += (gates[b, t] < SMALL_GATE).mean()
                n += 1
    sink_share, gate_mean, small_gate_share = stats(probs, gates, first_B, valid)
    np.testing.assert_allclose(sink_share, sink / n, rtol=1e-5)
    np.testing.assert_allclose(gate_mean, gate / n, rtol=1e-5)
    np.testing.assert_allclose(small_gate_share, small / n, rtol=1e-5)
    assert 0 < small < n


def test_layer_stats_of_a_model_with_known_attention_and_activations():
    """Zero query weights make attention uniform over each query's visible real keys, so the query
    with i real keys in view puts 1/i on the first; zero output projections leave the residual
    stream equal to the token embeddings. The padding token's embedding is huge: a statistic that
    read padded positions would show it."""
    cfg = presets.gated(presets.llama(**tiny()))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    for layer in model.layers:
        layer.attn.q_proj.kernel[...] = jnp.zeros_like(layer.attn.q_proj.kernel[...])
        layer.attn.o_proj.kernel[...] = jnp.zeros_like(layer.attn.o_proj.kernel[...])
        layer.mlp.down_proj.kernel[...] = jnp.zeros_like(layer.mlp.down_proj.kernel[...])
    model.embed[...] = model.embed[...].at[0].set(100.0)
    tokens = jnp.asarray([[0, 0, 0, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20, 21]], jnp.int32)
    real = tokens != 0
    stats = recorded(model, tokens, padding_mask=real)

    reciprocals = [1 / i for i in range(1, 7)] + [1 / i for i in range(1, 10)]  # 6 and 9 real queries
    np.testing.assert_allclose(stats.sink_share, np.full(cfg.n_layers, np.mean(reciprocals)), rtol=1e-5)
    largest = np.abs(np.asarray(model.embed[...])[np.asarray(tokens)[np.asarray(real)]]).max()
    assert largest < 1.0  # the pad row (100) is not among the real tokens
    np.testing.assert_allclose(stats.max_abs_activation, np.full(cfg.n_layers, largest), rtol=1e-6)
    np.testing.assert_allclose(stats.gate_mean, 0.5, rtol=1e-6)  # sigmoid(0) with zero query weights
    np.testing.assert_array_equal(stats.small_gate_share, 0.0)


@pytest.mark.parametrize("impl", sorted(SDPA_CORES))
@pytest.mark.parametrize("kind", ["headwise", "elementwise"])
def test_gated_model_diagnostics_match_a_hand_computation(kind, impl):
    cfg = presets.gated(presets.gpt2(**tiny(attention_impl=impl)), kind)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    # Larger query and gate weights: attention far from uniform, gates spread over (0, 1).
    q_proj = model.layers[0].attn.q_proj
    q_proj.kernel[...] = q_proj.kernel[...] * 60.0
    tokens = np.array(jax.random.randint(jax.random.key(1), (2, 7), 1, cfg.vocab_size))
    real = np.arange(7)[None] >= np.array([[0], [3]])
    tokens[~real] = 0
    stats = recorded(model, jnp.asarray(tokens), padding_mask=jnp.asarray(real))

    on_first_NxH, gates = first_layer_by_hand(model, tokens, real)
    sink = on_first_NxH.mean()
    np.testing.assert_allclose(stats.sink_share[0], sink, rtol=1e-5)
    np.testing.assert_allclose(stats.gate_mean[0], gates.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats.small_gate_share[0], (gates < SMALL_GATE).mean(), rtol=1e-5)
    assert 0 < gates.mean() < 1 and np.all((stats.gate_mean > 0) & (stats.gate_mean < 1))
    assert 0 < (gates < SMALL_GATE).mean() < 1
    assert 0 < sink < 1


def test_ungated_model_sows_no_gate_and_reports_the_neutral_gate():
    cfg = presets.gpt2(**tiny())
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.array(jax.random.randint(jax.random.key(1), (2, 7), 1, cfg.vocab_size))
    real = np.arange(7)[None] >= np.array([[0], [3]])
    set_diagnostics(model, True)
    model(jnp.asarray(tokens), padding_mask=jnp.asarray(real))
    state = nnx.pop(model, Diagnostic)
    names = {path[-1] for path, _ in nnx.to_flat_state(state)}
    assert names == {"real_query", "max_abs_activation", "first_key_share"}

    stats = recorded(model, jnp.asarray(tokens), padding_mask=jnp.asarray(real))
    np.testing.assert_array_equal(stats.gate_mean, 1.0)  # no gate: the output is multiplied by 1
    np.testing.assert_array_equal(stats.small_gate_share, 0.0)
    np.testing.assert_allclose(stats.sink_share[0], first_layer_by_hand(model, tokens, real)[0].mean(), rtol=1e-5)


def test_nothing_is_sown_with_the_flag_off_and_recording_changes_no_output():
    cfg = presets.gated(presets.llama(**tiny()))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    quiet = model(tokens).logits
    assert len(nnx.to_flat_state(nnx.pop(model, Diagnostic))) == 0
    assert pop_diagnostics(model) is None

    set_diagnostics(model, True)
    np.testing.assert_array_equal(model(tokens).logits, quiet)
    assert pop_diagnostics(model) is not None
    assert pop_diagnostics(model) is None  # popping clears them
    set_diagnostics(model, False)
    model(tokens)
    assert pop_diagnostics(model) is None


def test_diagnostics_pool_a_prefill_and_cached_decode_steps_like_one_pass():
    """Calls between pops are pooled over all their real queries: a prefill and one-token steps
    with the cache give the diagnostics of one full pass (the first real key sits in the cache)."""
    cfg = presets.gated(presets.qwen3(**tiny()), "headwise")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    B, T = 3, 8
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    padding = jnp.arange(T)[None] >= jnp.array([0, 2, 5])[:, None]
    full = recorded(model, tokens, padding_mask=padding)

    cache = KVCache.init(cfg, B, 12)
    for start, stop in ((0, 5), (5, 6), (6, 7), (7, 8)):
        cache = model(tokens[:, start:stop], padding_mask=padding[:, start:stop], cache=cache).cache
    pooled = pop_diagnostics(model)
    for field in full._fields:
        np.testing.assert_allclose(getattr(pooled, field), getattr(full, field), rtol=2e-5, err_msg=field)


def test_diagnostics_come_out_of_a_jitted_pure_forward():
    cfg = presets.gated(presets.llama(**tiny()))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    eager = recorded(model, tokens)  # leaves the flag on
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens):
        model = nnx.merge(graphdef, state)
        logits = model(tokens).logits
        return logits, pop_diagnostics(model)

    _, jitted = forward(state, tokens)
    for field in eager._fields:
        np.testing.assert_allclose(getattr(jitted, field), getattr(eager, field), rtol=1e-6)
    # nnx.capture reads the same values without storing them in the model.
    _, captured = nnx.capture(model, Diagnostic)(tokens)
    from latent.nn.diagnostics import summarize

    np.testing.assert_allclose(summarize(captured).sink_share, eager.sink_share, rtol=1e-6)
    assert pop_diagnostics(model) is None
