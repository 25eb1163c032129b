"""Coconut (latent.mode=coconut): continuous thoughts replace the first reasoning steps, stage by stage.

    curriculum.py  the stage schedule and the [question <bot> latents <eot> steps answer] batches
    objective.py   next-token loss after the thoughts (+ latent.thought_loss)

It decodes with the engine's `fixed` policy: the prompt ends with <bot>, the checkpoint's stage
gives each example its thoughts, then <eot> and text (latent.infer.policies).
"""

from __future__ import annotations

import numpy as np

from latent.methods import register_method
from latent.methods.base import Method, check_examples_left, record_batches
from latent.methods.coconut import curriculum
from latent.methods.coconut.objective import latent_objective


def fixed_widths(cfg, widths_of_all):
    """One prefix/suffix width for every batch (one compile per stage), unless
    `train.length_grouping` asks for widths fitted to each batch (None: see collate_latent)."""
    return None if cfg.train.length_grouping > 0 else widths_of_all()


class CoconutSource:
    """Batches at the curriculum stage of the step, with fixed prefix/suffix widths or (under
    `train.length_grouping`) widths fitted to each batch, rounded up to `train.length_bucket`."""

    def __init__(self, cfg, examples, tokenizer, batch_size: int):
        self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
        curriculum.check_latent_tokens(tokenizer, cfg.model)
        self.records, self.dropped = curriculum.tokenize_latent_examples(examples, tokenizer, cfg.task.max_len)
        check_examples_left(self.records, self.dropped, cfg)
        self.widths = fixed_widths(cfg, lambda: curriculum.batch_widths(self.records))
        self.objective = latent_objective(cfg.latent.latent_grad, cfg.latent.thought_loss, cfg.train.loss_chunk)
        self._it = record_batches(self.records, cfg, batch_size, [len(r.parts.question) for r in self.records])

    def stage(self, step: int) -> int:
        return curriculum.stage_at(step, self.batch_size, len(self.records), self.cfg.latent)

    def trained_stage(self, step: int) -> int:
        # the stage of batch step - 1, not of the next one: a model evaluated or saved right at a
        # stage change has not seen the new stage's layout
        return self.stage(max(step - 1, 0))

    def next(self, step: int) -> dict:
        records = next(self._it)
        stage = self.stage(step)
        rng = np.random.default_rng([self.cfg.train.seed, step])  # uniform_prob draws, resumable
        stages = curriculum.draw_stages(records, stage, self.cfg.latent, rng)
        return curriculum.collate_latent(
            records, stages, self.tokenizer, self.cfg.latent, self.widths, curriculum.num_slots(stage, self.cfg.latent),
            bucket=self.cfg.train.length_bucket,
        )

    @staticmethod
    def shape_key(batch) -> tuple:
        return (batch["prefix"].shape[1], batch["latent_mask"].shape[1], batch["suffix"].shape[1])

    @staticmethod
    def real_tokens(batch) -> float:
        return float(batch["prefix_mask"].sum() + batch["latent_mask"].sum() + batch["suffix_mask"].sum())

    def eval_latent_steps(self, step: int, examples=None) -> int | list[int]:
        """The stage's count (the checkpoint records it); per example (what training gave each at
        that stage) when `examples` are given."""
        if examples is not None:
            return curriculum.eval_latent_steps_per_example(self.trained_stage(step), examples, self.cfg.latent)
        return curriculum.eval_latent_steps(self.trained_stage(step), self.cfg.latent)

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


@register_method
class Coconut(Method):
    name = "coconut"
    policy = "fixed"
    selected_by = "latent.mode=coconut with task.format=cot or no_cot"

    def claims(self, cfg) -> bool:
        return cfg.latent.mode == "coconut"

    def source(self, cfg, examples, tokenizer, batch_size: int):
        return CoconutSource(cfg, examples, tokenizer, batch_size)

    def train_positions(self, cfg) -> dict[str, int]:
        return {"latent.max_latent_stage*latent.c_thought": cfg.latent.max_latent_stage * cfg.latent.c_thought}

    def max_thoughts(self, cfg) -> int:
        return cfg.latent.max_latent_stage * cfg.latent.c_thought

    def checkpoint_latent_steps(self, cfg, meta, examples):
        """What its curriculum stage gave each of `examples` in training."""
        if "stage" in meta:
            return curriculum.eval_latent_steps_per_example(int(meta["stage"]), examples, cfg.latent)
        return super().checkpoint_latent_steps(cfg, meta, examples)
