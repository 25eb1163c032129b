"""The README's smallest example method, kept runnable: pause tokens (Goyal et al. 2024, "Think
before you speak"). PAUSES filler tokens follow the question, in training and in the prompts; the
model may use their positions to compute before it writes. A fork would put this file in
latent/methods/ (and a `pause` config section for PAUSES); train with `python train.py method=pause`."""

import numpy as np

from latent.data import pipeline
from latent.data.special_tokens import SPECIAL
from latent.methods import register_method
from latent.methods.base import Method, PromptLayout, TokenSource
from latent.methods.sft import sft_objective

PAUSES = 3


def with_pauses(records, tokenizer):
    """Each record with PAUSES <latent> tokens after its question (unlabelled, part of the prompt)."""
    pause = tokenizer.id_of(SPECIAL.latent)
    return [
        pipeline.Record(np.insert(r.tokens, r.prompt_len, [pause] * PAUSES),
                        np.insert(r.loss_mask, r.prompt_len, [False] * PAUSES), r.prompt_len + PAUSES, r.source_index)
        for r in records
    ]


@register_method
class Pause(Method):
    name = "pause"
    selected_by = "method=pause"

    def claims(self, cfg) -> bool:
        return False  # selected by name only

    def source(self, cfg, examples, tokenizer, batch_size):
        records, dropped = pipeline.tokenize_examples(examples, tokenizer, cfg.task.format, cfg.task.max_len - PAUSES)
        return TokenSource(cfg, with_pauses(records, tokenizer), dropped, tokenizer, batch_size, sft_objective)

    def prompt_layout(self, cfg, tokenizer):
        def tokenize(examples, tokenizer, max_len):
            records, skipped = pipeline.tokenize_examples(examples, tokenizer, cfg.task.format, max_len - PAUSES,
                                                          prompt_only=True)
            return with_pauses(records, tokenizer), skipped

        return PromptLayout(tokenize)
