"""The jitted decoding loop: greedy equals step-by-step argmax without a cache; EOS stops; sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.infer.engine import make_generate
from latent.infer.sampling import sample_tokens
from latent.models import presets
from latent.nn import Transformer

CFG = presets.gated(presets.llama(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64))


def _model():
    return Transformer(CFG, rngs=nnx.Rngs(0))


def test_greedy_generation_matches_uncached_argmax_decoding():
    model = _model()
    graphdef, params = nnx.split(model)
    prompt = np.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]], np.int32)
    mask = prompt != 0
    generate = make_generate(graphdef, CFG, 6, -1, 0, 0.0, 1.0)  # eos -1: never stops early
    tokens, lengths = generate(params, jnp.asarray(prompt), jnp.asarray(mask), jax.random.PRNGKey(0))[:2]
    assert tokens.shape == (2, 6) and list(lengths) == [6, 6]
    for b in range(2):
        sequence = list(prompt[b][mask[b]])
        for _ in range(6):
            logits = model(jnp.asarray([sequence], jnp.int32)).logits[0, -1]
            sequence.append(int(jnp.argmax(logits)))
        assert list(np.asarray(tokens[b])) == sequence[-6:]


def test_eos_stops_each_example_and_pads_after_it():
    graphdef, params = nnx.split(_model())
    prompt = jnp.asarray([[5, 6, 7], [8, 9, 10]], jnp.int32)
    greedy = make_generate(graphdef, CFG, 8, -1, 0, 0.0, 1.0)
    free_run = greedy(params, prompt, jnp.ones((2, 3), bool), jax.random.PRNGKey(0)).tokens
    eos = int(free_run[0, 2])  # make example 0's third token the EOS
    tokens, lengths = make_generate(graphdef, CFG, 8, eos, 0, 0.0, 1.0)(
        params, prompt, jnp.ones((2, 3), bool), jax.random.PRNGKey(0)
    )[:2]
    assert int(lengths[0]) == 3 and (np.asarray(tokens[0, 3:]) == 0).all()
    expected_1 = list(np.asarray(free_run[1]))
    stop = expected_1.index(eos) + 1 if eos in expected_1 else 8
    assert int(lengths[1]) == stop


def test_top_p_keeps_only_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: sample_tokens(logits, k, 1.0, 0.7))(jax.random.split(jax.random.PRNGKey(0), 2000))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=4) / 2000
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 already reaches 0.7
    np.testing.assert_allclose(counts[:2], [0.5 / 0.8, 0.3 / 0.8], atol=0.04)
    assert int(sample_tokens(jnp.asarray([[1.0, 3.0, 3.0]]), jax.random.PRNGKey(0), 0.0, 1.0)[0]) == 1  # first on ties


# ----------------------------------------------------------------------------- latent mode

BOT, EOT, SWI, SWI_END = 2, 3, 5, 6


def test_fixed_policy_decodes_what_the_continuous_thought_forward_predicts():
    """Coconut decoding: prompt <bot>, K thoughts, <eot>, then greedy text. Feeding the decoded
    text back through the (reference-tested) latent forward reproduces every token."""
    from latent.nn.recurrence import continuous_thought_forward

    model = _model()
    graphdef, params = nnx.split(model)
    prompt = jnp.asarray([[0, 0, 11, 12, BOT], [13, 14, 15, 16, BOT]], jnp.int32)
    mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    out = make_generate(graphdef, CFG, 5, -1, 0, 0.0, 1.0, policy="fixed", latent_steps=3, eot_id=EOT)(
        params, prompt, mask, jax.random.PRNGKey(0)
    )
    assert list(np.asarray(out.latent_steps)) == [3, 3] and list(np.asarray(out.lengths)) == [5, 5]
    suffix = jnp.concatenate([jnp.full((2, 1), EOT, jnp.int32), out.tokens], axis=1)
    forward = continuous_thought_forward(
        model, prompt, mask, jnp.full((2,), 3, jnp.int32), suffix, jnp.ones(suffix.shape, bool), max_latent=3
    )
    np.testing.assert_array_equal(np.argmax(forward.logits[:, :-1], -1), np.asarray(out.tokens))


def test_model_policy_state_machine_spans_budget_and_cap():
    """A model that always predicts <swi>: each span runs to its budget and is closed by a forced
    </swi>; once the total latent cap is reached, <swi> no longer enters latent mode."""
    model = _model()
    # Final-norm outputs are not sign-constant, so pin the logits via a constant feature: set
    # every hidden unit's weight for <swi> to the sign of the unit's mean activation instead.
    hidden = model(jnp.asarray([[7, 8, 9, 10]], jnp.int32)).hidden
    head = model.lm_head[...]
    model.lm_head[...] = head.at[:, SWI].set(100.0 * jnp.sign(hidden.mean((0, 1))))
    graphdef, params = nnx.split(model)
    out = make_generate(
        graphdef, CFG, 12, -1, 0, 0.0, 1.0, policy="model", latent_budget=2, max_latent_total=4,
        swi_id=SWI, swi_end_id=SWI_END,
    )(params, jnp.asarray([[7, 8, 9, 10]], jnp.int32), jnp.ones((1, 4), bool), jax.random.PRNGKey(0))
    tokens = list(np.asarray(out.tokens[0]))
    # <swi> [2 latents] </swi> <swi> [2 latents] </swi> then <swi> as plain text (cap reached)
    assert tokens[:4] == [SWI, SWI_END, SWI, SWI_END]
    assert int(out.latent_steps[0]) == 4 and int(out.switches[0]) == 4
    assert int(out.lengths[0]) == 12


def test_entropy_policy_respects_switch_and_latent_caps_and_zero_switches_is_text():
    graphdef, params = nnx.split(_model())
    prompt = jnp.asarray([[0, 5, 6, 7], [8, 9, 10, 11]], jnp.int32)
    mask = prompt != 0
    args = (graphdef, CFG, 10, -1, 0, 0.0, 1.0)
    out = make_generate(*args, policy="entropy", latent_budget=3, max_latent_total=5, max_switches=3)(
        params, prompt, mask, jax.random.PRNGKey(0)
    )
    spans = (np.asarray(out.switches) + 1) // 2
    assert (spans <= 3).all() and (np.asarray(out.latent_steps) <= 5).all()
    assert np.asarray(out.latent_steps).sum() > 0  # random weights do switch
    assert (np.asarray(out.lengths) == 10).all()
    text = make_generate(*args)(params, prompt, mask, jax.random.PRNGKey(0))
    never = make_generate(*args, policy="entropy", latent_budget=3, max_latent_total=5, max_switches=0)(
        params, prompt, mask, jax.random.PRNGKey(0)
    )
    np.testing.assert_array_equal(np.asarray(never.tokens), np.asarray(text.tokens))
    assert int(np.asarray(never.latent_steps).sum()) == 0


def test_model_policy_takes_a_latent_step_before_the_span_can_close():
    """The <swi> position is never trained to predict </swi>; a model whose <swi> position does
    must still think at least once before the span closes."""
    model = _model()
    prompt = jnp.asarray([[7, 8, 9, 10]], jnp.int32)
    h_last = model(prompt).hidden[0, -1]
    h_swi = model(jnp.concatenate([prompt, jnp.asarray([[SWI]], jnp.int32)], 1)).hidden[0, -1]
    head = model.lm_head[...].at[:, SWI].set(100.0 * jnp.sign(h_last))
    model.lm_head[...] = head.at[:, SWI_END].set(100.0 * jnp.sign(h_swi))
    assert int(jnp.argmax(model(prompt).logits[0, -1])) == SWI
    graphdef, params = nnx.split(model)
    out = make_generate(
        graphdef, CFG, 6, -1, 0, 0.0, 1.0, policy="model", latent_budget=3, max_latent_total=6,
        swi_id=SWI, swi_end_id=SWI_END,
    )(params, prompt, jnp.ones((1, 4), bool), jax.random.PRNGKey(0))
    assert int(out.tokens[0, 0]) == SWI and int(out.tokens[0, 1]) == SWI_END
    assert int(out.latent_steps[0]) >= 1
