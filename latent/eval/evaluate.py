"""Generate answers for a set of examples and score them with the task's verifiable scorer."""

from __future__ import annotations

import time
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from latent.data.pipeline import eval_batches, tokenize_examples
from latent.data.tasks import Example, extract_answer
from latent.infer.engine import make_generate


def evaluate(
    graphdef,
    params,
    model_cfg,
    tokenizer,
    examples: Sequence[Example],
    score,
    eval_cfg,
    *,
    fmt: str = "cot",
    max_len: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """accuracy, n, mean_generated_tokens, examples_per_s and per-example records.

    `score(prediction, example) -> bool` judges the text after the last "###" of the generation.
    Examples whose prompt alone exceeds `max_len` tokens are skipped and counted in `skipped`.
    """
    if eval_cfg.n_examples is not None:
        examples = list(examples)[: eval_cfg.n_examples]
    examples = list(examples)
    records, skipped = tokenize_examples(examples, tokenizer, fmt, max_len=max_len, prompt_only=True)
    generate = make_generate(
        graphdef, model_cfg, eval_cfg.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
        float(eval_cfg.temperature), float(eval_cfg.top_p),
    )
    rng = jax.random.PRNGKey(seed)
    results, generated_counts = [], []
    start = time.perf_counter()
    batches = eval_batches(records, batch_size=eval_cfg.batch_size, pad_id=tokenizer.pad_id, max_len=max_len)
    bar = tqdm(total=len(records), desc="eval", unit="ex", disable=not progress, leave=False)
    for batch in batches:
        rng, batch_rng = jax.random.split(rng)
        tokens, lengths = generate(params, batch["tokens"], batch["padding_mask"], batch_rng)
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        for row, index in enumerate(batch["index"]):
            ids = [int(t) for t in tokens[row, : lengths[row]] if t != tokenizer.eos_id]
            text = tokenizer.decode(ids)
            example = examples[index]
            prediction = extract_answer(text)
            correct = bool(score(prediction, example))
            results.append({
                "index": int(index), "question": example.question, "generated": text,
                "prediction": prediction, "answer": example.answer, "correct": correct,
                "generated_tokens": int(lengths[row]),
            })
            generated_counts.append(int(lengths[row]))
        bar.update(len(batch["index"]))
    bar.close()
    elapsed = time.perf_counter() - start
    n = len(results)
    return {
        "accuracy": float(np.mean([r["correct"] for r in results])) if n else 0.0,
        "n": n,
        "skipped": skipped,
        "mean_generated_tokens": float(np.mean(generated_counts)) if n else 0.0,
        "examples_per_s": n / elapsed if elapsed > 0 else 0.0,
        "records": results,
    }

