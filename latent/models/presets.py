"""Model families as ModelConfig presets: what each family fixes, with sizes left to the caller.

    from latent.models import presets
    cfg = presets.qwen3(vocab_size=32000, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2, d_ff=1536)
    gated = presets.gated(cfg)                # the same model with an elementwise output gate
"""

from __future__ import annotations

import typing

from latent.config import AttnGate, ConfigError, ModelConfig

# What defines each family (HF modelling code), separate from its size.
FAMILY_TRAITS: dict[str, dict] = {
    "gpt2": dict(
        norm="layer", norm_eps=1e-5, mlp="gelu", gelu_approximate=True, positions="learned",
        qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True,
    ),
    "llama": dict(norm="rms", norm_eps=1e-6, mlp="swiglu", positions="rope", rope_theta=10000.0),
    "qwen2": dict(
        norm="rms", norm_eps=1e-6, mlp="swiglu", positions="rope", rope_theta=1_000_000.0, qkv_bias=True,
    ),
    "qwen3": dict(norm="rms", norm_eps=1e-6, mlp="swiglu", positions="rope", rope_theta=1_000_000.0, qk_norm=True),
    # Qwen3-Next's full-attention layers: gated attention, zero-centred norms, partial rotary.
    "qwen3_next": dict(
        norm="rms", norm_eps=1e-6, norm_zero_centered=True, mlp="swiglu", positions="rope",
        rope_theta=10000.0, rotary_fraction=0.25, qk_norm=True, attn_gate="elementwise",
    ),
}
FAMILIES = tuple(FAMILY_TRAITS)


def family(name: str, **overrides) -> ModelConfig:
    """A ModelConfig of family `name`; keyword overrides set its size (and may change traits)."""
    if name not in FAMILY_TRAITS:
        raise ConfigError(f"unknown model family {name!r}; known: {FAMILIES}")
    fields = dict(FAMILY_TRAITS[name], family=name)
    if name == "gpt2" and "d_ff" not in overrides and "d_model" in overrides:
        fields["d_ff"] = 4 * overrides["d_model"]
    fields.update(overrides)
    return ModelConfig(**fields)


def gpt2(**overrides) -> ModelConfig:
    return family("gpt2", **overrides)


def llama(**overrides) -> ModelConfig:
    return family("llama", **overrides)


def qwen2(**overrides) -> ModelConfig:
    return family("qwen2", **overrides)


def qwen3(**overrides) -> ModelConfig:
    return family("qwen3", **overrides)


def qwen3_next(**overrides) -> ModelConfig:
    return family("qwen3_next", **overrides)


def gated(cfg: ModelConfig, kind: str = "elementwise") -> ModelConfig:
    """The gated variant of any family: a sigmoid output gate on each attention head."""
    kinds = tuple(k for k in typing.get_args(AttnGate) if k != "none")
    if kind not in kinds:
        raise ConfigError(f"gate kind must be one of {kinds}; got {kind!r}")
    return cfg.replace(attn_gate=kind)


def by_name(name: str, **overrides) -> ModelConfig:
    """`llama`, `gated_llama`, `headwise_qwen3`, ...: a family, optionally with a gate."""
    for prefix, kind in (("gated_", "elementwise"), ("headwise_", "headwise")):
        if name.startswith(prefix):
            return gated(family(name[len(prefix):], **overrides), kind)
    return family(name, **overrides)
