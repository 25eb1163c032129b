"""The analysis hooks of the decoder and the latent forward (residuals, residual_add, slot
replacement): off, they change nothing; on, each does exactly what it says, checked against an
independent computation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.nn import Transformer
from latent.nn.recurrence import continuous_thought_forward
from tests.nn.test_recurrence import K, latent_batch, tiny_cfg


@pytest.fixture(scope="module")
def model():
    return Transformer(tiny_cfg(), rngs=nnx.Rngs(0))


def tokens_and_mask(cfg, B=2, T=7):
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.integers(2, cfg.vocab_size, (B, T)), jnp.int32)
    mask = jnp.asarray(np.arange(T)[None, :] >= np.array([0, 3])[:, None])  # the second row left-padded
    return tokens, mask


def test_residuals_are_the_stream_the_final_norm_reads_and_change_nothing(model):
    tokens, mask = tokens_and_mask(model.cfg)
    plain = model(tokens, padding_mask=mask)
    out = model(tokens, padding_mask=mask, return_residuals=True)
    assert plain.residuals is None
    assert out.residuals.shape == (model.cfg.n_layers, 2, 7, model.cfg.d_model)
    np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(plain.logits))
    np.testing.assert_allclose(np.asarray(model.final_norm(out.residuals[-1])), np.asarray(out.hidden), atol=1e-6)


def test_residual_add_shifts_its_layer_by_exactly_the_vector(model):
    cfg = model.cfg
    tokens, mask = tokens_and_mask(cfg)
    base = model(tokens, padding_mask=mask, return_residuals=True)
    zeros = model(tokens, padding_mask=mask, residual_add=jnp.zeros((cfg.n_layers, 1, 1, cfg.d_model)))
    np.testing.assert_array_equal(np.asarray(zeros.logits), np.asarray(base.logits))  # alpha 0: the identity

    v_D = jnp.asarray(np.random.default_rng(4).normal(size=cfg.d_model), jnp.float32)
    last = jnp.zeros((cfg.n_layers, 1, 1, cfg.d_model)).at[-1, 0, 0].set(v_D)
    steered = model(tokens, padding_mask=mask, residual_add=last, return_residuals=True)
    np.testing.assert_allclose(np.asarray(steered.residuals[-1]), np.asarray(base.residuals[-1] + v_D), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(steered.hidden), np.asarray(model.final_norm(base.residuals[-1] + v_D)), atol=1e-5
    )
    first = jnp.zeros((cfg.n_layers, 1, 1, cfg.d_model)).at[0, 0, 0].set(v_D)
    early = model(tokens, padding_mask=mask, residual_add=first, return_residuals=True)
    np.testing.assert_allclose(np.asarray(early.residuals[0]), np.asarray(base.residuals[0] + v_D), atol=1e-5)
    assert float(jnp.max(jnp.abs(early.residuals[-1] - base.residuals[-1] - v_D))) > 1e-3  # later layers react


def test_residual_add_of_a_wrong_shape_names_both_shapes(model):
    tokens, mask = tokens_and_mask(model.cfg)
    with pytest.raises(ValueError, match=r"residual_add must broadcast to \[n_layers, batch, length, d_model\]"):
        model(tokens, padding_mask=mask, residual_add=jnp.zeros((model.cfg.n_layers + 1, 1, 1, model.cfg.d_model)))


def test_replacing_every_slot_with_its_own_input_is_the_identity(model):
    prefix, prefix_mask, n_latent, suffix, suffix_mask, _ = latent_batch(model.cfg)
    args = (model, prefix, prefix_mask, n_latent, suffix, suffix_mask)
    base = continuous_thought_forward(*args, max_latent=K, return_residuals=True)
    same = continuous_thought_forward(*args, max_latent=K, slot_inputs=base.slot_inputs,
                                      replace_slots=jnp.ones((3, K), bool))
    np.testing.assert_array_equal(np.asarray(same.logits), np.asarray(base.logits))
    assert base.latent_residuals.shape == (model.cfg.n_layers, 3, K, model.cfg.d_model)
    assert base.prefix_residuals.shape[2] == prefix.shape[1] and base.suffix_residuals.shape[2] == suffix.shape[1]
    # slot i's own output, through the final norm, is the hidden state the next slot is fed from
    np.testing.assert_allclose(np.asarray(model.final_norm(base.latent_residuals[-1])),
                               np.asarray(base.latent_hidden), atol=1e-6)
    # (example 0 has all K slots; the others keep their last real state past their latents)
    np.testing.assert_allclose(np.asarray(base.slot_inputs[0, 1]),
                               np.asarray(model.feed_back(base.latent_hidden[:1, 0], base.latent_logits[:1, 0])[0]),
                               atol=1e-6)


def test_replaced_slots_equal_one_plain_pass_with_those_embeddings(model):
    """Every slot replaced: no recurrence is left, so the forward is one pass over prefix | slots |
    suffix with the given vectors as the slots' input embeddings (an independent computation)."""
    cfg = model.cfg
    prefix, prefix_mask, n_latent, suffix, suffix_mask, _ = latent_batch(cfg)
    full = jnp.full((3,), K, jnp.int32)
    given_BxKxD = jnp.asarray(np.random.default_rng(5).normal(size=(3, K, cfg.d_model)), jnp.float32)
    out = continuous_thought_forward(model, prefix, prefix_mask, full, suffix, suffix_mask, max_latent=K,
                                     slot_inputs=given_BxKxD, replace_slots=jnp.ones((3, K), bool))
    P = prefix.shape[1]
    tokens = jnp.concatenate([prefix, jnp.zeros((3, K), jnp.int32), suffix], 1)
    embeds = jnp.concatenate([jnp.zeros((3, P, cfg.d_model)), given_BxKxD, jnp.zeros((3, suffix.shape[1], cfg.d_model))], 1)
    slot_mask = jnp.zeros(tokens.shape, bool).at[:, P : P + K].set(True)
    padding = jnp.concatenate([prefix_mask, jnp.ones((3, K), bool), suffix_mask], 1)
    plain = model(tokens, embeds=embeds, embed_mask=slot_mask, padding_mask=padding)
    real = np.asarray(suffix_mask)
    np.testing.assert_allclose(np.asarray(out.logits)[real], np.asarray(plain.logits[:, P + K :])[real], atol=1e-5)

    # one slot replaced moves the answer; the mask off leaves every logit as it was
    base = continuous_thought_forward(model, prefix, prefix_mask, full, suffix, suffix_mask, max_latent=K)
    zero_first = jnp.zeros((3, K), bool).at[:, 0].set(True)
    moved = continuous_thought_forward(model, prefix, prefix_mask, full, suffix, suffix_mask, max_latent=K,
                                       slot_inputs=jnp.zeros((3, K, cfg.d_model)), replace_slots=zero_first)
    kept = continuous_thought_forward(model, prefix, prefix_mask, full, suffix, suffix_mask, max_latent=K,
                                      slot_inputs=jnp.zeros((3, K, cfg.d_model)), replace_slots=jnp.zeros((3, K), bool))
    assert float(jnp.max(jnp.abs(moved.logits - base.logits))) > 1e-3
    np.testing.assert_array_equal(np.asarray(kept.logits), np.asarray(base.logits))


def test_slot_inputs_without_their_mask_are_refused(model):
    prefix, prefix_mask, n_latent, suffix, suffix_mask, _ = latent_batch(model.cfg)
    with pytest.raises(ValueError, match="together"):
        continuous_thought_forward(model, prefix, prefix_mask, n_latent, suffix, suffix_mask, max_latent=K,
                                   slot_inputs=jnp.zeros((3, K, model.cfg.d_model)))
    with pytest.raises(ValueError, match=r"replace_slots must have shape \[3, 3\]"):
        continuous_thought_forward(model, prefix, prefix_mask, n_latent, suffix, suffix_mask, max_latent=K,
                                   slot_inputs=jnp.zeros((3, K, model.cfg.d_model)), replace_slots=jnp.ones((3, 2), bool))
