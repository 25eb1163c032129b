"""RL as a method: `python train.py method=rl train.init_from=RUN ...` continues the run's own method
(the sections select it: its prompts, decoding policy, analyses) with on-policy GRPO-family updates.

Each step of the loop (latent.train.loop) takes `rl.prompts_per_step` training questions, samples
G = `rl.group_size` outputs for each with the params being trained (latent.methods.rl.rollout, at
`rl.temperature` / `rl.top_p`, per-example keys from (train.seed, step, question)), scores them
(latent.methods.rl.rewards), turns the rewards into group advantages, and makes
`rl.inner_epochs` updates of the policy loss (latent.methods.rl.objective) on the replayed
log-probs (latent.methods.rl.replay). The rollouts' own log-probs are pi_old, so the first
update is at ratio 1. Logged per step, besides the loss: reward mean and std, accuracy, answer
marker share, generated tokens, thoughts, clip fraction, entropy, rollout and learning time.

From a Coconut run, every question decodes with the thoughts the started-from run's curriculum
stage gives it (and is evaluated so), and the replay recomputes them under the current params.

From a SWITCH run (Switch-GRPO), the rollouts open latent spans with the model policy under the
evaluations' caps (eval.latent_budget, eval.max_latent_total), each latent step fed the run's
trained feedback; the engine records where each step fell and the replay recomputes the slots
under the current params (latent.latent_grad). `thoughts` logs the latent steps per rollout and
`latent_spans` the spans.

HRPO: from a text (CoT) run with model.feedback=hrpo, `python train.py method=rl
train.init_from=RUN model.feedback=hrpo`, the rollouts decode with the hrpo policy
(latent.infer.policies): every token is sampled and is a policy term, and each one written before
the answer marker "###" (the thinking span) is fed to the next position as the gated hybrid of
its embedding and the distribution it was drawn from; the replay recomputes those inputs under
the current params with the rollout's hidden part as a constant. RL trains the gate (a fresh one,
sigmoid(Lambda)^8 = 0.99, when the started-from run has none: latent.train.init_from) with the
model; `hrpo_a` (the mean token weight a over the thinking tokens) and `hrpo_token_weight` (the
mean sigmoid(Lambda)^8) log its move from token embeddings towards hidden features, and
`hybrid_tokens` the thinking tokens per rollout. The run evaluates (and eval.py decodes it) with
the same policy.

With rl.kl_coef > 0 the k3 KL to the started-from model is added per token. That frozen reference
is saved in each checkpoint (an item as big as the params), so a resume compares with the same
reference even when train.init_from has since moved, changed or gone. The entropy policy is never
a base method's decoding policy, so RL never samples with it (its rollouts replay,
latent.methods.rl.replay).
"""

from __future__ import annotations

import time
import warnings

import jax
import numpy as np

from latent.errors import ConfigError
from latent.infer.engine import emitted_ids
from latent.methods import method_of, register_method
from latent.methods.base import Method, StagelessSource, check_examples_left
from latent.methods.rl.objective import advantages, policy_loss
from latent.methods.rl.replay import gate_metrics, replay
from latent.methods.rl.rewards import rollout_rewards
from latent.methods.rl.rollout import (
    LOOP_POLICIES,
    REPLAYABLE_POLICIES,
    RolloutLayout,
    Rollouts,
    engine_arguments,
    rollout,
)


def rl_objective(rl_cfg, latent_grad: str = "full"):
    """objective(model, batch) -> (loss, metrics) on a batch of replayable rollouts: the policy loss
    of latent.methods.rl.objective on the model's replayed log-probs and entropies."""

    def objective(model, batch: dict):
        replayed = replay(model, batch["rollouts"], latent_grad=latent_grad)
        rollouts = batch["rollouts"]
        # every drawn decision is a term: the tokens, then (SWITCH) the latent steps that could have closed their span
        loss, metrics = policy_loss(
            replayed.term_logprobs, rollouts.term_logprobs, batch["advantage_N"], rollouts.term_mask, loss=rl_cfg.loss,
            clip_low=rl_cfg.clip_low, clip_high=rl_cfg.clip_high, aggregation=rl_cfg.aggregation,
            max_tokens=rl_cfg.max_new_tokens, entropy_NxT=replayed.term_entropy, entropy_coef=rl_cfg.entropy_coef,
            ref_logp_NxT=batch.get("ref_logp_NxT"), kl_coef=rl_cfg.kl_coef,
        )
        if rollouts.layout.policy == "hrpo":  # the gate's mix under the params being trained
            metrics |= gate_metrics(model, rollouts)
        return loss, metrics

    return objective


# What a started-from model must already write for RL to sample with each policy (check_start)
POLICY_TOKENS = {"none": "text", "fixed": "<bot> and <eot> around continuous thoughts",
                 "model": "<swi> and </swi> around latent spans", "abstract": "abstract tokens <abs_i> in a span"}
NO_SIGNAL_STEPS = 20  # batches in a row without a group of unequal rewards before RL warns it is standing still
REFERENCE_ITEM = "reference"  # the checkpoint item holding the KL's frozen reference params


def reference_params(cfg):
    """The frozen reference policy of rl.kl_coef: the started-from model (train.init_from), loaded
    again as the run started from it (its tokens added the same way, latent.train.init_from)."""
    from latent import sharding
    from latent.train.init_from import load_start

    return load_start(cfg, sharding.make_mesh(cfg.mesh))[1]


def init_stage(cfg) -> int:
    """The curriculum stage of train.init_from's latest checkpoint (a Coconut run directory)."""
    from latent.run import checkpoint as ckpt
    from latent.train.init_from import resolve_source

    _, workdir = resolve_source(cfg.train.init_from)
    manager = ckpt.make_manager(workdir, cfg.checkpoint) if (workdir / ckpt.CHECKPOINT_DIR).is_dir() else None
    if manager is None or manager.latest_step() is None:
        raise ConfigError(f"method=rl on a Coconut run starts from a Coconut run directory (its curriculum stage "
                          f"gives the thoughts); train.init_from={cfg.train.init_from} holds no checkpoint")
    return int(ckpt.read_meta(manager).get("stage", cfg.latent.max_latent_stage + 1))  # the latest checkpoint's


class RolloutSource(StagelessSource):
    """Batches of rollouts sampled with the params being trained (latent.methods.base: a source with
    `needs_params`, its own `make_train_step` and `host_metrics`)."""

    needs_params = True

    def __init__(self, cfg, base: Method, examples, tokenizer, batch_size: int, policy: str,
                 curriculum_stage: int | None = None):
        """curriculum_stage: Coconut's stage, whose thoughts each question gets; None: the one
        train.init_from's latest checkpoint reached (a compile ahead of time gives the last)."""
        from flax import nnx

        from latent.data import pipeline
        from latent.data.splits import load_valid, run_scorer
        from latent.eval.evaluator import policy_prompts
        from latent.infer.engine import make_generate
        from latent.nn import Transformer

        rl = self.rl = cfg.rl
        self.cfg, self.base, self.tokenizer, self.examples = cfg, base, tokenizer, list(examples)
        layout = base.prompt_layout(cfg, tokenizer)
        prompts, self.dropped, ids, _ = policy_prompts(layout, policy, self.examples, tokenizer, cfg.task.max_len)
        check_examples_left(prompts, self.dropped, cfg)
        self.prompts = prompts
        # Coconut: the curriculum stage the started-from run reached gives each question its thoughts
        if curriculum_stage is None:
            curriculum_stage = init_stage(cfg) if policy == "fixed" else 0
        self.curriculum_stage = curriculum_stage
        self.thoughts_N = np.asarray(base.checkpoint_latent_steps(cfg, {"stage": self.curriculum_stage}, self.examples)
                                     if policy == "fixed" else np.zeros(len(self.examples)), np.int32)
        # SWITCH: the spans' caps are the evaluations' (cfg.eval), and a latent step gets the run's trained feedback
        loop_caps = dict(latent_budget=cfg.eval.latent_budget, max_latent_total=cfg.eval.max_latent_total,
                         max_switches=cfg.eval.max_switches, swi_id=ids.get("swi_id"), swi_end_id=ids.get("swi_end_id"),
                         feedback="model") if policy in LOOP_POLICIES else {}
        self.layout = RolloutLayout(policy=policy, abstract=ids.get("abstract"), abstract_max=ids.get("abstract_max", 0),
                                    latent_steps=int(self.thoughts_N.max(initial=0)), eot_id=ids.get("eot_id"),
                                    answer_id=ids.get("answer_id"), cache_dtype=rl.cache_dtype, **loop_caps)
        self.scorer = run_scorer(cfg, load_valid(cfg))
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0))))
        self.generate = make_generate(
            graphdef, cfg.model, rl.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id, float(rl.temperature),
            float(rl.top_p), group_size=rl.group_size, **self.layout.engine_kwargs(),
        )
        self.objective = rl_objective(rl, cfg.latent.latent_grad)
        # pi_ref of the k3 KL, the started-from model: its jitted replay, and its frozen params (loaded
        # when first needed: a resume reads them from the checkpoint instead, restore_param_trees)
        self.reference_logprobs = None
        self._reference_params = None
        if rl.kl_coef > 0:
            self.reference_logprobs = jax.jit(
                lambda params, rollouts: replay(nnx.merge(graphdef, params), rollouts).term_logprobs)
        self._it = pipeline.shuffled_batches(
            prompts, batch_size=rl.prompts_per_step, seed=cfg.train.seed, batch_fn=list,
        )
        self._collate = lambda records: pipeline.collate(records, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len)
        self._host = {}
        self._steps_without_signal = 0  # batches in a row whose groups all had equal rewards
        self._rollout_ended = None  # perf_counter at the end of the last rollout (learn_s: the time since)

    def reference_params(self):
        """The KL's frozen reference: the resumed checkpoint's, else train.init_from's model."""
        if self._reference_params is None:
            self._reference_params = reference_params(self.cfg)
        return self._reference_params

    def param_trees(self) -> dict:
        return {} if self.reference_logprobs is None else {REFERENCE_ITEM: self.reference_params()}

    def restore_param_trees(self, read) -> None:
        if self.reference_logprobs is None:
            return
        self._reference_params = read([REFERENCE_ITEM]).get(REFERENCE_ITEM)
        if self._reference_params is None:  # a checkpoint written before the reference was saved in it
            warnings.warn(f"the checkpoint holds no KL reference: it is loaded again from "
                          f"train.init_from={self.cfg.train.init_from}", stacklevel=2)

    def next(self, step: int, params) -> dict:
        records = next(self._it)
        inputs = self.rollout_inputs(records, step)
        index_B = inputs["example_ids_B"]
        # the KL's reference is loaded (first step of a fresh run) before the clock: not rollout time
        reference = None if self.reference_logprobs is None else self.reference_params()
        # The previous step's update runs asynchronously and its params are this rollout's: wait for
        # them first, so that rollout_s is the sampling alone and learn_s the rest of a step's time
        # (the previous step's update, logging and the host's batch work), measured between rollouts.
        jax.block_until_ready(params)
        started = time.perf_counter()
        learn_s = None if self._rollout_ended is None else started - self._rollout_ended
        rollouts = jax.device_get(self.sample(params, inputs))
        ref_logp_NxT = None if reference is None else np.asarray(self.reference_logprobs(reference, rollouts))
        self._rollout_ended = time.perf_counter()
        rollout_s = self._rollout_ended - started
        G = self.rl.group_size
        texts = [self.tokenizer.decode(emitted_ids(row, n, self.tokenizer.eos_id))
                 for row, n in zip(rollouts.tokens_NxT, rollouts.lengths_N)]
        answered = [self.examples[i] for i in np.repeat(index_B, G)]
        parts = rollout_rewards(texts, answered, self.scorer.score, self.rl, rollouts.lengths_N, self.scorer.credit)
        reward_BxG = parts["reward"].reshape(-1, G)
        advantage_N = np.asarray(advantages(reward_BxG, self.rl.advantage, self.rl.adv_eps)).reshape(-1)
        # A group whose G rewards are all equal has advantage 0 and teaches nothing.
        signal_share = float(np.mean(np.ptp(reward_BxG, axis=1) > 0))
        self._warn_if_no_signal(signal_share)
        self._host = {
            "groups_with_signal": signal_share,
            "reward_mean": float(parts["reward"].mean()), "reward_std": float(parts["reward"].std()),
            "accuracy": float(parts["correct"].mean()), "answer_marker": float(parts["has_marker"].mean()),
            "generated_tokens": float(parts["tokens"].mean()), "thoughts": float(np.mean(rollouts.thoughts_N)),
            "truncated": float(np.mean(rollouts.truncated_N)), "rollout_s": rollout_s,
        }
        if learn_s is not None:  # the previous step's learning, logged beside this step's rollout
            self._host |= {"learn_s": learn_s, "rollout_share": rollout_s / (rollout_s + learn_s)}
        if self.layout.abstract is not None:  # Abstract-CoT: abstract tokens written per rollout (delimiters excluded)
            in_span_NxT = np.isin(rollouts.tokens_NxT, self.layout.abstract.ids) & np.asarray(rollouts.emitted_NxT)
            self._host["abstract_tokens"] = float(np.mean(np.sum(in_span_NxT, 1)))
        if rollouts.latent_NxI is not None:  # SWITCH: latent spans opened per rollout
            latent_NxI = np.asarray(rollouts.latent_NxI, bool)
            self._host["latent_spans"] = float(np.mean(np.sum(latent_NxI[:, 1:] & ~latent_NxI[:, :-1], 1) + latent_NxI[:, 0]))
        if rollouts.hybrid_NxT is not None:  # HRPO: tokens fed as the hybrid (the thinking span) per rollout
            self._host["hybrid_tokens"] = float(np.mean(np.sum(rollouts.hybrid_NxT, 1)))
        return self.learning_batch(rollouts, advantage_N.astype(np.float32), ref_logp_NxT)

    @staticmethod
    def learning_batch(rollouts: Rollouts, advantage_N, ref_logp_NxT=None) -> dict:
        """The train step's batch: the rollouts, each row's advantage and (rl.kl_coef) the reference's log-probs."""
        batch = {"rollouts": rollouts, "advantage_N": advantage_N}
        return batch if ref_logp_NxT is None else batch | {"ref_logp_NxT": ref_logp_NxT}

    def rollout_inputs(self, records, step: int) -> dict:
        """`rollout`'s inputs after the params for a batch of prompt records at `step`: the prompts
        collated (left-padded to their bucket), the step's key, Coconut's thoughts per prompt and the
        examples' ids (the engine's per-example keys)."""
        batch = self._collate(records)
        index_B = np.asarray([r.source_index for r in records])
        rng = jax.random.fold_in(jax.random.PRNGKey(self.cfg.train.seed), step)  # resumable: a function of the step
        thoughts_B = self.thoughts_N[index_B] if self.layout.policy == "fixed" else None
        return dict(prompt_BxP=batch["tokens"], prompt_mask_BxP=batch["padding_mask"], rng=rng, latent_steps_B=thoughts_B,
                    example_ids_B=index_B)

    def sample(self, params, inputs: dict) -> Rollouts:
        """G rollouts of each prompt of `inputs` (rollout_inputs) with `params`: the engine's jitted call."""
        return rollout(self.generate, params, **inputs, layout=self.layout)

    # ------------------------------------------------------------------------- ahead of time (tpu/aot.py)

    def widest_rollout_inputs(self, step: int) -> dict:
        """rollout_inputs as ShapeDtypeStructs for the widest batch of prompts the run can draw: its
        rl.prompts_per_step longest prompts, whose bucket is the widest."""
        longest = sorted(self.prompts, key=lambda record: len(record.tokens), reverse=True)[: self.rl.prompts_per_step]
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(x.dtype)),
                            self.rollout_inputs(longest, step))

    def lower_rollout(self, params, step: int):
        """The rollout program (the engine call `sample` makes), lowered, not run, for the widest
        batch of prompts; params: arrays or ShapeDtypeStructs placed as the train state's are."""
        return self.generate.lower(params, *engine_arguments(**self.widest_rollout_inputs(step)))

    def abstract_batch(self, params, step: int) -> dict:
        """ShapeDtypeStructs of the batch `next` returns for the widest prompts, traced, not run: the
        Rollouts the engine call writes for them (every field the policy fills, at the engine's
        widths), the advantages and, with rl.kl_coef, the reference's log-probs."""
        rollouts = jax.eval_shape(self.sample, params, self.widest_rollout_inputs(step))
        advantage_N = jax.ShapeDtypeStruct(rollouts.lengths_N.shape, np.float32)
        ref_logp_NxT = None if self.reference_logprobs is None else jax.eval_shape(self.reference_logprobs, params, rollouts)
        return self.learning_batch(rollouts, advantage_N, ref_logp_NxT)

    def _warn_if_no_signal(self, signal_share: float) -> None:
        """Warn once when NO_SIGNAL_STEPS batches in a row had no group with unequal rewards: every
        advantage 0, so RL stands still (e.g. a start that answers its SFT prompts right every time)."""
        self._steps_without_signal = 0 if signal_share > 0 else self._steps_without_signal + 1
        if self._steps_without_signal == NO_SIGNAL_STEPS:
            warnings.warn(
                f"method=rl: {NO_SIGNAL_STEPS} batches of rollouts in a row had equal rewards within every group "
                f"(groups_with_signal 0): every advantage is 0 and nothing is learned. The rollouts may all be right "
                f"(prompts the start has memorised: a generated task's task.n_train beyond the SFT run's gives new "
                f"ones), all wrong, or too alike (rl.temperature, rl.group_size)", stacklevel=2)

    def make_train_step(self, graphdef, optimizer, schedule):
        from latent.methods.rl.step import make_rl_step

        return make_rl_step(graphdef, optimizer, schedule, self.objective, self.rl.inner_epochs)

    def host_metrics(self) -> dict:
        return dict(self._host)

    def stage(self, step: int) -> int:
        return self.curriculum_stage  # RL moves no curriculum: a Coconut run's stays where it was

    def trained_stage(self, step: int) -> int:
        return self.curriculum_stage

    def eval_latent_steps(self, step: int, examples=None) -> int | list[int]:
        """The started-from run's thoughts (Coconut; 0 for text): per example when `examples` are given."""
        if self.layout.policy != "fixed":
            return 0
        if examples is not None:
            return self.base.checkpoint_latent_steps(self.cfg, {"stage": self.curriculum_stage}, examples)
        return self.layout.latent_steps

    @staticmethod
    def shape_key(batch) -> tuple:
        return (batch["rollouts"].prompt_NxP.shape[1],)

    @staticmethod
    def real_tokens(batch) -> float:
        rollouts: Rollouts = batch["rollouts"]
        return float(np.sum(rollouts.prompt_mask_NxP) + np.sum(rollouts.lengths_N))


@register_method
class RL(Method):
    name = "rl"
    selected_by = "method=rl, with train.init_from (the run it continues; the sections select that run's method)"

    def claims(self, cfg) -> bool:
        return False  # selected by name only

    def base(self, cfg) -> Method:
        """The method the run continues: the one the config's sections select."""
        return method_of(cfg.replace(method="auto"))

    def decoding_policy(self, cfg) -> str:
        """The base method's, except HRPO's: a text run's RL with model.feedback=hrpo."""
        base = self.base(cfg)
        return "hrpo" if base.name == "sft" and cfg.model.feedback == "hrpo" else base.decoding_policy(cfg)

    def check(self, cfg) -> None:
        if not cfg.train.init_from:
            raise ConfigError("method=rl continues a trained model: set train.init_from to an SFT run directory "
                              "(or a Hugging Face model directory)")
        self.check_compile(cfg)

    def check_compile(self, cfg) -> None:
        """What a compile ahead of time (tpu/aot.py) needs of the config: all of `check` but
        train.init_from, which only gives the model's config and weights."""
        policy = self.decoding_policy(cfg)
        if policy not in REPLAYABLE_POLICIES:
            raise ConfigError(f"method=rl cannot replay rollouts decoded under the {policy!r} policy yet "
                              f"({self.base(cfg).name}); it replays {list(REPLAYABLE_POLICIES)}")
        if cfg.optimizer.grad_accum != 1:
            raise ConfigError("method=rl takes optimizer.grad_accum=1 (a batch of rollouts is one update's data)")
        if cfg.train.loss_chunk > 0:
            raise ConfigError(f"train.loss_chunk={cfg.train.loss_chunk} does nothing under method=rl (its policy "
                              "terms read full logits); leave it at 0")
        self.base(cfg).check(cfg)

    def check_start(self, cfg, kind: str, source_cfg) -> None:
        """RL samples with the policy of the run it continues: the started-from model must have
        learned that policy's tokens (HRPO continues a text run)."""
        policy = self.decoding_policy(cfg)
        wants = "none" if policy == "hrpo" else policy
        abstract = cfg.task.format.startswith("abstract")
        if source_cfg is None:  # Hugging Face: a pretrained LM writes text and no method token
            has, source_abstract, source = "none", False, "a Hugging Face model"
        else:
            source_method = method_of(source_cfg)
            has, source_abstract = source_method.decoding_policy(source_cfg), source_cfg.task.format.startswith("abstract")
            source = f"a {has!r}-policy run ({source_method.name}, task.format={source_cfg.task.format})"
        if has != wants or source_abstract != abstract:
            needs = POLICY_TOKENS["abstract" if abstract else wants]
            raise ConfigError(
                f"method=rl samples with the {policy!r} policy ({self.base(cfg).name}, task.format={cfg.task.format}), "
                f"which needs a model that writes {needs}; train.init_from={cfg.train.init_from} is {source}, "
                f"whose model never learned them: start from an SFT run of that method (or set the run's sections "
                f"to the started-from run's, e.g. --config <run>/config.json)")

    def source(self, cfg, examples, tokenizer, batch_size: int):
        self.check(cfg)
        return RolloutSource(cfg, self.base(cfg), examples, tokenizer, batch_size, self.decoding_policy(cfg))

    def compile_source(self, cfg, examples, tokenizer, batch_size: int) -> RolloutSource:
        """The run's RolloutSource for tpu/aot.py, which reads nothing of train.init_from (the model
        is the config's): Coconut's questions get the thoughts of the curriculum's last stage, the
        widest a started-from run can have reached."""
        self.check_compile(cfg)
        policy = self.decoding_policy(cfg)
        stage = cfg.latent.max_latent_stage + 1 if policy == "fixed" else 0
        return RolloutSource(cfg, self.base(cfg), examples, tokenizer, batch_size, policy, curriculum_stage=stage)

    def check_file(self, cfg):
        return self.base(cfg).check_file(cfg)

    def prompt_layout(self, cfg, tokenizer):
        return self.base(cfg).prompt_layout(cfg, tokenizer)

    def analyses(self, cfg, **context) -> list:
        return self.base(cfg).analyses(cfg, **context)

    def added_tokens(self, cfg) -> list[str]:
        return self.base(cfg).added_tokens(cfg)

    def updates_per_step(self, cfg) -> int:
        return cfg.rl.inner_epochs

    def train_positions(self, cfg) -> dict[str, int]:
        """A rollout's positions past the prompt: its tokens, and under SWITCH its latent steps (at
        most eval.max_latent_total, the cap rollouts decode with)."""
        parts = {"rl.max_new_tokens": cfg.rl.max_new_tokens}
        if self.decoding_policy(cfg) in LOOP_POLICIES:
            parts["eval.max_latent_total"] = cfg.eval.max_latent_total
        return parts

    def max_thoughts(self, cfg):
        return self.base(cfg).max_thoughts(cfg)

    def checkpoint_latent_steps(self, cfg, meta: dict, examples):
        return self.base(cfg).checkpoint_latent_steps(cfg, meta, examples)
