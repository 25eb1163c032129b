"""The evaluation of a language model on text (latent.methods.lm): its validation loss, nothing decoded.

    evaluator = LossEvaluator(graphdef, records, eval_cfg, pad_id=tokenizer.pad_id, max_len=...)
    metrics = evaluator(params)    # loss, perplexity, token_accuracy, windows, target_tokens, ...

Built once per run like the decoding Evaluator (the training loop calls it at each evaluation):
the teacher-forced records (windows of the validation regions) are collated into left-padded
batches at construction and the loss is one jitted forward per batch shape. `loss` is the mean
next-token cross-entropy over every target token of every window (the sum over all batches
divided by the count, not a mean of batch means), `perplexity` its exp.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from latent.data.pipeline import Record, collate
from latent.methods.losses import next_token_accuracy_sum, next_token_loss_sum
from latent.nn import jitted_apply


class LossEvaluator:
    """`evaluator(params) -> dict` of the next-token loss of `records` (latent.data.pipeline
    Records: tokens, loss_mask), in batches of `eval_cfg.batch_size`. `n`: the examples (regions)
    the records were cut from."""

    def __init__(self, graphdef, records: Sequence[Record], eval_cfg, *, pad_id: int, max_len: int, n: int,
                 progress: bool = True):
        self.records, self.n, self.progress = list(records), n, progress
        size = eval_cfg.batch_size
        self.batches = [collate(self.records[i : i + size], pad_id=pad_id, max_len=max_len)
                        for i in range(0, len(self.records), size)]
        apply = jitted_apply(graphdef)

        @jax.jit
        def sums(params, tokens_BxT, padding_mask_BxT, loss_mask_BxT):
            logits_BxTxV = apply(params, tokens_BxT, padding_mask_BxT).logits
            loss_sum, count = next_token_loss_sum(logits_BxTxV, tokens_BxT, loss_mask_BxT)
            return loss_sum, count, next_token_accuracy_sum(logits_BxTxV, tokens_BxT, loss_mask_BxT)

        self._sums = sums

    def question_tokens(self) -> list[np.ndarray]:
        """No prompts: nothing here is asked (eval.py's unknown-token share reads none)."""
        return []

    def __call__(self, params, *, latent_steps=None) -> dict:
        start = time.perf_counter()
        loss_sum = count = correct = 0.0
        bar = tqdm(total=len(self.records), desc="eval loss", unit="window", disable=not self.progress, leave=False)
        for batch in self.batches:
            batch_loss, batch_count, batch_correct = jax.device_get(
                self._sums(params, batch["tokens"], batch["padding_mask"], batch["loss_mask"]))
            loss_sum, count, correct = loss_sum + float(batch_loss), count + float(batch_count), correct + float(batch_correct)
            bar.update(len(batch["tokens"]))
        bar.close()
        loss = loss_sum / count if count else float("nan")
        elapsed = time.perf_counter() - start
        return {
            "loss": loss, "perplexity": math.exp(loss) if math.isfinite(loss) and loss < 700 else float("inf"),
            "token_accuracy": correct / count if count else 0.0, "n": self.n, "windows": len(self.records),
            "target_tokens": int(count), "windows_per_s": len(self.records) / elapsed if elapsed > 0 else 0.0,
            "records": [],
        }


def one_line(evaluation: dict) -> str:
    """A language model's evaluation in a few words (train.py's and eval.py's last line)."""
    return (f"valid loss {evaluation['loss']:.4f} (perplexity {evaluation['perplexity']:.2f}, "
            f"{evaluation['target_tokens']} tokens in {evaluation['windows']} windows)")
