"""Constrained abstract decoding: inside a span only abstract tokens and the end delimiter, the
end forced at m_max, unconstrained outside; log-probs under the renormalised distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.infer.engine import make_generate
from latent.models import presets
from latent.models.vocab import AbstractVocab
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))
VOCAB = AbstractVocab(ids=tuple(range(20, 28)), begin_id=7, end_id=8)
ALLOWED = np.isin(np.arange(CFG.vocab_size), [*VOCAB.ids, VOCAB.end_id])
M_MAX = 3


def _uncached_logits(model, prompt_row, emitted):
    """Logits [len(emitted), V] that predicted each emitted token, from full passes."""
    sequence = jnp.asarray([list(prompt_row) + list(emitted)], jnp.int32)
    logits = model(sequence).logits[0]
    return np.asarray(logits[len(prompt_row) - 1 : len(prompt_row) - 1 + len(emitted)])


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def test_prompt_opening_a_span_decodes_abstract_tokens_then_forced_end_then_free_text():
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    prompt = np.array([[11, 12, 13, VOCAB.begin_id]], np.int32)
    out = make_generate(graphdef, CFG, 8, -1, 0, 0.0, 1.0, abstract=VOCAB, abstract_max=M_MAX)(
        params, jnp.asarray(prompt), jnp.ones(prompt.shape, bool), jax.random.PRNGKey(0)
    )
    tokens = list(np.asarray(out.tokens[0]))
    logits = _uncached_logits(model, prompt[0], tokens)
    end = tokens.index(VOCAB.end_id)
    assert end <= M_MAX
    for t in range(end):  # greedy over the allowed set only
        assert tokens[t] in VOCAB.ids
        assert tokens[t] == int(np.argmax(np.where(ALLOWED, logits[t], -np.inf)))
    for t in range(end + 1, len(tokens)):  # after the span: plain greedy over the whole vocabulary
        assert tokens[t] == int(np.argmax(logits[t]))
    assert int(out.abstract_tokens[0]) == end
    np.testing.assert_allclose(
        np.asarray(out.logprobs[0]), _reference_logprobs(logits, tokens, in_span=True), atol=2e-4
    )
    # The constraint is real: unconstrained greedy decoding leaves the abstract set at once.
    free = make_generate(graphdef, CFG, 8, -1, 0, 0.0, 1.0)(
        params, jnp.asarray(prompt), jnp.ones(prompt.shape, bool), jax.random.PRNGKey(0)
    )
    assert int(free.tokens[0, 0]) not in VOCAB.ids


def _reference_logprobs(logits, tokens, in_span=False):
    """Log pi of each token, replaying the span state machine on full-pass logits."""
    expected, count = [], 0
    for t, token in enumerate(tokens):
        if in_span and count >= M_MAX:
            assert token == VOCAB.end_id  # forced
            expected.append(0.0)
        elif in_span:
            expected.append(_log_softmax(np.where(ALLOWED, logits[t], -np.inf))[token])
        else:
            expected.append(_log_softmax(logits[t])[token])
        if token == VOCAB.begin_id and not in_span:
            in_span, count = True, 0
        elif token == VOCAB.end_id and in_span:
            in_span = False
        elif in_span:
            count += 1
    return expected


def test_model_opened_span_is_forced_closed_at_m_max_and_logprobs_are_renormalised():
    """A model pinned to prefer <beginabstract> opens a span, writes M_MAX abstract tokens (it
    cannot choose <beginabstract> inside), is forced to close it; log-probs match full passes."""
    model = Transformer(CFG, rngs=nnx.Rngs(1))
    hidden = model(jnp.asarray([[9, 10, 11]], jnp.int32)).hidden
    model.lm_head[...] = model.lm_head[...].at[:, VOCAB.begin_id].set(100.0 * jnp.sign(hidden[0, -1]))
    graphdef, params = nnx.split(model)
    prompt = np.array([[9, 10, 11], [9, 10, 11]], np.int32)  # two samples of the same prompt
    out = make_generate(graphdef, CFG, 10, -1, 0, 1.0, 1.0, abstract=VOCAB, abstract_max=M_MAX)(
        params, jnp.asarray(prompt), jnp.ones(prompt.shape, bool), jax.random.PRNGKey(2)
    )
    for b in range(2):
        tokens = list(np.asarray(out.tokens[b]))
        assert tokens[0] == VOCAB.begin_id and tokens[M_MAX + 1] == VOCAB.end_id
        assert all(t in VOCAB.ids for t in tokens[1 : M_MAX + 1])
        n_spans = tokens.count(VOCAB.begin_id)
        assert M_MAX <= int(out.abstract_tokens[b]) <= n_spans * M_MAX
        logits = _uncached_logits(model, prompt[b], tokens)
        np.testing.assert_allclose(np.asarray(out.logprobs[b]), _reference_logprobs(logits, tokens), atol=2e-4)


def _span_tokens(tokens):
    """The token lists of the spans opened by <beginabstract> in `tokens` (text mode at start)."""
    spans, current = [], None
    for token in tokens:
        if current is None and token == VOCAB.begin_id:
            current = []
        elif current is not None and token == VOCAB.end_id:
            spans.append(current)
            current = None
        elif current is not None:
            current.append(token)
    return spans + ([current] if current is not None else [])


def test_sampled_spans_stay_in_the_abstract_set():
    graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(2)))
    prompt = jnp.tile(jnp.asarray([[15, 16, VOCAB.begin_id]], jnp.int32), (64, 1))
    out = make_generate(graphdef, CFG, 6, -1, 0, 1.0, 1.0, abstract=VOCAB, abstract_max=M_MAX)(
        params, prompt, jnp.ones(prompt.shape, bool), jax.random.PRNGKey(0)
    )
    tokens = np.asarray(out.tokens)
    for row, n_abstract in zip(tokens, np.asarray(out.abstract_tokens)):
        end = list(row).index(VOCAB.end_id)  # every span is closed, by choice or at M_MAX
        assert end <= M_MAX and all(t in VOCAB.ids for t in row[:end])
        later_spans = _span_tokens(list(row[end + 1 :]))
        assert n_abstract == end + sum(len(span) for span in later_spans)
        assert all(len(span) <= M_MAX and all(t in VOCAB.ids for t in span) for span in later_spans)
    assert len({tuple(r[:M_MAX]) for r in tokens}) > 10  # samples differ: the draws are random
