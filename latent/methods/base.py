"""What a training method is: the `Method` a run's config selects, and the batch `Source` it trains on.

A method brings everything that is its own and nothing shared: its batch source (collation and
stage schedule), its objective, its decoding policy, how its evaluation prompts are written and
its generations read, and its extra analyses. The loop (latent.train.loop), train.py and eval.py
ask the run's method (`latent.methods.method_of(cfg)`) and never branch on a method's name.

A source is a resumable grain iterator plus what the loop needs to know about its batches:

    source.next(step) -> dict of numpy arrays    (the batch for optimizer step `step + 1`)
    source.objective                             (objective(model, batch) -> (loss sum, labelled count,
                                                  correct count); latent.train.step sums and scales it)
    source.dropped                               (examples left out for length)
    source.shape_key(batch)                      (one compile per distinct key)
    source.real_tokens(batch)                    (for tokens/s)
    source.eval_latent_steps(step[, examples])   (continuous thoughts to evaluate a model trained for
                                                  `step` steps with: its last batch's stage; 0 for text;
                                                  given examples, one count per example)
    source.stage(step)                           (curriculum stage of the batch `next(step)` returns; 0 for text)
    source.trained_stage(step)                   (stage of the last batch a model trained for `step` steps saw)
    source.get_state() / set_state(state)

and, optionally:

    source.widest_batch(step)                    (a batch as wide as any `next` returns: what tpu/aot.py
                                                  compiles the step for; without it, `next(step)`'s)
    source.needs_params                          (True: `next(step, params)` is handed the params
                                                  being trained, as RL samples its rollouts with them)
    source.make_train_step(graphdef, optimizer, schedule)
                                                 (its own update rule instead of latent.train.step's,
                                                  e.g. RL's rl.inner_epochs updates on one batch)
    source.host_metrics()                        (scalars measured on the host for the last batch,
                                                  logged with the step's: rewards, rollout time)
    source.param_trees() / restore_param_trees(read)
                                                 ({name: tree shaped like the params} saved in each
                                                  checkpoint; on a resume read(names) gives them back,
                                                  e.g. RL's frozen KL reference)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from latent.data import pipeline
from latent.data.tasks import DataError


@dataclasses.dataclass(frozen=True)
class PromptLayout:
    """How a method's evaluation prompts are written and its generations read (latent.eval.evaluator).

    tokenize(examples, tokenizer, max_len) -> (prompt records, skipped): the prompts, in example
        order, those over `max_len` tokens left out and counted. A record with `segments`
        (Abstract-CoT's) marks its question (segment `question_segment`) and the verbal chain
        (`hidden_segment`) that decoding hides from the answer once the span is closed.
    engine: extra keyword arguments of latent.infer.engine.make_generate (the abstract constraint).
    span(ids) -> list[str]: the abstract span of a generation, counted as its reasoning tokens and
        kept in its record under "abstract"; None: the tokens before the answer marker are counted.
    vocab: the abstract vocabulary (latent.models.vocab.AbstractVocab), for the codebook analysis.
    """

    tokenize: Callable[[Sequence, Any, int], tuple[list, int]]
    engine: dict = dataclasses.field(default_factory=dict)
    span: Callable[[list[int]], list[str]] | None = None
    vocab: Any = None
    hidden_segment: int | None = None
    question_segment: int | None = None  # the segment id of the question in records with `segments`


def text_layout(fmt: str = "cot") -> PromptLayout:
    """Prompts of a text run: the question (and "\\n"); the chain and answer are generated."""
    return PromptLayout(
        lambda examples, tokenizer, max_len: pipeline.tokenize_examples(examples, tokenizer, fmt, max_len, prompt_only=True)
    )


class Method:
    """One training method, registered by name (latent.methods.register_method).

    A subclass sets `name` and `policy`, says which configs are its own (`claims`) and gives its
    batch source (`source`); the other hooks have the plain text run's behaviour.
    """

    name: ClassVar[str] = ""
    # the decoding policy of eval.switch_policy=auto (latent.infer.policies): none (text), fixed
    # (Coconut's thoughts after <bot>), model (SWITCH spans the model opens and closes)
    policy: ClassVar[str] = "none"
    # the config fields that select it, for error messages ("latent.mode=coconut")
    selected_by: ClassVar[str] = ""

    def claims(self, cfg) -> bool:
        """Whether run `cfg` is this method's."""
        raise NotImplementedError

    def decoding_policy(self, cfg) -> str:
        """The policy eval.switch_policy=auto decodes this run with (the class's `policy`; a method
        that trains another one's runs, as RL does, answers with that one's)."""
        return self.policy

    def check(self, cfg) -> None:
        """Config checks across sections, before any data is read (a ConfigError names the field)."""

    def source(self, cfg, examples, tokenizer, batch_size: int):
        """The batch source (module docstring) over `examples` for global batches of `batch_size`
        (every process draws the same batch; the loop places each process's rows)."""
        raise NotImplementedError

    def check_file(self, cfg) -> Callable[[Sequence, Sequence[str]], None] | None:
        """A check of a data file's examples (`check(examples, locations)`, raising DataError that
        names file and item) for fields this method reads from them; None: nothing to check."""
        return None

    def updates_per_step(self, cfg) -> int:
        """Optimizer updates one step of the loop makes (the learning-rate schedule spans
        train.steps times this many)."""
        return 1

    def train_positions(self, cfg) -> dict[str, int]:
        """Positions the longest training sequence holds beyond task.max_len (latent slots), by name."""
        return {}

    def max_thoughts(self, cfg) -> int | None:
        """The most continuous thoughts an evaluation may give this run (eval.py --latent-steps);
        None: no bound (a text run has none to give)."""
        return None

    def checkpoint_latent_steps(self, cfg, meta: dict, examples) -> int | list[int]:
        """The thoughts a checkpoint is evaluated with (what its meta records; 0 for text)."""
        return int(meta.get("eval_latent_steps", 0))

    def prompt_layout(self, cfg, tokenizer) -> PromptLayout:
        return text_layout(cfg.task.format)

    def text_records(self, cfg, examples, tokenizer) -> tuple[list, int]:
        """(teacher-forced records of the examples' full text, how many were dropped for
        task.max_len): what the attention analysis reads. A text run's: question, chain and answer
        (the abstract formats read CoT's text); a language model's: its windows."""
        return pipeline.tokenize_examples(examples, tokenizer, cfg.task.format, cfg.task.max_len)

    def evaluator(self, cfg, graphdef, tokenizer, examples, *, progress: bool = True):
        """Its own evaluator, `evaluator(params, latent_steps=...) -> dict` (a language model's
        validation loss: latent.eval.lm_loss); None: the decoding Evaluator (latent.methods.evaluator_for)."""
        return None

    def analyses(self, cfg, *, plot_path=None, **context) -> list:
        """Its analyses beyond accuracy (latent.eval.analyses objects), after the task's own.
        context: what the caller knows (latent.methods.analyses_for): workdir, examples, ..."""
        return []

    def added_tokens(self, cfg) -> list[str]:
        """Tokens a run of this method needs that another run's tokenizer may lack (train.init_from
        from a run directory; a Hugging Face tokenizer gets every method token)."""
        return []

    def check_start(self, cfg, kind: str, source_cfg) -> None:
        """A check of what train.init_from holds before its weights are read: `kind` ("run" or
        "huggingface"), `source_cfg` the run's Config (None for Hugging Face). ConfigError if this
        method cannot continue it."""

    def run(self, cfg, workdir, *, progress: bool = True) -> dict:
        """train.py's job for `cfg`: one training run (latent.train.loop.train)."""
        from latent.train.loop import train

        return train(cfg, workdir, progress=progress)

    def started(self, cfg, workdir) -> list[Path]:
        """Directories whose checkpoints mean `workdir` has already started (a resume then never
        reads train.init_from)."""
        return [Path(workdir)]

    def interrupted_note(self, cfg) -> str | None:
        """What to print for a Ctrl-C outside a training loop's own handling (None: the default note)."""
        return None


# ----------------------------------------------------------------------------- shared by sources


def record_batches(records, cfg, batch_size: int, lengths: Sequence[int]):
    """Batches as lists of records (collated per step, at the step's curriculum stage); grouped
    by `lengths` under `train.length_grouping`."""
    return pipeline.shuffled_batches(
        records, batch_size=batch_size, seed=cfg.train.seed, batch_fn=list,
        lengths=lengths, group_window=cfg.train.length_grouping,
    )


def check_examples_left(records, dropped: int, cfg) -> None:
    """A DataError saying how many examples were cut and by which limit when none is left."""
    if records:
        return
    if dropped:
        raise DataError(
            f"no training examples left: all {dropped} were longer than task.max_len={cfg.task.max_len} tokens "
            "(raise task.max_len)"
        )
    source = f"task.path={cfg.task.path}" if cfg.task.path else f"task.name={cfg.task.name}"
    raise DataError(f"no training examples: {source} gave none once the validation questions were held out")


class StagelessSource:
    """What a source without a curriculum answers: no stages, no thoughts, and its iterator `_it`
    (a grain iterator) as its resumable state."""

    _it = None

    def eval_latent_steps(self, step: int, examples=None) -> int:
        return 0

    def stage(self, step: int) -> int:
        return 0

    def trained_stage(self, step: int) -> int:
        return 0

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


class TokenSource(StagelessSource):
    """Token batches of records (latent.data.pipeline.Record): tokens/loss_mask/padding_mask
    [B, L] (+ segments when the records carry them), L a length bucket; no stages.

    with_label_positions: batches also carry `label_positions` [B, K] (K a bucket of the batch's
    most labelled tokens in a row), for an objective that runs the output head only there
    (latent.methods.sft.sft_objective_for with train.loss_chunk > 0)."""

    def __init__(self, cfg, records, dropped: int, tokenizer, batch_size: int, objective,
                 with_label_positions: bool = False):
        check_examples_left(records, dropped, cfg)
        self.records, self.dropped, self.objective = records, dropped, objective
        self.batch_size, self.pad_id = batch_size, tokenizer.pad_id
        self.max_len, self.bucket_multiple = cfg.task.max_len, cfg.train.length_bucket
        self.with_label_positions = with_label_positions
        self._it = pipeline.train_batches(
            records, batch_size=batch_size, seed=cfg.train.seed, pad_id=tokenizer.pad_id,
            max_len=cfg.task.max_len, group_window=cfg.train.length_grouping, bucket_multiple=cfg.train.length_bucket,
            with_label_positions=with_label_positions,
        )

    def next(self, step: int) -> dict:
        return next(self._it)

    def widest_batch(self, step: int) -> dict:
        """A batch of the longest records: the widest length bucket the run compiles its step for."""
        longest = sorted(self.records, key=lambda r: len(r.tokens))[-self.batch_size:]
        longest += longest[-1:] * (self.batch_size - len(longest))  # fewer records than a batch: rows alike
        batch = pipeline.collate(longest, pad_id=self.pad_id, max_len=self.max_len, multiple=self.bucket_multiple)
        if self.with_label_positions:  # as wide as any: labels at every position
            batch["label_positions"] = pipeline.label_positions(batch["loss_mask"], batch["tokens"].shape[1])
        return batch

    @staticmethod
    def shape_key(batch) -> tuple:
        """(length,); (length, label width) for batches with `label_positions`."""
        if "label_positions" in batch:
            return (batch["tokens"].shape[1], batch["label_positions"].shape[1])
        return (batch["tokens"].shape[1],)

    @staticmethod
    def real_tokens(batch) -> float:
        return float(batch["padding_mask"].sum())
