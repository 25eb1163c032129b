"""Language modelling on a natural-text corpus (`task.name=text:<corpus>`; latent.data.tasks.text).

The plain next-token objective on windows of the corpus: every token of a window but its first
is a target, none is a prompt. Nothing is decoded: evaluations report the validation windows'
loss and perplexity (latent.eval.lm_loss), and the attention analysis reads the same windows.
This is the natural-text half of the gated-attention study (scripts/gated_attention_study.py,
configs/gated_text.py).
"""

from __future__ import annotations

from latent.data.tasks.text import is_text_name, window_records
from latent.errors import ConfigError
from latent.methods import register_method
from latent.methods.base import Method, TokenSource
from latent.methods.sft import sft_objective_for


@register_method
class LanguageModel(Method):
    name = "lm"
    selected_by = "task.name=text:<corpus>"

    def claims(self, cfg) -> bool:
        return is_text_name(cfg.task.name)

    def check(self, cfg) -> None:
        if cfg.latent.mode != "none" or cfg.task.format not in ("cot", "no_cot"):
            field = f"latent.mode={cfg.latent.mode}" if cfg.latent.mode != "none" else f"task.format={cfg.task.format}"
            raise ConfigError(f"task.name={cfg.task.name} is language modelling on plain text, which has no "
                              f"reasoning steps or answers for {field}")

    def source(self, cfg, examples, tokenizer, batch_size: int):
        records, dropped = self.text_records(cfg, examples, tokenizer)
        # every token of a window is a target: the head runs everywhere (chunked with train.loss_chunk)
        return TokenSource(cfg, records, dropped, tokenizer, batch_size, sft_objective_for(cfg))

    def text_records(self, cfg, examples, tokenizer):
        return window_records(examples, tokenizer, cfg.task.max_len)

    def evaluator(self, cfg, graphdef, tokenizer, examples, *, progress: bool = True):
        from latent.eval.lm_loss import LossEvaluator

        examples = list(examples) if cfg.eval.n_examples is None else list(examples)[: cfg.eval.n_examples]
        records, _ = self.text_records(cfg, examples, tokenizer)
        return LossEvaluator(graphdef, records, cfg.eval, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len,
                             n=len(examples), progress=progress)
