"""RL rollouts and their replay (latent.methods.rl.rollout, .replay) on tiny random models: for text,
constrained abstract (with and without the bottleneck), Coconut, SWITCH (model-opened spans),
entropy-policy and HRPO rollouts, sampled in groups,
with rows that end at EOS and rows cut at max_new_tokens, the replay's log-probs equal the
engine's within 1e-5 on every emitted token (so the first inner step's ratio is 1), the mask
covers the drawn tokens and not the forced ones, the entropies respect the constraint, and the
replay is differentiable (HRPO's: into its gate, with the hidden part a constant)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.infer.engine import make_generate
from latent.infer.policies import entropy as policy_entropy
from latent.methods.rl.objective import policy_loss
from latent.methods.rl.replay import next_token_logits, replay, replay_logprobs, span_ends_in
from latent.methods.rl.rollout import RolloutLayout, Rollouts, rollout
from latent.models import presets
from latent.models.vocab import AbstractVocab
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))
T = 8  # max_new_tokens
PAD, BOT, EOT = 0, 2, 3
VOCAB = AbstractVocab(ids=tuple(range(20, 28)), begin_id=7, end_id=8)
M_MAX = 3  # abstract_max
EXACT = 1e-5  # float32


def _model(seed: int, *, sharpen: float = 8.0, begin_logit: float = 0.0):
    """A random model whose output head is scaled up (drawn tokens' log-probs from about -1.3 to
    -7, not all near -log V = -3.9) and, with `begin_logit`, leans towards <beginabstract> so it
    opens spans itself."""
    model = Transformer(CFG, rngs=nnx.Rngs(seed))
    model.lm_head[...] = model.lm_head[...] * sharpen
    if begin_logit:
        hidden = model(jnp.asarray([[9, 10, 11, 12]], jnp.int32)).hidden
        model.lm_head[...] = model.lm_head[...].at[:, VOCAB.begin_id].set(begin_logit * jnp.sign(hidden.mean((0, 1))))
    return nnx.split(model)


def _sample(graphdef, params, prompts, layout, group_size, *, eos=-1, temperature=1.0, top_p=1.0, seed=0, **kw):
    cfg = HRPO_CFG if layout.policy == "hrpo" else CFG
    generate = make_generate(graphdef, cfg, T, eos, PAD, temperature, top_p, group_size=group_size,
                             **layout.engine_kwargs())
    prompts = jnp.asarray(prompts, jnp.int32)
    return rollout(generate, params, prompts, prompts != PAD, jax.random.PRNGKey(seed), layout=layout, **kw)


def _sample_with_some_rows_ending(graphdef, params, prompts, layout, group_size, *, exclude=(), **kw):
    """Rollouts in which some rows end at EOS and others run to max_new_tokens: EOS is a text token
    that a run without EOS drew before its last step in some rows but not in all (the same keys
    draw the same tokens up to it)."""
    free = np.asarray(_sample(graphdef, params, prompts, layout, group_size, **kw).tokens_NxT)
    counts = {}
    for row in free:
        for token in set(row[: T - 1].tolist()) - set(exclude) - {PAD}:
            counts[token] = counts.get(token, 0) + 1
    eos = min(counts, key=lambda token: abs(counts[token] - len(free) / 2))  # in about half the rows
    return _sample(graphdef, params, prompts, layout, group_size, eos=eos, **kw), eos


def _check_rollouts(rollouts: Rollouts, prompts, group_size, eos):
    """Shapes, prompt-major order, both kinds of ending, EOS covered, nothing past the end."""
    prompts = np.asarray(prompts)
    rows = len(prompts) * group_size
    assert rollouts.tokens_NxT.shape == rollouts.mask_NxT.shape == rollouts.logprobs_NxT.shape == (rows, T)
    assert rollouts.group_size == group_size
    np.testing.assert_array_equal(np.asarray(rollouts.prompt_NxP), np.repeat(prompts, group_size, axis=0))
    np.testing.assert_array_equal(np.asarray(rollouts.prompt_mask_NxP), np.repeat(prompts != PAD, group_size, axis=0))
    tokens, lengths = np.asarray(rollouts.tokens_NxT), np.asarray(rollouts.lengths_N)
    truncated, mask = np.asarray(rollouts.truncated_N), np.asarray(rollouts.mask_NxT)
    assert truncated.any() and not truncated.all()  # some rows cut at T, some ended by EOS
    assert (lengths[~truncated] < T).any()  # ... early
    for row in np.flatnonzero(~truncated):
        assert tokens[row, lengths[row] - 1] == eos and mask[row, lengths[row] - 1]  # EOS is a policy token
    assert not (mask & (np.arange(T)[None] >= lengths[:, None])).any()


def _replayed(graphdef, params, rollouts, latent_grad="full"):
    return jax.jit(lambda p, r: replay(nnx.merge(graphdef, p), r, latent_grad=latent_grad))(params, rollouts)


def _check_exact(graphdef, params, rollouts: Rollouts, latent_grad="full"):
    """Replay equals the rollout on every emitted token; the ratio is 1 on every covered one (and
    the objective sees ratio 1 and nothing clipped); the gradient of the covered log-probs is
    finite and not zero. Returns the replayed log-probs."""
    replayed = _replayed(graphdef, params, rollouts, latent_grad)
    logp = replayed.logprobs
    emitted, mask = np.asarray(rollouts.emitted_NxT), np.asarray(rollouts.mask_NxT)
    old = np.asarray(rollouts.logprobs_NxT)
    np.testing.assert_allclose(np.asarray(logp)[emitted], old[emitted], rtol=0, atol=EXACT)
    assert (np.asarray(logp)[~emitted] == 0).all()
    ratio = np.exp(np.asarray(logp) - old)
    np.testing.assert_allclose(ratio[mask], 1.0, rtol=0, atol=EXACT)
    # every policy term (SWITCH: the drawn latent steps' log(1 - pi(</swi>)) after the tokens) too
    terms, old_terms, term_mask = (np.asarray(x) for x in (replayed.term_logprobs, rollouts.term_logprobs,
                                                           rollouts.term_mask))
    np.testing.assert_allclose(terms[term_mask], old_terms[term_mask], rtol=0, atol=EXACT)
    adv = jnp.asarray(np.linspace(-1.0, 1.0, len(mask)), jnp.float32)
    _, metrics = policy_loss(replayed.term_logprobs, rollouts.term_logprobs, adv, rollouts.term_mask)
    assert abs(float(metrics["ratio_mean"]) - 1.0) < EXACT and float(metrics["clip_fraction"]) == 0.0

    def covered_logp(p):
        terms = replay(nnx.merge(graphdef, p), rollouts, latent_grad=latent_grad).term_logprobs
        return jnp.sum(terms * rollouts.term_mask)

    grads = jax.jit(jax.grad(covered_logp))(params)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(float(np.abs(g).sum()) for g in leaves) > 0
    return np.asarray(logp), grads


# ----------------------------------------------------------------------------- text


TEXT_PROMPTS = np.array([[0, 0, 5, 6, 9], [10, 11, 12, 13, 14], [0, 15, 16, 17, 18]], np.int32)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_text_rollouts_replay_exactly(temperature, top_p):
    """Policy none, G = 3. log pi is at temperature 1 whatever the samples were drawn with (the
    second case), so the ratio is 1 either way. Text has nothing forced: the mask is every
    emitted token."""
    graphdef, params = _model(0)
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, TEXT_PROMPTS, RolloutLayout(), 3,
                                                  temperature=temperature, top_p=top_p)
    _check_rollouts(rollouts, TEXT_PROMPTS, 3, eos)
    np.testing.assert_array_equal(np.asarray(rollouts.mask_NxT), np.asarray(rollouts.emitted_NxT))
    assert (np.asarray(rollouts.thoughts_N) == 0).all()
    _check_exact(graphdef, params, rollouts)


# ----------------------------------------------------------------------------- constrained abstract


ABSTRACT_PROMPTS = np.array(
    [[0, 11, 12, 13, VOCAB.begin_id], [9, 10, 11, 12, 13], [0, 0, 14, 15, 16], [17, 18, 19, 30, VOCAB.begin_id]], np.int32
)
ABSTRACT_LAYOUT = RolloutLayout(abstract=VOCAB, abstract_max=M_MAX)


def _span_reference(prompt_row, tokens, length):
    """(inside a span, forced end) per emitted token, from the rules in plain Python."""
    inside, count, rows = prompt_row[-1] == VOCAB.begin_id, 0, []
    for token in tokens[:length]:
        rows.append((inside, inside and count >= M_MAX))
        if not inside and token == VOCAB.begin_id:
            inside, count = True, 0
        elif inside and token == VOCAB.end_id:
            inside = False
        elif inside:
            count += 1
    return rows


@pytest.mark.parametrize("bottleneck", [False, True])
def test_constrained_abstract_rollouts_replay_exactly_with_renormalised_spans(bottleneck):
    """The abstract constraint, G = 4: spans opened by the prompt and by the model, ends chosen
    and forced at m_max, text around them. Inside a span the replay renormalises over the
    allowed set; a forced <endabstract> has log pi 0 and is left out of the mask. With the
    bottleneck, prompt columns 1-2 stand for the verbal chain the answer stops reading at the
    first <endabstract>: replaying without hiding them is not exact."""
    graphdef, params = _model(2, begin_logit=1.0)
    hidden = np.zeros(ABSTRACT_PROMPTS.shape, bool)
    hidden[:, 1:3] = bottleneck
    kw = dict(hidden_after_end_BxP=jnp.asarray(hidden)) if bottleneck else {}
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, ABSTRACT_PROMPTS, ABSTRACT_LAYOUT, 4,
                                                  exclude=(*VOCAB.ids, VOCAB.begin_id, VOCAB.end_id), **kw)
    _check_rollouts(rollouts, ABSTRACT_PROMPTS, 4, eos)
    tokens, lengths, mask = (np.asarray(x) for x in (rollouts.tokens_NxT, rollouts.lengths_N, rollouts.mask_NxT))
    prompts = np.asarray(rollouts.prompt_NxP)
    spans = [_span_reference(prompts[r], tokens[r], lengths[r]) for r in range(len(tokens))]
    forced = [[t for t, (_, f) in enumerate(s) if f] for s in spans]
    assert all(list(np.flatnonzero(~mask[r, : lengths[r]])) == forced[r] for r in range(len(tokens)))
    # The premises: spans opened both ways, ends both chosen and forced, text outside spans.
    opened_by_model = [r for r, row in enumerate(tokens) if prompts[r, -1] != VOCAB.begin_id and VOCAB.begin_id in row]
    chosen_ends = sum(1 for r, s in enumerate(spans) for t, (inside, f) in enumerate(s)
                      if inside and not f and tokens[r, t] == VOCAB.end_id)
    assert opened_by_model and chosen_ends and sum(map(len, forced))
    assert sum(1 for s in spans for inside, _ in s if not inside) > 10

    logp, _ = _check_exact(graphdef, params, rollouts)
    in_span = np.zeros(tokens.shape, bool)
    for r, s in enumerate(spans):
        in_span[r, : len(s)] = [inside for inside, _ in s]
    assert (logp[in_span & mask] > -np.log(len(VOCAB.ids) + 1) - 3).all()  # renormalised over 9 tokens, not 50
    # The entropies (for rl.entropy_coef): the engine's formula on the raw logits outside a span,
    # at most log 9 inside one, 0 at a forced end.
    entropy = np.asarray(_replayed(graphdef, params, rollouts).entropy)
    emitted = np.asarray(rollouts.emitted_NxT)
    raw = next_token_logits(nnx.merge(graphdef, params), rollouts)
    np.testing.assert_allclose(entropy[emitted & ~in_span], np.asarray(policy_entropy(raw))[emitted & ~in_span], atol=EXACT)
    assert (entropy[in_span] <= np.log(len(VOCAB.ids) + 1) + EXACT).all() and (entropy[emitted & ~mask] == 0).all()
    assert (entropy[in_span & mask] > 0.1).all()
    if bottleneck:
        unhidden = rollouts.replace(hidden_after_end_NxP=None)
        leaky = np.asarray(_replayed(graphdef, params, unhidden).logprobs)
        assert np.abs(leaky - logp)[mask].max() > 1e-3


# ----------------------------------------------------------------------------- Coconut


COCONUT_PROMPTS = np.array([[0, 0, 11, 12, BOT], [13, 14, 15, 16, BOT], [0, 17, 18, 19, BOT], [0, 0, 0, 9, BOT]],
                           np.int32)
COCONUT_LAYOUT = RolloutLayout(policy="fixed", latent_steps=3, eot_id=EOT)


def test_coconut_rollouts_replay_exactly_through_each_rows_thoughts():
    """Policy fixed, K = 3 slots, G = 2; the prompts take 3, 1, 0 and 2 thoughts. The replay runs
    the thoughts of each row under the current params, so its log-probs equal the rollout's;
    latent_grad passes through (detach: the same values, other gradients)."""
    graphdef, params = _model(3)
    steps = jnp.asarray([3, 1, 0, 2], jnp.int32)
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, COCONUT_PROMPTS, COCONUT_LAYOUT, 2,
                                                  exclude=(BOT, EOT), latent_steps_B=steps)
    _check_rollouts(rollouts, COCONUT_PROMPTS, 2, eos)
    np.testing.assert_array_equal(np.asarray(rollouts.thoughts_N), np.repeat(np.asarray(steps), 2))
    np.testing.assert_array_equal(np.asarray(rollouts.mask_NxT), np.asarray(rollouts.emitted_NxT))
    logp, full_grads = _check_exact(graphdef, params, rollouts)
    detached_logp, detached_grads = _check_exact(graphdef, params, rollouts, latent_grad="detach")
    np.testing.assert_array_equal(detached_logp, logp)
    differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), full_grads, detached_grads)
    assert max(jax.tree.leaves(differences)) > 1e-6


# ----------------------------------------------------------------------------- SWITCH and entropy (Switch-GRPO)


SWI, SWI_END = 5, 6
SWITCH_PROMPTS = np.array([[0, 0, 11, 12, 13], [9, 10, 11, 12, 14], [0, 15, 16, 17, 18], [0, 0, 0, 19, 21]], np.int32)
SWITCH_LAYOUT = RolloutLayout(policy="model", latent_budget=3, max_latent_total=5, swi_id=SWI, swi_end_id=SWI_END)


def _switch_model(seed: int, end_logit: float):
    """A random model (head sharpened) that leans towards <swi> everywhere, and towards </swi> by
    `end_logit`: near 1 some spans close by the model's argmax after one step, others run to the
    budget."""
    model = Transformer(CFG, rngs=nnx.Rngs(seed))
    model.lm_head[...] = model.lm_head[...] * 8.0
    sign = jnp.sign(model(jnp.asarray([[9, 10, 11, 12]], jnp.int32)).hidden.mean((0, 1)))
    model.lm_head[...] = model.lm_head[...].at[:, SWI].set(sign).at[:, SWI_END].set(end_logit * sign)
    return nnx.split(model)


def _spans(latent_row) -> list[int]:
    return [len(run) for run in "".join("1" if x else "0" for x in np.asarray(latent_row)).split("0") if run]


def _check_interleaving(rollouts: Rollouts):
    """The record matches the tokens: each span follows an emitted <swi> and is closed by a forced
    </swi> (or the end); the latent steps are the record's."""
    latent, tokens = np.asarray(rollouts.latent_NxI), np.asarray(rollouts.tokens_NxT)
    forced, lengths = np.asarray(rollouts.emitted_NxT & ~rollouts.mask_NxT), np.asarray(rollouts.lengths_N)
    np.testing.assert_array_equal(latent.sum(1), np.asarray(rollouts.thoughts_N))
    for row in range(len(tokens)):
        kinds, after_latent, t = [], [], 0  # per iteration: "L" or the emitted token
        for i in range(lengths[row] + latent[row].sum()):
            if latent[row, i]:
                kinds.append("L")
                continue
            kinds.append(int(tokens[row, t]))
            after_latent.append(i > 0 and kinds[i - 1] == "L")
            t += 1
        for i, kind in enumerate(kinds):
            if kind == "L" and kinds[i - 1] != "L":
                assert i > 0 and kinds[i - 1] == SWI  # a span opens right after an emitted <swi>
            if kind != "L" and i and kinds[i - 1] == "L":
                assert kind == SWI_END  # and is closed by </swi>
        # a </swi> after a span was drawn (in the mask) or forced by the budget; nothing else is forced
        assert set(np.flatnonzero(forced[row, : lengths[row]])) <= set(np.flatnonzero(after_latent))
    # a drawn latent step is one that could have closed its span: not a span's first, and within the budget
    stayed, budget = np.asarray(rollouts.stayed_NxI), rollouts.layout.latent_budget
    for row in range(len(tokens)):
        step_in_span = 0
        for i, is_latent in enumerate(latent[row]):
            step_in_span = step_in_span + 1 if is_latent else 0
            assert stayed[row, i] == (is_latent and 1 < step_in_span <= budget), (row, i)


@pytest.mark.parametrize("seed, end_logit, totals", [
    (6, 1.2, {0, 1, 2, 3}),  # rows with no latent step, one, several; most spans closed by a drawn </swi>
    (8, 1.0, {0, 3, 4, 5}),  # spans run to the budget (forced </swi>) and to the total cap
])
def test_switch_rollouts_replay_exactly_through_each_rows_spans(seed, end_logit, totals):
    """Policy model, G = 3, temperature 1: the replay rebuilds each row's [prompt; tokens and latent
    slots in decoding order] from the engine's record, recomputes the slots under the params and
    equals the rollout's log-probs, the drawn latent steps' log(1 - pi(</swi>)) included. A </swi>
    is drawn (in the mask) or forced by the budget (outside it). latent_grad: detach and
    truncate(1) give the same values and other gradients, so the gradient runs through the slots."""
    graphdef, params = _switch_model(seed, end_logit)
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, SWITCH_PROMPTS, SWITCH_LAYOUT, 3,
                                                  exclude=(SWI, SWI_END))
    _check_rollouts(rollouts, SWITCH_PROMPTS, 3, eos)
    _check_interleaving(rollouts)
    thoughts = np.asarray(rollouts.thoughts_N)
    assert totals <= set(thoughts.tolist()), thoughts
    spans = [s for row in np.asarray(rollouts.latent_NxI) for s in _spans(row)]
    assert max(spans) == 3 and min(spans) == 1
    swi_end = np.asarray(rollouts.tokens_NxT) == SWI_END
    assert (swi_end & np.asarray(rollouts.mask_NxT)).any()  # some </swi> drawn: a policy term
    assert (swi_end & np.asarray(rollouts.emitted_NxT & ~rollouts.mask_NxT)).any()  # some forced: none
    assert np.asarray(rollouts.stayed_NxI).any()  # some latent steps chose not to close their span
    logp, full_grads = _check_exact(graphdef, params, rollouts)
    for latent_grad in ("detach", "truncate(1)"):
        cut_logp, cut_grads = _check_exact(graphdef, params, rollouts, latent_grad=latent_grad)
        np.testing.assert_array_equal(cut_logp, logp)
        differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), full_grads, cut_grads)
        if latent_grad == "detach" or max(spans) > 1:  # truncate(1) cuts nothing in one-step spans
            assert max(jax.tree.leaves(differences)) > 1e-6, latent_grad


@pytest.mark.parametrize("feedback", ["model", "soft"])
def test_entropy_policy_rollouts_replay_exactly(feedback):
    """The entropy policy opens spans by itself on a random model; its latent steps receive the
    model's rule or p^T E (`feedback`), and the replay feeds the same."""
    graphdef, params = _model(5)
    layout = RolloutLayout(policy="entropy", latent_budget=3, max_latent_total=5, max_switches=2, feedback=feedback)
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, TEXT_PROMPTS, layout, 3)
    _check_rollouts(rollouts, TEXT_PROMPTS, 3, eos)
    thoughts = np.asarray(rollouts.thoughts_N)
    np.testing.assert_array_equal(np.asarray(rollouts.latent_NxI).sum(1), thoughts)
    assert thoughts.max() > 1 and thoughts.sum() > 3
    np.testing.assert_array_equal(np.asarray(rollouts.mask_NxT), np.asarray(rollouts.emitted_NxT))  # nothing forced
    logp, full_grads = _check_exact(graphdef, params, rollouts)
    detached_logp, detached_grads = _check_exact(graphdef, params, rollouts, latent_grad="detach")
    np.testing.assert_array_equal(detached_logp, logp)
    differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), full_grads, detached_grads)
    assert max(jax.tree.leaves(differences)) > 1e-6
    other = layout.__class__(**{**vars(layout), "feedback": "soft" if feedback == "model" else "model"})
    wrong = np.asarray(_replayed(graphdef, params, rollouts.replace(layout=other)).logprobs)
    assert np.abs(wrong - logp)[np.asarray(rollouts.mask_NxT)].max() > 1e-3  # the feedback matters


def test_switch_rollouts_without_their_record_are_refused():
    graphdef, params = _switch_model(6, 1.05)
    rollouts = _sample(graphdef, params, SWITCH_PROMPTS, SWITCH_LAYOUT, 2)
    with pytest.raises(ValueError, match="need latent_NxI"):
        replay_logprobs(nnx.merge(graphdef, params), rollouts.replace(latent_NxI=None))


def test_span_ends_in_counts_each_spans_remaining_steps():
    """truncate(n) keeps the gradient of a slot whose count is at most n: the last n of each span."""
    latent = jnp.asarray([[0, 1, 1, 1, 0, 1, 0], [1, 1, 0, 0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(span_ends_in(latent)), [[0, 3, 2, 1, 0, 1, 0], [2, 1, 0, 0, 3, 2, 1]])


# ----------------------------------------------------------------------------- HRPO


HRPO_CFG = CFG.replace(feedback="hrpo")
ANSWER = 4  # the answer marker that ends the thinking span


def _hrpo_model(seed: int, *, token_weight: float | None = 0.3):
    """A random model with HRPO's gate (head sharpened as `_model`'s); `token_weight` sets
    sigmoid(Lambda)^8 (None: the initial 0.99) so the hidden part weighs in."""
    model = Transformer(HRPO_CFG, rngs=nnx.Rngs(seed))
    model.lm_head[...] = model.lm_head[...] * 4.0
    if token_weight is not None:
        base = token_weight ** (1 / 8)
        model.feedback.log_a[...] = jnp.full_like(model.feedback.log_a[...], np.log(base / (1 - base)))
    return nnx.split(model)


def _hrpo_sample(graphdef, params, prompts, group_size, **kw):
    """HRPO rollouts in which some rows write the answer marker (the span ends) and others do not,
    and some rows end at EOS: the marker is a token that a first draw wrote in about half the
    rows (the same keys draw the same tokens up to it)."""
    def sample(answer_id, **more):
        layout = RolloutLayout(policy="hrpo", answer_id=answer_id)
        return _sample_with_some_rows_ending(graphdef, params, prompts, layout, group_size, **more, **kw)[0]

    free = np.asarray(sample(ANSWER, exclude=(ANSWER,)).tokens_NxT)
    counts = {}
    for row in free:
        for token in set(row[1 : T - 2].tolist()) - {PAD, ANSWER}:
            counts[token] = counts.get(token, 0) + 1
    marker = min(counts, key=lambda token: abs(counts[token] - len(free) / 2))
    rollouts, eos = _sample_with_some_rows_ending(graphdef, params, prompts, RolloutLayout(policy="hrpo", answer_id=marker),
                                                  group_size, exclude=(marker,), **kw)
    return rollouts, eos, marker


def _sequential_hrpo_logprobs(model, rollouts: Rollouts, *, token="sampled", stop_h=True):
    """[N, T] log pi of each emitted token, from the formula, one full forward per position (no
    cache, no engine): the input after each hybrid-fed token x_t is a*E[x] + sqrt(1 - a^2) * (i * h)
    with h = p^T E / |p| of the logits x_t was drawn from, x = x_t (`token` "sampled") or the
    argmax of those logits ("argmax"), h stopped (the paper, `stop_h`) or differentiated (BPTT)."""
    prompt, prompt_mask = rollouts.prompt_NxP, rollouts.prompt_mask_NxP
    tokens, emitted, hybrid = rollouts.tokens_NxT, rollouts.emitted_NxT, rollouts.hybrid_NxT
    gate, embed = model.feedback, model.embed[...]
    rows, prompt_len = prompt.shape
    inputs, logps = [], []
    for t in range(T):
        sequence = jnp.concatenate([prompt, tokens[:, :t]], axis=1)
        real = jnp.concatenate([prompt_mask, emitted[:, :t]], axis=1)
        fed = {}
        if t:
            fed = dict(embeds=jnp.concatenate([jnp.zeros((rows, prompt_len, HRPO_CFG.d_model)), jnp.stack(inputs, 1)], 1),
                       embed_mask=jnp.concatenate([jnp.zeros((rows, prompt_len), bool), hybrid[:, :t]], 1))
        logits = model(sequence, padding_mask=real, **fed).logits[:, -1]
        logps.append(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, t, None], axis=1)[:, 0])
        h = gate.hidden_part(logits, embed)
        x = tokens[:, t] if token == "sampled" else jnp.argmax(logits, -1)
        inputs.append(gate.hybrid(x, jax.lax.stop_gradient(h) if stop_h else h, embed)[0])
    return jnp.where(emitted, jnp.stack(logps, 1), 0.0)


def test_hrpo_rollouts_replay_exactly_and_feed_the_gated_hybrid_before_the_answer_marker():
    """Policy hrpo, G = 3, temperature 1: every emitted token is a policy term; the tokens before
    the answer marker (EOS left out) were fed as the hybrid, with their h recorded (0 elsewhere);
    the replay equals the rollout's log-probs within 1e-5, and it reads the recorded h (zeroed,
    or not fed at all, the log-probs move)."""
    graphdef, params = _hrpo_model(11)
    rollouts, eos, marker = _hrpo_sample(graphdef, params, TEXT_PROMPTS, 3)
    _check_rollouts(rollouts, TEXT_PROMPTS, 3, eos)
    np.testing.assert_array_equal(np.asarray(rollouts.mask_NxT), np.asarray(rollouts.emitted_NxT))  # all sampled
    tokens, lengths = np.asarray(rollouts.tokens_NxT), np.asarray(rollouts.lengths_N)
    hybrid, hidden_part = np.asarray(rollouts.hybrid_NxT), np.asarray(rollouts.hidden_part_NxTxD)
    expected = np.zeros_like(hybrid)
    for row in range(len(tokens)):
        for t in range(lengths[row]):
            if tokens[row, t] == marker:
                break
            expected[row, t] = tokens[row, t] != eos
    np.testing.assert_array_equal(hybrid, expected)
    answered = [marker in row[:n] for row, n in zip(tokens, lengths)]
    assert any(answered) and not all(answered)  # spans ended by the marker, and spans to the end
    assert (np.linalg.norm(hidden_part, axis=-1) > 0).sum() == hybrid.sum() > 10

    logp, _ = _check_exact(graphdef, params, rollouts)
    mask = np.asarray(rollouts.mask_NxT)
    for changed in (rollouts.replace(hidden_part_NxTxD=jnp.zeros_like(rollouts.hidden_part_NxTxD)),
                    rollouts.replace(layout=RolloutLayout())):
        assert np.abs(np.asarray(_replayed(graphdef, params, changed).logprobs) - logp)[mask].max() > 1e-3


def test_hrpo_hybrid_mixes_the_sampled_token_not_the_greedy_one():
    """The rollout's log-probs are the formula's with x = the sampled token (computed here without
    the engine, one forward per position), not with x = argmax: at temperature 1 many sampled
    thinking tokens are not the argmax."""
    graphdef, params = _hrpo_model(12)
    rollouts, _, _ = _hrpo_sample(graphdef, params, TEXT_PROMPTS, 3)
    model = nnx.merge(graphdef, params)
    emitted, old = np.asarray(rollouts.emitted_NxT), np.asarray(rollouts.logprobs_NxT)
    sampled = np.asarray(jax.jit(lambda r: _sequential_hrpo_logprobs(model, r))(rollouts))
    np.testing.assert_allclose(sampled[emitted], old[emitted], rtol=0, atol=EXACT)
    logits = next_token_logits(model, rollouts)
    not_greedy = np.asarray(rollouts.hybrid_NxT) & (np.asarray(jnp.argmax(logits, -1)) != np.asarray(rollouts.tokens_NxT))
    assert not_greedy.sum() > 5
    greedy = np.asarray(jax.jit(lambda r: _sequential_hrpo_logprobs(model, r, token="argmax"))(rollouts))
    assert np.abs(greedy - old)[emitted].max() > 1e-2


def test_hrpo_gradients_reach_the_gate_and_not_the_hidden_part():
    """The replay's gradient is the formula's with h a constant (as the paper: no BPTT through the
    logits h came from), not the one with h differentiated; it reaches W_r, W_i, Lambda and the
    embedding."""
    graphdef, params = _hrpo_model(13)
    rollouts, _, _ = _hrpo_sample(graphdef, params, TEXT_PROMPTS, 2)
    mask = rollouts.mask_NxT
    adv = jnp.asarray(np.linspace(-1.0, 1.0, mask.shape[0]), jnp.float32)[:, None]

    def loss(logp_fn):
        return jax.jit(jax.grad(lambda p: -jnp.sum(adv * mask * logp_fn(nnx.merge(graphdef, p)))))(params)

    replayed = loss(lambda model: replay_logprobs(model, rollouts))
    constant_h = loss(lambda model: _sequential_hrpo_logprobs(model, rollouts))
    bptt = loss(lambda model: _sequential_hrpo_logprobs(model, rollouts, stop_h=False))
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(replayed))
    gap = lambda a, b: max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a, b)))  # noqa: E731
    assert gap(replayed, constant_h) < 1e-4 * scale
    assert gap(replayed, bptt) > 1e-2 * scale
    gate = replayed["feedback"]
    for name, grad in (("w_r", gate["w_r"]["kernel"]), ("w_i", gate["w_i"]["kernel"]), ("log_a", gate["log_a"]),
                       ("embed", replayed["embed"])):
        assert float(jnp.abs(grad[...]).max()) > 0, name


def test_hrpo_gate_starts_all_token_and_the_metrics_report_it():
    """At init sigmoid(Lambda)^8 = 0.99 and a = 0.99^r over the hybrid-fed tokens (r in (0, 1)):
    gate_metrics, what an RL step logs, reads both; a gate moved to 0.3 reads 0.3."""
    from latent.methods.rl.replay import gate_metrics

    for token_weight in (None, 0.3):
        graphdef, params = _hrpo_model(14, token_weight=token_weight)
        rollouts = _sample(graphdef, params, TEXT_PROMPTS, RolloutLayout(policy="hrpo", answer_id=ANSWER), 2)
        metrics = gate_metrics(nnx.merge(graphdef, params), rollouts)
        weight = 0.99 if token_weight is None else token_weight
        assert float(metrics["hrpo_token_weight"]) == pytest.approx(weight, abs=1e-6)
        assert weight < float(metrics["hrpo_a"]) < 1.0


def test_hrpo_needs_the_gate_and_its_record():
    graphdef, params = _model(0)
    with pytest.raises(ValueError, match="needs model.feedback='hrpo'"):
        make_generate(graphdef, CFG, T, -1, PAD, 1.0, 1.0, policy="hrpo", answer_id=ANSWER)
    with pytest.raises(ValueError, match="needs answer_id"):
        RolloutLayout(policy="hrpo")
    graphdef, params = _hrpo_model(14)
    rollouts = _sample(graphdef, params, TEXT_PROMPTS, RolloutLayout(policy="hrpo", answer_id=ANSWER), 2)
    with pytest.raises(ValueError, match="need hybrid_NxT and hidden_part_NxTxD"):
        replay_logprobs(nnx.merge(graphdef, params), rollouts.replace(hidden_part_NxTxD=None))
