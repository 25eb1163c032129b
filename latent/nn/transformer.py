"""The decoder stack every mechanism in latent runs on.

Inputs are token ids, input embeddings, or both mixed by a per-position mask (a latent slot
takes a fed-back vector instead of its token's embedding; learned positions are still added,
as GPT-2 does in Coconut). Outputs are logits, the post-final-norm hidden states (what
continuous-thought recurrence feeds back) and the updated cache. Per-layer diagnostics (attention
sink, gate, activation scale) are sown when switched on: latent.nn.diagnostics.

Two hooks for the analyses that look inside (latent.eval: probes, steering), off by default:
`return_residuals=True` also returns the residual stream after every block, and `residual_add`
adds a vector to it after every block (steering: alpha * v at layer l, zeros elsewhere).

The blocks run as a Python loop over `layers` (an nnx.List of Blocks), or with `model.scan_layers` as
one `jax.lax.scan` over `layers`, then ONE Block whose parameters are stored stacked on a leading
[L] axis (one block traced and compiled; latent.nn.layer_layout converts between the layouts).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from latent import sharding
from latent.config import ModelConfig
from latent.nn.attention import make_attention
from latent.nn.canon import Canon
from latent.nn.dense import matmul
from latent.nn.diagnostics import Diagnostic
from latent.nn.feedback import make_feedback
from latent.nn.kv_cache import KVCache
from latent.nn.layer_layout import layer_slice, stack_states
from latent.nn.mlp import make_mlp
from latent.nn.norms import accumulation_dtype, make_norm
from latent.nn.positions import learned_position_rows, positions_from_padding, rotary_cos_sin

# Logical axes of the residual stream and the logits (latent.sharding.constrain): rows split over
# the batch devices like the batch, the vocabulary over `tensor` like the output layer.
ACTIVATION_AXES = ("batch", None, None)
LOGITS_AXES = ("batch", None, "vocab")


class ModelOutput(NamedTuple):
    logits: jax.Array | None  # [B, T, V] float32; None with with_logits=False
    hidden: jax.Array  # [B, T, D] after the final norm
    cache: KVCache | None
    residuals: jax.Array | None = None  # [L, B, T, D] after each block, pre-final-norm (return_residuals)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(canon(norm(x))), then + mlp(norm(.)); canon is optional."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = make_norm(cfg)
        self.canon = (
            Canon(cfg.d_model, cfg.canon, param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs) if cfg.canon else None
        )
        self.attn = make_attention(cfg, rngs=rngs)
        self.mlp_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg, rngs=rngs)
        self.diagnostics = False  # latent.nn.diagnostics.set_diagnostics switches it on

    def __call__(self, x_BxTxD, *, real_BxT=None, canon_window=None, **attn_kwargs):
        """Returns (output, (k, v), canon window for the next chunk or None).

        real_BxT: bool [B, T], True at real tokens (the canon layer skips pads; diagnostics
        average over them); None: all real.
        """
        a_BxTxD = self.attn_norm(x_BxTxD)
        if self.canon is not None:
            a_BxTxD, canon_window = self.canon(a_BxTxD, real_BxT, canon_window)
        attn_BxTxD, kv = self.attn(a_BxTxD, **attn_kwargs)
        h_BxTxD = x_BxTxD + attn_BxTxD
        out_BxTxD = h_BxTxD + self.mlp(self.mlp_norm(h_BxTxD))
        if self.diagnostics:
            real_BxT = jnp.ones(out_BxTxD.shape[:2], bool) if real_BxT is None else real_BxT
            abs_BxTxD = jnp.abs(out_BxTxD.astype(jnp.float32))
            self.sow(Diagnostic, "real_query", real_BxT)
            self.sow(Diagnostic, "max_abs_activation", jnp.max(jnp.where(real_BxT[..., None], abs_BxTxD, 0.0)))
        return out_BxTxD, kv, canon_window


def _run_block(layer: Block, x_BxTxD, real_BxT, canon_window, rotary, mask_BxTxS, kv, write_index):
    """A block's call with every input positional (nnx.remat's arguments)."""
    return layer(x_BxTxD, real_BxT=real_BxT, canon_window=canon_window, rotary=rotary, mask_BxTxS=mask_BxTxS,
                 kv_BxKxSxDh=kv, write_index=write_index)


# model.remat -> jax.checkpoint's policy: which of the block's intermediates the backward keeps
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@functools.cache
def _remat_block(remat: str):
    # graph_updates=False: a block writes no state back (diagnostics, which sow, run plain), and
    # write-back would mutate the Params from inside the engine's while_loop, a different trace
    return nnx.remat(_run_block, policy=REMAT_POLICIES[remat], graph_updates=False)


class LayerInputs(NamedTuple):
    """What every block of one call reads alike (not per layer)."""

    real_BxT: jax.Array
    rotary: tuple | None
    mask_BxTxS: jax.Array
    write_index: jax.Array


def stacked_block(blocks: list[Block]) -> Block:
    """One Block holding `blocks`' parameters stacked on a leading [L] axis (model.scan_layers);
    the blocks are built as the loop builds them, so both layouts of one seed hold the same numbers."""
    graphdefs, states = zip(*(nnx.split(block) for block in blocks))
    if any(graphdef != graphdefs[0] for graphdef in graphdefs[1:]):
        raise ValueError("model.scan_layers needs blocks of one structure; these differ between layers")
    return nnx.merge(graphdefs[0], stack_states(states))


def _scanned_block(graphdef, remat: str):
    """A pure (one layer's state, block inputs...) -> block outputs for a scan body; with the
    block's remat policy as the loop uses (so model.remat and model.scan_layers compose)."""

    def apply(state, x_BxTxD, real_BxT, canon_window, rotary, mask_BxTxS, kv, write_index):
        return _run_block(nnx.merge(graphdef, state), x_BxTxD, real_BxT, canon_window, rotary, mask_BxTxS, kv, write_index)

    if remat == "none":
        return apply
    # prevent_cse=False: a scan body is not merged with its neighbours anyway (jax.checkpoint's docs)
    return jax.checkpoint(apply, policy=REMAT_POLICIES[remat], prevent_cse=False)


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        param_dtype = jnp.dtype(cfg.param_dtype)
        self.embed = nnx.Param(
            cfg.init_std * jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), param_dtype),
            axes=("vocab", "embed"),
        )
        self.pos_embed = (
            nnx.Param(
                cfg.init_std * jax.random.normal(rngs.params(), (cfg.max_seq_len, cfg.d_model), param_dtype),
                axes=(None, "embed"),
            )
            if cfg.positions == "learned"
            else None
        )
        blocks = [Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)]  # one rng stream in both layouts
        self.layers = stacked_block(blocks) if cfg.scan_layers else nnx.List(blocks)
        self.final_norm = make_norm(cfg)
        self.feedback = make_feedback(cfg, rngs=rngs)
        self.lm_head = (
            nnx.Param(
                cfg.init_std * jax.random.normal(rngs.params(), (cfg.d_model, cfg.vocab_size), param_dtype),
                axes=("embed", "vocab"),
            )
            if not cfg.tie_embeddings
            else None
        )

    def __call__(
        self,
        tokens: jax.Array | None = None,
        *,
        embeds: jax.Array | None = None,
        embed_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        padding_mask: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        residual_add: jax.Array | None = None,
        return_residuals: bool = False,
        with_logits: bool = True,
    ) -> ModelOutput:
        """Runs the decoder on one chunk of T positions.

        tokens: int [B, T]. embeds: float [B, T, D]. With both, `embed_mask` [B, T] bool picks
          embeds where True and token embeddings elsewhere.
        positions: int [B, T]; default counts real tokens (see positions_from_padding).
        padding_mask: bool [B, T], True at real tokens (left padding expected for decoding).
        attention_mask: optional bool [B, T, S] ANDed with causal and padding masks (S = T, or
          the cache length); e.g. a bottleneck that hides chain-of-thought from the answer.
        cache: a KVCache; this chunk is written at `cache.index` and attends to all filled slots.
        residual_add: float, broadcastable to [L, B, T, D]: row l is added to the residual stream
          after block l, at every position of this chunk (steering; zeros leave a layer alone).
        return_residuals: also return the residual stream after each block (`residuals`).
        with_logits: False skips the output head (`logits` is None): a loss that applies the head
          itself where it needs it (latent.methods.losses.next_token_head_sums) never builds [B, T, V].
        """
        cfg = self.cfg
        x_BxTxD, B, T = self._input_embeddings(tokens, embeds, embed_mask)
        padding_mask_BxT = _check_mask(padding_mask, (B, T), "padding_mask")
        if padding_mask_BxT is None:
            padding_mask_BxT = jnp.ones((B, T), bool)

        if cache is not None:
            if cache.batch_size != B:
                raise ValueError(f"cache holds batch {cache.batch_size} but the inputs have batch {B}")
            if T > cache.max_len:
                raise ValueError(f"chunk of {T} positions does not fit a cache of {cache.max_len} slots")
            write_index = cache.index
            key_mask_BxS = jax.lax.dynamic_update_slice(cache.key_mask, padding_mask_BxT, (0, write_index))
            seen_B = cache.seen
        else:
            write_index = jnp.zeros((), jnp.int32)
            key_mask_BxS = padding_mask_BxT
            seen_B = None
        S = key_mask_BxS.shape[1]

        if positions is None:
            positions_BxT = positions_from_padding(padding_mask_BxT, seen_B)
        else:
            positions_BxT = _check_integer(positions, (B, T), "positions")
        if self.pos_embed is not None:
            rows_BxT = learned_position_rows(positions_BxT, cfg.max_seq_len)  # past the table: its last row
            x_BxTxD = x_BxTxD + jnp.take(self.pos_embed[...], rows_BxT, axis=0).astype(x_BxTxD.dtype)
        rotary = None
        if cfg.positions == "rope":
            precision = accumulation_dtype(cfg.dtype)
            rotary = rotary_cos_sin(positions_BxT, cfg.rotary_dim, cfg.rope_theta, precision)

        x_BxTxD = sharding.constrain(x_BxTxD, ACTIVATION_AXES)
        query_slot_T = write_index + jnp.arange(T)
        causal_TxS = jnp.arange(S)[None, :] <= query_slot_T[:, None]
        mask_BxTxS = causal_TxS[None] & key_mask_BxS[:, None, :]
        if attention_mask is not None:
            mask_BxTxS = mask_BxTxS & _check_mask(attention_mask, (B, T, S), "attention_mask")

        add_LxBxTxD = None if residual_add is None else _check_residual_add(residual_add, (cfg.n_layers, B, T, cfg.d_model))
        layer_inputs = LayerInputs(padding_mask_BxT, rotary, mask_BxTxS, write_index)
        # diagnostics sow from inside a block, which a scan body (like a remat) would trace away: with
        # them on, the blocks run as a loop, the only way each layer's values reach the module
        run_layers = self._scan_layers if cfg.scan_layers and not self._records_diagnostics() else self._loop_layers
        x_BxTxD, new_k, new_v, new_canon, residuals_LxBxTxD = run_layers(
            x_BxTxD, layer_inputs, cache, add_LxBxTxD, return_residuals
        )

        hidden_BxTxD = self.final_norm(x_BxTxD)
        logits_BxTxV = sharding.constrain(self.logits(hidden_BxTxD), LOGITS_AXES) if with_logits else None

        new_cache = None
        if cache is not None:
            new_cache = KVCache(
                k=new_k,
                v=new_v,
                key_mask=key_mask_BxS,
                seen=cache.seen + padding_mask_BxT.sum(axis=1).astype(jnp.int32),
                index=cache.index + T,
                canon=new_canon,
            )
        return ModelOutput(logits=logits_BxTxV, hidden=hidden_BxTxD, cache=new_cache, residuals=residuals_LxBxTxD)

    def _records_diagnostics(self) -> bool:
        blocks = [self.layers] if self.cfg.scan_layers else self.layers
        return any(getattr(module, "diagnostics", False) for layer in blocks for _, module in nnx.iter_modules(layer))

    def _layer_blocks(self) -> list[Block]:
        """The blocks one by one: the loop's own, or (stacked storage) a Block per layer holding that
        layer's slice of the stacked parameters, with the stacked Block's diagnostics switches."""
        if not self.cfg.scan_layers:
            return list(self.layers)
        params_L = nnx.state(self.layers, nnx.Param)
        switches = {path: module.diagnostics for path, module in nnx.iter_modules(self.layers) if hasattr(module, "diagnostics")}
        blocks = []
        for i in range(self.cfg.n_layers):
            block = nnx.eval_shape(lambda: Block(self.cfg, rngs=nnx.Rngs(0)))
            nnx.update(block, layer_slice(params_L, i))
            for path, module in nnx.iter_modules(block):
                if path in switches:
                    module.diagnostics = switches[path]
            blocks.append(block)
        return blocks

    def _sow_stacked_diagnostics(self, blocks: list[Block]) -> None:
        """The per-layer blocks' sown diagnostics, stacked over layers ([L, ...] per call), sown on the
        stacked Block at the same paths (latent.nn.diagnostics.summarize reads them per layer)."""
        recorded_L = [nnx.to_flat_state(nnx.pop(block, Diagnostic)) for block in blocks]
        for path, variable in recorded_L[0]:
            per_layer = [dict(recorded)[path].get_value() for recorded in recorded_L]
            module = self.layers
            for name in path[:-1]:
                module = getattr(module, name)
            for call, _ in enumerate(variable.get_value()):
                module.sow(Diagnostic, path[-1], jnp.stack([values[call] for values in per_layer]))

    def _loop_layers(self, x_BxTxD, inputs: LayerInputs, cache, add_LxBxTxD, return_residuals):
        """The blocks one after another in Python: each is traced (and compiled) on its own.
        Returns (x, new k per layer, new v per layer, new canon windows per layer, residuals or None)."""
        cfg = self.cfg
        new_k, new_v, new_canon, residuals = [], [], [], []
        # stacked storage runs this loop only to record diagnostics: a scan body would trace their
        # sown values away, so each layer runs as a Block of its own slice and the values are restacked
        blocks = self._layer_blocks()
        for i, layer in enumerate(blocks):
            kv = (cache.k[i], cache.v[i]) if cache is not None else None
            canon_window = cache.canon[i] if cache is not None and cfg.canon else None
            # diagnostics sow from inside the block, which a remat would trace away: they run plain
            run_block = _run_block if cfg.remat == "none" or layer.diagnostics else _remat_block(cfg.remat)
            x_BxTxD, (k_i, v_i), canon_i = run_block(
                layer, x_BxTxD, inputs.real_BxT, canon_window, inputs.rotary, inputs.mask_BxTxS, kv, inputs.write_index
            )
            x_BxTxD = self._after_block(x_BxTxD, None if add_LxBxTxD is None else add_LxBxTxD[i])
            if return_residuals:
                residuals.append(x_BxTxD)
            new_k.append(k_i)
            new_v.append(v_i)
            if cfg.canon:
                new_canon.append(canon_i)
        if cfg.scan_layers:
            self._sow_stacked_diagnostics(blocks)
        residuals_LxBxTxD = jnp.stack(residuals) if return_residuals else None
        return x_BxTxD, tuple(new_k), tuple(new_v), tuple(new_canon), residuals_LxBxTxD

    def _scan_layers(self, x_BxTxD, inputs: LayerInputs, cache, add_LxBxTxD, return_residuals):
        """The blocks as one jax.lax.scan over their parameters, stored stacked on a leading layer axis
        (`layers.attn...` [L, ...]), so a jitted caller traces and compiles one block whatever the
        depth (model.scan_layers) and nothing is copied: the scan slices the stored arrays and the
        gradient comes back in the same stacked layout. Per-layer inputs (cache
        k/v and canon windows, residual_add rows) are scanned with them; per-layer outputs come back
        stacked and the cache's are unstacked into the KVCache's per-layer tuples. Same return as
        _loop_layers."""
        cfg = self.cfg
        graphdef, state_L = nnx.split(self.layers)
        apply_block = _scanned_block(graphdef, cfg.remat)
        with_cache = cache is not None
        layer_xs = dict(
            state=state_L,
            k=jnp.stack(cache.k) if with_cache else None,
            v=jnp.stack(cache.v) if with_cache else None,
            canon=jnp.stack(cache.canon) if with_cache and cfg.canon else None,
            add=add_LxBxTxD,
        )

        def one_layer(x_BxTxD, xs):
            kv = (xs["k"], xs["v"]) if with_cache else None
            x_BxTxD, (k, v), canon_window = apply_block(
                xs["state"], x_BxTxD, inputs.real_BxT, xs["canon"], inputs.rotary, inputs.mask_BxTxS, kv, inputs.write_index
            )
            x_BxTxD = self._after_block(x_BxTxD, xs["add"])
            ys = dict(
                residual=x_BxTxD if return_residuals else None,
                k=k if with_cache else None,  # without a cache the keys are not needed: not stacked
                v=v if with_cache else None,
                canon=canon_window if with_cache and cfg.canon else None,
            )
            return x_BxTxD, ys

        x_BxTxD, ys = jax.lax.scan(one_layer, x_BxTxD, layer_xs)
        per_layer = lambda stacked: () if stacked is None else tuple(stacked)  # noqa: E731
        return x_BxTxD, per_layer(ys["k"]), per_layer(ys["v"]), per_layer(ys["canon"]), ys["residual"]

    def _after_block(self, x_BxTxD, add_BxTxD):
        """The residual stream between blocks: plus its residual_add row, constrained to its sharding."""
        if add_BxTxD is not None:
            x_BxTxD = x_BxTxD + add_BxTxD.astype(x_BxTxD.dtype)
        return sharding.constrain(x_BxTxD, ACTIVATION_AXES)

    def feed_back(self, hidden_BxD: jax.Array, logits_BxV: jax.Array) -> jax.Array:
        """The input embedding of a latent slot, from the previous position's post-final-norm
        hidden state and logits (model.feedback picks the rule; latent.nn.feedback)."""
        return self.feedback(hidden_BxD, logits_BxV, self.embed[...]).astype(jnp.dtype(self.cfg.dtype))

    def embed_tokens(self, tokens_BxT: jax.Array) -> jax.Array:
        return jnp.take(self.embed[...], tokens_BxT, axis=0).astype(jnp.dtype(self.cfg.dtype))

    def logits(self, hidden_BxTxD: jax.Array) -> jax.Array:
        """Float32 logits from post-final-norm hidden states (tied or separate output head)."""
        dtype = jnp.dtype(self.cfg.dtype)
        if self.lm_head is None:
            head_DxV = self.embed[...].astype(dtype).T
        else:
            head_DxV = self.lm_head[...].astype(dtype)
        return matmul(hidden_BxTxD.astype(dtype), head_DxV).astype(accumulation_dtype(dtype))

    def _input_embeddings(self, tokens, embeds, embed_mask):
        cfg = self.cfg
        if tokens is None and embeds is None:
            raise ValueError("pass tokens int [batch, length], embeds float [batch, length, d_model], or both")
        if tokens is not None:
            tokens = jnp.asarray(tokens)
            if not jnp.issubdtype(tokens.dtype, jnp.integer):
                raise TypeError(
                    f"tokens must be an integer array [batch, length] (int32); got dtype {tokens.dtype} "
                    f"with shape {tuple(tokens.shape)}"
                )
            if tokens.ndim != 2:
                raise ValueError(f"tokens must have rank 2 [batch, length]; got shape {tuple(tokens.shape)}")
        if embeds is not None:
            embeds = jnp.asarray(embeds)
            if embeds.ndim != 3 or embeds.shape[-1] != cfg.d_model:
                raise ValueError(
                    f"embeds must have shape [batch, length, {cfg.d_model}]; got {tuple(embeds.shape)}"
                )
            if not jnp.issubdtype(embeds.dtype, jnp.floating):
                raise TypeError(f"embeds must be floating point; got dtype {embeds.dtype}")
        dtype = jnp.dtype(cfg.dtype)
        if embeds is None:
            x_BxTxD = self.embed_tokens(tokens)
        elif tokens is None:
            x_BxTxD = embeds.astype(dtype)
        else:
            if tokens.shape != embeds.shape[:2]:
                raise ValueError(
                    f"tokens {tuple(tokens.shape)} and embeds {tuple(embeds.shape)} disagree on [batch, length]"
                )
            if embed_mask is None:
                raise ValueError("with both tokens and embeds, pass embed_mask bool [batch, length]")
            embed_mask_BxT = _check_mask(embed_mask, tuple(tokens.shape), "embed_mask")
            x_BxTxD = jnp.where(embed_mask_BxT[..., None], embeds.astype(dtype), self.embed_tokens(tokens))
        B, T = x_BxTxD.shape[:2]
        return x_BxTxD, B, T


def _check_mask(mask, shape, name):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}; got {list(mask.shape)}")
    return mask.astype(bool)


def _check_residual_add(add, shape):
    """`add` broadcast to [L, B, T, D]; a clear error naming both shapes when it does not broadcast."""
    add = jnp.asarray(add)
    if not jnp.issubdtype(add.dtype, jnp.floating):
        raise TypeError(f"residual_add must be floating point; got dtype {add.dtype}")
    try:
        return jnp.broadcast_to(add, shape)
    except ValueError:
        raise ValueError(
            f"residual_add must broadcast to [n_layers, batch, length, d_model] = {list(shape)}; got {list(add.shape)}"
        ) from None


def _check_integer(array, shape, name):
    array = jnp.asarray(array)
    if tuple(array.shape) != tuple(shape) or not jnp.issubdtype(array.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array of shape {list(shape)}; got {array.dtype}{list(array.shape)}")
    return array
