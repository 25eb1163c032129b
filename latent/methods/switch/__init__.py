"""SWITCH (latent.mode=switch): one span of reasoning steps per example inside <swi> ... </swi>,
turned latent step by step; the model learns to open and close its spans.

    spans.py      which steps go in the span (fixed or entropy rule) and the batches per stage
    objective.py  visible text, the span's boundary, a stay label on every slot but the last

It decodes with the engine's `model` policy: <swi> emitted enters latent mode, </swi> predicted
leaves it (latent.infer.policies).
"""

from __future__ import annotations

from latent.data.special_tokens import SPECIAL
from latent.errors import ConfigError
from latent.methods import register_method
from latent.methods.base import Method, check_examples_left, record_batches
from latent.methods.coconut import Coconut, CoconutSource, curriculum, fixed_widths
from latent.methods.switch import spans as switch
from latent.methods.switch.objective import switch_objective

# Coconut's curriculum knobs that SWITCH's span curriculum has no use for (its stages hide the
# span's steps one by one, at most latent.switch_span of them).
COCONUT_ONLY_FIELDS = ("uniform_prob", "max_latent_stage", "pad_latent_to_max")


def check_switch_fields(cfg) -> None:
    """A SWITCH run given another value for a Coconut-only field would silently ignore it; the
    entropy rule needs a model to score the steps."""
    latent = cfg.latent
    defaults = type(latent)()
    for name in COCONUT_ONLY_FIELDS:
        if getattr(latent, name) != getattr(defaults, name):
            raise ConfigError(
                f"latent.{name}={getattr(latent, name)!r} does nothing under latent.mode=switch (Coconut's curriculum "
                f"only; SWITCH hides at most latent.switch_span steps); leave it at {getattr(defaults, name)!r}"
            )
    if cfg.train.loss_chunk > 0:
        raise ConfigError(f"train.loss_chunk={cfg.train.loss_chunk} does nothing under latent.mode=switch yet (its "
                          "prefix, boundary and stay losses read full logits); leave it at 0")
    if latent.switch_rule == "entropy" and not latent.switch_model:
        raise ConfigError("latent.switch_rule=entropy needs latent.switch_model (a run directory to score steps)")


class SwitchSource(CoconutSource):
    """SWITCH batches: one <swi> span per example, its steps turned latent stage by stage
    (Coconut's stage clock, SWITCH's layout)."""

    def __init__(self, cfg, examples, tokenizer, batch_size: int):
        self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
        curriculum.check_latent_tokens(tokenizer, cfg.model, needed=(SPECIAL.swi, SPECIAL.swi_end, SPECIAL.latent))
        check_switch_fields(cfg)
        latent = cfg.latent
        if latent.switch_rule == "entropy":
            spans = [switch.highest_entropy_span(h, latent.switch_span) for h in _entropies_under(latent.switch_model, examples)]
        else:
            spans = [switch.fixed_span(len(e.steps), latent.switch_start, latent.switch_span) for e in examples]
        self.records, self.dropped = switch.tokenize_switch_examples(examples, tokenizer, cfg.task.max_len, spans)
        check_examples_left(self.records, self.dropped, cfg)
        self.widths = fixed_widths(cfg, lambda: switch.switch_widths(self.records))
        self.max_span = max(b - a for a, b in (r.span for r in self.records))
        self.objective = switch_objective(tokenizer.id_of(SPECIAL.latent), latent.latent_grad, latent.thought_loss)
        self._it = record_batches(self.records, cfg, batch_size, [len(r.parts.question) for r in self.records])

    def next(self, step: int) -> dict:
        records = next(self._it)
        stage = self.stage(step)
        n_slots = switch.switch_num_slots(self.max_span, stage, self.cfg.latent)
        return switch.collate_switch(records, stage, self.tokenizer, self.cfg.latent, self.widths, n_slots,
                                     bucket=self.cfg.train.length_bucket)

    def eval_latent_steps(self, step: int, examples=None) -> int:
        return 0  # the model opens and closes its own spans (policy "model")


def _entropies_under(workdir, examples) -> list[list[float]]:
    """Per-step mean entropies of `examples` under the model of run directory `workdir`."""
    from latent.nn import jitted_apply
    from latent.run import load_run

    run = load_run(workdir)
    apply = jitted_apply(run.graphdef)
    return switch.step_entropies(examples, run.tokenizer, lambda t, m: apply(run.params, t, m).logits)


@register_method
class Switch(Method):
    name = "switch"
    policy = "model"
    selected_by = "latent.mode=switch with task.format=cot or no_cot"

    def claims(self, cfg) -> bool:
        return cfg.latent.mode == "switch"

    def check(self, cfg) -> None:
        check_switch_fields(cfg)

    def source(self, cfg, examples, tokenizer, batch_size: int):
        return SwitchSource(cfg, examples, tokenizer, batch_size)

    def train_positions(self, cfg) -> dict[str, int]:
        return {"latent.switch_span*latent.c_thought": cfg.latent.switch_span * cfg.latent.c_thought}

    max_thoughts = Coconut.max_thoughts  # eval.py --latent-steps: within the same bound as Coconut's
