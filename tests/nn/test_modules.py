"""Unit tests of the NNX building blocks: norms, rotary, output gate, cache, mixed inputs."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from latent.models import presets
from latent.nn import Attention, Canon, KVCache, RMSNorm, Transformer, apply_rotary, jitted_apply, rotary_cos_sin
from tests.conftest import tiny_model_fields as tiny


def test_zero_centred_rmsnorm_equals_plain_with_shifted_weight():
    x = jax.random.normal(jax.random.key(0), (3, 5, 16))
    w = jax.random.normal(jax.random.key(1), (16,))
    plain, centred = RMSNorm(16, eps=1e-6), RMSNorm(16, eps=1e-6, zero_centered=True)
    plain.scale[...] = w
    centred.scale[...] = w - 1.0
    np.testing.assert_allclose(plain(x), centred(x), atol=1e-6)
    assert centred.scale[...].shape == (16,)


def test_partial_rotary_rotates_only_leading_channels_and_keeps_norms():
    x = jax.random.normal(jax.random.key(0), (2, 7, 3, 16))
    positions = jnp.arange(7)[None].repeat(2, 0)
    cos, sin = rotary_cos_sin(positions, rotary_dim=4, theta=10000.0)
    y = apply_rotary(x, cos, sin)
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)  # position 0 is the identity
    assert not np.allclose(y[:, 3, :, :4], x[:, 3, :, :4])
    np.testing.assert_allclose(jnp.linalg.norm(y[..., :4], axis=-1), jnp.linalg.norm(x[..., :4], axis=-1), rtol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    def score(i, j):
        cq = rotary_cos_sin(jnp.array([[i]]), 8, 10000.0)
        ck = rotary_cos_sin(jnp.array([[j]]), 8, 10000.0)
        return jnp.sum(apply_rotary(q, *cq) * apply_rotary(k, *ck))

    np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)


@pytest.mark.parametrize("kind", ["headwise", "elementwise"])
def test_output_gate_scales_each_head_by_sigmoid_of_its_logit(kind):
    """Gate columns of q_proj set to zero weight and bias c: output = sigmoid(c) * ungated output."""
    base = presets.llama(**tiny(qkv_bias=True))
    ungated = Attention(base, rngs=nnx.Rngs(0))
    gated = Attention(presets.gated(base, kind), rngs=nnx.Rngs(1))
    H, Dh, W = base.n_heads, base.resolved_head_dim, gated.gate_width
    c = jnp.linspace(-2.0, 2.0, H)  # one gate logit per head
    q_kernel = ungated.q_proj.kernel[...].reshape(base.d_model, H, Dh)
    q_bias = ungated.q_proj.bias[...].reshape(H, Dh)
    gated.q_proj.kernel[...] = jnp.concatenate([q_kernel, jnp.zeros((base.d_model, H, W))], -1).reshape(base.d_model, -1)
    gated.q_proj.bias[...] = jnp.concatenate([q_bias, jnp.broadcast_to(c[:, None], (H, W))], -1).reshape(-1)
    for name in ("k_proj", "v_proj"):
        getattr(gated, name).kernel[...] = getattr(ungated, name).kernel[...]
        getattr(gated, name).bias[...] = getattr(ungated, name).bias[...]
    gated.o_proj.kernel[...] = jnp.eye(H * Dh, base.d_model)  # read the per-head outputs directly
    ungated.o_proj.kernel[...] = jnp.eye(H * Dh, base.d_model)

    x = jax.random.normal(jax.random.key(2), (2, 5, base.d_model))
    positions = jnp.arange(5)[None].repeat(2, 0)
    kwargs = dict(rotary=rotary_cos_sin(positions, Dh, 10000.0), mask_BxTxS=jnp.tril(jnp.ones((5, 5), bool))[None].repeat(2, 0))
    y_gated, _ = gated(x, **kwargs)
    y_ungated, _ = ungated(x, **kwargs)
    expected = y_ungated.reshape(2, 5, H, Dh) * jax.nn.sigmoid(c)[:, None]
    np.testing.assert_allclose(y_gated.reshape(2, 5, H, Dh), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "gated_llama", "headwise_qwen3", "qwen3_next"])
def test_cached_decode_with_mixed_embeddings_matches_full_forward(name):
    cfg = presets.by_name(name, **tiny())
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    B, T = 3, 10
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    padding = jnp.arange(T)[None] >= jnp.array([0, 3, 6])[:, None]
    embeds = jax.random.normal(jax.random.key(2), (B, T, cfg.d_model))
    embed_mask = jax.random.bernoulli(jax.random.key(3), 0.3, (B, T))
    full = model(tokens, embeds=embeds, embed_mask=embed_mask, padding_mask=padding)

    cache = KVCache.init(cfg, B, 16)
    chunks = []
    for start, stop in ((0, 4), (4, 5), (5, 8), (8, 9), (9, 10)):
        out = model(tokens[:, start:stop], embeds=embeds[:, start:stop], embed_mask=embed_mask[:, start:stop],
                    padding_mask=padding[:, start:stop], cache=cache)
        cache = out.cache
        chunks.append(out.hidden)
    hidden = jnp.concatenate(chunks, axis=1)
    np.testing.assert_allclose(hidden[padding], full.hidden[padding], atol=2e-5)
    assert int(cache.index) == T
    np.testing.assert_array_equal(cache.seen, padding.sum(1))


@pytest.mark.parametrize("name", ["gpt2", "qwen3_next"])
def test_canon_cached_decode_matches_full_forward(name):
    """The canon window rides in the cache: chunked decoding equals one full pass, and a
    left-padded row equals the same tokens alone (nothing mixes in from pads)."""
    cfg = presets.by_name(name, **tiny(canon=3))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    B, T = 3, 9
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    padding = jnp.arange(T)[None] >= jnp.array([0, 2, 5])[:, None]
    full = model(tokens, padding_mask=padding)
    cache = KVCache.init(cfg, B, 12)
    chunks = []
    for start, stop in ((0, 2), (2, 3), (3, 7), (7, 8), (8, 9)):
        out = model(tokens[:, start:stop], padding_mask=padding[:, start:stop], cache=cache)
        cache, chunks = out.cache, chunks + [out.logits]
    np.testing.assert_allclose(jnp.concatenate(chunks, axis=1)[padding], full.logits[padding], atol=2e-5)
    np.testing.assert_allclose(full.logits[2, 5:], model(tokens[2:3, 5:]).logits[0], atol=2e-5)
    assert not np.allclose(full.logits, Transformer(cfg.replace(canon=0), rngs=nnx.Rngs(0))(tokens, padding_mask=padding).logits, atol=1e-3)


def test_canon_adds_weighted_real_predecessors():
    canon = Canon(4, 2, rngs=nnx.Rngs(0))
    w1, w2 = np.asarray(canon.weight[...])
    x = jax.random.normal(jax.random.key(1), (2, 4, 4))
    real = jnp.array([[True] * 4, [False, False, True, True]])
    y, window = canon(x, real)
    np.testing.assert_allclose(y[0, 0], x[0, 0])
    np.testing.assert_allclose(y[0, 1], x[0, 1] + w1 * x[0, 0], rtol=1e-6)
    np.testing.assert_allclose(y[0, 3], x[0, 3] + w1 * x[0, 2] + w2 * x[0, 1], rtol=1e-6)
    np.testing.assert_allclose(y[1, 2], x[1, 2])  # first real position: only pads lie to its left
    np.testing.assert_allclose(y[1, 3], x[1, 3] + w1 * x[1, 2], rtol=1e-6)
    np.testing.assert_allclose(window, x[:, 2:])  # the last two inputs, all real here
    y_next, _ = canon(x[:, :1], jnp.ones((2, 1), bool), window)  # the next chunk reads the window
    np.testing.assert_allclose(y_next[0, 0], x[0, 0] + w1 * x[0, 3] + w2 * x[0, 2], rtol=1e-6)
    assert np.all(np.abs(canon.weight[...]) <= 3**-0.5) and np.any(canon.weight[...] != 0)


def test_embeds_equal_to_token_embeddings_change_nothing():
    cfg = presets.gpt2(**tiny())
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    mask = jnp.zeros((2, 6), bool).at[:, 2:4].set(True)
    mixed = model(tokens, embeds=model.embed_tokens(tokens), embed_mask=mask)
    np.testing.assert_allclose(mixed.logits, model(tokens).logits, atol=1e-6)
    only_embeds = model(embeds=model.embed_tokens(tokens))
    np.testing.assert_allclose(only_embeds.logits, model(tokens).logits, atol=1e-6)


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        cfg = presets.gated(presets.qwen3_next(**tiny(dtype="float64", param_dtype="float64", n_layers=1, canon=2)))
        model = Transformer(cfg, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, cfg.vocab_size)
        embeds = jax.random.normal(jax.random.key(2), (2, 5, cfg.d_model), jnp.float64)
        embed_mask = jnp.array([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0]], bool)

        @jax.jit  # one compile for all of check_grads' evaluations instead of op-by-op dispatch
        def loss(params, embeds):
            out = nnx.merge(graphdef, params)(tokens, embeds=embeds, embed_mask=embed_mask)
            return jnp.mean(jax.nn.log_softmax(out.logits)[..., 0] * out.hidden[..., 0])

        # eps 1e-6: QK-norm of small (std 0.02) projections is sharply curved, so the default
        # eps leaves a finite-difference truncation error near 1e-5 relative.
        check_grads(loss, (params, embeds), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_same_seed_same_model_different_seed_different_model():
    cfg = presets.llama(**tiny())
    tokens = jnp.ones((1, 4), jnp.int32)
    a = Transformer(cfg, rngs=nnx.Rngs(7))(tokens).logits
    b = Transformer(cfg, rngs=nnx.Rngs(7))(tokens).logits
    c = Transformer(cfg, rngs=nnx.Rngs(8))(tokens).logits
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_one_token_decode_step_compiles_once():
    cfg = presets.gated(presets.qwen3(**tiny()))
    graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, token, cache):
        out = nnx.merge(graphdef, state)(token, cache=cache)
        return jnp.argmax(out.logits[:, -1], -1).astype(jnp.int32)[:, None], out.cache

    token, cache = jnp.ones((2, 1), jnp.int32), KVCache.init(cfg, 2, 12)
    for _ in range(12):
        token, cache = step(state, token, cache)
    assert int(cache.index) == 12


def test_chunk_longer_than_cache_is_refused():
    cfg = presets.llama(**tiny())
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="does not fit a cache of 4 slots"):
        model(jnp.ones((1, 5), jnp.int32), cache=KVCache.init(cfg, 1, 4))


@pytest.mark.parametrize("name", ["gpt2", "gated_llama", "qwen3_next"])
def test_every_param_carries_logical_axes_of_its_rank(name):
    """Sharding maps these names to mesh axes; a missing or mis-ranked name would shard wrongly."""
    model = Transformer(presets.by_name(name, **tiny(canon=2)), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert leaves
    for variable in leaves:
        axes = variable.get_metadata()["axes"]
        assert len(axes) == variable[...].ndim, (axes, variable[...].shape)


def test_jitted_apply_is_the_model_on_any_params_compiled_once_per_input_kind():
    cfg = presets.gated(presets.qwen3(**tiny()))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    other_params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))[1]
    apply = jitted_apply(graphdef)
    tokens = jax.random.randint(jax.random.key(0), (2, 5), 1, cfg.vocab_size)
    real = jnp.asarray([[False, False, True, True, True], [True] * 5])
    out = apply(params, tokens, real)
    eager = model(tokens, padding_mask=real)
    np.testing.assert_allclose(out.logits, eager.logits, atol=1e-5)
    np.testing.assert_allclose(out.hidden, eager.hidden, atol=1e-5)
    assert out.cache is None
    other = apply(other_params, tokens, real)
    assert not np.allclose(other.logits, out.logits) and apply._cache_size() == 1  # new params: no new compile
    cached = apply(params, tokens, real, cache=KVCache.init(cfg, 2, 8))
    np.testing.assert_allclose(cached.logits, eager.logits, atol=1e-5)
    assert int(cached.cache.index) == 5 and apply._cache_size() == 2
