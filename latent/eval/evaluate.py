"""Generate answers for a set of examples and score them with the task's verifiable scorer."""

from __future__ import annotations

import time
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from latent.config import check_positions_fit, eval_positions
from latent.data import abstract as abstract_data
from latent.data.pipeline import Record, eval_batches, tokenize_examples
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example, extract_answer
from latent.data.tasks.formats import ANSWER_MARKER
from latent.eval import chains
from latent.infer.engine import make_generate


def resolve_policy(cfg) -> str:
    """eval.switch_policy with "auto" resolved: fixed for Coconut, model for SWITCH, else none."""
    if cfg.eval.switch_policy != "auto":
        return cfg.eval.switch_policy
    return {"coconut": "fixed", "switch": "model"}.get(cfg.latent.mode, "none")


def resolve_feedback(cfg) -> str:
    """What a latent step receives while decoding: the run's trained rule (model.feedback) when it
    trained one (latent.mode != none); else, under the entropy policy, p^T E ("soft"), as
    SwiReasoning feeds a text model, rather than its raw hidden state."""
    if resolve_policy(cfg) == "entropy" and cfg.latent.mode == "none":
        return "soft"
    return "model"


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
    policy: str = "none",
    latent_steps: int | Sequence[int] = 0,
    abstract_cfg=None,
    plot_path=None,
    keyed_spans: Sequence[Sequence[str]] | None = None,
    feedback: str = "model",
) -> dict:
    """accuracy, n, mean_generated_tokens, examples_per_s and per-example records.

    `score(prediction, example) -> bool` judges the text after the last "###" of the generation.
    Examples whose prompt alone exceeds `max_len` tokens are skipped and counted in `skipped`.
    policy: the engine's latent-mode policy (latent.infer.engine): "none" (text), "fixed"
    (Coconut: the prompt gets <bot>, then `latent_steps` thoughts, <eot> and text; one count, or
    one per example aligned with `examples`, as the curriculum gives each), "model"
    (SWITCH: <swi> ... </swi> emitted by the model) or "entropy" (training-free switching);
    `eval_cfg` holds the latent budget, total latent cap and switch cap; `feedback` what a latent
    step of those receives (latent.infer.engine.latent_input; resolve_feedback picks it for a run).
    Abstract formats (`abstract_cfg`: the run's AbstractConfig) decode under the abstract
    constraint; `abstract_bottleneck` prompts carry the gold verbal chain, hidden from the
    answer once <endabstract> is emitted. `reasoning_tokens` counts what comes before the answer
    marker: chain tokens for CoT, abstract tokens (delimiters excluded) for abstract spans.
    keyed_spans: per example (aligned with `examples`), the z a keyed warm-up would give it
    (`abstract.round1=keyed`); reported against the generated spans as `key_agreement`.
    """
    per_example_steps = None if np.ndim(latent_steps) == 0 or policy != "fixed" else np.asarray(latent_steps, np.int32)
    if np.ndim(latent_steps):
        latent_steps = int(np.max(latent_steps, initial=0))
    check_positions_fit(model_cfg, eval_positions(max_len, eval_cfg, policy, latent_steps), "the longest evaluation sequence")
    if eval_cfg.n_examples is not None:
        examples = list(examples)[: eval_cfg.n_examples]
    examples = list(examples)
    ids = {}
    if fmt in abstract_data.ABSTRACT_FORMATS:
        from latent.models.vocab import abstract_vocab_of

        vocab = abstract_vocab_of(tokenizer, abstract_cfg.num_tokens)
        ids = {"abstract": vocab, "abstract_max": abstract_cfg.max_tokens}
        records, skipped = abstract_data.tokenize_abstract_prompts(examples, tokenizer, fmt, max_len)
    else:
        vocab = None
        prompt_budget = max_len - (policy == "fixed")  # a Coconut prompt gets <bot> appended
        records, skipped = tokenize_examples(examples, tokenizer, fmt, max_len=prompt_budget, prompt_only=True)
    if policy == "fixed":
        bot_id = tokenizer.id_of(SPECIAL.bot)
        ids["eot_id"] = tokenizer.id_of(SPECIAL.eot)
        records = [
            Record(np.append(r.tokens, np.int32(bot_id)), np.append(r.loss_mask, False), r.prompt_len + 1, r.source_index)
            for r in records
        ]
    if policy == "model":
        ids |= {"swi_id": tokenizer.id_of(SPECIAL.swi), "swi_end_id": tokenizer.id_of(SPECIAL.swi_end)}
    generate = make_generate(
        graphdef, model_cfg, eval_cfg.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
        float(eval_cfg.temperature), float(eval_cfg.top_p), policy=policy, latent_steps=int(latent_steps),
        latent_budget=eval_cfg.latent_budget, max_latent_total=eval_cfg.max_latent_total,
        max_switches=eval_cfg.max_switches, feedback=feedback, **ids,
    )
    marker_ids = tokenizer.encode(ANSWER_MARKER)
    rng = jax.random.PRNGKey(seed)  # example i samples with a key of (seed, i): batching changes nothing
    results = []
    start = time.perf_counter()
    batches = eval_batches(records, batch_size=eval_cfg.batch_size, pad_id=tokenizer.pad_id, max_len=max_len)
    bar = tqdm(total=len(records), desc="eval", unit="ex", disable=not progress, leave=False)
    for batch in batches:
        hidden = None if "segments" not in batch else batch["segments"] == abstract_data.COT
        steps_B = None if per_example_steps is None else per_example_steps[batch["index"]]
        out = jax.device_get(generate(params, batch["tokens"], batch["padding_mask"], rng, hidden, steps_B, batch["index"]))
        tokens, lengths = out.tokens, out.lengths
        for row, index in enumerate(batch["index"]):
            ids = [int(t) for t in tokens[row, : lengths[row]] if t != tokenizer.eos_id]
            text = tokenizer.decode(ids)
            span = abstract_data.span_tokens(ids, vocab, tokenizer) if vocab is not None else None
            example = examples[index]
            prediction = extract_answer(text)
            correct = bool(score(prediction, example))
            results.append({
                "index": int(index), "question": example.question, "generated": text,
                "prediction": prediction, "answer": example.answer, "correct": correct,
                "generated_tokens": int(lengths[row]), "latent_steps": int(out.latent_steps[row]),
                "switches": int(out.switches[row]),
                "reasoning_tokens": len(span) if span is not None else _tokens_before_answer(ids, marker_ids),
                "chain": chains.analyse(example.question, text, example.answer),
            })
            if span is not None:
                results[-1]["abstract"] = span
        bar.update(len(batch["index"]))
    bar.close()
    elapsed = time.perf_counter() - start
    n = len(results)
    summary = {
        "accuracy": float(np.mean([r["correct"] for r in results])) if n else 0.0,
        "n": n,
        "skipped": skipped,
        "mean_generated_tokens": float(np.mean([r["generated_tokens"] for r in results])) if n else 0.0,
        "mean_latent_steps": float(np.mean([r["latent_steps"] for r in results])) if n else 0.0,
        "mean_reasoning_tokens": float(np.mean([r["reasoning_tokens"] for r in results])) if n else 0.0,
        "policy": policy,
        "chain_analysis": chains.summarize([r["chain"] for r in results], [r["correct"] for r in results]),
        "examples_per_s": n / elapsed if elapsed > 0 else 0.0,
    }
    if vocab is not None:
        from latent.data.special_tokens import abstract_tokens
        from latent.eval.codebook import codebook_report

        spans = [r["abstract"] for r in results]
        summary["codebook"] = codebook_report(spans, abstract_tokens(vocab.size), plot_path=plot_path)
        if keyed_spans is not None:  # abstract.round1=keyed: does z still name each step's result?
            from latent.eval.codebook import key_agreement

            keys = [keyed_spans[r["index"]] for r in results]
            summary["key_agreement"] = key_agreement(spans, keys, [r["correct"] for r in results])
    return summary | {"records": results}


def _tokens_before_answer(ids: list[int], marker_ids: list[int]) -> int:
    """Emitted tokens before the answer marker (all of them when there is none)."""
    m = len(marker_ids)
    for start in range(len(ids) - m + 1):
        if ids[start : start + m] == marker_ids:
            return start
    return len(ids)
