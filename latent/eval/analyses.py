"""Analyses an evaluation runs besides accuracy, each switched on by the task or the method.

An analysis is a small object with one interface (`Analysis`): a `name`, the key its result is
reported under; `per_example(example, record)`, fields it adds to each example's record; and
`__call__(records, evaluator, params)`, its summary of the decoded records (it may run the
model again on `params`, as `ChainLeak` does; then `needs_model` is True). The `Evaluator`
(latent.eval.evaluator) decodes, scores, then hands its records to each of its analyses.

Which analyses a run gets: the task's (`task_analyses`, here), then its method's
(`Method.analyses`, latent.methods), put together by latent.methods.analyses_for:

  chain_analysis  graph tasks (ProsQA, ProntoQA): each written step against the question's graph
  per_dataset     reasoning-gym tasks (rg:...): the accuracy of each dataset of the mix
  codebook        abstract_cot, token_assorted: how evenly the abstract vocabulary is used
  key_agreement   abstract_cot, a phase of a keyed warm-up: do the spans still name each step
  chain_leak      abstract_cot's bottleneck runs: does the answer read z, or the chain through z

A new task adds its analysis to `task_analyses`; a method returns its own from `Method.analyses`.

Standalone analyses run instead of decoding, by name (`eval.py --analysis NAME`, `STANDALONE`):
their `standalone(run, examples, out=..., progress=...)` reads a checkpoint loaded params-only
(latent.run.Run) and the examples to evaluate, writes its figures next to `out` and returns the
JSON summary eval.py writes to `out`:

  attention       latent.eval.attention: attention sink, output gate and max activation per layer and head
  probe           latent.eval.probe: linear probes of the node each reasoning step reaches (and the
                  breadth-first frontier), per latent slot or written step and layer
  intervene       latent.eval.interventions: when a latent step's thought is replaced (zeros, noise,
                  another example's, a node's embedding), the answer decoded greedily after the span
                  and its teacher-forced logit difference; an Abstract-CoT z swapped between questions
  steering        latent.eval.steering: separability and steerability of a concept (which option is
                  right; a node's identity; latent against text mode) per layer, over every checkpoint
                  of the run, with the directions' cosines

A new one adds its class to `STANDALONE` (imported when named, so eval.py's flags stay fast).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from latent.errors import ConfigError
from latent.eval import chains

# --analysis NAME -> "module:Class" of a standalone analysis.
STANDALONE = {
    "attention": "latent.eval.attention:AttentionAnalysis",
    "probe": "latent.eval.probe:ProbeAnalysis",
    "intervene": "latent.eval.interventions:InterventionAnalysis",
    "steering": "latent.eval.steering:SteeringAnalysis",
}

# Task-name prefixes whose questions state a graph (latent.eval.chains); prosqa_small etc. included.
GRAPH_TASKS = ("prosqa", "prontoqa")


class Analysis:
    """One analysis of an evaluation, reported as `results[name]`."""

    name: str = "analysis"
    needs_model: bool = False  # runs the model again on the params (more than reading the records)
    # How the examples' answers are judged (latent.data.tasks.scoring.Scorer): analyse_workdir sets it
    # before `standalone` for the analyses that decode and score (None: the run's own scorer).
    scorer = None

    def per_example(self, example, record: dict) -> dict:
        """Fields to add to one example's record (`record` holds the decoded text, the prediction, ...)."""
        return {}

    def __call__(self, records: list[dict], evaluator, params):
        """The summary reported under `name`: `records` are the evaluation's per-example records,
        `evaluator` the Evaluator (its tokenizer, examples, graphdef, configs), `params` the model's."""
        raise NotImplementedError

    def standalone(self, run, examples, *, out: Path, progress: bool = True) -> dict:
        """Its summary without a decoding pass (`eval.py --analysis NAME`): `run` a params-only
        latent.run.Run, `examples` those to evaluate; figures go next to `out` (its suffix
        replaced). Analyses of decoded records have none."""
        raise NotImplementedError(f"the {self.name} analysis reads decoded records: it runs inside an evaluation")

    def table(self, summary: dict) -> str:
        """A short text summary of `standalone`'s result, for the terminal."""
        return "\n".join(f"{key}: {value}" for key, value in summary.items() if not isinstance(value, (dict, list)))


def standalone_analysis(name: str, **options) -> Analysis:
    """The standalone analysis `--analysis name`, made with `options` (its own flags, e.g. the
    steering concept); an unknown name lists the known ones."""
    if name not in STANDALONE:
        raise ConfigError(f"--analysis {name!r} is not a standalone analysis; known: {sorted(STANDALONE)}")
    module, cls = STANDALONE[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


class ChainAnalysis(Analysis):
    """Each written step of a graph question checked against the question's statements (latent.eval.chains)."""

    name = "chain_analysis"

    def per_example(self, example, record):
        return {"chain": chains.analyse(example.question, record["generated"], example.answer)}

    def __call__(self, records, evaluator, params):
        return chains.summarize([r["chain"] for r in records], [r["correct"] for r in records])


class PerDataset(Analysis):
    """The accuracy of each reasoning-gym dataset of a mix (rg: tasks; latent.data.tasks.reasoning_gym)."""

    name = "per_dataset"

    def per_example(self, example, record):
        return {"dataset": example.meta.get("rg_dataset")}

    def __call__(self, records, evaluator, params):
        by_dataset: dict[str, list[bool]] = {}
        for r in records:
            by_dataset.setdefault(str(r["dataset"]), []).append(bool(r["correct"]))
        return {d: {"n": len(c), "accuracy": sum(c) / len(c)} for d, c in by_dataset.items()}


def is_graph_task(task: str) -> bool:
    return task.split("_")[0] in GRAPH_TASKS


def task_analyses(task: str) -> list[Analysis]:
    """The analyses the questions of `task` allow, whatever the method: chain analysis for graph
    tasks, the accuracy per dataset for reasoning-gym tasks (rg:...)."""
    if task.startswith("rg:"):
        return [PerDataset()]
    return [ChainAnalysis()] if is_graph_task(task) else []
