"""An Evaluator, built once: generates answers for a set of examples and scores them.

    evaluator = latent.methods.evaluator_for(cfg, graphdef, tokenizer, valid_examples, scorer)
    metrics = evaluator(params)            # decode, score, analyse
    metrics = evaluator(new_params)        # same prompts, batches and compiled generate

At construction it tokenizes the prompts, builds the batches and the jitted generate function
(latent.infer.engine.make_generate); a call runs on params only, so the training loop builds
one per run and calls it at every evaluation. How prompts are written and generations read is
the method's `PromptLayout` (latent.methods.base); the analyses beyond accuracy (chain analysis,
codebook statistics, key agreement, chain leak) are `latent.eval.analyses` objects that
`latent.methods.analyses_for` switches on by task and method.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from latent import distributed
from latent.config import check_positions_fit, eval_positions
from latent.data.pipeline import Record, grouped_eval_batches
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example, extract_answer
from latent.data.tasks.formats import ANSWER_MARKER
from latent.errors import ConfigError
from latent.eval.analyses import Analysis
from latent.infer.engine import emitted_ids, make_generate
from latent.methods.base import PromptLayout, text_layout


def policy_prompts(layout: PromptLayout, policy: str, examples, tokenizer, max_len: int):
    """(prompt records, skipped, engine token ids, question lengths) to decode `examples` under
    `policy`: the layout's prompts (those over `max_len` with what the policy appends skipped and
    counted), with <bot> appended under `fixed` (Coconut), and the ids make_generate needs for the
    layout (the abstract constraint) and the policy (<eot>; <swi>, </swi>; hrpo: the answer marker
    "###" that ends the thinking span, which must be one token). A question length is
    the prompt's first tokens: an abstract_bottleneck prompt's gold chain and <bot> left out."""
    ids = dict(layout.engine)
    prompts, skipped = layout.tokenize(examples, tokenizer, max_len - (policy == "fixed"))
    question_lens = [r.prompt_len if r.segments is None else int(np.sum(r.segments == layout.question_segment))
                     for r in prompts]
    if policy == "fixed":
        bot_id = tokenizer.id_of(SPECIAL.bot)
        ids["eot_id"] = tokenizer.id_of(SPECIAL.eot)
        prompts = [
            Record(np.append(r.tokens, np.int32(bot_id)), np.append(r.loss_mask, False), r.prompt_len + 1, r.source_index)
            for r in prompts
        ]
    if policy == "model":
        ids |= {"swi_id": tokenizer.id_of(SPECIAL.swi), "swi_end_id": tokenizer.id_of(SPECIAL.swi_end)}
    if policy == "hrpo":
        marker_ids = tokenizer.encode(ANSWER_MARKER)
        if len(marker_ids) != 1:
            raise ConfigError(f"HRPO's thinking span ends at the answer marker {ANSWER_MARKER!r}, which this "
                              f"tokenizer writes as {len(marker_ids)} tokens {marker_ids}, not one")
        ids["answer_id"] = marker_ids[0]
    return prompts, skipped, ids, question_lens


class Evaluator:
    """Decodes `examples` and scores them with `score(prediction, example) -> bool` (the text after
    the last "###" of the generation); `evaluator(params) -> dict` of accuracy, n, skipped,
    mean_generated_tokens, mean_latent_steps, mean_reasoning_tokens, policy, examples_per_s, each
    analysis's summary under its name, and per-example `records`.

    Examples past `eval_cfg.n_examples` are dropped; those whose prompt alone exceeds `max_len`
    tokens are skipped and counted in `skipped`.
    policy: the engine's latent-mode policy (latent.infer.engine): "none" (text), "fixed"
    (Coconut: the prompt gets <bot>, then `latent_steps` thoughts, <eot> and text; one count, or
    one per example aligned with `examples`, as the curriculum gives each), "model"
    (SWITCH: <swi> ... </swi> emitted by the model), "entropy" (training-free switching) or
    "hrpo" (HRPO: the tokens before the answer marker are fed as the gated hybrid);
    `eval_cfg` holds the latent budget, total latent cap and switch cap; `feedback` what a latent
    step of those receives (latent.infer.engine.latent_input; latent.methods.resolve_feedback
    picks it for a run). `layout` (latent.methods.base.PromptLayout; default: text prompts in
    `fmt`) writes the prompts and reads the generations: Abstract-CoT's decode under the
    abstract constraint, and its bottleneck prompts carry the gold verbal chain, hidden from the
    answer once <endabstract> is emitted. `reasoning_tokens` counts what comes before the answer
    marker: chain tokens for CoT, abstract tokens (delimiters excluded) for abstract spans.
    analyses: latent.eval.analyses objects run on every evaluation (latent.methods.evaluator_for
    picks the run's).
    """

    def __init__(
        self,
        graphdef,
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
        layout: PromptLayout | None = None,
        feedback: str = "model",
        analyses: Sequence[Analysis] = (),
    ):
        self.graphdef, self.model_cfg, self.tokenizer, self.score, self.eval_cfg = graphdef, model_cfg, tokenizer, score, eval_cfg
        self.fmt, self.max_len, self.seed, self.progress = fmt, max_len, seed, progress
        self.policy, self.latent_steps, self.feedback = policy, latent_steps, feedback
        self.layout = layout = text_layout(fmt) if layout is None else layout
        self.analyses = list(analyses)
        self._check_positions(latent_steps)
        examples = list(examples)
        self.examples = examples if eval_cfg.n_examples is None else examples[: eval_cfg.n_examples]

        self.vocab = layout.vocab
        prompts, self.skipped, self._ids, self._question_lens = policy_prompts(layout, policy, self.examples, tokenizer,
                                                                               max_len)
        self.prompts = prompts  # tokenized prompts, in example order (those over max_len left out)
        # Sorted by length into few prompt widths, every batch of the same rows: few compiled loops
        # (pipeline.grouped_eval_batches); the records come back in example order.
        self.batches = grouped_eval_batches(prompts, batch_size=eval_cfg.batch_size, pad_id=tokenizer.pad_id,
                                            max_len=max_len)
        for batch in self.batches:  # abstract_bottleneck: the chain positions the answer stops attending to
            hides = "segments" in batch and layout.hidden_segment is not None
            batch["hidden"] = batch["segments"] == layout.hidden_segment if hides else None
        self._marker_ids = tokenizer.encode(ANSWER_MARKER)
        self._generates = {}  # compiled slot count -> jitted generate (one for any run but Coconut's stages)
        self._generate(self._max_steps(latent_steps))

    def compiled_shapes(self) -> int:
        """Decoding loops compiled so far: one per (thought slots, batch shape) an evaluation ran
        (the jit caches' sizes; grouped batches keep this to a handful). make_generate is cached
        by its settings, so evaluators of the same settings in one process share these loops."""
        return sum(generate._cache_size() for generate in self._generates.values())

    def question_tokens(self) -> list[np.ndarray]:
        """Each prompt's question tokens as tokenized at construction (the first tokens of the
        prompt: an abstract_bottleneck prompt's gold chain and Coconut's appended <bot> left out),
        in the order of `prompts`."""
        return [r.tokens[:n] for r, n in zip(self.prompts, self._question_lens)]

    @staticmethod
    def _max_steps(latent_steps) -> int:
        return int(np.max(latent_steps, initial=0)) if np.ndim(latent_steps) else int(latent_steps)

    def _check_positions(self, latent_steps) -> None:
        check_positions_fit(self.model_cfg, eval_positions(self.max_len, self.eval_cfg, self.policy, self._max_steps(latent_steps)),
                            "the longest evaluation sequence")

    def _generate(self, latent_steps: int):
        """The jitted generate for `latent_steps` compiled thought slots, built on first use."""
        if latent_steps not in self._generates:
            eval_cfg, tokenizer = self.eval_cfg, self.tokenizer
            self._generates[latent_steps] = make_generate(
                self.graphdef, self.model_cfg, eval_cfg.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                float(eval_cfg.temperature), float(eval_cfg.top_p), top_k=eval_cfg.top_k, policy=self.policy,
                latent_steps=latent_steps, latent_budget=eval_cfg.latent_budget, max_latent_total=eval_cfg.max_latent_total,
                max_switches=eval_cfg.max_switches, feedback=self.feedback, cache_dtype=eval_cfg.cache_dtype,
                **self._ids,
            )
        return self._generates[latent_steps]

    def __call__(self, params, *, latent_steps: int | Sequence[int] | None = None) -> dict:
        """Decode, score and analyse with `params`. latent_steps: this evaluation's thoughts (one
        count, or one per example given at construction, as a Coconut stage gives each); None
        keeps the constructor's."""
        generate, per_example_steps = self._prepare(latent_steps)
        tokenizer, span_of = self.tokenizer, self.layout.span
        results = []
        start = time.perf_counter()
        # A multi-process run splits the batches over processes (batch j decodes on process
        # j mod P, from the params each holds whole) and gathers the records: the same results,
        # P times faster; each process's key of (seed, example) keeps sampling independent of it.
        process, processes = jax.process_index(), jax.process_count()
        mine = [batch for j, batch in enumerate(self.batches) if j % processes == process]
        bar = tqdm(total=sum(b["rows"] for b in mine), desc="eval", unit="ex", disable=not self.progress, leave=False)
        for batch in mine:
            out = jax.device_get(generate(params, *self._arguments(batch, per_example_steps)))
            tokens, lengths = out.tokens, out.lengths
            for row, index in enumerate(batch["index"][: batch["rows"]]):  # the rows after are fillers
                ids = emitted_ids(tokens[row], lengths[row], tokenizer.eos_id)
                text = tokenizer.decode(ids)
                span = span_of(ids) if span_of is not None else None
                example = self.examples[index]
                prediction = extract_answer(text)
                record = {
                    "index": int(index), "question": example.question, "generated": text,
                    "prediction": prediction, "answer": example.answer, "correct": bool(self.score(prediction, example)),
                    "generated_tokens": int(lengths[row]), "latent_steps": int(out.latent_steps[row]),
                    "switches": int(out.switches[row]),
                    "reasoning_tokens": len(span) if span is not None else _tokens_before_answer(ids, self._marker_ids),
                }
                for analysis in self.analyses:
                    record |= analysis.per_example(example, record)
                if span is not None:
                    record["abstract"] = span
                results.append(record)
            bar.update(batch["rows"])
        bar.close()
        decoded_here = len(results)
        if processes > 1:
            results = [r for part in distributed.gather_json(results) for r in part]
        results.sort(key=lambda r: r["index"])  # the batches ran sorted by prompt length
        elapsed = time.perf_counter() - start
        n = len(results)
        summary = {
            "accuracy": float(np.mean([r["correct"] for r in results])) if n else 0.0,
            "n": n,
            "skipped": self.skipped,
            "mean_generated_tokens": float(np.mean([r["generated_tokens"] for r in results])) if n else 0.0,
            "mean_latent_steps": float(np.mean([r["latent_steps"] for r in results])) if n else 0.0,
            "mean_reasoning_tokens": float(np.mean([r["reasoning_tokens"] for r in results])) if n else 0.0,
            "policy": self.policy,
            "examples_per_s": n / elapsed if elapsed > 0 else 0.0,
        }
        if processes > 1:
            summary["decoded_on_this_process"] = decoded_here
        for analysis in self.analyses:
            summary[analysis.name] = analysis(results, self, params)
        return summary | {"records": results}

    def _prepare(self, latent_steps):
        """(the jitted generate for `latent_steps`, the per-example thoughts or None); None: the
        constructor's thoughts."""
        if latent_steps is None:
            latent_steps = self.latent_steps
        else:
            self._check_positions(latent_steps)
        per_example_steps = None if np.ndim(latent_steps) == 0 or self.policy != "fixed" else np.asarray(latent_steps, np.int32)
        return self._generate(self._max_steps(latent_steps)), per_example_steps

    def _arguments(self, batch, per_example_steps) -> tuple:
        """generate's arguments after the params for one of `self.batches`."""
        steps_B = None if per_example_steps is None else per_example_steps[batch["index"]]
        rng = jax.random.PRNGKey(self.seed)  # example i samples with a key of (seed, i): batching changes nothing
        return batch["tokens"], batch["padding_mask"], rng, batch["hidden"], steps_B, batch["index"]

    def lower(self, params, *, latent_steps: int | Sequence[int] | None = None):
        """The decoding loop an evaluation runs, lowered, not run (a jax.stages.Lowered, to
        `.compile()` ahead of time: tpu/aot.py): `generate` for the largest of this evaluator's
        batches with the arguments a call passes it. params: arrays or ShapeDtypeStructs with
        shardings (the other arguments are placed as a call places host arrays)."""
        generate, per_example_steps = self._prepare(latent_steps)
        largest = max(self.batches, key=lambda batch: batch["tokens"].size)
        shapes = [None if x is None else jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(x.dtype))
                  for x in self._arguments(largest, per_example_steps)]
        return generate.lower(params, *shapes)


def _tokens_before_answer(ids: list[int], marker_ids: list[int]) -> int:
    """Emitted tokens before the answer marker (all of them when there is none)."""
    m = len(marker_ids)
    for start in range(len(ids) - m + 1):
        if ids[start : start + m] == marker_ids:
            return start
    return len(ids)
