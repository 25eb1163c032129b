"""Where the loop's batches come from: text SFT (CoT, no-CoT, Abstract-CoT layouts), Coconut's
staged latent curriculum, or SWITCH spans.

A source is a resumable grain iterator plus what the loop needs to know about its batches:

    source.next(step) -> dict of numpy arrays    (the batch for optimizer step `step + 1`)
    source.objective                             (train-step objective, latent.train.step)
    source.shape_key(batch)                      (one compile per distinct key)
    source.real_tokens(batch)                    (for tokens/s)
    source.eval_latent_steps(step[, examples])   (continuous thoughts to evaluate a model trained for
                                                  `step` steps with: its last batch's stage; 0 for text;
                                                  given examples, one count per example)
    source.stage(step)                           (curriculum stage of the batch `next(step)` returns; 0 for text)
    source.trained_stage(step)                   (stage of the last batch a model trained for `step` steps saw)
    source.get_state() / set_state(state)
"""

from __future__ import annotations

import jax
import numpy as np

from latent.config import Config, ConfigError
from latent.data import abstract, curriculum, pipeline, switch
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import DataError
from latent.models.vocab import abstract_vocab_of
from latent.train.step import bottleneck_objective, latent_objective, sft_objective, switch_objective


def _record_batches(records, cfg: Config, batch_size: int):
    """Batches as lists of records (collated per step, at the step's curriculum stage); grouped
    by question length under `train.length_grouping`."""
    return pipeline.shuffled_batches(
        records, batch_size=batch_size, seed=cfg.train.seed, batch_fn=list,
        process_index=jax.process_index(), process_count=jax.process_count(),
        lengths=[len(r.parts.question) for r in records], group_window=cfg.train.length_grouping,
    )


def check_examples_left(records, dropped: int, cfg: Config) -> None:
    """A DataError saying how many examples were cut and by which limit when none is left."""
    if records:
        return
    if dropped:
        raise DataError(
            f"no training examples left: all {dropped} were longer than task.max_len={cfg.task.max_len} tokens "
            "(raise task.max_len)"
        )
    source = f"task.path={cfg.task.path}" if cfg.task.path else f"task.name={cfg.task.name}"
    raise DataError(f"no training examples: {source} gave none once the validation questions were held out")


def _fixed_widths(cfg: Config, widths_of_all):
    """One prefix/suffix width for every batch (one compile per stage), unless
    `train.length_grouping` asks for widths fitted to each batch (None: see collate_latent)."""
    return None if cfg.train.length_grouping > 0 else widths_of_all()


class TextSource:
    """Token batches: CoT / no-CoT text, or Abstract-CoT's layouts (the bottleneck one carries
    `segments` for its attention mask)."""

    def __init__(self, cfg: Config, examples, tokenizer, batch_size: int):
        fmt = cfg.task.format
        self.objective = bottleneck_objective if fmt == "abstract_bottleneck" else sft_objective
        if fmt in abstract.ABSTRACT_FORMATS:
            abstract_vocab_of(tokenizer, cfg.abstract.num_tokens)  # names what is missing
            self.records, self.dropped = abstract.tokenize_abstract_examples(
                examples, tokenizer, fmt, cfg.task.max_len, num_tokens=cfg.abstract.num_tokens, seed=cfg.train.seed,
                max_tokens=cfg.abstract.max_tokens,
            )
        else:
            self.records, self.dropped = pipeline.tokenize_examples(examples, tokenizer, fmt, cfg.task.max_len)
        check_examples_left(self.records, self.dropped, cfg)
        self._it = pipeline.train_batches(
            self.records, batch_size=batch_size, seed=cfg.train.seed, pad_id=tokenizer.pad_id,
            max_len=cfg.task.max_len, process_index=jax.process_index(), process_count=jax.process_count(),
            group_window=cfg.train.length_grouping, bucket_multiple=cfg.train.length_bucket,
        )

    def next(self, step: int) -> dict:
        return next(self._it)

    @staticmethod
    def shape_key(batch) -> tuple:
        return (batch["tokens"].shape[1],)

    @staticmethod
    def real_tokens(batch) -> float:
        return float(batch["padding_mask"].sum())

    def eval_latent_steps(self, step: int, examples=None) -> int:
        return 0

    def stage(self, step: int) -> int:
        return 0

    def trained_stage(self, step: int) -> int:
        return 0

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


class CoconutSource:
    """Batches at the curriculum stage of the step, with fixed prefix/suffix widths or (under
    `train.length_grouping`) widths fitted to each batch, rounded up to `train.length_bucket`."""

    def __init__(self, cfg: Config, examples, tokenizer, batch_size: int):
        self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
        curriculum.check_latent_tokens(tokenizer, cfg.model)
        self.records, self.dropped = curriculum.tokenize_latent_examples(examples, tokenizer, cfg.task.max_len)
        check_examples_left(self.records, self.dropped, cfg)
        self.widths = _fixed_widths(cfg, lambda: curriculum.batch_widths(self.records))
        self.objective = latent_objective(cfg.latent.latent_grad, cfg.latent.thought_loss)
        self._it = _record_batches(self.records, cfg, batch_size)

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


class SwitchSource(CoconutSource):
    """SWITCH batches: one <swi> span per example, its steps turned latent stage by stage."""

    def __init__(self, cfg: Config, examples, tokenizer, batch_size: int):
        self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
        curriculum.check_latent_tokens(tokenizer, cfg.model, needed=(SPECIAL.swi, SPECIAL.swi_end, SPECIAL.latent))
        latent = cfg.latent
        _refuse_coconut_only_fields(latent)
        if latent.switch_rule == "entropy":
            if not latent.switch_model:
                raise ConfigError("latent.switch_rule=entropy needs latent.switch_model (a run directory to score steps)")
            spans = [switch.highest_entropy_span(h, latent.switch_span) for h in _entropies_under(latent.switch_model, examples)]
        else:
            spans = [switch.fixed_span(len(e.steps), latent.switch_start, latent.switch_span) for e in examples]
        self.records, self.dropped = switch.tokenize_switch_examples(examples, tokenizer, cfg.task.max_len, spans)
        check_examples_left(self.records, self.dropped, cfg)
        self.widths = _fixed_widths(cfg, lambda: switch.switch_widths(self.records))
        self.max_span = max(b - a for a, b in (r.span for r in self.records))
        self.objective = switch_objective(tokenizer.id_of(SPECIAL.latent), latent.latent_grad, latent.thought_loss)
        self._it = _record_batches(self.records, cfg, batch_size)

    def next(self, step: int) -> dict:
        records = next(self._it)
        stage = self.stage(step)
        n_slots = switch.switch_num_slots(self.max_span, stage, self.cfg.latent)
        return switch.collate_switch(records, stage, self.tokenizer, self.cfg.latent, self.widths, n_slots,
                                     bucket=self.cfg.train.length_bucket)

    def eval_latent_steps(self, step: int, examples=None) -> int:
        return 0  # the model opens and closes its own spans (policy "model")


# Coconut's curriculum knobs that SWITCH's span curriculum has no use for (its stages hide the
# span's steps one by one, at most latent.switch_span of them).
COCONUT_ONLY_FIELDS = ("uniform_prob", "max_latent_stage", "pad_latent_to_max")


def _refuse_coconut_only_fields(latent) -> None:
    """A SWITCH run given another value for a Coconut-only field would silently ignore it."""
    defaults = type(latent)()
    for name in COCONUT_ONLY_FIELDS:
        if getattr(latent, name) != getattr(defaults, name):
            raise ConfigError(
                f"latent.{name}={getattr(latent, name)!r} does nothing under latent.mode=switch (Coconut's curriculum "
                f"only; SWITCH hides at most latent.switch_span steps); leave it at {getattr(defaults, name)!r}"
            )


def _entropies_under(workdir, examples) -> list[list[float]]:
    """Per-step mean entropies of `examples` under the model of run directory `workdir`."""
    from flax import nnx

    from latent.run import load_run

    run = load_run(workdir)
    logits_fn = jax.jit(lambda params, t, m: nnx.merge(run.graphdef, params)(t, padding_mask=m).logits)
    return switch.step_entropies(examples, run.tokenizer, lambda t, m: logits_fn(run.params, t, m))


def make_source(cfg: Config, examples, tokenizer, batch_size: int):
    if cfg.latent.mode == "coconut":
        return CoconutSource(cfg, examples, tokenizer, batch_size)
    if cfg.latent.mode == "switch":
        return SwitchSource(cfg, examples, tokenizer, batch_size)
    return TextSource(cfg, examples, tokenizer, batch_size)
