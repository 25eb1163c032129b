"""Typed, frozen configuration. Each dataclass is the one source of its defaults."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Literal

from latent.errors import ConfigError  # noqa: F401 (raised here; importable from latent.config)

Norm = Literal["rms", "layer"]
Mlp = Literal["swiglu", "gelu"]
Positions = Literal["rope", "learned"]
AttnGate = Literal["none", "headwise", "elementwise"]
AttentionImpl = Literal["einsum", "dot_product"]  # the SDPA cores of latent.nn.attention
DType = Literal["float32", "bfloat16", "float16", "float64"]  # float64: gradient checks

_CHOICES = {
    "norm": ("rms", "layer"),
    "mlp": ("swiglu", "gelu"),
    "positions": ("rope", "learned"),
    "attn_gate": ("none", "headwise", "elementwise"),
    "attention_impl": typing.get_args(AttentionImpl),
    "feedback": ("identity", "codi", "soft", "hrpo", "later"),
    "dtype": ("float32", "bfloat16", "float16", "float64"),
    "param_dtype": ("float32", "bfloat16", "float16", "float64"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer. Families (GPT-2, Llama, Qwen2/3, Qwen3-Next) are presets of it.

    The attention output gate follows Qiu et al. 2025 (position G1): the SDPA output of each head
    is multiplied by sigmoid(x W_theta) before the output projection; `W_theta` is fused into the
    query projection with the per-head `[q | gate]` layout of Hugging Face Qwen3-Next.
    """

    family: str = "llama"  # gpt2 | llama | qwen2 | qwen3 | qwen3_next: decides the HF export format
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
    # Canon layer before attention (latent.nn.canon): each attention input adds learned per-channel
    # multiples of the inputs at the `canon` positions before it; 0: off. Lets a single layer
    # learn content lookups ("the token after X"). No Hugging Face format.
    canon: int = 0
    tie_embeddings: bool = False
    # What a latent slot receives from the previous position (latent.nn.feedback): identity
    # (Coconut), codi, soft (p^T E), hrpo (gated hybrid), later (realigned, rescaled).
    feedback: str = "identity"
    feedback_temperature: float = 1.0  # softmax temperature of the soft and hrpo feedbacks
    init_std: float = 0.02
    dtype: DType = "float32"  # compute dtype
    param_dtype: DType = "float32"

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"model.{name}={value!r} is not allowed; choose one of {allowed}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive int; got {value!r}")
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
        if isinstance(self.canon, bool) or not isinstance(self.canon, int) or self.canon < 0:
            raise ConfigError(f"model.canon must be an int >= 0 (previous positions mixed in); got {self.canon!r}")
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError(f"model.rotary_fraction must be in (0, 1]; got {self.rotary_fraction}")
        if self.positions == "rope" and self.rotary_dim % 2:
            raise ConfigError(
                f"model.head_dim * model.rotary_fraction = {self.rotary_dim} must be even for rotary embeddings"
            )
        if not self.feedback_temperature > 0:
            raise ConfigError(f"model.feedback_temperature must be > 0; got {self.feedback_temperature}")
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


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What to train on: a generated task, or a JSON/JSONL file in Coconut's layout."""

    name: str = "prosqa_small"  # a registered task generator (latent.data.tasks.get_task); gsm8k needs `path`
    path: str | None = None  # train on this JSON or JSONL file instead of the generator
    # evaluate on this file; default: a held-out split of `path` (valid_fraction of it, at most
    # n_valid examples, drawn with `seed`), or a generated split without `path` (or with
    # valid_fraction=0: train on all of `path`, validate on `name`'s generated split)
    valid_path: str | None = None
    valid_fraction: float = 0.1
    # how answers are judged (latent.data.tasks.scoring): auto = a generated task's own scorer, or
    # numeric when the references are numbers, else exact; exact; numeric; choice
    scorer: Literal["auto", "exact", "numeric", "choice"] = "auto"
    # cot: question, steps, answer; no_cot: question, answer; abstract: question, abstract span,
    # answer; abstract_bottleneck: question, steps, abstract span, answer with the answer blind
    # to the steps; codes: question, VQ code span for the first steps, the other steps, answer
    # (latent.data.abstract)
    format: Literal["cot", "no_cot", "abstract", "abstract_bottleneck", "codes"] = "cot"
    n_train: int = 20000
    n_valid: int = 200
    seed: int = 1234  # task generation seed, separate from the training seed
    max_len: int = 256  # longest tokenized example (prompt + target) kept

    def __post_init__(self):
        if isinstance(self.valid_fraction, bool) or not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"task.valid_fraction must be in [0, 1); got {self.valid_fraction!r}")
        if self.scorer not in ("auto", "exact", "numeric", "choice"):
            raise ConfigError(f"task.scorer={self.scorer!r} is not allowed; choose one of auto, exact, numeric, choice")
        if isinstance(self.n_valid, bool) or not isinstance(self.n_valid, int) or self.n_valid <= 0:
            raise ConfigError(f"task.n_valid must be a positive int; got {self.n_valid!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    grad_accum: int = 1  # micro-batches per optimizer step


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

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"train.{name} must be a positive int; got {value!r}")
        if not isinstance(self.length_bucket, int) or self.length_bucket <= 0:
            raise ConfigError(f"train.length_bucket must be a positive int; got {self.length_bucket!r}")
        if not isinstance(self.length_grouping, int) or self.length_grouping < 0:
            raise ConfigError(f"train.length_grouping must be an int >= 0; got {self.length_grouping!r}")
        if self.new_token_init is not None and not (
            self.new_token_init in ("random", "mean")
            or (self.new_token_init.startswith("copy:") and len(self.new_token_init) > len("copy:"))
        ):
            raise ConfigError(
                f"train.new_token_init={self.new_token_init!r} is not allowed; choose random, mean or copy:<token>"
            )
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise ConfigError(f"train.time_limit_minutes must be > 0 or None; got {self.time_limit_minutes!r}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 64
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    n_examples: int | None = None  # evaluate on the first n (None: all)
    # Latent mode while decoding (latent.infer.engine): auto = fixed for a Coconut run (its
    # stage's thoughts after <bot>), none for a text run; model = SWITCH (<swi> ... </swi>);
    # entropy = training-free switching on the next-token entropy trend.
    switch_policy: Literal["auto", "none", "fixed", "model", "entropy"] = "auto"
    latent_budget: int = 8  # most latent steps in one span (model, entropy)
    max_latent_total: int = 64  # most latent steps per example (model, entropy)
    max_switches: int = 4  # most latent spans per example (entropy)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor); -1 takes the devices left over."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    keep: int = 3  # most recent checkpoints kept
    keep_best: bool = True  # also keep the best by eval metric
    best_metric: str = "accuracy"
    best_mode: Literal["max", "min"] = "max"
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LatentConfig:
    """Continuous-thought training (Coconut's curriculum; latent.data.curriculum)."""

    mode: Literal["none", "coconut", "switch"] = "none"  # none: plain text SFT
    c_thought: int = 1  # latent slots per replaced reasoning step
    epochs_per_stage: int = 5
    # epochs of stage 0 (plain CoT, the skill the later stages compress); None: epochs_per_stage
    stage0_epochs: int | None = None
    # the curriculum's stage at step 0: 1 skips stage 0 (plain CoT) when train.init_from already
    # holds a CoT run, as Coconut's GSM8k recipe starts from its CoT checkpoint
    first_stage: int = 0
    # max_latent_stage, uniform_prob and pad_latent_to_max are Coconut's: latent.mode=switch refuses
    # any value but the default (latent.train.sources.COCONUT_ONLY_FIELDS) rather than ignore it
    max_latent_stage: int = 6  # stages beyond it drop every step
    uniform_prob: float = 0.0  # chance an example takes a random stage in 0..#steps
    # weight of an auxiliary loss on the thoughts: what the last slot of each replaced step receives
    # (the output of the position before it) predicts that step's last word
    # (latent.data.curriculum.step_key_token; in ProsQA the node it reaches), so the thoughts hold
    # each step's result where later positions can read it, even when no written step follows.
    # 0: off (Coconut: only the text after <eot> is labelled).
    thought_loss: float = 0.0
    pad_latent_to_max: bool = False  # after the last stage, always max_latent_stage * c slots
    reset_optimizer: bool = False  # fresh optimizer state at each stage change (Coconut: yes)
    # with reset_optimizer: the learning rate warms up again over this many steps after each reset
    # (optax's linear warm-up, 0 at the reset step; latent.train.optimizer.rewarm_after_reset);
    # 0: the global schedule's rate at once, with fresh Adam moments (Coconut's recipe)
    reset_warmup_steps: int = 0
    latent_grad: str = "full"  # full | truncate(n) | detach (latent.nn.recurrence)
    compile: Literal["per_stage", "once"] = "per_stage"  # once: always max slots, masked
    # SWITCH (latent.data.switch): which steps go inside <swi> ... </swi>
    switch_rule: Literal["fixed", "entropy"] = "fixed"
    switch_start: int = 1  # fixed rule: first step of the span
    switch_span: int = 2  # steps per span
    switch_model: str | None = None  # entropy rule: a run directory whose model scores the steps

    def __post_init__(self):
        for name in ("c_thought", "epochs_per_stage"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"latent.{name} must be a positive int; got {getattr(self, name)!r}")
        if self.stage0_epochs is not None and (
            isinstance(self.stage0_epochs, bool) or not isinstance(self.stage0_epochs, int) or self.stage0_epochs <= 0
        ):
            raise ConfigError(f"latent.stage0_epochs must be a positive int or None; got {self.stage0_epochs!r}")
        if isinstance(self.first_stage, bool) or not isinstance(self.first_stage, int) or self.first_stage < 0:
            raise ConfigError(f"latent.first_stage must be an int >= 0; got {self.first_stage!r}")
        if not isinstance(self.max_latent_stage, int) or self.max_latent_stage < 0:
            raise ConfigError(f"latent.max_latent_stage must be an int >= 0; got {self.max_latent_stage!r}")
        if self.switch_start < 0 or self.switch_span <= 0:
            raise ConfigError(
                f"latent.switch_start must be >= 0 and latent.switch_span > 0; got {self.switch_start}, {self.switch_span}"
            )
        if not self.thought_loss >= 0.0:
            raise ConfigError(f"latent.thought_loss must be >= 0; got {self.thought_loss}")
        if isinstance(self.reset_warmup_steps, bool) or not isinstance(self.reset_warmup_steps, int) or self.reset_warmup_steps < 0:
            raise ConfigError(f"latent.reset_warmup_steps must be an int >= 0; got {self.reset_warmup_steps!r}")
        if not 0.0 <= self.uniform_prob <= 1.0:
            raise ConfigError(f"latent.uniform_prob must be in [0, 1]; got {self.uniform_prob}")
        if self.latent_grad not in ("full", "detach") and not re.fullmatch(r"truncate\(\d+\)", self.latent_grad):
            raise ConfigError(f"latent.latent_grad must be full, detach or truncate(n); got {self.latent_grad!r}")


@dataclasses.dataclass(frozen=True)
class AbstractConfig:
    """Abstract-CoT (latent.data.abstract, latent.train.abstract): M reserved abstract tokens
    plus <beginabstract>/<endabstract>, decoded under a constraint inside the span."""

    num_tokens: int = 64  # M: <abs_0> .. <abs_{M-1}>
    # rows of abstract tokens added to a model that lacks them (train.init_from): random, or
    # the mean of the known tokens' rows (latent.models.vocab); train.new_token_init, when set,
    # overrides it for every added token
    init: Literal["random", "mean"] = "random"
    max_tokens: int = 16  # m_max: <endabstract> is forced when a span holds this many tokens
    # warm-up policy-iteration rounds T (latent.train.abstract); 0: train.py runs one ordinary
    # run in task.format instead
    rounds: int = 0
    # where the self-distillation run's z' comes from: "prompt" samples it from pi(z' | x), the
    # prompt alone (Abstract-CoT's recipe); "teacher" from pi(z' | x, c), the bottleneck model
    # reading the chain, so the prompt-only model learns to write what the chain reader writes
    distill_z: Literal["prompt", "teacher"] = "prompt"
    # round 1's z: "random" (Abstract-CoT's draw, rand(1, |step|/2) tokens per step) or "keyed",
    # tokens that name each step's result (latent.data.abstract.keyed_abstract), so z carries
    # the chain from the start; warm-up only (abstract.rounds >= 1)
    round1: Literal["random", "keyed"] = "random"
    # a keyed multiplication z: each partial product a * b_j "unshifted" (two digits per token from
    # its own last digit) or "aligned" to its columns, so every token of every product covers the
    # same two columns of the answer (latent.data.abstract.step_results)
    key_layout: Literal["unshifted", "aligned"] = "unshifted"
    # optimizer steps of each warm-up phase (the learning-rate schedule spans them); 0: train.steps.
    # The bottleneck run learns its task long before the self-distillation run learns its own,
    # so a recipe can give the distillation most of the budget and a schedule that ends with it.
    bottleneck_steps: int = 0
    distill_steps: int = 0

    def __post_init__(self):
        for name in ("bottleneck_steps", "distill_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"abstract.{name} must be an int >= 0 (0: train.steps); got {value!r}")
        for name in ("num_tokens", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"abstract.{name} must be a positive int; got {value!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"abstract.rounds must be an int >= 0; got {self.rounds!r}")


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

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- sequence lengths


def train_positions(cfg: Config) -> dict[str, int]:
    """The parts of the longest training sequence. task.max_len already counts every marker and
    the whole text; latent slots are added to it (a slot can outnumber the step tokens it hides)."""
    parts = {"task.max_len": cfg.task.max_len}
    latent = cfg.latent
    if latent.mode == "coconut":
        parts["latent.max_latent_stage*latent.c_thought"] = latent.max_latent_stage * latent.c_thought
    elif latent.mode == "switch":
        parts["latent.switch_span*latent.c_thought"] = latent.switch_span * latent.c_thought
    return parts


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


def check_run_positions(cfg: Config, policy: str) -> None:
    """Before training: the training sequences and the evaluations (`policy`, at most
    max_latent_stage * c thoughts) fit model.max_seq_len when positions are learned."""
    check_positions_fit(cfg.model, train_positions(cfg), "the longest training sequence")
    top_thoughts = cfg.latent.max_latent_stage * cfg.latent.c_thought
    check_positions_fit(cfg.model, eval_positions(cfg.task.max_len, cfg.eval, policy, top_thoughts),
                        "the longest evaluation sequence")


# ----------------------------------------------------------------------------- overrides


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, object]) -> Config:
    """`["train.steps=100", "model.attn_gate=headwise"]` (or a dict of the same) applied to cfg.

    Strings are parsed by the field's declared type; an unknown key or a value of the wrong type
    is a ConfigError naming the key and what it allows.
    """
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
            key, raw = item.split("=", 1)
            items.append((key.strip(), raw))
    for key, raw in items:
        cfg = _set_path(cfg, key.split("."), raw, key)
    return cfg


def _set_path(node, parts: list[str], raw, full_key: str):
    hints = typing.get_type_hints(type(node))
    name = parts[0]
    if name not in hints:
        allowed = ", ".join(_leaf_keys(node, full_key.rsplit(".", len(parts))[0] if len(parts) < len(full_key.split(".")) else ""))
        raise ConfigError(f"unknown config key {full_key!r}; allowed here: {allowed}")
    if len(parts) > 1:
        child = getattr(node, name)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"config key {full_key!r}: {name!r} is a value, not a section")
        return dataclasses.replace(node, **{name: _set_path(child, parts[1:], raw, full_key)})
    if dataclasses.is_dataclass(getattr(node, name)):
        raise ConfigError(f"config key {full_key!r} is a section; set one of its fields, e.g. {full_key}.<field>=...")
    value = parse_value(hints[name], raw, full_key)
    return dataclasses.replace(node, **{name: value})


def _leaf_keys(node, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        keys.append(f"{key}.*" if dataclasses.is_dataclass(value) else key)
    return keys


def parse_value(annotation, raw, key: str):
    """Parse `raw` (a string from the command line, or an already typed value) as `annotation`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return parse_value(option, raw, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {raw!r} fits none of {args}")
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{key}={raw!r} is not allowed; choose one of {args}")
        return raw
    if annotation is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} takes true or false; got {raw!r}")
    if annotation is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{key} takes an int; got {raw!r}")
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} takes an int; got {raw!r}") from None
    if annotation is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} takes a number; got {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} takes a number; got {raw!r}") from None
    if annotation is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{key} takes a string; got {raw!r}")
        return raw
    raise ConfigError(f"{key}: unsupported field type {annotation}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict, cls=None, *, prefix: str = ""):
    """Inverse of to_dict with the same checks as overrides (unknown keys are errors)."""
    cls = Config if cls is None else cls
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}")
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section and takes a mapping")
            kwargs[name] = from_dict(value, hints[name], prefix=key + ".")
        else:
            kwargs[name] = parse_value(hints[name], value, key)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- presets

CONFIGS_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


def read_config_json(path) -> dict:
    """A run's config.json as a dict; ConfigError naming the file and line when it is not JSON."""
    import json

    try:
        return json.loads(__import__("pathlib").Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def load_preset(name_or_path: str) -> Config:
    """A preset name from configs/ (`tiny`, `default`, ...), a configs-style .py file defining
    `get_config() -> Config`, or a config.json written by a run."""
    import importlib.util
    from pathlib import Path

    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return from_dict(read_config_json(path))
    if path.suffix != ".py":
        path = CONFIGS_DIR / f"{name_or_path}.py"
        if not path.exists():
            known = sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if not p.stem.startswith("_"))
            raise ConfigError(f"unknown config preset {name_or_path!r}; known presets: {known}, or pass a .py/.json path")
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"latent_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} must define get_config() -> latent.config.Config")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not latent.config.Config")
    return cfg
