"""Typed, frozen configuration. Each dataclass is the one source of its defaults."""

from __future__ import annotations

import dataclasses
from typing import Literal

Norm = Literal["rms", "layer"]
Mlp = Literal["swiglu", "gelu"]
Positions = Literal["rope", "learned"]
AttnGate = Literal["none", "headwise", "elementwise"]
DType = Literal["float32", "bfloat16", "float16", "float64"]  # float64: gradient checks

_CHOICES = {
    "norm": ("rms", "layer"),
    "mlp": ("swiglu", "gelu"),
    "positions": ("rope", "learned"),
    "attn_gate": ("none", "headwise", "elementwise"),
    "dtype": ("float32", "bfloat16", "float16", "float64"),
    "param_dtype": ("float32", "bfloat16", "float16", "float64"),
}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


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
    tie_embeddings: bool = False
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
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ConfigError(
                    f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                    "set model.head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} must be a positive multiple of model.n_kv_heads={self.n_kv_heads}"
            )
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError(f"model.rotary_fraction must be in (0, 1]; got {self.rotary_fraction}")
        if self.positions == "rope" and self.rotary_dim % 2:
            raise ConfigError(
                f"model.head_dim * model.rotary_fraction = {self.rotary_dim} must be even for rotary embeddings"
            )
        if self.norm == "layer" and self.norm_zero_centered:
            raise ConfigError("model.norm_zero_centered applies to norm='rms' only")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_fraction)

    @property
    def gate_width(self) -> int:
        """Extra query-projection outputs per head that feed the output gate."""
        return {"none": 0, "headwise": 1, "elementwise": self.head_dim}[self.attn_gate]

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
