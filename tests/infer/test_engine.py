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
from latent.nn.transformer import ModelOutput

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
    # the reference: a full forward over the whole sequence, no cache (jitted: one compile per
    # length instead of op-by-op dispatch)
    last_logits = jax.jit(lambda params, sequence: nnx.merge(graphdef, params)(sequence).logits[0, -1])
    for b in range(2):
        sequence = list(prompt[b][mask[b]])
        for _ in range(6):
            logits = last_logits(params, jnp.asarray([sequence], jnp.int32))
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
    assert list(np.flatnonzero(np.asarray(out.forced[0]))) == [1, 3]  # the policy's </swi>, not drawn
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


# ----------------------------------------------------------------------------- entropy policy on scripted traces

V = CFG.vocab_size
MARK = 10  # the token emitted at loop iteration t is MARK + t: the emitted tokens name the text iterations


def _logits_with_entropy(target: float, argmax: int) -> np.ndarray:
    """Logits over V tokens whose softmax has entropy `target` (nats) and peaks at `argmax`:
    `argmax` gets logit a, the rest 0; the entropy falls monotonically in a, so bisect on it."""

    def entropy_of(a):
        p = np.full(V, 1.0)
        p[argmax] = np.exp(a)
        p /= p.sum()
        return float(-(p * np.log(p)).sum())

    low, high = 0.0, 60.0
    assert entropy_of(high) < target < entropy_of(low), target
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if entropy_of(mid) > target else (low, mid)
    row = np.zeros(V, np.float32)
    row[argmax] = (low + high) / 2
    return row


class ScriptedModel(nnx.Module):
    """Stands in for the Transformer in `make_generate`: the logits at cache slot s are row s of a
    fixed per-example table, whatever the inputs. The loop reads the logits of slot P-1+t at
    iteration t, so the table scripts the entropy every iteration sees."""

    def __init__(self, logits_BxSxV: np.ndarray):
        self.table = nnx.Variable(jnp.asarray(logits_BxSxV))

    def __call__(self, tokens=None, *, embeds=None, embed_mask=None, padding_mask=None, cache=None):
        B, T = tokens.shape
        slots_T = cache.index + jnp.arange(T)
        logits_BxTxV = jnp.take(self.table[...], slots_T, axis=1)
        hidden_BxTxD = jnp.zeros((B, T, CFG.d_model), jnp.float32)
        return ModelOutput(logits=logits_BxTxV, hidden=hidden_BxTxD, cache=cache.replace(index=cache.index + T))

    def feed_back(self, hidden_BxD, logits_BxV):
        return hidden_BxD


def _run_entropy_policy(traces, *, max_new_tokens=8, eos_id=-1, eos_at=(), **caps):
    """Greedy decoding under the entropy policy where example b sees entropy traces[b][t] at
    iteration t. Returns (generation, iterations each example spent latent); `eos_at[b]` makes
    example b's iteration-t token the EOS."""
    P = 3
    B, iterations = len(traces), max_new_tokens + caps["max_latent_total"]
    table = np.zeros((B, P + iterations + 1, V), np.float32)
    for b, trace in enumerate(traces):
        assert len(trace) >= iterations
        for t, h in enumerate(trace[:iterations]):
            table[b, P - 1 + t] = _logits_with_entropy(h, eos_id if (b, t) in eos_at else MARK + t)
    graphdef, params = nnx.split(ScriptedModel(table))
    out = make_generate(graphdef, CFG, max_new_tokens, eos_id, 0, 0.0, 1.0, policy="entropy", **caps)(
        params, jnp.ones((B, P), jnp.int32), jnp.ones((B, P), bool), jax.random.PRNGKey(0)
    )
    latent = []
    for b in range(B):
        emitted = list(np.asarray(out.tokens[b, : int(out.lengths[b])]))
        text_steps = [t for t in range(iterations) if (b, t) in eos_at or MARK + t in emitted]
        latent.append([t for t in range(max(text_steps) + 1) if t not in text_steps])
    return out, latent


def test_entropy_policy_enters_on_rising_entropy_and_leaves_when_it_falls_below_the_reference():
    """H_ref starts at the first iteration's entropy and is reset at every switch. In text mode a
    falling entropy does not move it (t=1), so t=2 stays text though it rises; a rise above it
    goes latent (t=3); staying above the new reference keeps thinking (t=4, 5: 1.3 < 1.5 but
    > 1.2); falling below it returns to text (t=6) and makes 0.9 the reference, so 0.95 goes latent
    (t=7) although it is below the first reference, and 0.92 < 0.95 ends that span (t=9)."""
    trace = [1.0, 0.8, 0.9, 1.2, 1.5, 1.3, 0.9, 0.95, 1.1, 0.92] + [0.5] * 10
    flat = [1.0] * 20  # equal to the reference: never switches
    out, latent = _run_entropy_policy([trace, flat], latent_budget=10, max_latent_total=12, max_switches=5)
    assert latent == [[3, 4, 5, 7, 8], []]
    assert list(np.asarray(out.switches)) == [4, 0] and list(np.asarray(out.latent_steps)) == [5, 0]
    # Text iterations emit their own marker; latent ones emit nothing; 8 tokens each.
    assert list(np.asarray(out.tokens[0])) == [MARK + t for t in (0, 1, 2, 6, 9, 10, 11, 12)]
    assert list(np.asarray(out.tokens[1])) == [MARK + t for t in range(8)]
    assert list(np.asarray(out.lengths)) == [8, 8]


RISING = [1.0 + 0.1 * t for t in range(20)]  # entropy only ever rises: every span ends by a cap


def test_entropy_policy_latent_budget_closes_each_span():
    _, latent = _run_entropy_policy([RISING], latent_budget=2, max_latent_total=12, max_switches=5)
    # t=1 enters (ref 1.1); t=2 stays (1.2 > ref); t=3 the span holds 2 steps: back to text with
    # ref 1.3; t=4 rises above it and enters again ... five spans of two steps.
    assert latent == [[1, 2, 4, 5, 7, 8, 10, 11, 13, 14]]


def test_entropy_policy_max_switches_caps_the_number_of_spans():
    out, latent = _run_entropy_policy([RISING], latent_budget=2, max_latent_total=12, max_switches=2)
    assert latent == [[1, 2, 4, 5]]  # then text only, although the entropy keeps rising
    assert int(out.switches[0]) == 4 and int(out.latent_steps[0]) == 4


def test_entropy_policy_max_latent_total_ends_the_span_and_thinking():
    out, latent = _run_entropy_policy([RISING], latent_budget=2, max_latent_total=3, max_switches=5)
    assert latent == [[1, 2, 4]]  # t=5: 3 latent steps taken, the span closes early; none after
    assert int(out.switches[0]) == 4 and int(out.latent_steps[0]) == 3


def test_entropy_policy_stops_switching_once_an_example_is_done():
    """Example 0 emits EOS at t=1; its entropy then rises, but a finished example neither thinks
    nor switches while example 1 keeps the loop running."""
    after_eos = [1.0, 0.9] + RISING[5:] + [3.0] * 5  # t=1 is text (0.9 < 1.0), then above 1.0
    out, latent = _run_entropy_policy(
        [after_eos, [1.0] * 20], eos_id=V - 1, eos_at={(0, 1)}, latent_budget=2, max_latent_total=12, max_switches=5
    )
    assert list(np.asarray(out.lengths)) == [2, 8]
    assert latent == [[], []] and list(np.asarray(out.latent_steps)) == [0, 0]
    assert list(np.asarray(out.switches)) == [0, 0]


def test_model_policy_does_not_count_switches_after_eos():
    """Example 0 emits EOS at t=1 and then keeps predicting <swi>: no span opens and no switch is
    counted for it while example 1 decodes on."""
    P, eos = 3, V - 1
    argmax_0 = [MARK, eos] + [SWI] * 10
    table = np.stack([
        [_logits_with_entropy(1.0, MARK)] * (P - 1) + [_logits_with_entropy(1.0, tok) for tok in argmax_0],
        [_logits_with_entropy(1.0, MARK)] * (P - 1 + len(argmax_0)),
    ])
    graphdef, params = nnx.split(ScriptedModel(table))
    out = make_generate(
        graphdef, CFG, 6, eos, 0, 0.0, 1.0, policy="model", latent_budget=2, max_latent_total=4,
        swi_id=SWI, swi_end_id=SWI_END,
    )(params, jnp.ones((2, P), jnp.int32), jnp.ones((2, P), bool), jax.random.PRNGKey(0))
    assert list(np.asarray(out.lengths)) == [2, 6]
    assert list(np.asarray(out.switches)) == [0, 0] and list(np.asarray(out.latent_steps)) == [0, 0]


# ----------------------------------------------------------------------------- the interleaving record


def test_model_policy_records_which_iterations_were_latent():
    """Generation.latent: the model policy's spans sit right after each emitted <swi> and end at
    the forced </swi>; the text after the cap and the idle iterations after the end are False."""
    model = _model()
    hidden = model(jnp.asarray([[7, 8, 9, 10]], jnp.int32)).hidden
    model.lm_head[...] = model.lm_head[...].at[:, SWI].set(100.0 * jnp.sign(hidden.mean((0, 1))))
    graphdef, params = nnx.split(model)
    out = make_generate(
        graphdef, CFG, 6, -1, 0, 0.0, 1.0, policy="model", latent_budget=2, max_latent_total=3,
        swi_id=SWI, swi_end_id=SWI_END,
    )(params, jnp.asarray([[7, 8, 9, 10]], jnp.int32), jnp.ones((1, 4), bool), jax.random.PRNGKey(0))
    # <swi> [2 latents] </swi> <swi> [1 latent: the total cap] </swi> <swi> <swi> (text), 6 tokens
    assert list(np.asarray(out.tokens[0])) == [SWI, SWI_END, SWI, SWI_END, SWI, SWI]
    assert out.latent.shape == (1, 6 + 3)  # max_new_tokens + max_latent_total iterations
    assert list(np.flatnonzero(np.asarray(out.latent[0]))) == [1, 2, 5]
    assert int(np.asarray(out.latent[0]).sum()) == int(out.latent_steps[0])


def test_entropy_policy_records_the_iterations_it_spent_latent():
    """The scripted traces name each text iteration by its token: the record is their complement,
    and after EOS (example 1) nothing is latent."""
    out, latent = _run_entropy_policy([RISING, RISING], eos_id=V - 1, eos_at={(1, 6)}, latent_budget=2,
                                      max_latent_total=12, max_switches=5)
    recorded = [list(np.flatnonzero(np.asarray(row))) for row in out.latent]
    assert recorded == latent and latent[0] and latent[1]
    assert latent[1] == [1, 2, 4, 5] and max(latent[0]) > 6
    np.testing.assert_array_equal(np.asarray(out.latent).sum(1), np.asarray(out.latent_steps))
