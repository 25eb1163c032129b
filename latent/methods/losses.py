"""Next-token losses. Masks come from labels (loss_mask), never from token ids: the final EOS
is labelled and may share its id with the pad token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def next_token_loss_sum(logits_BxTxV: jax.Array, tokens_BxT: jax.Array, loss_mask_BxT: jax.Array):
    """(sum of cross-entropy over labelled next tokens, number of labelled tokens).

    Position t predicts token t+1; it counts when token t+1 is labelled.
    """
    targets_BxT1 = tokens_BxT[:, 1:]
    weights_BxT1 = loss_mask_BxT[:, 1:].astype(jnp.float32)
    losses_BxT1 = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV[:, :-1].astype(jnp.float32), targets_BxT1
    )
    return jnp.sum(losses_BxT1 * weights_BxT1), jnp.sum(weights_BxT1)


def next_token_accuracy_sum(logits_BxTxV, tokens_BxT, loss_mask_BxT):
    correct = (jnp.argmax(logits_BxTxV[:, :-1], axis=-1) == tokens_BxT[:, 1:]).astype(jnp.float32)
    return jnp.sum(correct * loss_mask_BxT[:, 1:])
