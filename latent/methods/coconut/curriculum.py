"""Coconut's latent curriculum: at stage s the first s reasoning steps become s * c latent slots.

    stage s <= max_latent_stage:  question "\\n" <bot> [latent] * (s * c) <eot> steps[s:] "### " answer <eos>
    stage s >  max_latent_stage:  every step is dropped; max_latent_stage * c slots if
                                  pad_latent_to_max, else min(#steps, max_latent_stage) * c

Stage 0 lasts `stage0_epochs` epochs (default `epochs_per_stage`), every later stage
`epochs_per_stage`; `first_stage` > 0 starts the count there (after a CoT `train.init_from`); with probability `uniform_prob` an example instead takes a
stage drawn uniformly from 0..#steps (Coconut's mixing). Labels cover the suffix after <eot>
only: never the question, the markers or the latents. Each batch also carries `thought_targets`
[B, K]: for the last slot of each replaced step, that step's last word (`step_key_token`), -1
elsewhere. With `latent.thought_loss` > 0 the output of the position before that slot (whose
hidden state is the slot's input) is trained to predict it: the last slot's output is neither
fed back nor decoded (<eot> follows it; later positions only attend to its layers), so a step's
result is asked for where it becomes a slot's input. Past the last stage an example with more
steps than `max_latent_stage` gets targets for its first `max_latent_stage` steps only.

Batches have K latent columns: the stage's largest slot count (`compile="per_stage"`) or
K = max_latent_stage * c with the unused slots masked (`compile="once"`). Their prefix and suffix
widths are either fixed (the longest in the data, rounded up to 32), so a run compiles once per
stage or once overall; or each batch's own longest, rounded up to a bucket (`fit_widths`, what
the loop does under `train.length_grouping`), so a batch of short questions, or a late stage
whose suffix is only the answer, does not pay for the longest example: one compile per stage
and width bucket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from latent.data.parts import Parts, encode_parts
from latent.data.shapes import round_up
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example

ROUND_TO = 32


@dataclasses.dataclass(frozen=True)
class LatentRecord:
    """An example's token parts, which every stage reassembles."""

    parts: Parts
    source_index: int
    step_keys: tuple[int, ...] = ()  # step i's last word (step_key_token), for thought targets


def check_latent_tokens(tokenizer, model_cfg, needed=(SPECIAL.bot, SPECIAL.eot)) -> None:
    """Raise ConfigError naming what is missing when a latent run lacks its marker tokens, in
    the tokenizer or as rows of the model's embedding table."""
    from latent.config import ConfigError

    missing = [t for t in needed if tokenizer.token_to_id(t) is None]
    if missing:
        raise ConfigError(
            f"latent.mode needs the tokens {list(needed)}; the tokenizer lacks {missing} "
            "(add them with Tokenizer.add_special_tokens and grow model.vocab_size)"
        )
    too_big = {t: tokenizer.token_to_id(t) for t in needed if tokenizer.token_to_id(t) >= model_cfg.vocab_size}
    if too_big:
        raise ConfigError(
            f"model.vocab_size={model_cfg.vocab_size} has no embedding row for {too_big} (token: id); "
            "grow model.vocab_size"
        )


def step_key_token(step_ids: np.ndarray, tokenizer) -> int:
    """The last token of a step with a letter or digit in it: what the step concludes ("Every
    impus is a kerpus." -> kerpus); -1 if there is none."""
    for token in reversed(step_ids.tolist()):
        if any(ch.isalnum() for ch in tokenizer.decode([token])):
            return int(token)
    return -1


def tokenize_latent_examples(examples: Sequence[Example], tokenizer, max_len: int) -> tuple[list[LatentRecord], int]:
    """Records whose full CoT sequence (with the two markers) fits `max_len`; and how many did not."""
    records, dropped = [], 0
    for index, example in enumerate(examples):
        parts = encode_parts(example, tokenizer)
        if parts.n_tokens + 2 > max_len:  # + <bot> <eot>
            dropped += 1
            continue
        records.append(LatentRecord(parts, index, tuple(step_key_token(s, tokenizer) for s in parts.steps)))
    return records, dropped


def stage_layout(stage: int, n_steps: int, latent_cfg) -> tuple[int, int]:
    """(steps dropped, latent slots) for an example with `n_steps` steps at `stage`."""
    c, top = latent_cfg.c_thought, latent_cfg.max_latent_stage
    if stage > top:
        return n_steps, (top if latent_cfg.pad_latent_to_max else min(n_steps, top)) * c
    return min(stage, n_steps), stage * c


def stage_at(step: int, batch_size: int, n_records: int, latent_cfg) -> int:
    """The curriculum stage at optimizer step `step` (epochs counted in examples seen)."""
    epoch = step * batch_size // max(n_records, 1)
    per_stage, stage0 = latent_cfg.epochs_per_stage, latent_cfg.stage0_epochs
    if latent_cfg.first_stage > 0 or stage0 is None:
        return latent_cfg.first_stage + epoch // per_stage
    return 0 if epoch < stage0 else 1 + (epoch - stage0) // per_stage


def num_slots(stage: int, latent_cfg) -> int:
    """K, the latent columns of a batch at `stage` (see the module docstring)."""
    top_slots = latent_cfg.max_latent_stage * latent_cfg.c_thought
    if latent_cfg.compile == "once" or latent_cfg.uniform_prob > 0 or stage > latent_cfg.max_latent_stage:
        return top_slots
    return min(stage, latent_cfg.max_latent_stage) * latent_cfg.c_thought


def eval_latent_steps(stage: int, latent_cfg) -> int:
    """Continuous thoughts to decode with at `stage`: the stage's slots (max_latent_stage * c
    once every step is latent)."""
    return min(stage, latent_cfg.max_latent_stage) * latent_cfg.c_thought


def eval_latent_steps_per_example(stage: int, examples: Sequence[Example], latent_cfg) -> list[int]:
    """Each example's thoughts at `stage`: the slots training gave it (stage_layout), so past the
    last stage without pad_latent_to_max an example with fewer steps than max_latent_stage
    decodes with its own min(#steps, max_latent_stage) * c, not the stage's maximum."""
    return [stage_layout(stage, len(example.steps), latent_cfg)[1] for example in examples]


@dataclasses.dataclass(frozen=True)
class Widths:
    prefix: int  # P: question + "\n" + <bot>
    suffix: int  # S: <eot> + steps + answer + <eos>


def batch_widths(records: Sequence[LatentRecord]) -> Widths:
    """Widths that fit every record at every stage (stage 0, all steps written, is the longest)."""
    longest_prefix = max(len(r.parts.question) + 1 for r in records)  # + <bot>
    longest_suffix = max(len(r.parts.chain()) + len(r.parts.answer) + 1 for r in records)  # + <eot>
    return Widths(round_up(longest_prefix, ROUND_TO), round_up(longest_suffix, ROUND_TO))


def fit_widths(prefixes: Sequence[np.ndarray], suffixes: Sequence[np.ndarray], multiple: int) -> Widths:
    """The widths of one batch: its longest prefix and suffix, rounded up to `multiple`."""
    return Widths(round_up(max(map(len, prefixes)), multiple), round_up(max(map(len, suffixes)), multiple))


def empty_batch(batch_size: int, widths: Widths, n_slots: int, pad_id: int) -> dict[str, np.ndarray]:
    """An all-padding batch in the `prefix | K slots | suffix` layout, no thought targets (-1)."""
    B, P, S, K = batch_size, widths.prefix, widths.suffix, n_slots
    return {
        "prefix": np.full((B, P), pad_id, np.int32),
        "prefix_mask": np.zeros((B, P), bool),
        "latent_mask": np.zeros((B, K), bool),
        "suffix": np.full((B, S), pad_id, np.int32),
        "suffix_mask": np.zeros((B, S), bool),
        "suffix_loss_mask": np.zeros((B, S), bool),
        "thought_targets": np.full((B, K), -1, np.int32),
    }


def place_thought_targets(batch: dict, b: int, step_keys, c: int) -> None:
    """Example b's targets: the last of each replaced step's c slots names that step's key word."""
    batch["thought_targets"][b, c - 1 : len(step_keys) * c : c] = step_keys


def place(batch: dict, b: int, prefix: np.ndarray, slots: int, suffix: np.ndarray, source_index: int) -> None:
    """Writes example b: prefix left-padded (its last token in the last column), `slots` real
    latent slots, suffix right-padded."""
    P, S = batch["prefix"].shape[1], batch["suffix"].shape[1]
    if len(prefix) > P or len(suffix) > S:
        raise ValueError(f"example {source_index} is longer than the batch widths (prefix {P}, suffix {S})")
    if slots > batch["latent_mask"].shape[1]:
        raise ValueError(f"example {source_index} needs {slots} latent slots but the batch has {batch['latent_mask'].shape[1]}")
    batch["prefix"][b, P - len(prefix):] = prefix
    batch["prefix_mask"][b, P - len(prefix):] = True
    batch["latent_mask"][b, :slots] = True
    batch["suffix"][b, : len(suffix)] = suffix
    batch["suffix_mask"][b, : len(suffix)] = True


def collate_latent(
    records: Sequence[LatentRecord],
    stages: Sequence[int],
    tokenizer,
    latent_cfg,
    widths: Widths | None,
    n_slots: int,
    bucket: int = ROUND_TO,
) -> dict[str, np.ndarray]:
    """A continuous-thought batch (the layout `latent.nn.recurrence` documents), example b at
    stage `stages[b]`; `widths=None` fits the widths to this batch (rounded up to `bucket`)."""
    bot, eot = tokenizer.id_of(SPECIAL.bot), tokenizer.id_of(SPECIAL.eot)
    pieces = []  # (prefix, slots, suffix, steps replaced by the slots) per example
    for record, stage in zip(records, stages):
        parts = record.parts
        skipped, slots = stage_layout(stage, len(parts.steps), latent_cfg)
        prefix = np.concatenate([parts.question, [bot]])
        suffix = np.concatenate([[eot], parts.chain(start=skipped), parts.answer])
        pieces.append((prefix, slots, suffix, min(skipped, slots // latent_cfg.c_thought)))
    widths = widths or fit_widths([p[0] for p in pieces], [p[2] for p in pieces], bucket)
    batch = empty_batch(len(records), widths, n_slots, tokenizer.pad_id)
    c = latent_cfg.c_thought
    for b, ((prefix, slots, suffix, replaced), record) in enumerate(zip(pieces, records)):
        place(batch, b, prefix, slots, suffix, record.source_index)
        batch["suffix_loss_mask"][b, 1 : len(suffix)] = True  # never <eot>
        place_thought_targets(batch, b, record.step_keys[:replaced], c)
    return batch


def draw_stages(records: Sequence[LatentRecord], stage: int, latent_cfg, rng: np.random.Generator) -> list[int]:
    """Each example's stage: `stage`, or with probability uniform_prob one of 0..#steps."""
    stages = []
    for record in records:
        if latent_cfg.uniform_prob > 0 and rng.random() < latent_cfg.uniform_prob:
            stages.append(int(rng.integers(0, len(record.parts.steps) + 1)))
        else:
            stages.append(stage)
    return stages
