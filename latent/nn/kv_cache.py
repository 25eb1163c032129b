"""Preallocated KV cache: an explicit pytree a jitted decode loop can carry and donate.

All examples of a batch write to the same slot (`index`): prompts are left-padded so their
last tokens line up, and `key_mask` records which slots hold real tokens. Each example's
next position id is `seen` (real tokens written so far), so pads never shift positions.
With `model.canon`, each layer's last `canon` attention inputs ride along (latent.nn.canon).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
    # head-major: a decode step's dots batch over (b, k), which XLA's CPU backend wants leading;
    # stored [B, S, K, Dh], the cache was copied transposed at every layer of every decode step
    k: tuple[jax.Array, ...]  # per layer [B, K, S, Dh]
    v: tuple[jax.Array, ...]  # per layer [B, K, S, Dh]
    key_mask: jax.Array  # [B, S] bool: slot holds a real token
    seen: jax.Array  # [B] int32: real tokens written so far = next position id
    index: jax.Array  # [] int32: next slot to write (shared by the batch)
    canon: tuple[jax.Array, ...] = ()  # per layer [B, canon, D]: last inputs of the canon window

    @classmethod
    def init(cls, cfg, batch_size: int, max_len: int | None = None, dtype=None) -> KVCache:
        max_len = cfg.max_seq_len if max_len is None else max_len
        dtype = jnp.dtype(cfg.dtype if dtype is None else dtype)
        shape = (batch_size, cfg.resolved_kv_heads, max_len, cfg.resolved_head_dim)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers))
        return cls(
            k=zeros,
            v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)),
            key_mask=jnp.zeros((batch_size, max_len), bool),
            seen=jnp.zeros((batch_size,), jnp.int32),
            index=jnp.zeros((), jnp.int32),
            canon=tuple(jnp.zeros((batch_size, cfg.canon, cfg.d_model), dtype) for _ in range(cfg.n_layers))
            if cfg.canon
            else (),
        )

    def grow(self, slots: int) -> KVCache:
        """This cache with `slots` more empty slots at the end (keys, values and key_mask); what is
        written stays where it is. A prompt prefilled into a cache of its own length attends over
        its P slots only, not also over the slots its decoding will fill."""
        if slots == 0:
            return self
        pad_kv = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, slots), (0, 0)))
        return self.replace(k=tuple(map(pad_kv, self.k)), v=tuple(map(pad_kv, self.v)),
                            key_mask=jnp.pad(self.key_mask, ((0, 0), (0, slots))))

    @property
    def max_len(self) -> int:
        return self.key_mask.shape[1]

    @property
    def batch_size(self) -> int:
        return self.key_mask.shape[0]
