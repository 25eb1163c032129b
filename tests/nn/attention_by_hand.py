"""Layer 0's attention in numpy, the reference the diagnostics and the attention analysis are
checked against (tests/nn/test_diagnostics.py, tests/eval/test_attention_analysis.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def first_layer_by_hand(model, tokens_BxT, real_BxT) -> tuple[np.ndarray, np.ndarray]:
    """Layer 0 of a GPT-2-style model (learned positions, no rotary) in float64, over the real
    queries in row order: each one's softmax weight on its example's first real key per head
    ([N, H]), and its sigmoid gate values ([N, H, W]; W = 0 ungated)."""
    cfg = model.cfg
    H, K, Dh, W = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim, cfg.gate_width
    attn = model.layers[0].attn
    tokens_BxT, real_BxT = np.asarray(tokens_BxT), np.asarray(real_BxT)
    positions_BxT = np.maximum(np.cumsum(real_BxT, axis=1) - 1, 0)
    x_BxTxD = model.embed_tokens(jnp.asarray(tokens_BxT)) + model.pos_embed[...][positions_BxT]
    a_BxTxD = model.layers[0].attn_norm(x_BxTxD)
    q_and_gate_BxTxHxQ = np.asarray(attn.q_proj(a_BxTxD), np.float64).reshape(*tokens_BxT.shape, H, Dh + W)
    q_BxTxHxDh = q_and_gate_BxTxHxQ[..., :Dh]
    gate_BxTxHxW = 1 / (1 + np.exp(-q_and_gate_BxTxHxQ[..., Dh:]))
    k_BxTxKxDh = np.asarray(attn.k_proj(a_BxTxD), np.float64).reshape(*tokens_BxT.shape, K, Dh)
    on_first_NxH, gates_NxHxW = [], []
    for b in range(len(tokens_BxT)):
        first = int(np.argmax(real_BxT[b]))  # the first real key: not slot 0 in a padded row
        for t in np.flatnonzero(real_BxT[b]):
            visible_S = np.flatnonzero(real_BxT[b, : t + 1])
            shares_H = []
            for h in range(H):
                logits_S = k_BxTxKxDh[b, visible_S, h // (H // K)] @ q_BxTxHxDh[b, t, h] / np.sqrt(Dh)
                p_S = np.exp(logits_S - logits_S.max())
                shares_H.append(p_S[visible_S == first].sum() / p_S.sum())
            on_first_NxH.append(shares_H)
            gates_NxHxW.append(gate_BxTxHxW[b, t])
    return np.asarray(on_first_NxH), np.stack(gates_NxHxW)
