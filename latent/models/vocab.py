"""Growing a tokenizer and a model by new tokens: abstract vocabularies and marker tokens.

    vocab = add_abstract_vocabulary(tokenizer, num_tokens=64)   # <abs_0..63> <beginabstract> <endabstract>
    cfg, params = resize_vocab(cfg, params, tokenizer.vocab_size)
    params = init_token_rows(params, vocab.all_ids, "mean", rng, reference_rows=old_vocab_size)
    # or all at once, with a named rule ("random", "mean", "copy:<token>"):
    cfg, params, added = grow_by_tokens(cfg, params, tokenizer, ["<bot>", "<eot>"], "copy:<<")

Rules for the new rows (input embedding rows, and output-head columns when untied):
  random  normal with the model's init_std (what a fresh model would have had);
  mean    the mean of the reference rows (the tokens the model already knows), so a new token
          starts as an "average" token: its logit is the mean logit and its embedding lies in
          the span of the trained ones;
  copy    the row of one existing token (Coconut initialises its markers from `<<`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp

from latent.config import ConfigError, ModelConfig, TokenInit
from latent.data.shapes import round_up
from latent.data.special_tokens import SPECIAL, abstract_tokens

InitRule = Literal[TokenInit, "copy"]
INIT_RULES = typing.get_args(InitRule)


@dataclasses.dataclass(frozen=True)
class AbstractVocab:
    """Token ids of an abstract vocabulary (hashable: jitted decoders take it as a static)."""

    ids: tuple[int, ...]  # <abs_0> .. <abs_{M-1}>
    begin_id: int  # <beginabstract>
    end_id: int  # <endabstract>

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def all_ids(self) -> tuple[int, ...]:
        return (*self.ids, self.begin_id, self.end_id)


def abstract_vocab_of(tokenizer, num_tokens: int) -> AbstractVocab:
    """The abstract vocabulary already in `tokenizer`; ConfigError naming what is missing."""
    names = [*abstract_tokens(num_tokens), SPECIAL.begin_abstract, SPECIAL.end_abstract]
    missing = [t for t in names if tokenizer.token_to_id(t) is None]
    if missing:
        shown = missing if len(missing) <= 6 else [*missing[:3], "...", *missing[-2:]]
        raise ConfigError(
            f"abstract.num_tokens={num_tokens} needs {len(names)} tokens; the tokenizer lacks {len(missing)} "
            f"of them: {shown} (add them with latent.models.vocab.add_abstract_vocabulary)"
        )
    ids = [tokenizer.token_to_id(t) for t in names]
    return AbstractVocab(ids=tuple(ids[:num_tokens]), begin_id=ids[-2], end_id=ids[-1])


def add_abstract_vocabulary(tokenizer, num_tokens: int = 64) -> AbstractVocab:
    """Add `<abs_0>..<abs_{M-1}>`, `<beginabstract>` and `<endabstract>` to any tokenizer
    (tokens it already has keep their ids) and return their ids."""
    tokenizer.add_special_tokens([*abstract_tokens(num_tokens), SPECIAL.begin_abstract, SPECIAL.end_abstract])
    return abstract_vocab_of(tokenizer, num_tokens)


def resize_vocab(cfg: ModelConfig, params, vocab_size: int, *, round_to: int = 64, seed: int = 0):
    """(cfg, params) with room for `vocab_size` tokens (rounded up to `round_to`); new rows are
    drawn like a fresh model's (normal, init_std). A table already big enough is left as it is.
    `params` (a model's nnx.State) is updated in place and returned."""
    new_size = round_up(vocab_size, round_to)
    if new_size <= cfg.vocab_size:
        return cfg, params
    extra = new_size - cfg.vocab_size
    embed_key, head_key = jax.random.split(jax.random.PRNGKey(seed))
    embed_VxD = params["embed"][...]
    new_rows_ExD = cfg.init_std * jax.random.normal(embed_key, (extra, cfg.d_model), embed_VxD.dtype)
    params["embed"].set_value(jnp.concatenate([embed_VxD, new_rows_ExD], axis=0))
    if "lm_head" in params and params["lm_head"] is not None:
        head_DxV = params["lm_head"][...]
        new_cols_DxE = cfg.init_std * jax.random.normal(head_key, (cfg.d_model, extra), head_DxV.dtype)
        params["lm_head"].set_value(jnp.concatenate([head_DxV, new_cols_DxE], axis=1))
    return cfg.replace(vocab_size=new_size), params


def init_token_rows(
    params,
    token_ids,
    rule: InitRule,
    rng: jax.Array,
    *,
    init_std: float = 0.02,
    reference_rows: int | None = None,
    source_id: int | None = None,
):
    """Set the embedding rows (and untied output-head columns) of `token_ids` by `rule`.

    reference_rows: rows [0, reference_rows) minus `token_ids` are the known tokens whose mean
      the `mean` rule takes (default: the whole table); pass the pre-growth tokenizer size so
      untrained padding rows do not dilute it.
    source_id: the token the `copy` rule copies.
    `params` (a model's nnx.State) is updated in place and returned.
    """
    if rule not in INIT_RULES:
        raise ConfigError(f"abstract.init={rule!r} is not allowed; choose one of {INIT_RULES}")
    embed_VxD = params["embed"][...]
    V = embed_VxD.shape[0]
    ids = jnp.asarray(sorted(set(int(i) for i in token_ids)), jnp.int32)
    if ids.size and (int(ids.max()) >= V or int(ids.min()) < 0):
        raise ValueError(f"token ids {int(ids.min())}..{int(ids.max())} do not fit the embedding table of {V} rows")
    if rule == "copy" and (source_id is None or not 0 <= source_id < V):
        raise ValueError(f"rule 'copy' needs source_id in [0, {V}); got {source_id!r}")
    n_ref = V if reference_rows is None else reference_rows
    reference_V = (jnp.arange(V) < n_ref) & ~jnp.isin(jnp.arange(V), ids)

    def new_values(table_VxD, key):
        if rule == "random":
            return init_std * jax.random.normal(key, (ids.size, table_VxD.shape[1]), table_VxD.dtype)
        if rule == "mean":
            weights_V = reference_V.astype(table_VxD.dtype)
            mean_D = weights_V @ table_VxD / jnp.maximum(weights_V.sum(), 1.0)
            return jnp.broadcast_to(mean_D, (ids.size, table_VxD.shape[1]))
        return jnp.broadcast_to(table_VxD[source_id], (ids.size, table_VxD.shape[1]))

    embed_key, head_key = jax.random.split(rng)
    params["embed"].set_value(embed_VxD.at[ids].set(new_values(embed_VxD, embed_key)))
    if "lm_head" in params and params["lm_head"] is not None:
        head_VxD = params["lm_head"][...].T
        params["lm_head"].set_value(head_VxD.at[ids].set(new_values(head_VxD, head_key)).T)
    return params


# ----------------------------------------------------------------------------- named rules


def parse_init_rule(spec: str, tokenizer, *, field: str = "train.new_token_init") -> tuple[InitRule, int | None]:
    """(rule, source id) of a rule name: `random`, `mean` or `copy:<token>`, where <token> must be
    one id of `tokenizer` (a vocabulary entry, or text that encodes to exactly one id)."""
    if spec in typing.get_args(TokenInit):
        return spec, None
    if not spec.startswith("copy:") or spec == "copy:":
        names = ", ".join(typing.get_args(TokenInit))
        raise ConfigError(f"{field}={spec!r} is not allowed; choose {names} or copy:<token>")
    token = spec.removeprefix("copy:")
    source_id = tokenizer.token_to_id(token)
    if source_id is None:
        ids = tokenizer.encode(token)
        if len(ids) != 1:
            raise ConfigError(
                f"{field}={spec!r}: {token!r} is not a single token of the tokenizer "
                f"(it encodes to {len(ids)} ids: {ids[:8]}); pick a token that is one id"
            )
        source_id = ids[0]
    return "copy", source_id


def grow_by_tokens(cfg: ModelConfig, params, tokenizer, tokens, spec: str, *, seed: int = 0,
                   field: str = "train.new_token_init"):
    """Add `tokens` to `tokenizer` as single special ids (tokens it has keep their ids), grow the
    embedding (and untied head) to fit, and set the new tokens' rows by rule `spec`.

    Returns (cfg, params, {token: id} of the tokens that were new). The `copy` source and the
    `mean` reference are the tokens known before the growth.
    """
    new_tokens = [t for t in dict.fromkeys(tokens) if tokenizer.token_to_id(t) is None]
    if not new_tokens:
        return cfg, params, {}
    rule, source_id = parse_init_rule(spec, tokenizer, field=field)
    known_rows = tokenizer.vocab_size
    tokenizer.add_special_tokens(new_tokens)
    added = {t: tokenizer.id_of(t) for t in new_tokens}
    cfg, params = resize_vocab(cfg, params, tokenizer.vocab_size, seed=seed)
    params = init_token_rows(params, list(added.values()), rule, jax.random.PRNGKey(seed),
                             init_std=cfg.init_std, reference_rows=known_rows, source_id=source_id)
    return cfg, params, added
