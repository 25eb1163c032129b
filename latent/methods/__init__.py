"""One home per method: what is specific to SFT, Coconut, SWITCH, Abstract-CoT and Token-Assorted.

    method = method_of(cfg)                    # the registered Method whose `claims(cfg)` holds
    source = method.source(cfg, examples, tokenizer, batch_size)
    evaluator = evaluator_for(cfg, graphdef, tokenizer, examples, scorer)

Each method is one module or small folder here, registered with `@register_method`; every module
of this package is imported when it is, so a new method is a new file (plus its config section
and its tests): nothing else names it. Shared mechanisms stay where they are: the recurrence
(latent.nn.recurrence), feedback rules (latent.nn.feedback), the VQ codebook (latent.nn.vq), the
decoding engine (latent.infer), the train step (latent.train.step).

  sft             task.format=cot|no_cot, latent.mode=none                 sft.py
  coconut         latent.mode=coconut                                      coconut/
  switch          latent.mode=switch                                       switch/
  abstract_cot    task.format=abstract|abstract_bottleneck (+ warm-up)     abstract_cot/
  token_assorted  task.format=codes (data from scripts/vq_codes.py)        token_assorted/
  lm              task.name=text:<corpus> (language modelling, no decoding) lm.py
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

from latent.errors import ConfigError
from latent.methods.base import Method, PromptLayout, text_layout

__all__ = ["Method", "PromptLayout", "text_layout", "register_method", "method_of", "METHODS",
           "resolve_policy", "resolve_feedback", "check_run_positions", "analyses_for", "evaluator_for"]

METHODS: dict[str, Method] = {}  # name -> the registered instance, in registration order


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in METHODS and type(METHODS[cls.name]) is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({type(METHODS[cls.name]).__name__})")
    METHODS[cls.name] = cls()
    return cls


def method_of(cfg) -> Method:
    """The method named by `cfg.method`, or under "auto" the one registered method that claims
    run `cfg`; a ConfigError when none or several do."""
    if cfg.method != "auto":
        if cfg.method not in METHODS:
            raise ConfigError(f"method={cfg.method!r} is not a registered method; choose auto or one of {sorted(METHODS)}")
        return METHODS[cfg.method]
    claiming = [m for m in METHODS.values() if m.claims(cfg)]
    if len(claiming) == 1:
        return claiming[0]
    if not claiming:
        raise ConfigError(f"no method trains latent.mode={cfg.latent.mode} with task.format={cfg.task.format}; "
                          + "; ".join(f"{m.name}: {m.selected_by}" for m in METHODS.values()))
    raise ConfigError("these settings select more than one method: "
                      + "; ".join(f"{m.name} ({m.selected_by})" for m in claiming) + ": pick one")


def resolve_policy(cfg) -> str:
    """eval.switch_policy with "auto" resolved to the run's method's policy (fixed for Coconut,
    model for SWITCH, none for the others)."""
    if cfg.eval.switch_policy != "auto":
        return cfg.eval.switch_policy
    return method_of(cfg).decoding_policy(cfg)


def resolve_feedback(cfg) -> str:
    """What a latent step receives while decoding: the run's trained rule (model.feedback) when its
    method decodes latent steps itself; else, under the entropy policy, p^T E ("soft"), as
    SwiReasoning feeds a text model, rather than its raw hidden state."""
    if resolve_policy(cfg) == "entropy" and method_of(cfg).decoding_policy(cfg) == "none":
        return "soft"
    return "model"


def check_run_positions(cfg, policy: str | None = None) -> None:
    """Before training: the training sequences (task.max_len plus the method's latent slots,
    Method.train_positions) and the evaluations (`policy`, default the run's; at most
    max_latent_stage * c thoughts) fit model.max_seq_len when positions are learned."""
    from latent.config import check_positions_fit, eval_positions

    policy = resolve_policy(cfg) if policy is None else policy
    check_positions_fit(cfg.model, {"task.max_len": cfg.task.max_len} | method_of(cfg).train_positions(cfg),
                        "the longest training sequence")
    top_thoughts = cfg.latent.max_latent_stage * cfg.latent.c_thought
    check_positions_fit(cfg.model, eval_positions(cfg.task.max_len, cfg.eval, policy, top_thoughts),
                        "the longest evaluation sequence")


def analyses_for(cfg, task: str | None = None, *, model_passes: bool = True, **context) -> list:
    """The analyses an evaluation of run `cfg` reports, in report order: the task's
    (latent.eval.analyses.task_analyses), then the method's (Method.analyses).

    task: the task whose questions are evaluated (default cfg.task.name; eval.py --data TASK names
    another). model_passes: False leaves out the analyses that run the model again
    (`needs_model`), as training's evaluations do. context, handed to the method: plot_path (the
    codebook's rank-frequency PNG), workdir and examples (the run directory and the evaluated
    examples, eval.py's), keyed_spans (Abstract-CoT: a keyed warm-up's z per example; found
    from workdir when not given).
    """
    from latent.eval.analyses import task_analyses

    analyses = task_analyses(cfg.task.name if task is None else task)
    analyses += method_of(cfg).analyses(cfg, **context)
    return [a for a in analyses if model_passes or not a.needs_model]


def evaluator_for(cfg, graphdef, tokenizer, examples: Sequence, scorer, *, latent_steps=0, progress: bool = True,
                  task: str | None = None, model_passes: bool = True, **context):
    """The Evaluator (latent.eval.evaluator) of run `cfg` on `examples`, scored by `scorer` (a
    latent.data.tasks.scoring.Scorer): its method's prompts and decoding policy, its feedback,
    lengths and seed, and the analyses `analyses_for` switches on (`task`, `model_passes` and
    `context`: see there)."""
    from latent.eval.evaluator import Evaluator

    method = method_of(cfg)
    own = method.evaluator(cfg, graphdef, tokenizer, examples, progress=progress)
    if own is not None:  # a method that decodes nothing (a language model: its validation loss)
        return own
    analyses = analyses_for(cfg, task, model_passes=model_passes, examples=examples, **context)
    return Evaluator(
        graphdef, cfg.model, tokenizer, examples, scorer.score, cfg.eval, layout=method.prompt_layout(cfg, tokenizer),
        max_len=cfg.task.max_len, seed=cfg.train.seed, progress=progress, policy=resolve_policy(cfg),
        latent_steps=latent_steps, feedback=resolve_feedback(cfg), analyses=analyses,
    )


def _import_all() -> None:
    """Import every module of this package, so each method registers itself."""
    for info in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)


_import_all()
