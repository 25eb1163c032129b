"""Abstract vocabularies added to any tokenizer and model: ids, grown tables, row init rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx
from tokenizers import models, pre_tokenizers, trainers

from latent.config import ConfigError
from latent.data.tokenizer import Tokenizer
from latent.models import presets
from latent.models.vocab import abstract_vocab_of, add_abstract_vocabulary, init_token_rows, resize_vocab
from latent.nn import Transformer


def _bpe_tokenizer() -> Tokenizer:
    """A small byte-level BPE tokenizer with none of the project's special tokens (like GPT-2's)."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["every cat is a mammal", "is tom a cat or a dog"] * 20, trainer=trainer)
    return Tokenizer(backend)


def test_abstract_tokens_are_added_to_a_bpe_tokenizer_as_single_ids():
    tok = _bpe_tokenizer()
    before = tok.vocab_size
    with pytest.raises(ConfigError, match=r"lacks 10 of them.*<abs_0>"):
        abstract_vocab_of(tok, 8)
    vocab = add_abstract_vocabulary(tok, 8)
    assert tok.vocab_size == before + 10
    assert vocab.size == 8 and len(set(vocab.all_ids)) == 10 and min(vocab.all_ids) >= before
    ids = tok.encode("cat<beginabstract><abs_3><abs_7><endabstract> dog")
    assert ids[ids.index(vocab.begin_id) : ids.index(vocab.end_id) + 1] == [vocab.begin_id, vocab.ids[3], vocab.ids[7], vocab.end_id]
    assert add_abstract_vocabulary(tok, 8) == vocab and tok.vocab_size == before + 10  # idempotent


def test_word_level_tokenizers_carry_the_abstract_vocabulary_already():
    tok = Tokenizer.fit_word_level(["Tom is a cat."], num_abstract=16)
    vocab = abstract_vocab_of(tok, 16)
    assert vocab.ids == tuple(tok.id_of(f"<abs_{i}>") for i in range(16))
    with pytest.raises(ConfigError, match="abstract.num_tokens=32"):
        abstract_vocab_of(tok, 32)


@pytest.mark.parametrize("tied", [False, True])
def test_resize_keeps_old_rows_and_init_rules_set_new_ones(tied):
    cfg = presets.llama(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=tied)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    _, params = nnx.split(model)
    old_embed = np.asarray(params["embed"][...])
    new_cfg, params = resize_vocab(cfg, params, 70)
    assert new_cfg.vocab_size == 128 and params["embed"][...].shape == (128, 16)
    np.testing.assert_array_equal(np.asarray(params["embed"][...][:64]), old_embed)
    assert ("lm_head" in params) == (not tied)
    if not tied:
        assert params["lm_head"][...].shape == (16, 128)

    new_ids = list(range(64, 70))
    init_token_rows(params, new_ids, "mean", jax.random.PRNGKey(0), reference_rows=64)
    embed = np.asarray(params["embed"][...])
    np.testing.assert_allclose(embed[64:70], np.broadcast_to(old_embed.mean(0), (6, 16)), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(embed[:64], old_embed)
    if not tied:
        head = np.asarray(params["lm_head"][...])
        np.testing.assert_allclose(head[:, 64:70], np.broadcast_to(head[:, :64].mean(1, keepdims=True), (16, 6)), atol=1e-7)

    init_token_rows(params, [65], "copy", jax.random.PRNGKey(0), source_id=3)
    np.testing.assert_array_equal(np.asarray(params["embed"][...][65]), old_embed[3])

    init_token_rows(params, new_ids, "random", jax.random.PRNGKey(1), init_std=0.02)
    rows = np.asarray(params["embed"][...][64:70])
    assert 0.01 < rows.std() < 0.03 and len({tuple(r) for r in rows}) == 6

    # the grown model runs and its logits cover the new ids
    grown = nnx.merge(nnx.split(Transformer(new_cfg, rngs=nnx.Rngs(0)))[0], params)
    assert grown(jnp.asarray([[1, 65, 69]], jnp.int32)).logits.shape == (1, 3, 128)


def test_bad_rule_and_ids_are_named():
    cfg = presets.llama(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError, match="abstract.init='zeros'"):
        init_token_rows(params, [1], "zeros", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="do not fit the embedding table of 64 rows"):
        init_token_rows(params, [64], "mean", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="needs source_id"):
        init_token_rows(params, [3], "copy", jax.random.PRNGKey(0))
