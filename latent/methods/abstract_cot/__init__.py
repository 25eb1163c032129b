"""Abstract-CoT (task.format=abstract | abstract_bottleneck): reserved abstract tokens z stand in
for the verbal chain, decoded under a constraint inside <beginabstract> ... <endabstract>.

    layouts.py     the [x; z; y] / [x; c; z; y] / codes records, prompts and the bottleneck mask
    warmup.py      the warm-up by policy iteration (abstract.rounds > 0): bottleneck and
                   self-distillation runs per round, above the training loop
    analyses.py    codebook use, key agreement (keyed warm-up), chain leak (bottleneck)
    chain_leak.py  does a bottleneck answer read z, or the chain through z

With abstract.rounds = 0 train.py runs one ordinary run in task.format.
"""

from __future__ import annotations

import functools
from pathlib import Path

from latent.data.special_tokens import SPECIAL, abstract_tokens
from latent.errors import ConfigError
from latent.methods import register_method
from latent.methods.abstract_cot import layouts
from latent.methods.abstract_cot.analyses import ChainLeak, CodebookStats, KeyAgreement, keyed_spans_of
from latent.methods.base import Method, PromptLayout, TokenSource
from latent.methods.sft import sft_objective


def bottleneck_objective(model, batch: dict, loss_chunk: int = 0):
    """Abstract-CoT's bottlenecked SFT on [x; c; z; y] (latent.methods.abstract_cot.layouts):
    `segments` [B, T] become an attention mask that hides the verbal chain from the answer side;
    the loss covers z and y (loss_mask)."""
    return sft_objective(model, batch, attention_mask=layouts.bottleneck_attention_mask(batch["segments"]),
                         loss_chunk=loss_chunk)


class AbstractSpans(Method):
    """What the abstract-token methods share (Abstract-CoT, Token-Assorted's codes): token batches
    of an abstract layout, prompts decoded under the abstract constraint, the codebook analysis,
    and the abstract vocabulary added to a model that lacks it."""

    def source(self, cfg, examples, tokenizer, batch_size: int):
        from latent.models.vocab import abstract_vocab_of

        abstract_vocab_of(tokenizer, cfg.abstract.num_tokens)  # names what is missing
        records, dropped = layouts.tokenize_abstract_examples(
            examples, tokenizer, cfg.task.format, cfg.task.max_len, num_tokens=cfg.abstract.num_tokens,
            seed=cfg.train.seed, max_tokens=cfg.abstract.max_tokens,
        )
        objective = bottleneck_objective if cfg.task.format == "abstract_bottleneck" else sft_objective
        if cfg.train.loss_chunk > 0:  # the head only at the labelled z and y, chunked
            objective = functools.partial(objective, loss_chunk=cfg.train.loss_chunk)
        return TokenSource(cfg, records, dropped, tokenizer, batch_size, objective,
                           with_label_positions=cfg.train.loss_chunk > 0)

    def check_file(self, cfg):
        """A file's `abstract` fields (spans a warm-up round or scripts/vq_codes.py wrote)."""
        return lambda examples, locations: layouts.check_abstract_fields(examples, locations, cfg.abstract.num_tokens)

    def prompt_layout(self, cfg, tokenizer) -> PromptLayout:
        from latent.models.vocab import abstract_vocab_of

        vocab = abstract_vocab_of(tokenizer, cfg.abstract.num_tokens)
        fmt = cfg.task.format
        return PromptLayout(
            tokenize=lambda examples, tok, max_len: layouts.tokenize_abstract_prompts(examples, tok, fmt, max_len),
            engine={"abstract": vocab, "abstract_max": cfg.abstract.max_tokens},
            span=lambda ids: layouts.span_tokens(ids, vocab, tokenizer),
            vocab=vocab, hidden_segment=layouts.COT, question_segment=layouts.QUESTION,
        )

    def analyses(self, cfg, *, plot_path=None, **context) -> list:
        return [CodebookStats(plot_path)]

    def added_tokens(self, cfg) -> list[str]:
        return [*abstract_tokens(cfg.abstract.num_tokens), SPECIAL.begin_abstract, SPECIAL.end_abstract]


@register_method
class AbstractCoT(AbstractSpans):
    name = "abstract_cot"
    selected_by = "task.format=abstract or abstract_bottleneck, or abstract.rounds > 0 (the warm-up)"

    def claims(self, cfg) -> bool:
        return cfg.task.format in ("abstract", "abstract_bottleneck") or cfg.abstract.rounds > 0

    def analyses(self, cfg, *, plot_path=None, keyed_spans=None, workdir=None, examples=None, **context) -> list:
        """Codebook use; key agreement for a keyed warm-up's phases (`keyed_spans`, or found from
        `workdir` for `examples`); chain leak for bottleneck runs."""
        keyed = keyed_spans if keyed_spans is not None else keyed_spans_of(workdir, cfg, examples)
        analyses = super().analyses(cfg, plot_path=plot_path)
        if keyed is not None:
            analyses.append(KeyAgreement(keyed))
        if cfg.task.format == "abstract_bottleneck":
            analyses.append(ChainLeak(keyed, num_tokens=cfg.abstract.num_tokens))
        return analyses

    def run(self, cfg, workdir, *, progress: bool = True) -> dict:
        """The warm-up (abstract.rounds > 0: 2 runs per round under <workdir>/round<r>/), else one run."""
        if cfg.abstract.round1 == "keyed" and cfg.abstract.rounds == 0:  # a warm-up's phases are runs with rounds=0
            raise ConfigError("abstract.round1=keyed sets the warm-up's first z: it needs abstract.rounds >= 1")
        if cfg.abstract.rounds > 0:
            from latent.methods.abstract_cot.warmup import warmup

            return warmup(cfg, workdir, progress=progress)
        return super().run(cfg, workdir, progress=progress)

    def started(self, cfg, workdir) -> list[Path]:
        """A warm-up has started once its first phase, round1/bottleneck, holds a checkpoint."""
        return [Path(workdir)] + ([Path(workdir) / "round1" / "bottleneck"] if cfg.abstract.rounds > 0 else [])

    def interrupted_note(self, cfg) -> str | None:
        if cfg.abstract.rounds > 0:
            return ("interrupted between warm-up steps; finished phases and span files are kept; "
                    "rerun the same command to resume")
        return None
