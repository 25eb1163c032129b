"""Typed, frozen configuration. Each dataclass is the one source of its defaults, and each
`Literal` alias below the one list of a field's choices (modules read it with typing.get_args).
Dotted overrides, presets and the dict round trip are in latent.config_io."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from latent.errors import ConfigError  # noqa: F401 (raised here; importable from latent.config)

Family = Literal["gpt2", "llama", "qwen2", "qwen3", "qwen3_next"]  # latent.models.presets.FAMILY_TRAITS
Norm = Literal["rms", "layer"]
Mlp = Literal["swiglu", "gelu"]
Positions = Literal["rope", "learned"]
AttnGate = Literal["none", "headwise", "elementwise"]
AttentionImpl = Literal["einsum", "dot_product"]  # the SDPA cores of latent.nn.attention
Remat = Literal["none", "full", "dots"]  # what a block's backward recomputes (latent.nn.transformer.REMAT_POLICIES)
FeedbackRule = Literal["identity", "codi", "soft", "hrpo", "later"]  # latent.nn.feedback.FEEDBACKS
DType = Literal["float32", "bfloat16", "float16", "float64"]  # float64: gradient checks
# The decoding KV cache's storage dtype (latent.infer.engine.make_generate): auto = the model's
# compute dtype (model.dtype), what it always was; bfloat16 halves the bytes a decode step reads.
CacheDType = Literal["auto", "float32", "bfloat16"]
ScorerName = Literal["auto", "exact", "numeric", "choice"]  # latent.data.tasks.scoring
AbstractFormat = Literal["abstract", "abstract_bottleneck", "codes"]  # latent.methods.abstract_cot.layouts
TaskFormat = Literal["cot", "no_cot", AbstractFormat]
Schedule = Literal["cosine", "constant"]
TokenInit = Literal["random", "mean"]  # latent.models.vocab adds "copy:<token>"
DecodePolicy = Literal["none", "fixed", "model", "entropy", "hrpo"]  # latent.infer.policies.POLICIES
SwitchPolicy = Literal["auto", DecodePolicy]
BestMode = Literal["max", "min"]
LatentMode = Literal["none", "coconut", "switch"]
LatentGrad = Literal["full", "detach"]  # or "truncate(n)" (latent.nn.recurrence)
LatentCompile = Literal["per_stage", "once"]
SwitchRule = Literal["fixed", "entropy"]
DistillZ = Literal["prompt", "teacher"]
Round1 = Literal["random", "keyed"]
KeyLayout = Literal["unshifted", "aligned"]
Advantage = Literal["grpo", "dr_grpo", "rloo"]  # latent.methods.rl.objective.ADVANTAGES
PolicyLoss = Literal["clip", "gppo"]  # latent.methods.rl.objective.POLICY_LOSSES
LossAggregation = Literal["token_mean", "sequence_mean", "sequence_sum"]  # latent.methods.rl.objective.AGGREGATIONS


# ----------------------------------------------------------------------------- validation


class Rule(NamedTuple):
    """A bound on a field's value: `ok(value)` holds, or "<section>.<field> must be <text>"."""

    text: str
    ok: Callable[[Any], bool]

    def note(self, text: str) -> Rule:
        return Rule(f"{self.text} ({text})", self.ok)


POSITIVE_INT = Rule("a positive int", lambda v: v > 0)
NON_NEGATIVE_INT = Rule("an int >= 0", lambda v: v >= 0)
POSITIVE = Rule("> 0", lambda v: v > 0)
NON_NEGATIVE = Rule(">= 0", lambda v: v >= 0)
FRACTION = Rule("in [0, 1]", lambda v: 0 <= v <= 1)
NEW_TOKEN_INIT = Rule(  # train.new_token_init
    ", ".join([*typing.get_args(TokenInit), "copy:<token>"]),
    lambda v: v in typing.get_args(TokenInit) or (v.startswith("copy:") and v != "copy:"),
)
LATENT_GRAD = Rule(  # latent.latent_grad
    ", ".join(typing.get_args(LatentGrad)) + " or truncate(n)",
    lambda v: v in typing.get_args(LatentGrad) or re.fullmatch(r"truncate\(\d+\)", v) is not None,
)


def check(section: str, node, **rules: Rule) -> None:
    """A config section's checks in one place: every field's value against its declared type
    (a Literal's choices; an int or a number that is not a bool; a string; a section), then
    `rules` (field name -> Rule; None passes where the type allows it). ConfigError names the
    field, the bad value and what is allowed."""
    hints = _type_hints(type(node))
    for f in dataclasses.fields(node):
        check_type(f"{section}.{f.name}" if section else f.name, getattr(node, f.name), hints[f.name])
    for name, rule in rules.items():
        value = getattr(node, name)
        optional = type(None) in typing.get_args(hints[name])
        if (value is None and optional) or rule.ok(value):
            continue
        raise ConfigError(f"{section}.{name} must be {rule.text}{' or None' if optional else ''}; got {value!r}")


@functools.cache
def _type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def first_fitting(key: str, value, union_args, attempt):
    """attempt(option) for the first non-None option of a Union that raises no ConfigError; when
    none fits, its error (one option) or one naming them all."""
    errors = []
    for option in (a for a in union_args if a is not type(None)):
        try:
            return attempt(option)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {union_args}")


def check_type(key: str, value, annotation) -> None:
    """ConfigError unless `value` is of the declared `annotation`. A bool is not a number here,
    though Python counts it as an int: train.steps=True must not run one step."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        return first_fitting(key, value, args, lambda option: check_type(key, value, option))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {args}")
    elif annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} takes true or false; got {value!r}")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} takes an int; got {value!r}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} takes a number; got {value!r}")
    elif annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} takes a string; got {value!r}")
    elif dataclasses.is_dataclass(annotation):
        if not isinstance(value, annotation):
            raise ConfigError(f"config section {key!r} takes a {annotation.__name__}; got {value!r}")
    else:
        raise ConfigError(f"{key}: unsupported field type {annotation}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer. Families (GPT-2, Llama, Qwen2/3, Qwen3-Next) are presets of it.

    The attention output gate follows Qiu et al. 2025 (position G1): the SDPA output of each head
    is multiplied by sigmoid(x W_theta) before the output projection; `W_theta` is fused into the
    query projection with the per-head `[q | gate]` layout of Hugging Face Qwen3-Next.
    """

    family: Family = "llama"  # decides the Hugging Face export format (latent.models.hf)
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: same as n_heads (MHA); 1: MQA; in between: GQA
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int = 256
    max_seq_len: int = 512  # size of the learned position table; default KV-cache length
    norm: Norm = "rms"
    norm_eps: float = 1e-6
    norm_zero_centered: bool = False  # RMSNorm computes x_hat * (1 + w) with w initialised to 0
    mlp: Mlp = "swiglu"
    gelu_approximate: bool = True  # GPT-2's "gelu_new" is the tanh approximation
    positions: Positions = "rope"
    rope_theta: float = 10000.0
    rotary_fraction: float = 1.0  # share of head_dim that is rotated (Qwen3-Next: 0.25)
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm over head_dim on queries and keys, before RoPE (Qwen3)
    attn_gate: AttnGate = "none"
    # How softmax(q k^T / sqrt(d)) v is computed: einsum (explicit, any backend) or dot_product
    # (jax.nn.dot_product_attention, which may pick a fused kernel on GPU/TPU). Same weights.
    attention_impl: AttentionImpl = "einsum"
    # Rematerialisation of each block under jax.grad: "none" keeps every activation for the
    # backward; "full" keeps only the block's input and recomputes the rest (least memory, about
    # one more forward); "dots" keeps the matmul outputs and recomputes the cheap elementwise
    # ops. Same values and gradients (tests/nn/test_remat.py); memory in benchmarks/remat.py.
    remat: Remat = "none"
    # Run the blocks as one jax.lax.scan over their stacked parameters instead of a Python loop, so
    # a jitted step traces one block whatever the depth (compile time of deep models; on a TPU a
    # 16-layer step compiles in a quarter of the time, on a CPU it pays only past ~60 layers and runs ~1.25x
    # slower: benchmarks/README.md). The parameters are stored stacked (`layers.attn...` [L, ...]):
    # the same weights, converted when a run is loaded or started from (train.init_from) in the other
    # layout (latent.nn.layer_layout), not on a resume. Same values and gradients (tests/nn/test_scan_layers.py).
    scan_layers: bool = False
    # Canon layer before attention (latent.nn.canon): each attention input adds learned per-channel
    # multiples of the inputs at the `canon` positions before it; 0: off. Lets a single layer
    # learn content lookups ("the token after X"). No Hugging Face format.
    canon: int = 0
    tie_embeddings: bool = False
    # What a latent slot receives from the previous position (latent.nn.feedback): identity
    # (Coconut), codi, soft (p^T E), hrpo (gated hybrid), later (realigned, rescaled).
    feedback: FeedbackRule = "identity"
    feedback_temperature: float = 1.0  # softmax temperature of the soft and hrpo feedbacks
    # HRPO's gate at init: the token embedding's weight a = sigmoid(Lambda)^8 (the rest, sqrt(1 - a^2),
    # goes to hidden features). The paper starts near all token embedding; an init value only.
    hrpo_start_token_weight: float = 0.99
    init_std: float = 0.02
    dtype: DType = "float32"  # compute dtype
    param_dtype: DType = "float32"

    def __post_init__(self):
        check(
            "model", self, vocab_size=POSITIVE_INT, d_model=POSITIVE_INT, n_layers=POSITIVE_INT, n_heads=POSITIVE_INT,
            d_ff=POSITIVE_INT, max_seq_len=POSITIVE_INT, canon=NON_NEGATIVE_INT.note("previous positions mixed in"),
            rotary_fraction=Rule("in (0, 1]", lambda v: 0 < v <= 1), feedback_temperature=POSITIVE,
            hrpo_start_token_weight=Rule("in (0, 1)", lambda v: 0 < v < 1),
        )
        # n_kv_heads / head_dim stay None when unset, so overriding d_model or n_heads later
        # re-derives them; code reads resolved_kv_heads / resolved_head_dim.
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                "set model.head_dim explicitly"
            )
        if self.resolved_kv_heads <= 0 or self.n_heads % self.resolved_kv_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} must be a positive multiple of model.n_kv_heads={self.n_kv_heads}"
            )
        if self.positions == "rope" and self.rotary_dim % 2:
            raise ConfigError(
                f"model.head_dim * model.rotary_fraction = {self.rotary_dim} must be even for rotary embeddings"
            )
        if self.norm == "layer" and self.norm_zero_centered:
            raise ConfigError("model.norm_zero_centered applies to norm='rms' only")

    @property
    def resolved_kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def resolved_head_dim(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def rotary_dim(self) -> int:
        return int(self.resolved_head_dim * self.rotary_fraction)

    @property
    def gate_width(self) -> int:
        """Extra query-projection outputs per head that feed the output gate."""
        return {"none": 0, "headwise": 1, "elementwise": self.resolved_head_dim}[self.attn_gate]

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def parse_lr_scale(spec: str) -> tuple[tuple[str, float], ...]:
    """optimizer.lr_scale "REGEX:FACTOR,..." as ((regex, factor), ...); ConfigError names the bad part."""
    example = 'optimizer.lr_scale="feedback:100,embed:0.1"'
    rules = []
    for part in spec.split(","):
        pattern, sep, factor = part.strip().rpartition(":")
        if not sep or not pattern:
            raise ConfigError(f"optimizer.lr_scale: {part.strip()!r} is not REGEX:FACTOR; e.g. {example}; got {spec!r}")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"optimizer.lr_scale: {pattern!r} is not a regular expression ({err}); got {spec!r}") from None
        try:
            value = float(factor)
        except ValueError:
            value = -1.0
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"optimizer.lr_scale: the factor of {pattern!r} must be a number >= 0; got {factor!r}")
        rules.append((pattern, value))
    return tuple(rules)


def check_task_options(options: str) -> None:
    """task.options: a JSON object of objects. That the task is an rg: one, each key a dataset of its
    mix and each option one its generator takes are checked when the task is built (the order of
    command-line overrides must not matter)."""
    example = '\'{"chain_sum": {"max_terms": 3}}\''
    try:
        parsed = json.loads(options)
    except json.JSONDecodeError as err:
        raise ConfigError(f"task.options is not valid JSON ({err.msg} at column {err.colno}); it takes an object "
                          f"of each dataset's options, e.g. task.options={example}; got {options!r}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise ConfigError(f"task.options takes a JSON object mapping each dataset to an object of its options, "
                          f"e.g. task.options={example}; got {options!r}")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What to train on: a generated task, or a JSON/JSONL file in Coconut's layout."""

    # a registered task generator (latent.data.tasks.get_task); gsm8k needs `path`; rg:<dataset> or a
    # weighted mix rg:<dataset>[:<weight>],... are reasoning-gym's generators (latent.data.tasks.reasoning_gym)
    name: str = "prosqa_small"
    # generator options of an rg: task, a JSON object per dataset, e.g. '{"chain_sum": {"max_terms": 3}}'
    # (the fields of the dataset's reasoning-gym config); None: its defaults
    options: str | None = None
    path: str | None = None  # train on this JSON or JSONL file instead of the generator
    # evaluate on this file; default: a held-out split of `path` (valid_fraction of it, at most
    # n_valid examples, drawn with `seed`), or a generated split without `path` (or with
    # valid_fraction=0: train on all of `path`, validate on `name`'s generated split)
    valid_path: str | None = None
    valid_fraction: float = 0.1
    # how answers are judged (latent.data.tasks.scoring): auto = a generated task's own scorer, or
    # numeric when the references are numbers, else exact; exact; numeric; choice
    scorer: ScorerName = "auto"
    # cot: question, steps, answer; no_cot: question, answer; abstract: question, abstract span,
    # answer; abstract_bottleneck: question, steps, abstract span, answer with the answer blind
    # to the steps; codes: question, VQ code span for the first steps, the other steps, answer
    # (latent.methods.abstract_cot.layouts)
    format: TaskFormat = "cot"
    n_train: int = 20000
    n_valid: int = 200
    seed: int = 1234  # task generation seed, separate from the training seed
    max_len: int = 256  # longest tokenized example (prompt + target) kept

    def __post_init__(self):
        check("task", self, valid_fraction=Rule("in [0, 1)", lambda v: 0 <= v < 1), n_valid=POSITIVE_INT)
        if self.options is not None:
            check_task_options(self.options)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    grad_accum: int = 1  # micro-batches per optimizer step
    # Per-parameter learning-rate factors, "REGEX:FACTOR,...": a parameter whose dotted path (e.g.
    # "feedback.log_a", "layers.0.attn.q_proj.kernel"; with model.scan_layers "layers.attn.q_proj.kernel",
    # all layers stacked) the first matching regex finds (re.search)
    # has its updates, weight decay included, scaled by FACTOR; the rest by 1. E.g. "feedback:100"
    # lets HRPO's saturated gate move (latent.train.optimizer.scale_by_path). None: off.
    lr_scale: str | None = None

    def __post_init__(self):
        check("optimizer", self)
        if self.lr_scale is not None:
            parse_lr_scale(self.lr_scale)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    # Wall-clock budget for this invocation (minutes): on reaching it the run evaluates, saves and
    # stops as if preempted (running again resumes). None: no limit. For equal-budget comparisons.
    time_limit_minutes: float | None = None
    # Start from the parameters (and tokenizer) of another run directory's latest checkpoint, or
    # of a Hugging Face model directory (config.json + *.safetensors + tokenizer.json; its
    # config.json replaces the model section), instead of a fresh init; the optimizer starts
    # fresh. Used only when this workdir holds no checkpoint of its own (a resumed run continues
    # from its own). Environment variables ($VAR) are expanded.
    init_from: str | None = None
    # Rows of the tokens added to a train.init_from model (the method's markers, abstract tokens
    # and <pad> a Hugging Face tokenizer lacks; latent.models.vocab): "random", "mean" (of the
    # known rows) or "copy:<token>" (that token's row; Coconut copies "<<"). None: abstract.init.
    new_token_init: str | None = None
    # Group text batches by length: each epoch's shuffled order is cut into windows of this many
    # batches, sorted by length within a window, so a batch pads to its own longest example
    # (latent.data.pipeline.length_grouped_epoch). 0: plain shuffled batches.
    length_grouping: int = 0
    # Text batches are padded up to a multiple of this many tokens: a smaller multiple wastes less
    # on padding and compiles one train step for each of more shapes.
    length_bucket: int = 32
    # Text SFT's next-token loss from hidden states (latent.methods.losses.next_token_head_sums):
    # the output head runs only at the positions that predict a labelled token (batches carry
    # them, padded to a multiple of length_bucket), this many positions per chunk with each
    # chunk's logits recomputed in the backward, so no [B, T, V] float32 logits are ever built.
    # The same loss within float32 rounding. 0: off (the head at every position, full logits).
    loss_chunk: int = 0

    def __post_init__(self):
        check(
            "train", self, steps=POSITIVE_INT, batch_size=POSITIVE_INT, log_every=POSITIVE_INT,
            eval_every=POSITIVE_INT, checkpoint_every=POSITIVE_INT, length_bucket=POSITIVE_INT,
            loss_chunk=NON_NEGATIVE_INT.note("0: off"),
            length_grouping=NON_NEGATIVE_INT, new_token_init=NEW_TOKEN_INIT, time_limit_minutes=POSITIVE,
        )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 64
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # sample from the k most likely tokens (0: off)
    n_examples: int | None = None  # evaluate on the first n (None: all)
    # Latent mode while decoding (latent.infer.engine): auto = fixed for a Coconut run (its
    # stage's thoughts after <bot>), none for a text run; model = SWITCH (<swi> ... </swi>);
    # entropy = training-free switching on the next-token entropy trend; hrpo = HRPO's gated hybrid
    # inputs before the answer marker (model.feedback=hrpo; auto for an HRPO RL run).
    switch_policy: SwitchPolicy = "auto"
    latent_budget: int = 8  # most latent steps in one span (model, entropy)
    max_latent_total: int = 64  # most latent steps per example (model, entropy)
    max_switches: int = 4  # most latent spans per example (entropy)
    # KV cache storage while decoding: auto = model.dtype (results as before); bfloat16 halves the
    # cache a decode step reads, attention upcasting it to the compute dtype (greedy decodes may differ)
    cache_dtype: CacheDType = "auto"

    def __post_init__(self):
        check("eval", self, top_k=NON_NEGATIVE_INT.note("0: off"))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor); -1 takes the devices left over."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        check("mesh", self)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    keep: int = 3  # most recent checkpoints kept
    keep_best: bool = True  # also keep the best by eval metric
    best_metric: str = "accuracy"
    best_mode: BestMode = "max"
    async_save: bool = True

    def __post_init__(self):
        check("checkpoint", self)


@dataclasses.dataclass(frozen=True)
class LatentConfig:
    """Continuous-thought training (Coconut's curriculum; latent.methods.coconut.curriculum)."""

    mode: LatentMode = "none"  # none: plain text SFT
    c_thought: int = 1  # latent slots per replaced reasoning step
    epochs_per_stage: int = 5
    # epochs of stage 0 (plain CoT, the skill the later stages compress); None: epochs_per_stage
    stage0_epochs: int | None = None
    # the curriculum's stage at step 0: 1 skips stage 0 (plain CoT) when train.init_from already
    # holds a CoT run, as Coconut's GSM8k recipe starts from its CoT checkpoint
    first_stage: int = 0
    # max_latent_stage, uniform_prob and pad_latent_to_max are Coconut's: latent.mode=switch refuses
    # any value but the default (latent.methods.switch.COCONUT_ONLY_FIELDS) rather than ignore it
    max_latent_stage: int = 6  # stages beyond it drop every step
    uniform_prob: float = 0.0  # chance an example takes a random stage in 0..#steps
    # weight of an auxiliary loss on the thoughts: what the last slot of each replaced step receives
    # (the output of the position before it) predicts that step's last word
    # (latent.methods.coconut.curriculum.step_key_token; in ProsQA the node it reaches), so the thoughts hold
    # each step's result where later positions can read it, even when no written step follows.
    # 0: off (Coconut: only the text after <eot> is labelled).
    thought_loss: float = 0.0
    pad_latent_to_max: bool = False  # after the last stage, always max_latent_stage * c slots
    reset_optimizer: bool = False  # fresh optimizer state at each stage change (Coconut: yes)
    # with reset_optimizer: the learning rate warms up again over this many steps after each reset
    # (optax's linear warm-up, 0 at the reset step; latent.train.optimizer.rewarm_after_reset);
    # 0: the global schedule's rate at once, with fresh Adam moments (Coconut's recipe)
    reset_warmup_steps: int = 0
    latent_grad: str = "full"  # full | truncate(n) | detach (LatentGrad; latent.nn.recurrence)
    compile: LatentCompile = "per_stage"  # once: always max slots, masked
    # SWITCH (latent.methods.switch.spans): which steps go inside <swi> ... </swi>
    switch_rule: SwitchRule = "fixed"
    switch_start: int = 1  # fixed rule: first step of the span
    switch_span: int = 2  # steps per span
    switch_model: str | None = None  # entropy rule: a run directory whose model scores the steps

    def __post_init__(self):
        check(
            "latent", self, c_thought=POSITIVE_INT, epochs_per_stage=POSITIVE_INT, stage0_epochs=POSITIVE_INT,
            first_stage=NON_NEGATIVE_INT, max_latent_stage=NON_NEGATIVE_INT, switch_start=NON_NEGATIVE_INT,
            switch_span=POSITIVE_INT, thought_loss=NON_NEGATIVE, reset_warmup_steps=NON_NEGATIVE_INT,
            uniform_prob=FRACTION, latent_grad=LATENT_GRAD,
        )


@dataclasses.dataclass(frozen=True)
class AbstractConfig:
    """Abstract-CoT (latent.methods.abstract_cot.layouts, latent.methods.abstract_cot.warmup): M reserved abstract tokens
    plus <beginabstract>/<endabstract>, decoded under a constraint inside the span."""

    num_tokens: int = 64  # M: <abs_0> .. <abs_{M-1}>
    # rows of abstract tokens added to a model that lacks them (train.init_from): random, or
    # the mean of the known tokens' rows (latent.models.vocab); train.new_token_init, when set,
    # overrides it for every added token
    init: TokenInit = "random"
    max_tokens: int = 16  # m_max: <endabstract> is forced when a span holds this many tokens
    # warm-up policy-iteration rounds T (latent.methods.abstract_cot.warmup); 0: train.py runs one ordinary
    # run in task.format instead
    rounds: int = 0
    # where the self-distillation run's z' comes from: "prompt" samples it from pi(z' | x), the
    # prompt alone (Abstract-CoT's recipe); "teacher" from pi(z' | x, c), the bottleneck model
    # reading the chain, so the prompt-only model learns to write what the chain reader writes
    distill_z: DistillZ = "prompt"
    # round 1's z: "random" (Abstract-CoT's draw, rand(1, |step|/2) tokens per step) or "keyed",
    # tokens that name each step's result (latent.methods.abstract_cot.layouts.keyed_abstract), so z carries
    # the chain from the start; warm-up only (abstract.rounds >= 1)
    round1: Round1 = "random"
    # a keyed multiplication z: each partial product a * b_j "unshifted" (two digits per token from
    # its own last digit) or "aligned" to its columns, so every token of every product covers the
    # same two columns of the answer (latent.methods.abstract_cot.layouts.step_results)
    key_layout: KeyLayout = "unshifted"
    # optimizer steps of each warm-up phase (the learning-rate schedule spans them); 0: train.steps.
    # The bottleneck run learns its task long before the self-distillation run learns its own,
    # so a recipe can give the distillation most of the budget and a schedule that ends with it.
    bottleneck_steps: int = 0
    distill_steps: int = 0

    def __post_init__(self):
        phase_steps = NON_NEGATIVE_INT.note("0: train.steps")
        check(
            "abstract", self, num_tokens=POSITIVE_INT, max_tokens=POSITIVE_INT, rounds=NON_NEGATIVE_INT,
            bottleneck_steps=phase_steps, distill_steps=phase_steps,
        )


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """On-policy RL, the GRPO family (latent.methods.rl; the maths in latent.methods.rl.objective):
    G sampled outputs per prompt, verifiable rewards, group advantages, a clipped policy loss."""

    group_size: int = 8  # G: outputs sampled per prompt, compared with each other by the advantage
    advantage: Advantage = "grpo"  # grpo: (r - mean) / (std + adv_eps); dr_grpo: r - mean; rloo: r - mean of the others
    loss: PolicyLoss = "clip"  # clip: PPO's clipped ratio; gppo: its value, with gradient (1 +- eps) A outside the range
    clip_low: float = 0.2  # eps_low: the ratio's lower bound is 1 - clip_low
    clip_high: float = 0.28  # eps_high: the ratio's upper bound is 1 + clip_high (DAPO's clip-higher)
    aggregation: LossAggregation = "sequence_mean"  # GRPO: per output then over outputs; all tokens; Dr.GRPO: sums / max_new_tokens
    inner_epochs: int = 1  # mu: optimizer updates per batch of rollouts (1: each update is at ratio 1)
    kl_coef: float = 0.0  # beta: weight of the k3 KL to the frozen reference policy per token (0: no reference)
    entropy_coef: float = 0.0  # weight of the entropy bonus (subtracted from the loss)
    temperature: float = 1.0  # sampling temperature of the rollouts
    top_p: float = 1.0  # nucleus sampling of the rollouts (1: off)
    max_new_tokens: int = 64  # most tokens generated per rollout; sequence_sum's constant divisor
    prompts_per_step: int = 8  # B: prompts per batch of rollouts (B * G outputs)
    reward_correct: float = 1.0  # reward of a right answer (the task's scorer)
    reward_format: float = 0.0  # weight of the answer-marker-present term
    reward_length: float = 0.0  # reward per generated token (usually negative: shorter outputs)
    adv_eps: float = 1e-6  # added to the group std under advantage=grpo (a constant group gives 0, not NaN)
    # the rollouts' KV cache (eval.cache_dtype); bfloat16 rollouts' log-probs then differ from the
    # replay's (computed without that rounding) by bf16 error, so rho is no longer exactly 1
    cache_dtype: CacheDType = "auto"

    def __post_init__(self):
        check(
            "rl", self, clip_low=NON_NEGATIVE, clip_high=NON_NEGATIVE, inner_epochs=POSITIVE_INT,
            kl_coef=NON_NEGATIVE, entropy_coef=NON_NEGATIVE, temperature=POSITIVE,
            top_p=Rule("in (0, 1]", lambda v: 0 < v <= 1), max_new_tokens=POSITIVE_INT,
            prompts_per_step=POSITIVE_INT, adv_eps=POSITIVE,
        )
        if self.group_size < 2:  # every rl.advantage is a group advantage: one output has no baseline
            raise ConfigError(
                f"rl.group_size={self.group_size} is too small for rl.advantage={self.advantage}: a group "
                "advantage compares each output with the others sampled for its prompt; use rl.group_size >= 2"
            )


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    latent: LatentConfig = LatentConfig()
    abstract: AbstractConfig = AbstractConfig()
    rl: RLConfig = RLConfig()
    # The training method (latent.methods): "auto" is the one the sections select (latent.mode,
    # task.format); a registered method's name selects that method (how a fork's new one is run).
    method: str = "auto"

    def __post_init__(self):
        check("", self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- sequence lengths


def eval_positions(max_len: int, eval_cfg: EvalConfig, policy: str, latent_steps: int) -> dict[str, int]:
    """The parts of the longest sequence decoding reaches: a prompt (at most task.max_len, with
    <bot> for Coconut), the emitted tokens (abstract spans included), and the latent steps of
    `policy` (latent.infer.engine): `latent_steps` thoughts plus <eot> (fixed), or the
    eval.max_latent_total cap (model, entropy)."""
    parts = {"task.max_len": max_len, "eval.max_new_tokens": eval_cfg.max_new_tokens}
    if policy == "fixed":
        parts["latent steps + <eot>"] = latent_steps + 1
    elif policy in ("model", "entropy"):
        parts["eval.max_latent_total"] = eval_cfg.max_latent_total
    return parts


def check_positions_fit(model_cfg: ModelConfig, parts: dict[str, int], purpose: str) -> None:
    """Raise ConfigError when a sequence of `sum(parts)` positions runs past a learned position
    table (model.max_seq_len rows). Rotary models compute any position and size their KV caches
    per call (latent.infer.engine, latent.nn.recurrence), so max_seq_len does not bound them."""
    total = sum(parts.values())
    if model_cfg.positions != "learned" or total <= model_cfg.max_seq_len:
        return
    terms = " + ".join(f"{name}={value}" for name, value in parts.items())
    raise ConfigError(
        f"model.max_seq_len={model_cfg.max_seq_len} (learned positions) is shorter than {purpose}: {terms} = {total} "
        "positions; raise model.max_seq_len or lower those"
    )
