"""Sampling for RL rollouts: top-k and top-p against greedy, per-example keys, groups of samples per
prompt, log-probs against a teacher-forced replay, and the cap on total tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.errors import ConfigError
from latent.infer.engine import make_generate
from latent.infer.sampling import sample_tokens, sampling_logits
from latent.models import presets
from latent.models.vocab import AbstractVocab
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))
N = 8  # max_new_tokens
NO_EOS = -1


def _split(seed=0):
    model = Transformer(CFG, rngs=nnx.Rngs(seed))
    return model, *nnx.split(model)


def _decode(graphdef, params, prompt, *, temperature=1.0, top_p=1.0, rng=0, example_ids=None, **kw):
    prompt = jnp.asarray(prompt, jnp.int32)
    generate = make_generate(graphdef, CFG, kw.pop("max_new_tokens", N), kw.pop("eos_id", NO_EOS), 0, temperature, top_p, **kw)
    ids = None if example_ids is None else jnp.asarray(example_ids, jnp.int32)
    return generate(params, prompt, prompt != 0, jax.random.PRNGKey(rng), None, None, ids)


PROMPTS = np.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 13, 14, 15, 16]], np.int32)


# ----------------------------------------------------------------------------- top-k, top-p


def test_top_k_keeps_the_k_most_likely_and_top_p_applies_to_what_is_left():
    logits = jnp.log(jnp.asarray([[0.4, 0.3, 0.2, 0.1]]))
    draws = jax.vmap(lambda k: sample_tokens(logits, k, 1.0, 1.0, top_k=2))(jax.random.split(jax.random.PRNGKey(0), 2000))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=4) / 2000
    assert counts[2] == counts[3] == 0
    np.testing.assert_allclose(counts[:2], [0.4 / 0.7, 0.3 / 0.7], atol=0.04)
    # After top-k the first token holds 0.4 / 0.7 > 0.5 of the mass: top_p 0.5 keeps it alone
    # (on the full distribution 0.4 < 0.5 would have kept the second too).
    kept = np.isfinite(np.asarray(sampling_logits(logits, 2.0, top_p=0.5, top_k=2)[0]))
    assert list(kept) == [True, False, False, False]
    np.testing.assert_allclose(np.asarray(sampling_logits(logits, 2.0)), np.asarray(logits) / 2.0, rtol=1e-6)


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    ties = jnp.asarray([[1.0, 3.0, 3.0]])  # greedy takes the first of equal logits; so do the cuts
    for top_p, top_k in ((1.0, 1), (1e-6, 0)):
        assert int(sample_tokens(ties, jax.random.PRNGKey(5), 1.0, top_p, top_k)[0]) == 1
    _, graphdef, params = _split()
    greedy = _decode(graphdef, params, PROMPTS, temperature=0.0)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        sampled = _decode(graphdef, params, PROMPTS, temperature=1.0, rng=7, **kw)
        np.testing.assert_array_equal(np.asarray(sampled.tokens), np.asarray(greedy.tokens))
        np.testing.assert_array_equal(np.asarray(sampled.logprobs), np.asarray(greedy.logprobs))  # log pi: temperature 1
        assert (np.asarray(sampled.sample_logprobs) == 0).all()  # drawn from a point mass
    plain = _decode(graphdef, params, PROMPTS, temperature=1.0, rng=7)
    assert (np.asarray(plain.tokens) != np.asarray(greedy.tokens)).any()  # the same key draws otherwise


# ----------------------------------------------------------------------------- per-example keys, groups


def test_an_examples_sample_does_not_depend_on_its_batch():
    _, graphdef, params = _split()
    together = _decode(graphdef, params, PROMPTS, example_ids=[10, 11, 12])
    for row, example_id in enumerate([10, 11, 12]):
        real = PROMPTS[row][PROMPTS[row] != 0]
        alone = _decode(graphdef, params, real[None], example_ids=[example_id])
        np.testing.assert_array_equal(np.asarray(alone.tokens[0]), np.asarray(together.tokens[row]))
        np.testing.assert_allclose(np.asarray(alone.logprobs[0]), np.asarray(together.logprobs[row]), atol=1e-5)
    reordered = _decode(graphdef, params, PROMPTS[::-1], example_ids=[12, 11, 10])
    np.testing.assert_array_equal(np.asarray(reordered.tokens[::-1]), np.asarray(together.tokens))
    # The key is (seed, example id): another id or another seed draws another sample.
    assert (np.asarray(_decode(graphdef, params, PROMPTS, example_ids=[20, 21, 22]).tokens) != np.asarray(together.tokens)).any()
    assert (np.asarray(_decode(graphdef, params, PROMPTS, rng=1, example_ids=[10, 11, 12]).tokens)
            != np.asarray(together.tokens)).any()


def test_groups_are_prompt_major_and_each_sample_has_its_own_key():
    """group_size G: row b*G + g is sample g of prompt b. Samples of one prompt differ (temperature 1
    on a random model); sample g of a prompt is the same whatever G and whatever shares the batch."""
    _, graphdef, params = _split()
    G = 4
    out = _decode(graphdef, params, PROMPTS, group_size=G, example_ids=[10, 11, 12])
    B = len(PROMPTS)
    assert out.tokens.shape == (B * G, N) and out.lengths.shape == (B * G,) and out.truncated.shape == (B * G,)
    grouped = np.asarray(out.tokens).reshape(B, G, N)
    for b in range(B):
        samples = {tuple(s) for s in grouped[b]}
        assert len(samples) == G  # all different
        real = PROMPTS[b][PROMPTS[b] != 0]
        alone = _decode(graphdef, params, real[None], group_size=2, example_ids=[10 + b])
        np.testing.assert_array_equal(np.asarray(alone.tokens), grouped[b, :2])
    # G = 1 decodes sample 0 of each prompt.
    single = _decode(graphdef, params, PROMPTS, example_ids=[10, 11, 12])
    np.testing.assert_array_equal(np.asarray(single.tokens), grouped[:, 0])


# ----------------------------------------------------------------------------- log-probs


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def _teacher_forced_logits(model, prompt_row, emitted):
    """Logits [len(emitted), V] that predicted each emitted token, from one full pass."""
    sequence = jnp.asarray([list(prompt_row) + list(emitted)], jnp.int32)
    return np.asarray(model(sequence).logits[0, len(prompt_row) - 1 : len(prompt_row) - 1 + len(emitted)])


def test_text_logprobs_equal_a_teacher_forced_replay():
    """logprobs: log softmax of the model's logits (temperature 1, no cuts: the RL policy pi);
    sample_logprobs: under the distribution drawn from (temperature, top-k, top-p renormalised)."""
    model, graphdef, params = _split(1)
    prompts = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
    temperature, top_p, top_k = 0.7, 0.9, 10
    out = _decode(graphdef, params, prompts, temperature=temperature, top_p=top_p, top_k=top_k, rng=3)
    for b in range(2):
        tokens = list(np.asarray(out.tokens[b]))
        logits = _teacher_forced_logits(model, prompts[b], tokens)
        policy = [_log_softmax(logits[t])[tok] for t, tok in enumerate(tokens)]
        np.testing.assert_allclose(np.asarray(out.logprobs[b]), policy, atol=2e-4)
        cut = np.asarray(sampling_logits(jnp.asarray(logits), temperature, top_p, top_k))
        drawn = [_log_softmax(cut[t])[tok] for t, tok in enumerate(tokens)]
        assert np.isfinite(drawn).all()  # every token came from the kept set
        np.testing.assert_allclose(np.asarray(out.sample_logprobs[b]), drawn, atol=2e-4)
        assert not np.allclose(np.asarray(out.sample_logprobs[b]), np.asarray(out.logprobs[b]), atol=1e-2)  # q != pi


VOCAB = AbstractVocab(ids=tuple(range(20, 28)), begin_id=7, end_id=8)
ALLOWED = np.isin(np.arange(CFG.vocab_size), [*VOCAB.ids, VOCAB.end_id])
M_MAX = 3


def test_constrained_span_logprobs_are_renormalised_over_the_allowed_set():
    """A prompt opening a span: inside it both log-probs are renormalised over the abstract tokens
    and <endabstract> (q also at the temperature); a forced end has log-prob 0 in both, and is
    the only token `forced` marks."""
    model, graphdef, params = _split(2)
    prompts = np.tile(np.array([[11, 12, 13, VOCAB.begin_id]], np.int32), (6, 1))
    temperature = 1.5
    out = _decode(graphdef, params, prompts, temperature=temperature, abstract=VOCAB, abstract_max=M_MAX)
    forced = 0
    for b in range(len(prompts)):
        tokens = list(np.asarray(out.tokens[b]))
        logits = _teacher_forced_logits(model, prompts[b], tokens)
        end = tokens.index(VOCAB.end_id)
        policy, drawn = [], []
        assert list(np.flatnonzero(np.asarray(out.forced[b]))) == ([end] if end == M_MAX else [])
        for t, tok in enumerate(tokens):
            if t < end or (t == end and end < M_MAX):  # chosen inside the span
                allowed = np.where(ALLOWED, logits[t], -np.inf)
                policy.append(_log_softmax(allowed)[tok])
                drawn.append(_log_softmax(allowed / temperature)[tok])
            elif t == end:  # the span is full: the end is forced
                policy.append(0.0)
                drawn.append(0.0)
                forced += 1
            else:
                break  # after the span: free text (covered by the text test)
        np.testing.assert_allclose(np.asarray(out.logprobs[b, : len(policy)]), policy, atol=2e-4)
        np.testing.assert_allclose(np.asarray(out.sample_logprobs[b, : len(drawn)]), drawn, atol=2e-4)
    assert 0 < forced < len(prompts)  # both kinds of end were checked


# ----------------------------------------------------------------------------- the cap on total tokens


def test_total_token_cap_stops_generation_and_marks_it_truncated():
    """prompt + generated (+ latent steps) <= max_total_tokens: each example stops at its own
    real length; what it emitted is the uncapped decoding's prefix."""
    _, graphdef, params = _split()
    free = _decode(graphdef, params, PROMPTS, temperature=0.0)
    capped = _decode(graphdef, params, PROMPTS, temperature=0.0, max_total_tokens=9)
    prompt_lengths = (PROMPTS != 0).sum(1)  # 3, 5, 4
    assert list(np.asarray(capped.lengths)) == list(9 - prompt_lengths)
    assert np.asarray(capped.truncated).all() and np.asarray(free.truncated).all()  # no EOS: -1
    for b, length in enumerate(9 - prompt_lengths):
        np.testing.assert_array_equal(np.asarray(capped.tokens[b, :length]), np.asarray(free.tokens[b, :length]))
        assert (np.asarray(capped.tokens[b, length:]) == 0).all()
    # A prompt as long as the cap emits nothing.
    assert list(np.asarray(_decode(graphdef, params, PROMPTS, temperature=0.0, max_total_tokens=4).lengths)) == [1, 0, 0]
    # An example that emits EOS is not truncated, one stopped by the cap in the same batch is.
    eos = int(free.tokens[0, 1])
    assert eos not in np.asarray(free.tokens[1, :3])
    mixed = _decode(graphdef, params, PROMPTS[:2], temperature=0.0, eos_id=eos, max_total_tokens=8)
    assert list(np.asarray(mixed.lengths)) == [2, 3] and list(np.asarray(mixed.truncated)) == [False, True]


BOT, EOT, SWI, SWI_END = 2, 3, 5, 6


def test_total_token_cap_counts_thoughts_and_latent_steps():
    model, graphdef, params = _split()
    prompt = np.array([[11, 12, 13, BOT]], np.int32)
    # Coconut: 4 prompt tokens + 2 thoughts + <eot> leave 3 of 10 positions to emit.
    fixed = _decode(graphdef, params, prompt, temperature=0.0, policy="fixed", latent_steps=2, eot_id=EOT,
                    max_total_tokens=10)
    assert int(fixed.lengths[0]) == 3 and int(fixed.latent_steps[0]) == 2 and bool(fixed.truncated[0])
    # SWITCH with a model that always opens a span: emitted tokens + latent steps fill the rest.
    hidden = model(jnp.asarray([[7, 8, 9, 10]], jnp.int32)).hidden
    model.lm_head[...] = model.lm_head[...].at[:, SWI].set(100.0 * jnp.sign(hidden.mean((0, 1))))
    graphdef, params = nnx.split(model)
    out = _decode(graphdef, params, [[7, 8, 9, 10]], temperature=0.0, policy="model", latent_budget=2,
                  max_latent_total=4, swi_id=SWI, swi_end_id=SWI_END, max_new_tokens=12, max_total_tokens=11)
    assert list(np.asarray(out.tokens[0, :3])) == [SWI, SWI_END, SWI]  # the second span is cut by the cap
    assert int(out.lengths[0]) + int(out.latent_steps[0]) == 11 - 4
    assert int(out.latent_steps[0]) == 4 and bool(out.truncated[0])


def test_a_total_token_cap_past_a_learned_position_table_is_refused():
    """Learned positions have model.max_seq_len rows: a cap past them is refused, naming both; a
    cap within them, and any cap of a rotary model, is not."""
    learned = presets.gpt2(vocab_size=50, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_seq_len=16)
    graphdef = nnx.split(Transformer(learned, rngs=nnx.Rngs(0)))[0]
    with pytest.raises(ConfigError, match=r"model.max_seq_len=16 \(learned positions\) is shorter than the generation "
                                          r"cap: max_total_tokens=17 = 17 positions"):
        make_generate(graphdef, learned, N, NO_EOS, 0, 0.0, 1.0, max_total_tokens=17)
    make_generate(graphdef, learned, N, NO_EOS, 0, 0.0, 1.0, max_total_tokens=16)
    rotary_graphdef = _split()[1]
    make_generate(rotary_graphdef, CFG, N, NO_EOS, 0, 0.0, 1.0, max_total_tokens=CFG.max_seq_len + 1)
