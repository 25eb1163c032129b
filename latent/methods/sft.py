"""Plain supervised fine-tuning on text: CoT (question, steps, answer) or no-CoT (question, answer).

The smallest method, and the template for a new one: it claims its configs, builds token
batches (latent.data.pipeline) and trains the next-token loss on the target.
"""

from __future__ import annotations

from latent.data import pipeline
from latent.data.tasks.text import is_text_name
from latent.methods import register_method
from latent.methods.base import Method, TokenSource
from latent.methods.losses import next_token_accuracy_sum, next_token_loss_sum

TEXT_FORMATS = ("cot", "no_cot")


def sft_objective(model, batch: dict, attention_mask=None):
    """Next-token loss on a token batch: tokens/padding_mask/loss_mask [B, T].
    Returns (loss sum, labelled tokens, correctly predicted labelled tokens)."""
    out = model(batch["tokens"], padding_mask=batch["padding_mask"], attention_mask=attention_mask)
    loss_sum, count = next_token_loss_sum(out.logits, batch["tokens"], batch["loss_mask"])
    return loss_sum, count, next_token_accuracy_sum(out.logits, batch["tokens"], batch["loss_mask"])


@register_method
class SFT(Method):
    name = "sft"
    selected_by = "latent.mode=none with task.format=cot or no_cot (and abstract.rounds=0: no warm-up)"

    def claims(self, cfg) -> bool:
        return (cfg.latent.mode == "none" and cfg.task.format in TEXT_FORMATS and cfg.abstract.rounds == 0
                and not is_text_name(cfg.task.name))  # a text corpus is language modelling (latent.methods.lm)

    def source(self, cfg, examples, tokenizer, batch_size: int):
        records, dropped = pipeline.tokenize_examples(examples, tokenizer, cfg.task.format, cfg.task.max_len)
        return TokenSource(cfg, records, dropped, tokenizer, batch_size, sft_objective)
