"""Coconut curriculum layout: stages, labels, widths, and the stage-0 sequence being exactly the
CoT sequence with the two markers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latent.config import LatentConfig
from latent.data.pipeline import tokenize_examples
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import get_task
from latent.data.tokenizer import Tokenizer
from latent.methods.coconut import curriculum


@pytest.fixture(scope="module")
def setup():
    examples = get_task("prosqa_small").generate(40, seed=3)
    tokenizer = Tokenizer.fit_word_level([e.question + " " + " ".join(e.steps) + " " + e.answer for e in examples])
    records, dropped = curriculum.tokenize_latent_examples(examples, tokenizer, max_len=512)
    assert dropped == 0
    return examples, tokenizer, records


def real(batch, b):
    prefix = batch["prefix"][b][batch["prefix_mask"][b]]
    suffix = batch["suffix"][b][batch["suffix_mask"][b]]
    return prefix, int(batch["latent_mask"][b].sum()), suffix


def test_stage_zero_is_the_cot_sequence_with_markers(setup):
    examples, tokenizer, records = setup
    cfg = LatentConfig(mode="coconut")
    widths = curriculum.batch_widths(records)
    batch = curriculum.collate_latent(records[:4], [0] * 4, tokenizer, cfg, widths, n_slots=0)
    cot, _ = tokenize_examples(examples[:4], tokenizer, "cot", max_len=512)
    bot, eot = tokenizer.id_of(SPECIAL.bot), tokenizer.id_of(SPECIAL.eot)
    for b in range(4):
        prefix, n_latent, suffix = real(batch, b)
        assert n_latent == 0 and prefix[-1] == bot and suffix[0] == eot
        np.testing.assert_array_equal(np.concatenate([prefix[:-1], suffix[1:]]), cot[b].tokens)
        labelled = batch["suffix"][b][batch["suffix_loss_mask"][b]]
        np.testing.assert_array_equal(labelled, cot[b].tokens[cot[b].loss_mask])  # labels = CoT's target


def test_stages_replace_leading_steps_by_c_slots_each(setup):
    _, tokenizer, records = setup
    cfg = LatentConfig(mode="coconut", c_thought=2, max_latent_stage=2)
    widths = curriculum.batch_widths(records)
    record = next(r for r in records if len(r.parts.steps) == 3)
    answer_and_eos = len(record.parts.answer)
    for stage, dropped_steps in ((1, 1), (2, 2), (3, 3)):  # stage 3 > max: every step goes
        k = curriculum.num_slots(stage, cfg)
        batch = curriculum.collate_latent([record], [stage], tokenizer, cfg, widths, n_slots=k)
        _, n_latent, suffix = real(batch, 0)
        assert n_latent == 2 * min(stage, 2)
        kept = sum(len(s) for s in record.parts.steps[dropped_steps:])
        assert len(suffix) == 1 + kept + answer_and_eos
        assert not batch["suffix_loss_mask"][0, 0]  # <eot> is never a label


def test_after_the_last_stage_pad_latent_to_max_fixes_the_slot_count():
    cfg = LatentConfig(mode="coconut", max_latent_stage=6)
    assert curriculum.stage_layout(7, 3, cfg) == (3, 3)
    assert curriculum.stage_layout(7, 3, dataclasses.replace(cfg, pad_latent_to_max=True)) == (3, 6)
    assert curriculum.stage_layout(4, 2, cfg) == (2, 4)  # Coconut: s slots even with fewer steps


def test_slot_count_per_stage_or_once():
    cfg = LatentConfig(mode="coconut", c_thought=1, max_latent_stage=3)
    assert [curriculum.num_slots(s, cfg) for s in range(6)] == [0, 1, 2, 3, 3, 3]
    once = dataclasses.replace(cfg, compile="once")
    assert {curriculum.num_slots(s, once) for s in range(6)} == {3}


def test_stage_schedule_counts_epochs():
    cfg = LatentConfig(mode="coconut", epochs_per_stage=2)
    # 100 records, batch 10: 10 steps per epoch, 20 per stage.
    assert [curriculum.stage_at(s, 10, 100, cfg) for s in (0, 19, 20, 39, 40)] == [0, 0, 1, 1, 2]


def test_uniform_prob_mixes_stages_up_to_the_step_count(setup):
    _, _, records = setup
    cfg = LatentConfig(mode="coconut", uniform_prob=1.0)
    stages = curriculum.draw_stages(records, 0, cfg, np.random.default_rng(0))
    assert all(0 <= s <= len(r.parts.steps) for s, r in zip(stages, records))
    assert len(set(stages)) > 1


def test_fitted_widths_hold_the_same_examples_and_the_same_loss_as_fixed_widths(setup):
    """Per-batch widths (train.length_grouping) only drop padding: the real tokens, labels and the
    latent objective are those of the fixed-width batch; at the all-latent stage the suffix is
    just <eot> + answer + <eos>, one bucket wide."""
    import jax
    from flax import nnx

    from latent.config_io import load_preset
    from latent.methods.coconut.objective import latent_objective
    from latent.nn import Transformer

    _, tokenizer, records = setup
    cfg = LatentConfig(mode="coconut", max_latent_stage=2, pad_latent_to_max=True)
    batch_records = records[:6]
    for stage in (0, 1, 3):
        k = curriculum.num_slots(stage, cfg)
        fixed = curriculum.collate_latent(batch_records, [stage] * 6, tokenizer, cfg, curriculum.batch_widths(records), k)
        fitted = curriculum.collate_latent(batch_records, [stage] * 6, tokenizer, cfg, None, k, bucket=8)
        longest_prefix = max(len(r.parts.question) + 1 for r in batch_records)
        assert fitted["prefix"].shape[1] == -(-longest_prefix // 8) * 8
        assert fitted["suffix"].shape[1] % 8 == 0 and fitted["suffix"].shape[1] <= fixed["suffix"].shape[1]
        for b in range(6):
            for got, want in zip(real(fitted, b), real(fixed, b)):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(fitted["suffix"][b][fitted["suffix_loss_mask"][b]],
                                          fixed["suffix"][b][fixed["suffix_loss_mask"][b]])
    assert fitted["suffix"].shape[1] == 8  # stage 3: <eot> "###" answer <eos> fits one bucket

    model_cfg = load_preset("tiny").model.replace(vocab_size=tokenizer.vocab_size)
    model = Transformer(model_cfg, rngs=nnx.Rngs(0))
    objective = latent_objective()
    for stage in (3,):  # all latent: the suffix shrinks the most
        k = curriculum.num_slots(stage, cfg)
        fixed = curriculum.collate_latent(batch_records, [stage] * 6, tokenizer, cfg, curriculum.batch_widths(records), k)
        fitted = curriculum.collate_latent(batch_records, [stage] * 6, tokenizer, cfg, None, k, bucket=8)
        loss_fixed, count_fixed, _ = objective(model, jax.tree.map(jax.numpy.asarray, fixed))
        loss_fitted, count_fitted, _ = objective(model, jax.tree.map(jax.numpy.asarray, fitted))
        assert int(count_fixed) == int(count_fitted) > 0
        np.testing.assert_allclose(float(loss_fitted), float(loss_fixed), rtol=1e-5)


def test_stage0_epochs_lengthens_only_stage_zero():
    cfg = LatentConfig(mode="coconut", epochs_per_stage=2, stage0_epochs=5)
    at_epoch = [curriculum.stage_at(10 * epoch, batch_size=10, n_records=100, latent_cfg=cfg) for epoch in range(10)]
    assert at_epoch == [0, 0, 0, 0, 0, 1, 1, 2, 2, 3]


def test_first_stage_starts_the_curriculum_later():
    cfg = LatentConfig(mode="coconut", epochs_per_stage=2, first_stage=1)
    assert curriculum.stage_at(0, batch_size=10, n_records=100, latent_cfg=cfg) == 1
    assert curriculum.stage_at(19, batch_size=10, n_records=100, latent_cfg=cfg) == 1  # epoch 1
    assert curriculum.stage_at(20, batch_size=10, n_records=100, latent_cfg=cfg) == 2  # epoch 2


def test_thought_targets_name_each_replaced_steps_last_word_at_its_last_slot(setup):
    _, tokenizer, records = setup
    cfg = LatentConfig(mode="coconut", c_thought=2, max_latent_stage=3, pad_latent_to_max=True)
    record = next(r for r in records if len(r.parts.steps) == 3)
    words = [tokenizer.decode([int(t)]) for t in record.parts.steps[1]]
    assert tokenizer.decode([record.step_keys[1]]) == [w for w in words if any(c.isalnum() for c in w)][-1]
    batch = curriculum.collate_latent([record], [2], tokenizer, cfg, None, n_slots=6)
    np.testing.assert_array_equal(batch["thought_targets"][0], [-1, record.step_keys[0], -1, record.step_keys[1], -1, -1])
    batch = curriculum.collate_latent([record], [0], tokenizer, cfg, None, n_slots=0)
    assert batch["thought_targets"].shape == (1, 0)


def test_thought_loss_adds_the_weighted_cross_entropy_of_the_slots(setup):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from latent.config_io import load_preset
    from latent.methods.coconut.objective import latent_objective
    from latent.nn import Transformer
    from latent.nn.recurrence import continuous_thought_forward

    _, tokenizer, records = setup
    cfg = LatentConfig(mode="coconut", c_thought=2, max_latent_stage=3, pad_latent_to_max=True)
    model = Transformer(load_preset("tiny").model.replace(vocab_size=tokenizer.vocab_size), rngs=nnx.Rngs(0))
    batch = jax.tree.map(jnp.asarray, curriculum.collate_latent(records[:4], [1, 2, 3, 2], tokenizer, cfg, None, 6))
    plain_sum, plain_count, _ = latent_objective()(model, batch)
    aux_sum, aux_count, _ = latent_objective(thought_loss=0.5)(model, batch)
    out = continuous_thought_forward(model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1),
                                     batch["suffix"], batch["suffix_mask"], max_latent=6)
    targets = batch["thought_targets"]
    labelled = targets >= 0
    feeding = jnp.concatenate([out.prefix_logits[:, -1:], out.latent_logits[:, :-1]], axis=1)  # slot j's input
    losses = optax.softmax_cross_entropy_with_integer_labels(feeding, jnp.maximum(targets, 0))
    assert int(labelled.sum()) == 1 + 2 + 3 + 2  # each example's replaced steps
    np.testing.assert_allclose(float(aux_sum - plain_sum), 0.5 * float(jnp.sum(losses * labelled)), rtol=1e-4)
    assert float(aux_count - plain_count) == 0.5 * int(labelled.sum())
