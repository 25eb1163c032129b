"""Plain supervised fine-tuning on text: CoT (question, steps, answer) or no-CoT (question, answer).

The smallest method, and the template for a new one: it claims its configs, builds token
batches (latent.data.pipeline) and trains the next-token loss on the target.
"""

from __future__ import annotations

import functools

from latent.data import pipeline
from latent.data.tasks.text import is_text_name
from latent.methods import register_method
from latent.methods.base import Method, TokenSource
from latent.methods.losses import next_token_accuracy_sum, next_token_head_sums, next_token_loss_sum

TEXT_FORMATS = ("cot", "no_cot")


def sft_objective(model, batch: dict, attention_mask=None, loss_chunk: int = 0):
    """Next-token loss on a token batch: tokens/padding_mask/loss_mask [B, T].
    Returns (loss sum, labelled tokens, correctly predicted labelled tokens).

    loss_chunk > 0 (train.loss_chunk): the same sums from the hidden states, the head applied only
    at the batch's `label_positions` [B, K] (every position without them), that many positions at
    a time (latent.methods.losses.next_token_head_sums): no [B, T, V] logits."""
    if loss_chunk <= 0:
        out = model(batch["tokens"], padding_mask=batch["padding_mask"], attention_mask=attention_mask)
        loss_sum, count = next_token_loss_sum(out.logits, batch["tokens"], batch["loss_mask"])
        return loss_sum, count, next_token_accuracy_sum(out.logits, batch["tokens"], batch["loss_mask"])
    out = model(batch["tokens"], padding_mask=batch["padding_mask"], attention_mask=attention_mask, with_logits=False)
    return next_token_head_sums(model.logits, out.hidden, batch["tokens"], batch["loss_mask"], loss_chunk,
                                batch.get("label_positions"))


def sft_objective_for(cfg):
    """The run's text objective: sft_objective with its train.loss_chunk."""
    if cfg.train.loss_chunk <= 0:
        return sft_objective
    return functools.partial(sft_objective, loss_chunk=cfg.train.loss_chunk)


def token_source(cfg, records, dropped, tokenizer, batch_size: int):
    """A text run's TokenSource: its objective, and `label_positions` in its batches when the
    objective runs the head only there (train.loss_chunk > 0)."""
    return TokenSource(cfg, records, dropped, tokenizer, batch_size, sft_objective_for(cfg),
                       with_label_positions=cfg.train.loss_chunk > 0)


@register_method
class SFT(Method):
    name = "sft"
    selected_by = "latent.mode=none with task.format=cot or no_cot (and abstract.rounds=0: no warm-up)"

    def claims(self, cfg) -> bool:
        return (cfg.latent.mode == "none" and cfg.task.format in TEXT_FORMATS and cfg.abstract.rounds == 0
                and not is_text_name(cfg.task.name))  # a text corpus is language modelling (latent.methods.lm)

    def source(self, cfg, examples, tokenizer, batch_size: int):
        records, dropped = pipeline.tokenize_examples(examples, tokenizer, cfg.task.format, cfg.task.max_len)
        return token_source(cfg, records, dropped, tokenizer, batch_size)
