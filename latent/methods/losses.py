"""Next-token losses. Masks come from labels (loss_mask), never from token ids: the final EOS
is labelled and may share its id with the pad token.

Two ways to the same sums:
- from logits [B, T, V] (`next_token_loss_sum`, `next_token_accuracy_sum`): what decoding and
  the analyses read;
- from post-final-norm hidden states and the model's head (`head_sums`, train.loss_chunk > 0):
  the head runs only at the positions that predict a labelled token (`label_positions`, latent.data.pipeline), a chunk
  of positions at a time under a scan whose body is rematerialised, so the [B, T, V] float32
  logits and their gradient are never all live: only one chunk's [B, chunk, V].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from latent import sharding
from latent.nn.transformer import LOGITS_AXES


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


# ----------------------------------------------------------------------------- from hidden states


def predictions_at(hidden_BxTxD, tokens_BxT, loss_mask_BxT, positions_BxK=None):
    """(hidden states [B, K, D] of the positions that predict, their targets [B, K], weights [B, K]
    float32). positions_BxK: int [B, K], latent.data.pipeline.label_positions's (-1: none; weight 0); None: every
    position but the last, K = T - 1 (the logits path's layout)."""
    if positions_BxK is None:
        return hidden_BxTxD[:, :-1], tokens_BxT[:, 1:], loss_mask_BxT[:, 1:].astype(jnp.float32)
    real_BxK = positions_BxK >= 0
    at_BxK = jnp.maximum(positions_BxK, 0)
    hidden_BxKxD = jnp.take_along_axis(hidden_BxTxD, at_BxK[..., None], axis=1)
    targets_BxK = jnp.take_along_axis(tokens_BxT, at_BxK + 1, axis=1)
    labelled_BxK = jnp.take_along_axis(loss_mask_BxT, at_BxK + 1, axis=1)
    return hidden_BxKxD, targets_BxK, (labelled_BxK & real_BxK).astype(jnp.float32)


def _chunk_sums(head, hidden_BxCxD, targets_BxC, weights_BxC):
    """[loss sum, count, correct count] (float32 [3]) of one chunk of positions."""
    logits_BxCxV = sharding.constrain(head(hidden_BxCxD), LOGITS_AXES).astype(jnp.float32)
    losses_BxC = optax.softmax_cross_entropy_with_integer_labels(logits_BxCxV, targets_BxC)
    correct_BxC = (jnp.argmax(logits_BxCxV, axis=-1) == targets_BxC).astype(jnp.float32)
    return jnp.stack([jnp.sum(losses_BxC * weights_BxC), jnp.sum(weights_BxC), jnp.sum(correct_BxC * weights_BxC)])


def head_sums(head, hidden_BxKxD, targets_BxK, weights_BxK, chunk: int):
    """(loss sum, count, correct count) of the predictions `head(hidden) -> logits` makes at K
    positions against `targets_BxK`, weighted by `weights_BxK`; the same sums as the logits path.

    chunk: positions per chunk (of every row at once). With K > chunk the positions are padded to
    a multiple of it (weight 0) and scanned; each chunk's body is under jax.checkpoint, so the
    backward recomputes its logits instead of keeping them. 0 or >= K: one chunk, no scan.
    """
    B, K, D = hidden_BxKxD.shape
    if chunk <= 0 or chunk >= K:
        return tuple(_chunk_sums(head, hidden_BxKxD, targets_BxK, weights_BxK))
    n_chunks = -(-K // chunk)
    pad = n_chunks * chunk - K
    hidden_BxKxD = jnp.pad(hidden_BxKxD, ((0, 0), (0, pad), (0, 0)))
    targets_BxK = jnp.pad(targets_BxK, ((0, 0), (0, pad)))
    weights_BxK = jnp.pad(weights_BxK, ((0, 0), (0, pad)))
    # [n_chunks, B, chunk, ...]: the scan walks chunks; every row keeps its batch sharding
    hidden_NxBxCxD = hidden_BxKxD.reshape(B, n_chunks, chunk, D).swapaxes(0, 1)
    targets_NxBxC = targets_BxK.reshape(B, n_chunks, chunk).swapaxes(0, 1)
    weights_NxBxC = weights_BxK.reshape(B, n_chunks, chunk).swapaxes(0, 1)
    body = jax.checkpoint(lambda h, t, w: _chunk_sums(head, h, t, w))

    def add_chunk(total_3, xs):
        return total_3 + body(*xs), None

    total_3, _ = jax.lax.scan(add_chunk, jnp.zeros((3,), jnp.float32), (hidden_NxBxCxD, targets_NxBxC, weights_NxBxC))
    return total_3[0], total_3[1], total_3[2]


def next_token_head_sums(head, hidden_BxTxD, tokens_BxT, loss_mask_BxT, chunk: int, positions_BxK=None):
    """(loss sum, labelled count, correct count) of next-token prediction from post-final-norm
    hidden states [B, T, D] and the model's head (`model.logits`): equal, within float32 rounding,
    to `next_token_loss_sum` and `next_token_accuracy_sum` of `head(hidden)`. positions_BxK: the
    batch's `label_positions` (the head runs only there); None: at every position."""
    hidden_BxKxD, targets_BxK, weights_BxK = predictions_at(hidden_BxTxD, tokens_BxT, loss_mask_BxT, positions_BxK)
    return head_sums(head, hidden_BxKxD, targets_BxK, weights_BxK, chunk)
