"""SWITCH data and objective: span rules, the visible-to-latent layout, labels on the boundary
tokens, and the objective against Coconut-style full passes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from latent.config import LatentConfig
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import get_task
from latent.methods.switch import spans as switch
from latent.methods.switch.objective import switch_objective
from latent.models import presets
from latent.nn import Transformer
from latent.nn.recurrence import naive_continuous_thought_logits
from tests.conftest import word_tokenizer


@pytest.fixture(scope="module")
def setup():
    examples = [e for e in get_task("prosqa_small").generate(40, seed=5) if len(e.steps) == 3][:4]
    tokenizer = word_tokenizer(examples)
    spans = [switch.fixed_span(len(e.steps), 1, 2) for e in examples]
    records, dropped = switch.tokenize_switch_examples(examples, tokenizer, 512, spans)
    assert dropped == 0 and all(r.span == (1, 3) for r in records)
    return examples, tokenizer, records


def test_span_rules():
    assert switch.fixed_span(5, 1, 2) == (1, 3)
    assert switch.fixed_span(2, 1, 3) == (1, 2)  # clipped to the example
    assert switch.highest_entropy_span([0.1, 2.0, 1.5, 0.2], 2) == (1, 3)
    assert switch.highest_entropy_span([1.0, 1.0, 1.0], 2) == (0, 2)  # earliest on ties


def test_step_entropies_of_uniform_logits_are_log_vocab(setup):
    examples, tokenizer, _ = setup
    V = 17
    entropies = switch.step_entropies(examples, tokenizer, lambda t, m: np.zeros((*t.shape, V)))
    assert [len(h) for h in entropies] == [len(e.steps) for e in examples]
    np.testing.assert_allclose(np.concatenate(entropies), np.log(V), rtol=1e-9)


def test_stage_zero_is_the_text_with_markers_and_later_stages_hide_span_steps(setup):
    examples, tokenizer, records = setup
    cfg = LatentConfig(mode="switch", c_thought=1)
    widths = switch.switch_widths(records)
    swi, swi_end = tokenizer.id_of(SPECIAL.swi), tokenizer.id_of(SPECIAL.swi_end)
    r, e = records[0], examples[0]
    batch = switch.collate_switch([r], 0, tokenizer, cfg, widths, n_slots=0)
    prefix = batch["prefix"][0][batch["prefix_mask"][0]]
    suffix = batch["suffix"][0][batch["suffix_mask"][0]]
    assert suffix[-1] == tokenizer.eos_id
    text = tokenizer.decode([int(t) for t in np.concatenate([prefix, suffix[:-1]])])
    assert text == (
        f"{e.question}\n{e.steps[0]}\n{SPECIAL.swi} {e.steps[1]}\n{e.steps[2]}\n{SPECIAL.swi_end} ### {e.answer}"
    )
    labelled = batch["prefix"][0][batch["prefix_loss_mask"][0]]
    assert labelled[-1] == swi and len(labelled) == len(r.parts.steps[0]) + 1  # step 0 and <swi>
    assert batch["suffix_loss_mask"][0][batch["suffix_mask"][0]].all()  # </swi> included
    for stage, slots in ((1, 1), (2, 2), (5, 2)):
        batch = switch.collate_switch([r], stage, tokenizer, cfg, widths, n_slots=2)
        assert batch["latent_mask"][0].sum() == slots
        suffix = batch["suffix"][0]
        assert (suffix[0] == swi_end) == (slots == 2)


def test_thought_targets_name_each_hidden_span_steps_last_word(setup):
    _, tokenizer, records = setup
    r = records[0]
    a = r.span[0]
    assert tokenizer.decode([r.step_keys[a]]) == tokenizer.decode([int(t) for t in r.parts.steps[a]]).split()[-1].rstrip(".")
    cfg = LatentConfig(mode="switch", c_thought=2)
    for stage, expected in ((0, []), (1, [-1, r.step_keys[a], -1, -1]), (2, [-1, r.step_keys[a], -1, r.step_keys[a + 1]])):
        batch = switch.collate_switch([r], stage, tokenizer, cfg, None, n_slots=4 if stage else 0)
        np.testing.assert_array_equal(batch["thought_targets"][0], expected)


def test_fitted_widths_keep_every_token_and_label(setup):
    """Per-batch widths (train.length_grouping) drop padding only."""
    _, tokenizer, records = setup
    cfg = LatentConfig(mode="switch", c_thought=1)
    for stage in (0, 1, 2):
        fixed = switch.collate_switch(records[:4], stage, tokenizer, cfg, switch.switch_widths(records), n_slots=2)
        fitted = switch.collate_switch(records[:4], stage, tokenizer, cfg, None, n_slots=2, bucket=8)
        assert fitted["prefix"].shape[1] % 8 == 0 and fitted["suffix"].shape[1] % 8 == 0
        for key in ("prefix", "suffix"):
            for b in range(4):
                for mask in (f"{key}_mask", f"{key}_loss_mask"):
                    np.testing.assert_array_equal(fitted[key][b][fitted[mask][b]], fixed[key][b][fixed[mask][b]])
        np.testing.assert_array_equal(fitted["latent_mask"], fixed["latent_mask"])


@pytest.mark.parametrize("thought_loss", [0.0, 0.5])
def test_switch_objective_equals_full_pass_loss(setup, thought_loss):
    """prefix labels + `<latent>` predicted by every latent but the last + the boundary token
    predicted by the last latent + suffix labels, against Coconut-style full passes; with
    `thought_loss`, each hidden step's last word predicted (weighted) by the position feeding its
    slot, in place of that position's `<latent>`."""
    _, tokenizer, records = setup
    cfg = presets.gated(presets.qwen3(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                      n_kv_heads=2, d_ff=64, max_seq_len=512))
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    latent_cfg = LatentConfig(mode="switch")
    widths = switch.switch_widths(records)
    # example-wise stages 2, 1, 0: K = 2 with 2 / 1 / 0 active slots
    parts = [switch.collate_switch([r], s, tokenizer, latent_cfg, widths, n_slots=2) for r, s in zip(records, (2, 1, 0))]
    batch = {k: jnp.asarray(np.concatenate([p[k] for p in parts])) for k in parts[0]}
    stay_id = tokenizer.id_of(SPECIAL.latent)
    # both sides jitted (nnx.jit): one compile each instead of op-by-op dispatch
    loss_sum, count, _ = nnx.jit(switch_objective(stay_id, thought_loss=thought_loss))(model, batch)

    B, P, S = batch["prefix"].shape[0], widths.prefix, widths.suffix
    n_latent = batch["latent_mask"].sum(1)
    logits = np.asarray(nnx.jit(naive_continuous_thought_logits, static_argnames="max_latent")(
        model, batch["prefix"], batch["prefix_mask"], n_latent, batch["suffix"], batch["suffix_mask"], max_latent=2
    ))
    # latent slot j > 0 is "predicted" as <latent> by slot j - 1 (stay in the span)
    stays = np.arange(2) >= 1
    total, n, n_stay, n_thought = 0.0, 0.0, 0, 0
    for b in range(B):
        targets = np.asarray(batch["thought_targets"][b]) if thought_loss else np.full(2, -1)
        slot_tokens = np.where(targets >= 0, targets, stay_id).astype(np.int32)
        slot_labels = ((targets >= 0) | stays) & np.asarray(batch["latent_mask"][b])
        slot_weights = np.where(targets >= 0, thought_loss, 1.0)
        real = np.concatenate([batch["prefix_mask"][b], batch["latent_mask"][b], batch["suffix_mask"][b]])
        tokens = np.concatenate([batch["prefix"][b], slot_tokens, batch["suffix"][b]])
        labels = np.concatenate([batch["prefix_loss_mask"][b], slot_labels, batch["suffix_loss_mask"][b]])
        weights = np.concatenate([np.ones(P), slot_weights, np.ones(S)])
        positions = np.flatnonzero(real)
        for prev, cur in zip(positions[:-1], positions[1:]):  # each real position predicts the next real one
            if labels[cur]:
                loss = float(optax.softmax_cross_entropy_with_integer_labels(logits[b, prev], tokens[cur]))
                total, n = total + weights[cur] * loss, n + weights[cur]
                n_stay += bool(P <= cur < P + 2 and tokens[cur] == stay_id)
                n_thought += bool(P <= cur < P + 2 and tokens[cur] != stay_id)
    # only the stage-2 example has a latent slot before its last; with targets it names step 2 there
    assert (n_stay, n_thought) == ((1, 0) if not thought_loss else (0, 3))
    np.testing.assert_allclose(float(count), n, rtol=1e-6)
    np.testing.assert_allclose(float(loss_sum) / float(count), total / n, rtol=1e-5)
