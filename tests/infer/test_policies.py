"""Each switching policy's step function on a hand-made loop state, the abstract constraint as a
logits transform, and a policy registered from outside the engine (how a fork adds one)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.infer import policies
from latent.infer.constrained import AbstractConstraint
from latent.infer.engine import make_generate
from latent.infer.policies import PolicyConfig, entropy, entropy_step, model_step, text_step
from latent.infer.state import LATENT, TEXT, Decision, DecodeState
from latent.models import presets
from latent.models.vocab import AbstractVocab
from latent.nn import Transformer

V = 12
SWI, SWI_END = 5, 6


def _state(*, logits, mode, span=None, switches=None, latent_total=None, ref_entropy=None, **fields) -> DecodeState:
    """A loop state of B = len(mode) examples: what a step function reads, the rest zeros."""
    B = len(mode)
    ints = lambda x: jnp.asarray(np.zeros(B) if x is None else x, jnp.int32)
    defaults = dict(
        iteration=jnp.zeros((), jnp.int32), logits_BxV=jnp.asarray(logits, jnp.float32), hidden_BxD=jnp.zeros((B, 4)),
        cache=None, keys_B=jnp.zeros((B, 2), jnp.uint32), mode_B=ints(mode), span_B=ints(span),
        switches_B=ints(switches), latent_total_B=ints(latent_total),
        ref_entropy_B=jnp.asarray(np.zeros(B) if ref_entropy is None else ref_entropy, jnp.float32),
        tokens_BxN=jnp.zeros((B, 4), jnp.int32), logprobs_BxN=jnp.zeros((B, 4)), sample_logprobs_BxN=jnp.zeros((B, 4)),
        forced_BxN=jnp.zeros((B, 4), bool), lengths_B=ints(None), positions_B=ints(None), done_B=jnp.zeros((B,), bool),
        in_abstract_B=jnp.zeros((B,), bool), abstract_count_B=ints(None), abstract_total_B=ints(None),
    )
    return DecodeState(**(defaults | fields))


def _peaked(argmax: int, height: float = 5.0) -> np.ndarray:
    row = np.zeros(V, np.float32)
    row[argmax] = height
    return row


def _as_lists(decision: Decision) -> dict:
    return {k: np.asarray(v).tolist() for k, v in vars(decision).items()}


def test_text_step_emits_what_was_sampled():
    state = _state(logits=[_peaked(1), _peaked(2)], mode=[TEXT, TEXT], ref_entropy=[0.5, 0.7])
    d = _as_lists(text_step(state, jnp.asarray([3, 4], jnp.int32), PolicyConfig()))
    assert d["token_B"] == [3, 4] and d["latent_B"] == [False, False] and d["switched_B"] == [False, False]
    assert d["mode_B"] == [TEXT, TEXT] and d["ref_entropy_B"] == pytest.approx([0.5, 0.7])


def test_model_step_enters_on_swi_and_leaves_on_a_drawn_end_or_budget():
    """At a latent position the sampler's draw decides (greedy: the argmax): </swi> drawn closes
    the span as a sampled token; anything else goes on, a drawn decision (stayed); the budget
    forces </swi>."""
    cfg = PolicyConfig(latent_budget=3, max_latent_total=6, swi_id=SWI, swi_end_id=SWI_END)
    cases = [  # (mode, span, latent_total, argmax of the logits, sampled) -> what the step must do
        (TEXT, 0, 0, 1, SWI),  # 0: <swi> sampled in text mode: enter
        (TEXT, 0, 6, 1, SWI),  # 1: <swi> sampled, the total cap reached: stays text, <swi> is text
        (TEXT, 0, 0, SWI_END, 9),  # 2: text mode ignores a predicted </swi>
        (LATENT, 0, 1, SWI_END, SWI_END),  # 3: the <swi> position draws </swi>: still thinks once
        (LATENT, 1, 1, 1, SWI_END),  # 4: a latent position draws </swi>: leave, a sampled token
        (LATENT, 3, 3, 1, 9),  # 5: the span holds latent_budget steps: leave, </swi> forced
        (LATENT, 1, 6, 1, 9),  # 6: the total cap reached inside a span: leave, forced
        (LATENT, 1, 2, 1, 9),  # 7: keep thinking, drawn
        (LATENT, 1, 2, SWI_END, 9),  # 8: </swi> is the argmax but another token was drawn: keep thinking
    ]
    mode, span, total, argmax, sampled = (list(c) for c in zip(*cases))
    state = _state(logits=[_peaked(a) for a in argmax], mode=mode, span=span, latent_total=total)
    d = _as_lists(model_step(state, jnp.asarray(sampled, jnp.int32), cfg))
    assert d["latent_B"] == [False, False, False, True, False, False, False, True, True]
    assert d["mode_B"] == [LATENT, TEXT, TEXT, LATENT, TEXT, TEXT, TEXT, LATENT, LATENT]
    assert d["switched_B"] == [True, False, False, False, True, True, True, False, False]
    assert d["forced_B"] == [False, False, False, False, False, True, True, False, False]
    assert d["stayed_B"] == [False, False, False, False, False, False, False, True, True]  # 3: could not close
    emitted = [tok for tok, latent in zip(d["token_B"], d["latent_B"]) if not latent]
    assert emitted == [SWI, SWI, 9, SWI_END, SWI_END, SWI_END]


def _logits_with_entropy(target: float) -> np.ndarray:
    """A row whose softmax has entropy `target`: one logit a, the rest 0; bisect on a."""
    low, high = 0.0, 60.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if float(entropy(jnp.asarray(_peaked(0, mid)))) > target else (low, mid)
    return _peaked(0, (low + high) / 2)


def test_entropy_step_follows_the_trend_against_the_reference():
    cfg = PolicyConfig(latent_budget=2, max_latent_total=5, max_switches=2)
    cases = [  # (mode, span, switches, latent_total, entropy, reference)
        (TEXT, 0, 0, 0, 1.5, 1.0),  # 0: rising in text: go latent
        (TEXT, 0, 0, 0, 0.8, 1.0),  # 1: falling in text: stay text
        (TEXT, 0, 4, 0, 1.5, 1.0),  # 2: rising, but max_switches spans taken
        (TEXT, 0, 0, 5, 1.5, 1.0),  # 3: rising, but max_latent_total steps taken
        (LATENT, 1, 1, 1, 1.2, 1.0),  # 4: still above the reference: keep thinking
        (LATENT, 1, 1, 1, 0.7, 1.0),  # 5: below it: back to text
        (LATENT, 2, 1, 2, 1.2, 1.0),  # 6: the span holds latent_budget steps: back to text
    ]
    mode, span, switches, total, h, ref = (list(c) for c in zip(*cases))
    state = _state(logits=[_logits_with_entropy(x) for x in h], mode=mode, span=span, switches=switches,
                   latent_total=total, ref_entropy=ref)
    d = _as_lists(entropy_step(state, jnp.full((len(cases),), 9, jnp.int32), cfg))
    assert d["latent_B"] == [True, False, False, False, True, False, False]
    assert d["mode_B"] == [LATENT, TEXT, TEXT, TEXT, LATENT, TEXT, TEXT]
    assert d["switched_B"] == [True, False, False, False, False, True, True]
    # A switch makes this step's entropy the new reference; otherwise it stays.
    assert d["ref_entropy_B"] == pytest.approx([1.5, 1.0, 1.0, 1.0, 1.0, 0.7, 1.2], abs=1e-4)
    assert d["forced_B"] == [False] * len(cases)


def test_abstract_constraint_is_a_logits_transform():
    vocab = AbstractVocab(ids=(8, 9, 10), begin_id=2, end_id=3)
    transform = AbstractConstraint(vocab, max_tokens=2)
    logits = np.arange(3 * V, dtype=np.float32).reshape(3, V)
    state = _state(logits=logits, mode=[TEXT] * 3, in_abstract_B=jnp.asarray([False, True, True]),
                   abstract_count_B=jnp.asarray([0, 1, 2], jnp.int32))
    out = np.asarray(transform(state, jnp.asarray(logits)))
    np.testing.assert_array_equal(out[0], logits[0])  # outside a span: unchanged
    assert list(np.flatnonzero(np.isfinite(out[1]))) == [3, 8, 9, 10]  # inside: abstract + end
    np.testing.assert_array_equal(out[1, [3, 8, 9, 10]], logits[1, [3, 8, 9, 10]])
    assert list(np.flatnonzero(np.isfinite(out[2]))) == [3]  # the span is full: the end only


def every_other_step(state: DecodeState, sampled_B, cfg: PolicyConfig) -> Decision:
    """A policy a fork might add: think at every odd iteration, while the total cap allows."""
    latent_B = (state.iteration % 2 == 1) & (state.latent_total_B < cfg.max_latent_total)
    decision = Decision.emit(state, sampled_B)
    return decision.replace(latent_B=latent_B, mode_B=jnp.where(latent_B, LATENT, TEXT))


def test_a_policy_registered_from_outside_decodes_in_the_one_loop(monkeypatch):
    monkeypatch.setattr(policies, "POLICIES", dict(policies.POLICIES))  # the registration does not leak
    policies.register_policy("every_other", every_other_step, latent_in_loop=True)
    cfg = presets.llama(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=32)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    out = make_generate(graphdef, cfg, 4, -1, 0, 0.0, 1.0, policy="every_other", max_latent_total=3)(
        params, jnp.asarray([[4, 5, 6]], jnp.int32), jnp.ones((1, 3), bool), jax.random.PRNGKey(0)
    )
    # iterations 0 text, 1 latent, 2 text, 3 latent, 4 text, 5 latent (3 taken), 6 text: 4 tokens
    assert int(out.lengths[0]) == 4 and int(out.latent_steps[0]) == 3
    with pytest.raises(ValueError, match="is not one of"):
        make_generate(graphdef, cfg, 4, -1, 0, 0.0, 1.0, policy="unregistered")
